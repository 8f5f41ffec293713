"""Gossip convergence at Consul's LAN defaults, simulated, against SWIM's model.

Runs the real GossipCore on the deterministic simulator (tests/sim) for pools
of N members and measures, per N:

- failure: crash one member; time until the first member declares it failed,
  and until 99.9% of the others have;
- join: a new member joins through one seed; time until 99.9% know it;
- traffic: datagrams and bytes each member sends per second, at rest and
  while the failure and join spread (plaintext; sealing adds 29 bytes each).

Baselines computed in the same run, printed side by side as ratios:

- SWIM's infection model: each informed member tells `gossip_nodes` random
  members every `gossip_interval`; the expected informed fraction follows
  x' = 1 - (1 - x) * exp(-fanout * x). Time to 99.9% of N is the dissemination
  floor any SWIM gossip can reach (it ignores retransmit limits and loss).
- SWIM's failure-detection expectation: the first probe of a dead member comes
  after T * 1/(1 - 1/e) on average (T = probe interval), then one interval of
  probing, then the Lifeguard suspicion timeout, between its min and max.
- memberlist/serf's published figure: about 2 s to reach 99.9% of a 1,000-node
  pool with 200 ms gossip to 3 members.

Usage: .venv/bin/python bench/gossip_sim.py [--sizes 10,100,1000] [--seed N] [--loss P]
"""

from __future__ import annotations

import argparse
import gc
import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The simulator lives with the tests; run from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sim.gossipnet import NetConfig, Simulation

from proconsul.gossip import GossipParams, Member, State, lan
from proconsul.gossip.actions import MemberEvent, MemberEventKind
from proconsul.gossip.params import (
    suspicion_max_timeout,
    suspicion_min_timeout,
)

PUBLISHED_1000_SECONDS = 2.0
QUANTILE = 0.999


@dataclass
class Result:
    n: int
    detect_first: float
    detect_999: float
    join_999: float
    idle_msgs: float
    idle_bytes: float
    busy_msgs: float
    busy_bytes: float
    wall: float
    rss_mb: float


def epidemic_time(n: int, fanout: int, interval: float, quantile: float = QUANTILE) -> float:
    """SWIM/epidemic model: time for one piece of news to reach `quantile` of n."""
    if n <= 1:
        return 0.0
    x = 1.0 / n
    rounds = 0
    while x < quantile and rounds < 10_000:
        x = 1.0 - (1.0 - x) * math.exp(-fanout * x)
        rounds += 1
    return rounds * interval


def detection_expectation(p: GossipParams, n: int) -> tuple[float, float]:
    first_probe = p.probe_interval / (1.0 - math.exp(-1.0))
    lo = suspicion_min_timeout(p.suspicion_mult, n, p.probe_interval)
    hi = suspicion_max_timeout(p.suspicion_max_timeout_mult, lo)
    return first_probe + p.probe_interval + lo, first_probe + p.probe_interval + hi


def warm_pool(sim: Simulation, n: int) -> list[str]:
    """n members that already know each other (as after a restore), no announcements."""
    names = [f"node-{i:05d}" for i in range(n)]
    for name in names:
        sim.add_node(name)
    members = [
        Member(name, sim.nodes[name].addr, sim.nodes[name].tags, 0, State.ALIVE) for name in names
    ]
    for name in names:
        node = sim.nodes[name]
        node.core.restore(members, sim.now)
        node.core.take_actions()  # the n join events: nothing to learn from them
        sim._after(node)
    return names


