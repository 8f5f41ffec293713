"""A modelled topology for network coordinates, shared by the sim test and the bench.

Members sit at random points of a plane (positions in seconds) and each has an
access-link delay; the true round trip between two members is the distance of
their points plus both access delays, and each direction of it takes half.
Vivaldi's space (8 dimensions plus a height) can express such a topology, so
its estimates should approach the truth; jitter on every packet keeps the
measurements noisy, as real ones are.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from proconsul.gossip import GossipParams
from tests.sim.gossipnet import NetConfig, Simulation, start_pool


@dataclass(frozen=True)
class Topology:
    points: dict[str, tuple[float, float]]
    access_s: dict[str, float]

    def rtt_s(self, a: str, b: str) -> float:
        (xa, ya), (xb, yb) = self.points[a], self.points[b]
        return math.hypot(xa - xb, ya - yb) + self.access_s[a] + self.access_s[b]

    def one_way_s(self, a: str, b: str) -> float:
        return self.rtt_s(a, b) / 2


def topology(names: Sequence[str], rng: random.Random, span_s: float = 0.05) -> Topology:
    """Points in a `span_s` square, access delays of 0.2..2 ms."""
    return Topology(
        points={name: (rng.uniform(0, span_s), rng.uniform(0, span_s)) for name in names},
        access_s={name: rng.uniform(0.0002, 0.002) for name in names},
    )


def median_relative_error(sim: Simulation, topo: Topology, names: Sequence[str]) -> float:
    """Median over every pair of |estimate - true| / true, estimates from the coordinates."""
    errors = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            estimate = sim.nodes[a].core.coordinate().distance_s(sim.nodes[b].core.coordinate())
            true = topo.rtt_s(a, b)
            errors.append(abs(estimate - true) / true)
    return statistics.median(errors)


def run_pool(
    seed: int, n: int, params: GossipParams, duration_s: float
) -> tuple[Simulation, Topology, list[str], list[tuple[float, float]]]:
    """A pool of n members on the modelled topology, run for `duration_s`;
    also the median relative error sampled every 10% of the run."""
    names = [f"node-{i:04d}" for i in range(n)]
    topo = topology(names, random.Random(seed))
    sim = Simulation(seed, params, NetConfig(latency=topo.one_way_s), track_views=False)
    start_pool(sim, n)
    curve: list[tuple[float, float]] = []
    step = duration_s / 10
    for _ in range(10):
        sim.run_for(step)
        curve.append((sim.now, median_relative_error(sim, topo, names)))
    return sim, topo, names, curve
