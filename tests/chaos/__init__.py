"""Jepsen-style fault suite on real agents: cluster, workload, nemesis, checks (harness.py)."""
