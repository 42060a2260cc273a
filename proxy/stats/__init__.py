"""Savings you can see: a request observer that keeps figures per tenant and minute, and their API."""
