"""Use cases: each function is one transaction over the storage adapter, using core rules."""
