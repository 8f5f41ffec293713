"""Network coordinate accuracy, simulated: Vivaldi's estimates against the true RTTs.

Runs the real GossipCore (Consul's LAN defaults) on the deterministic simulator
over a modelled topology (tests/sim/coordinates.py: points in a 50 ms plane
plus per-member access delays, 5% jitter on every packet) and reports, per
pool size, the median relative error |estimate - true| / true over every pair
of members as time passes.

Baseline, computed in the same run: the naive estimate that every pair is at
the pool's mean RTT (what a client without coordinates can guess). The ratio
column is ours / naive (lower is better). Serf's published figure for real
clusters is a median error in the low percents.

Usage: .venv/bin/python bench/coordinates_sim.py [--sizes 16,64] [--seconds 300] [--seed N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sim.coordinates import run_pool

from proconsul.gossip import lan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'n':>5} {'t (s)':>7} {'median rel err':>15} {'naive':>8} {'ratio':>7}")
    for n in (int(size) for size in args.sizes.split(",")):
        started = time.perf_counter()
        _, topo, names, curve = run_pool(args.seed, n, lan(), args.seconds)
        rtts = [topo.rtt_s(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        mean = statistics.fmean(rtts)
        naive = statistics.median(abs(mean - rtt) / rtt for rtt in rtts)
        for when, error in curve:
            print(f"{n:>5} {when:>7.0f} {error:>15.3f} {naive:>8.3f} {error / naive:>7.3f}")
        print(f"      (simulated in {time.perf_counter() - started:.1f} s of wall time)")


if __name__ == "__main__":
    main()