def run(n: int, seed: int, loss: float) -> Result:
    started = time.perf_counter()
    params = lan()
    sim = Simulation(seed, params, NetConfig(loss=loss), record_events=False, track_views=False)
    names = warm_pool(sim, n)
    gc.collect()
    gc.freeze()  # a million long-lived records: keep the collector off them

    sim.run_for(10.0)  # settle
    t0, p0, b0 = sim.now, sim.udp_packets, sim.udp_bytes
    sim.run_for(10.0)
    idle = (sim.now - t0) * n
    idle_msgs = (sim.udp_packets - p0) / idle
    idle_bytes = (sim.udp_bytes - b0) / idle

    victim = names[sim.rng.randrange(n)]
    failed_at: dict[str, float] = {}
    joined_at: dict[str, float] = {}
    newcomer = "node-new"

    def listen(now: float, viewer: str, event: MemberEvent) -> None:
        who = event.member.name
        if who == victim and event.kind is MemberEventKind.FAIL:
            failed_at.setdefault(viewer, now)
        elif who == newcomer and event.kind is MemberEventKind.JOIN:
            joined_at.setdefault(viewer, now)

    sim.listeners.append(listen)
    busy_start, p1, b1 = sim.now, sim.udp_packets, sim.udp_bytes
    crash_at = sim.now
    sim.crash(victim)
    need = math.ceil(QUANTILE * (n - 1))
    _, hi = detection_expectation(params, n)
    sim.run_until_true(lambda: len(failed_at) >= need, timeout=hi + 60.0, poll=0.1)
    detect_first = min(failed_at.values()) - crash_at
    detect_999 = sorted(failed_at.values())[need - 1] - crash_at

    seed_member = names[(names.index(victim) + 1) % n]
    join_at = sim.now
    sim.add_node(newcomer, join=[seed_member])
    need_join = math.ceil(QUANTILE * (n - 1))  # everyone alive but the newcomer
    sim.run_until_true(lambda: len(joined_at) >= need_join, timeout=120.0, poll=0.05)
    join_999 = sorted(joined_at.values())[need_join - 1] - join_at
    busy = (sim.now - busy_start) * n
    busy_msgs = (sim.udp_packets - p1) / busy
    busy_bytes = (sim.udp_bytes - b1) / busy
    gc.unfreeze()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Result(
        n,
        detect_first,
        detect_999,
        join_999,
        idle_msgs,
        idle_bytes,
        busy_msgs,
        busy_bytes,
        time.perf_counter() - started,
        rss,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated pool sizes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loss", type=float, default=0.0, help="datagram loss rate")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    p = lan()
    print(
        f"LAN defaults: probe {p.probe_interval}s/{p.probe_timeout}s, gossip "
        f"{p.gossip_interval}s x {p.gossip_nodes}, suspicion mult {p.suspicion_mult} "
        f"(max x{p.suspicion_max_timeout_mult}), retransmit mult {p.retransmit_mult}; "
        f"loss {args.loss:.0%}; seed {args.seed}"
    )
    header = (
        f"{'N':>6} | {'fail: 1st':>9} {'99.9%':>7} {'spread':>7} {'SWIM exp':>13} | "
        f"{'join 99.9%':>10} {'model':>6} {'ratio':>6} | {'idle msg/s':>10} {'B/s':>6} | "
        f"{'busy msg/s':>10} {'B/s':>6} | {'wall':>6} {'RSS MB':>7}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        r = run(n, args.seed, args.loss)
        lo, hi = detection_expectation(p, n)
        model = epidemic_time(n, p.gossip_nodes, p.gossip_interval)
        print(
            f"{n:>6} | {r.detect_first:>8.2f}s {r.detect_999:>6.2f}s "
            f"{r.detect_999 - r.detect_first:>6.2f}s {lo:>5.1f}-{hi:>5.1f}s | "
            f"{r.join_999:>9.2f}s {model:>5.2f}s {r.join_999 / model if model else 0:>5.2f}x | "
            f"{r.idle_msgs:>10.2f} {r.idle_bytes:>6.0f} | "
            f"{r.busy_msgs:>10.2f} {r.busy_bytes:>6.0f} | "
            f"{r.wall:>5.0f}s {r.rss_mb:>7.0f}",
            flush=True,
        )
    model_1000 = epidemic_time(1000, p.gossip_nodes, p.gossip_interval)
    print(
        f"\nSWIM infection model at N=1000: {model_1000:.2f}s to 99.9%; "
        f"memberlist/serf published: ~{PUBLISHED_1000_SECONDS:.0f}s."
    )
    print(
        "fail: 1st = crash to first 'failed' verdict; 99.9% = crash to 99.9% of members; "
        "spread = the difference (dissemination of the verdict).\n"
        "join 99.9% = join request to 99.9% of members reporting member-join; "
        "model = SWIM infection model for one broadcast; ratio = ours / model."
    )


if __name__ == "__main__":
    main()
