"""Health reads on a 3-server cluster: everything on the leader vs `?stale` on every server.

Three `proconsul agent -server` processes on loopback (127.0.0.<base>..), a
service `api` with 100 passing instances registered through the leader, then
`GET /v1/health/service/api` under wrk load: 3 wrk threads, each with a third
of the connections and one target; wrk pinned to CPU 1 as in http_health.py,
the agents unpinned:

- leader only: default consistency, every request to the leader's HTTP API
  (the baseline: what a cluster does when all reads must see the leader);
- stale, spread: `?stale`, one wrk thread per server, so each server answers
  from its own replica;
- default, spread: default consistency, one thread per server; followers
  forward each read to the leader (one RPC hop), shown for context.

Rounds alternate between the three so machine drift hits all. Prints median
requests/s, p50 and p99 per mode and the ratios to leader-only.

    .venv/bin/python bench/stale_reads.py [--seconds 5] [--rounds 2] [--connections 48]
        [--instances 100] [--base 211]

Asserts nothing about speed. With 2 CPUs, three server processes and wrk
share the machine, so spreading cannot reach 3x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _harness import WrkResult, agreed_leader, run_wrk_spread, server_pool
from http_health import register_instances

if TYPE_CHECKING:
    from tests.gossip_agents import GossipPool, Member

PATH = "/v1/health/service/api"
DEADLINE_S = 60.0
MODES = ("leader only", "stale, spread", "default, spread")


def member_at(pool: GossipPool, address: str) -> Member:
    ip = address.rsplit(":", 1)[0]
    return next(m for m in pool.members if m.ip == ip)


def wait_replicated(pool: GossipPool, count: int) -> None:
    """Until every server's own replica (`?stale`) lists all `count` instances."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        counts = []
        for member in pool.members:
            status, _, body = member.running.request("GET", PATH + "?stale", timeout_s=2.0)
            counts.append(len(json.loads(body)) if status == 200 else -1)
        if counts == [count] * len(pool.members):
            return
        time.sleep(0.05)
    raise RuntimeError(f"instances not replicated within {DEADLINE_S}s")


def load(mode: str, leader: Member, pool: GossipPool, args: argparse.Namespace) -> WrkResult:
    # Three wrk threads in every mode; only where they point differs.
    if mode == "leader only":
        urls = [leader.running.url + PATH] * len(pool.members)
    else:
        query = "?stale" if mode.startswith("stale") else ""
        urls = [m.running.url + PATH + query for m in pool.members]
    return run_wrk_spread(urls, args.seconds, args.connections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--base", type=int, default=211, help="first address 127.0.0.<base>")
    args = parser.parse_args()
    results: dict[str, list[WrkResult]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="stale-reads-bench-") as tmp:
        pool = server_pool(Path(tmp), args.base, raft_multiplier=1)
        try:
            pool.start_all()
            leader = member_at(pool, agreed_leader(pool.members, DEADLINE_S))
            register_instances(leader.running.url, args.instances)
            wait_replicated(pool, args.instances)
            status, _, body = leader.running.request("GET", PATH)
            assert status == 200, (status, body)
            for round_no in range(args.rounds):
                shift = round_no % len(MODES)
                for mode in MODES[shift:] + MODES[:shift]:
                    results[mode].append(load(mode, leader, pool, args))
        finally:
            pool.stop_all()
    report(results, args, len(body))


def report(results: dict[str, list[WrkResult]], args: argparse.Namespace, size: int) -> None:
    print(
        f"GET {PATH}: {args.instances} instances, body {size} bytes, 3 servers, "
        f"{args.connections} connections, {args.rounds} alternating rounds of {args.seconds}s, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'mode':<18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'ratio':>8}   (medians)")
    base = statistics.median(r.requests_per_s for r in results["leader only"])
    for mode in MODES:
        rps = statistics.median(r.requests_per_s for r in results[mode])
        p50 = statistics.median(r.p50_ms for r in results[mode])
        p99 = statistics.median(r.p99_ms for r in results[mode])
        print(f"{mode:<18}{rps:>10.0f}{p50:>10.2f}{p99:>10.2f}{rps / base:>8.2f}")
    print("(ratio = req/s / leader-only req/s)")


if __name__ == "__main__":
    main()
