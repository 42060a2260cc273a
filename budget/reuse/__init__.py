"""The reuse decision: may a stored answer be served for this question? Deny by default."""
