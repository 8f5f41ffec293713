"""Leader failover with real server agents: kill -9 the leader, time the way back.

Two clusters of three `proconsul agent -server` processes on loopback
(127.0.0.<base>.. for `raft_multiplier = 1`, four addresses further for the
default multiplier 5), both up for the whole run. Each run, alternating
between the two clusters so machine drift hits both: find the agreed leader,
`kill -9` it, then measure from just before the signal

- leader: until both survivors name the same new leader (each polled at
  /v1/status/leader every ~20 ms);
- write: until a KV PUT through a survivor succeeds (retried every ~20 ms, in
  a second thread; a PUT that reaches a server with no leader is held there
  until one appears, so this is the time a client actually waits);

then restart the killed server on its data dir and wait until it has caught
up before the next run. Prints median and max per multiplier, side by side,
the default/1 ratio, and the election timeout range the multiplier implies.

    .venv/bin/python bench/raft_failover.py [--runs 10] [--base 201]

Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _harness import agreed_leader, leader_view, server_pool

from proconsul.raft.params import DEFAULT_RAFT_MULTIPLIER, params_from_multiplier

if TYPE_CHECKING:
    from tests.gossip_agents import GossipPool, Member

POLL_S = 0.02
START_DEADLINE_S = 60.0
# At the default multiplier an election alone may take 10 s (2 x 5 s timeout).
FAILOVER_DEADLINE_S = 60.0
MULTIPLIERS = (1, DEFAULT_RAFT_MULTIPLIER)


@dataclass
class Runs:
    leader_s: list[float] = field(default_factory=list)
    write_s: list[float] = field(default_factory=list)


def member_at(pool: GossipPool, address: str) -> Member:
    ip = address.rsplit(":", 1)[0]
    return next(m for m in pool.members if m.ip == ip)


def time_new_leader(survivors: list[Member], old: str, t0: float) -> float:
    """Seconds from t0 until every survivor names one leader other than `old`."""
    end = t0 + FAILOVER_DEADLINE_S
    while time.monotonic() < end:
        try:
            views = {leader_view(m, timeout_s=0.5) for m in survivors}
        except (OSError, RuntimeError):
            views = set()
        if len(views) == 1 and "" not in views and old not in views:
            return time.monotonic() - t0
        time.sleep(POLL_S)
    raise RuntimeError(f"no new leader within {FAILOVER_DEADLINE_S}s")


def time_first_write(target: Member, key: str, t0: float, out: list[float]) -> None:
    """Appends the seconds from t0 until a PUT of `key` through `target` is acknowledged."""
    end = t0 + FAILOVER_DEADLINE_S
    while time.monotonic() < end:
        try:
            status, _, body = target.running.request(
                "PUT", f"/v1/kv/{key}", "1", timeout_s=FAILOVER_DEADLINE_S
            )
        except OSError:
            status, body = 0, b""
        if (status, body) == (200, b"true"):
            out.append(time.monotonic() - t0)
            return
        time.sleep(POLL_S)


def wait_caught_up(member: Member, key: str) -> None:
    end = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < end:
        try:
            status, _, _ = member.running.request("GET", f"/v1/kv/{key}?stale", timeout_s=1.0)
        except OSError:
            status = 0
        if status == 200:
            return
        time.sleep(POLL_S)
    raise RuntimeError(f"{member.name} did not catch up with {key}")


def one_failover(pool: GossipPool, runs: Runs, tag: str) -> None:
    old = agreed_leader(pool.members, START_DEADLINE_S)
    victim = member_at(pool, old)
    survivors = [m for m in pool.members if m is not victim]
    key = f"bench/failover/{tag}"
    written: list[float] = []
    t0 = time.monotonic()
    pool.kill(victim)
    writer = threading.Thread(target=time_first_write, args=(survivors[0], key, t0, written))
    writer.start()
    runs.leader_s.append(time_new_leader(survivors, old, t0))
    writer.join()
    if not written:
        raise RuntimeError(f"no write acknowledged within {FAILOVER_DEADLINE_S}s")
    runs.write_s.append(written[0])
    pool.start(victim)
    wait_caught_up(victim, key)


def report(results: dict[int, Runs], count: int) -> None:
    print(f"Leader kill -9 with 3 server agents on loopback, {count} runs per multiplier")
    print(f"{'':>28}" + "".join(f"{f'multiplier {m}':>16}" for m in MULTIPLIERS) + f"{'ratio':>8}")
    for label, pick in (("new leader", "leader_s"), ("first write OK", "write_s")):
        for stat_name, stat in (("median", statistics.median), ("max", max)):
            values = [stat(getattr(results[m], pick)) for m in MULTIPLIERS]
            cells = "".join(f"{v:>15.2f}s" for v in values)
            print(f"{label + ' ' + stat_name:>28}{cells}{values[1] / values[0]:>8.2f}")
    timeouts = []
    for m in MULTIPLIERS:
        timeout = params_from_multiplier(m).election_timeout
        timeouts.append(f"{f'{timeout:g}-{2 * timeout:g}s':>16}")
    print(f"{'election timeout (params)':>28}{''.join(timeouts)}")
    print(
        f"(ratio = multiplier {MULTIPLIERS[1]} / multiplier {MULTIPLIERS[0]}; polling every ~20 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--base", type=int, default=201, help="first address 127.0.0.<base>")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raft-failover-bench-") as tmp:
        pools = {
            m: server_pool(Path(tmp) / f"m{m}", args.base + 4 * i, m)
            for i, m in enumerate(MULTIPLIERS)
        }
        results = {m: Runs() for m in MULTIPLIERS}
        try:
            for pool in pools.values():
                pool.start_all()
            for run in range(args.runs):
                for m in MULTIPLIERS if run % 2 == 0 else reversed(MULTIPLIERS):
                    one_failover(pools[m], results[m], f"m{m}-{run}")
                    print(
                        f"run {run + 1} multiplier {m}: leader {results[m].leader_s[-1]:.2f}s, "
                        f"write {results[m].write_s[-1]:.2f}s",
                        flush=True,
                    )
        finally:
            for pool in pools.values():
                pool.stop_all()
    report(results, args.runs)


if __name__ == "__main__":
    main()
