"""The fault suite's nemesis: a seeded fault schedule and the task that carries it out.

Job: `ci_plan` draws the short run's faults — one leader kill, one follower
kill, one SIGSTOP of the leader and, when partitions are possible, a partition
of the leader and one of a follower — in a seeded order with seeded durations; `long_plan` draws an
endless stream from the whole menu (kill, stop, partition of the leader or a
follower). `Nemesis.run` applies them one at a time: it waits until the
cluster is healthy (every host up and connected, one agreed leader), picks the
host the plan names (the leader, or the first/second follower by name), applies
the fault, waits its duration, heals it (restart on the same data dir, SIGCONT,
link up) and records a `history.Fault` with start and heal times.

Rules: every random choice comes from the `random.Random` passed in, so a seed
replays the schedule (which host leads at each step is up to the cluster);
blocking cluster calls run in a thread so the workload's event loop keeps
time; each wait for health has a deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from tests.chaos.cluster import ChaosCluster, Host
from tests.chaos.history import Fault


@dataclass(frozen=True)
class Timing:
    """Ranges, in seconds, drawn uniformly: time down, frozen, cut, and quiet after."""

    kill: tuple[float, float]
    stop: tuple[float, float]
    partition: tuple[float, float]
    pause: tuple[float, float]


CI_TIMING = Timing(kill=(1.0, 2.0), stop=(2.0, 4.0), partition=(3.0, 5.0), pause=(2.0, 3.0))
LONG_TIMING = Timing(kill=(3.0, 10.0), stop=(5.0, 15.0), partition=(5.0, 15.0), pause=(3.0, 8.0))


@dataclass(frozen=True)
class FaultPlan:
    kind: str  # "kill" | "stop" | "partition"
    role: str  # "leader" | "follower"
    duration_s: float
    pause_s: float
    pick: int  # which follower, by name order, when role is "follower"


def _plan(rng: random.Random, kind: str, role: str, timing: Timing) -> FaultPlan:
    low, high = getattr(timing, kind)
    return FaultPlan(
        kind,
        role,
        round(rng.uniform(low, high), 2),
        round(rng.uniform(*timing.pause), 2),
        rng.randrange(2),
    )


def ci_plan(rng: random.Random, partitions: bool, timing: Timing = CI_TIMING) -> list[FaultPlan]:
    required = [("kill", "leader"), ("kill", "follower"), ("stop", "leader")]
    if partitions:
        required += [("partition", "leader"), ("partition", "follower")]
    rng.shuffle(required)
    return [_plan(rng, kind, role, timing) for kind, role in required]


def long_plan(
    rng: random.Random, partitions: bool, timing: Timing = LONG_TIMING
) -> Iterator[FaultPlan]:
    kinds = ["kill", "stop", *(["partition"] if partitions else [])]
    while True:
        yield _plan(rng, rng.choice(kinds), rng.choice(["leader", "follower"]), timing)


class Nemesis:
    def __init__(
        self,
        cluster: ChaosCluster,
        heal_deadline_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.heal_deadline_s = heal_deadline_s
        self.clock = clock
        self.faults: list[Fault] = []

    async def run(self, plans: Iterable[FaultPlan], until: float | None = None) -> None:
        """Apply `plans` in order; stop before a fault that would start after `until`."""
        for plan in plans:
            if until is not None and self.clock() >= until:
                return
            leader = await asyncio.to_thread(self.cluster.wait_healthy, self.heal_deadline_s)
            followers = sorted(
                (h for h in self.cluster.servers if h is not leader), key=lambda h: h.name
            )
            host = leader if plan.role == "leader" else followers[plan.pick % len(followers)]
            fault = Fault(plan.kind, plan.role, host.name, self.clock(), duration_s=plan.duration_s)
            self.faults.append(fault)
            await self._apply(plan, host)
            fault.end = self.clock()
            await asyncio.sleep(plan.pause_s)
        await asyncio.to_thread(self.cluster.wait_healthy, self.heal_deadline_s)

    async def _apply(self, plan: FaultPlan, host: Host) -> None:
        cluster = self.cluster
        if plan.kind == "kill":
            await asyncio.to_thread(cluster.kill, host)
            await asyncio.sleep(plan.duration_s)
            await asyncio.to_thread(cluster.restart, host)
        elif plan.kind == "stop":
            cluster.freeze(host)
            try:
                await asyncio.sleep(plan.duration_s)
            finally:
                cluster.thaw(host)
        elif plan.kind == "partition":
            await asyncio.to_thread(cluster.cut_off, host)
            try:
                await asyncio.sleep(plan.duration_s)
            finally:
                await asyncio.to_thread(cluster.mend, host)
        else:
            raise ValueError(f"unknown fault kind {plan.kind!r}")
