"""Gossip with real agent processes: 30 agents on loopback, failure detection and idle cost.

Starts N `proconsul agent` processes (clients, encrypted gossip), each on its
own loopback address 127.0.0.<base+i>, all joining through two seeds, and
measures:

- failure detection: `kill -9` one member at a time (10 kills by default) and
  read, from every survivor's log, when it declared the member failed
  (`EventMemberFailed`); per kill the time until the first and until the last
  survivor knew; then restart the member and wait until everyone has it back;
- idle cost: CPU (user + system, from /proc) per agent over an idle window once
  the pool has settled, and resident memory (VmRSS) per agent.

Baselines printed in the same run, side by side with ratios:

- the parameter-derived bound the tests assert (a dead member probed last in a
  freshly shuffled round, probe timeout, the full Lifeguard suspicion maximum,
  plus a second of slack), and the Lifeguard minimum;
- memberlist's documented expectation: the first probe of a dead member comes
  after about T * e/(e-1) (SWIM, T = probe interval), that probe fails within
  one more interval, then the suspicion timeout SuspicionMult * log10(N) * T
  (memberlist's formula, at least SuspicionMult * T) which Lifeguard's
  independent confirmations bring down to that minimum.

Log timestamps have millisecond resolution; the kill time is taken just before
the signal. Benchmarks assert nothing.

Usage: .venv/bin/python bench/gossip_agents.py [--agents 30] [--kills 10]
       [--profile lan|local] [--idle 20] [--base 100]
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.agent_process import wait_for
from tests.gossip_agents import GossipPool, Member, detection_bound

from proconsul.gossip.params import suspicion_max_timeout, suspicion_min_timeout

_STAMP = re.compile(r"^(\S+Z) \[INFO\]\s+agent: serf: (EventMember\w+): (\S+) ")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def event_times(member: Member, kind: str, subject: str, since: float) -> list[float]:
    """Wall-clock times at which `member` logged `kind` about `subject`, after `since`."""
    found = []
    agent = member.running
    for line in agent.log_text().splitlines():
        match = _STAMP.match(line)
        if match is None or match.group(2) != kind or match.group(3) != subject:
            continue
        when = datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
        if when >= since - 0.001:
            found.append(when)
    return found


def detect(pool: GossipPool, victim: Member, deadline_s: float) -> tuple[float, float]:
    """Kill `victim`; seconds until the first and the last survivor declared it failed."""
    survivors = [m for m in pool.running() if m is not victim]
    start = time.time()
    pool.kill(victim)
    seen: dict[str, float] = {}

    def everyone() -> bool:
        for member in survivors:
            if member.name not in seen:
                times = event_times(member, "EventMemberFailed", victim.name, start)
                if times:
                    seen[member.name] = times[0]
        return len(seen) == len(survivors)

    wait_for(everyone, deadline_s, interval_s=0.5)
    delays = [t - start for t in seen.values()]
    return min(delays), max(delays)


def rejoin(pool: GossipPool, victim: Member, deadline_s: float) -> float:
    survivors = [m for m in pool.running() if m is not victim]
    start = time.time()
    pool.start(victim)

    def everyone() -> bool:
        return all(event_times(m, "EventMemberJoin", victim.name, start) for m in survivors)

    wait_for(everyone, deadline_s, interval_s=0.5)
    return time.time() - start


def idle_cost(pool: GossipPool, seconds: float) -> tuple[list[float], list[float]]:
    pids = [m.running.proc.pid for m in pool.members]
    before = [cpu_seconds(pid) for pid in pids]
    t0 = time.monotonic()
    time.sleep(seconds)  # the measurement window itself
    elapsed = time.monotonic() - t0
    cpu = [100.0 * (cpu_seconds(pid) - b) / elapsed for pid, b in zip(pids, before, strict=True)]
    return cpu, [rss_mb(pid) for pid in pids]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=30)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--profile", choices=("lan", "local"), default="lan")
    parser.add_argument("--idle", type=float, default=20.0, help="idle window, seconds")
    parser.add_argument("--base", type=int, default=100, help="first address 127.0.0.<base>")
    args = parser.parse_args()
    n = args.agents
    key = base64.b64encode(os.urandom(32)).decode()
    tmp = Path(tempfile.mkdtemp(prefix="gossip-bench-"))
    pool = GossipPool(tmp, n, base=args.base, key=key, profile=args.profile, seeds=["n0", "n1"])
    p = pool.params
    bound = detection_bound(p, n)
    low = suspicion_min_timeout(p.suspicion_mult, n, p.probe_interval)
    high = suspicion_max_timeout(p.suspicion_max_timeout_mult, low)
    first_probe = p.probe_interval * math.e / (math.e - 1)
    # SWIM: the failed probe takes one more interval before the member is suspected.
    memberlist_expect = first_probe + p.probe_interval + low
    print(f"# {n} agents, profile {args.profile}: probe {p.probe_interval}s, "
          f"timeout {p.probe_timeout}s, suspicion {low:.2f}..{high:.2f}s, encrypted")  # fmt: skip
    try:
        started = time.monotonic()
        for member in pool.members:
            pool.start(member)
        pool.wait_statuses({m.name: "alive" for m in pool.members}, 120, viewers=pool.members)
        print(f"started and converged in {time.monotonic() - started:.1f}s")
        time.sleep(max(5.0, 2 * p.probe_interval * 3))  # let start-up work settle
        cpu, rss = idle_cost(pool, args.idle)
        print(f"idle CPU per agent over {args.idle:.0f}s: median {statistics.median(cpu):.2f}% "
              f"max {max(cpu):.2f}%  (pool total {sum(cpu):.1f}% of one core)")  # fmt: skip
        print(f"RSS per agent: median {statistics.median(rss):.1f} MB, max {max(rss):.1f} MB")
        firsts: list[float] = []
        lasts: list[float] = []
        victims = [
            pool.members[2 + (i * (n - 2)) // args.kills % (n - 2)] for i in range(args.kills)
        ]
        for i, victim in enumerate(victims, 1):
            first, last = detect(pool, victim, bound * 3)
            firsts.append(first)
            lasts.append(last)
            back = rejoin(pool, victim, 60)
            print(f"kill {i:2d} {victim.name:>4}: first {first:5.2f}s  all {last:5.2f}s  "
                  f"(back in {back:.1f}s)")  # fmt: skip
        med, worst = statistics.median(lasts), max(lasts)
        print()
        print("failure detection (until every survivor knew), over", len(lasts), "kills:")
        print(f"  median {med:.2f}s  max {worst:.2f}s  (first survivor: median "
              f"{statistics.median(firsts):.2f}s)")  # fmt: skip
        print(f"  parameter-derived bound {bound:.2f}s   -> max/bound {worst / bound:.2f}")
        ratio = med / memberlist_expect
        print(f"  memberlist expectation T*e/(e-1) + T + SuspicionMult*log10(N)*T = "
              f"{memberlist_expect:.2f}s   -> median/expectation {ratio:.2f}")  # fmt: skip
        print(f"  without Lifeguard confirmations (maximum suspicion) "
              f"{first_probe + p.probe_interval + high:.2f}s")  # fmt: skip
    finally:
        pool.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
