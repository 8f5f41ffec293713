"""Raft simulator: harness, KV state machine and seeded runs (the checker is tests/lincheck.py)."""
