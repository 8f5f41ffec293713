"""Raft simulator: harness, KV state machine, linearizability checker and seeded runs."""
