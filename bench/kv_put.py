"""KV PUT over HTTP through the leader of 3 real server agents, vs a dev agent, same run.

Issue #5's shape: `PUT /v1/kv/bench/<tag>-<n>` with 1 and with 32 concurrent
keep-alive clients (`wrk`, one thread, a Lua script that numbers the keys),
against the HTTP API of the Raft leader of three `proconsul agent -server`
processes on loopback (127.0.0.<base>.., bootstrap_expect = 3,
raft_multiplier 1, SQLite logs with synchronous=FULL) and against one
`proconsul agent -dev` (in memory, no replication) as the baseline. Every
agent stays up for the whole run; each setting alternates the order of the two
systems per round so machine drift hits both. wrk runs on CPU 1; the agents are
not pinned. Prints medians of acknowledged writes/s, p50 and p99 per setting,
the cluster/dev ratios and issue #5's target (>= 1,000 writes/s with 32
clients, p99 < 100 ms), met or not.

    .venv/bin/python bench/kv_put.py [--seconds 5] [--rounds 2] [--value-bytes 128] [--base 221]

Asserts nothing about speed; a request answered other than 2xx fails the run
(errors answer fast and would flatter the figures).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from _harness import (
    WrkResult,
    agreed_leader,
    run_wrk_script,
    server_pool,
    start_dev_agent,
)

if TYPE_CHECKING:
    from tests.gossip_agents import GossipPool

CLIENTS = (1, 32)
SYSTEMS = ("cluster", "dev")
START_DEADLINE_S = 60.0
TARGET_WRITES_PER_S = 1000.0
TARGET_P99_MS = 100.0

_PUT_LUA = """
local counter = 0
local body = "%(body)s"
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/v1/kv/bench/%(tag)s-" .. counter, nil, body)
end
"""


def put_script(tag: str, value_bytes: int) -> str:
    body = os.urandom(value_bytes).hex()[:value_bytes]
    return _PUT_LUA % {"body": body, "tag": tag}


def leader_url(pool: GossipPool) -> str:
    address = agreed_leader(pool.members, START_DEADLINE_S)
    ip = address.rsplit(":", 1)[0]
    member = next(m for m in pool.members if m.ip == ip)
    return member.running.url


def measure(urls: dict[str, str], args: argparse.Namespace) -> dict[tuple[str, int], WrkResult]:
    runs: dict[tuple[str, int], list[WrkResult]] = {}
    for system, url in urls.items():  # warm up: connections, caches, the leader's pipeline
        run_wrk_script(url, 1, 4, put_script(f"warm-{system}", args.value_bytes))
    for round_no in range(args.rounds):
        for clients in CLIENTS:
            order = SYSTEMS if (round_no + clients) % 2 == 0 else tuple(reversed(SYSTEMS))
            for system in order:
                script = put_script(f"{system}-{round_no}-{clients}", args.value_bytes)
                result = run_wrk_script(urls[system], args.seconds, clients, script)
                runs.setdefault((system, clients), []).append(result)
                print(
                    f"round {round_no + 1} {system:>7} {clients:>2} clients: "
                    f"{result.requests_per_s:.0f} writes/s, p50 {result.p50_ms:.2f} ms, "
                    f"p99 {result.p99_ms:.2f} ms",
                    flush=True,
                )
    return {
        key: WrkResult(
            statistics.median(r.requests_per_s for r in results),
            statistics.median(r.p50_ms for r in results),
            statistics.median(r.p99_ms for r in results),
        )
        for key, results in runs.items()
    }


def report(results: dict[tuple[str, int], WrkResult], args: argparse.Namespace) -> None:
    print(
        f"\nKV PUT over HTTP, {args.value_bytes}-byte values, {args.seconds}s x {args.rounds} "
        f"rounds (medians), {os.cpu_count()} CPUs"
    )
    print(f"{'clients':>7} {'system':>22} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    names = {"cluster": "leader of 3 servers", "dev": "dev agent"}
    for clients in CLIENTS:
        for system in SYSTEMS:
            r = results[(system, clients)]
            print(
                f"{clients:>7} {names[system]:>22} {r.requests_per_s:>10.0f} "
                f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
            )
        c, d = results[("cluster", clients)], results[("dev", clients)]
        print(
            f"{clients:>7} {'ratio':>22} {c.requests_per_s / d.requests_per_s:>10.2f} "
            f"{c.p50_ms / d.p50_ms:>8.2f} {c.p99_ms / d.p99_ms:>8.2f}   (cluster / dev)"
        )
    top = results[("cluster", max(CLIENTS))]
    met = top.requests_per_s >= TARGET_WRITES_PER_S and top.p99_ms < TARGET_P99_MS
    print(
        f"target (3 servers, {max(CLIENTS)} clients): >= {TARGET_WRITES_PER_S:.0f} writes/s and "
        f"p99 < {TARGET_P99_MS:.0f} ms: {'met' if met else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--value-bytes", type=int, default=128)
    parser.add_argument("--base", type=int, default=221, help="first address 127.0.0.<base>")
    args = parser.parse_args()
    dev: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="kv-put-bench-") as tmp:
        pool = server_pool(Path(tmp) / "servers", args.base, raft_multiplier=1)
        try:
            pool.start_all()
            dev, dev_url = start_dev_agent(cpu=None)
            results = measure({"cluster": leader_url(pool), "dev": dev_url}, args)
        finally:
            if dev is not None:
                dev.terminate()
                dev.wait(timeout=10)
            pool.stop_all()
    report(results, args)


if __name__ == "__main__":
    main()
