"""Benchmarks for speedup-proxy (replay stream over GSM-Symbolic similarity levels)."""
