"""One fault-suite run end to end, and the verdicts on it.

Job: `run_chaos` starts the cluster (tests/chaos/cluster.py), runs the workload
(workload.py) and the nemesis (nemesis.py) together, then heals every fault,
lets the cluster settle and collects what the checks need: a final consistent
read of every register, the unique keys the leader has (`?consistent`) and
each server has (`?stale`), each server's `?stale` listing of `chaos/` with
ModifyIndexes (polled until they agree, with a deadline), and the agents' logs.
`judge` turns that into verdicts (history.py has the checks); `summary` prints
them as a table.

The checks:
1. no acknowledged write lost, in the leader's consistent view and in each
   server's own;
2. every register history linearizable, consistent reads included;
3. replicas identical after healing;
4. no request unanswered past rpc_hold_timeout plus a margin while a leader
   existed (with the faults around each one, and its cause);
5. no traceback in the agents' logs for an expected failure;
plus unavailability per fault type and counts of operations.

Rules: the cluster is closed whatever happens; the seed is in every summary;
every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.cluster import ChaosCluster, Host
from tests.chaos.history import (
    OK,
    Event,
    Fault,
    Hang,
    LeaderSample,
    Traceback,
    acked_keys,
    check_registers,
    describe_hang,
    hangs,
    lost_writes,
    summarize,
    tracebacks,
    unavailability_by_fault,
)
from tests.chaos.nemesis import CI_TIMING, LONG_TIMING, Nemesis, ci_plan, long_plan
from tests.chaos.workload import Workload, WorkloadConfig
from tests.lincheck import Result

HOLD_S = 7.0  # performance.rpc_hold_timeout's default, which the agents run with
CONVERGE_DEADLINE_S = 30.0
READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ChaosConfig:
    seed: int
    long: bool = False
    minutes: float = 0.0  # long run: faults start until this much time has passed
    base: int = 231  # loopback hosts on 127.0.0.<base>..<base+3>
    want_partitions: bool = True
    warmup_s: float = 2.0
    hold_s: float = HOLD_S
    margin_s: float = 3.0
    settle_s: float = 3.0  # unavailability is measured until this long after a heal
    heal_deadline_s: float = 30.0
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)


@dataclass
class ChaosRun:
    config: ChaosConfig
    tmp: Path
    t0: float = 0.0
    wall_s: float = 0.0
    partition_note: str = ""
    events: list[Event] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    samples: list[LeaderSample] = field(default_factory=list)
    nemesis_error: str = ""
    views: dict[str, set[str]] = field(default_factory=dict)  # view -> unique keys
    listings: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)


@dataclass
class Verdicts:
    lost: dict[str, list[str]]
    linearizable: dict[str, Result | None]  # None: undecided (search budget spent)
    replica_diffs: list[str]
    hangs: list[Hang]
    tracebacks: list[Traceback]
    unavailability: dict[str, list[float]]
    counts: dict[str, int]

    @property
    def not_linearizable(self) -> list[str]:
        """Keys found not linearizable, or left undecided."""
        return [key for key, result in self.linearizable.items() if result is None or not result.ok]


# ----- running -------------------------------------------------------------------------------


def run_chaos(tmp: Path, config: ChaosConfig) -> ChaosRun:
    """The whole run (blocking); the cluster is gone when it returns."""
    started = time.monotonic()
    run = ChaosRun(config, tmp)
    cluster = ChaosCluster(tmp / "agents", base=config.base, want_partitions=config.want_partitions)
    run.partition_note = cluster.partition_note
    try:
        cluster.start_all()
        asyncio.run(_exercise(cluster, run))
        _collect(cluster, run)
    finally:
        cluster.close()
        for host in cluster.hosts:
            for path in host.logs:
                if path.exists():
                    run.logs[path.name] = path.read_text(errors="replace")
    run.wall_s = time.monotonic() - started
    save_history(run, tmp / "history.json")
    return run


def save_history(run: ChaosRun, path: Path) -> None:
    """Events, faults and leader samples as JSON, to study a verdict afterwards."""
    record = {
        "seed": run.config.seed,
        "t0": run.t0,
        "events": [dataclasses.asdict(e) for e in run.events],
        "faults": [dataclasses.asdict(f) for f in run.faults],
        "samples": [dataclasses.asdict(s) for s in run.samples],
    }
    path.write_text(json.dumps(record, default=str))


def load_history(path: Path) -> tuple[list[Event], list[Fault], list[LeaderSample], float]:
    record = json.loads(path.read_text())
    events = [Event(**e) for e in record["events"]]
    faults = [Fault(**f) for f in record["faults"]]
    samples = [LeaderSample(**s) for s in record["samples"]]
    return events, faults, samples, float(record["t0"])


async def _exercise(cluster: ChaosCluster, run: ChaosRun) -> None:
    config = run.config
    rng = random.Random(config.seed)
    workload = Workload(cluster, random.Random(rng.randrange(2**32)), config.workload)
    run.t0 = workload.t0
    run.events, run.samples = workload.events, workload.samples
    nemesis = Nemesis(cluster, config.heal_deadline_s)
    run.faults = nemesis.faults
    traffic = asyncio.create_task(workload.run())
    try:
        await asyncio.sleep(config.warmup_s)
        if config.long:
            plans = long_plan(rng, cluster.partitions, LONG_TIMING)
            until = time.monotonic() + 60 * config.minutes
            await nemesis.run(plans, until)
        else:
            await nemesis.run(ci_plan(rng, cluster.partitions, CI_TIMING))
        await asyncio.sleep(config.settle_s)  # the last fault's aftermath is measured too
    except AssertionError as exc:  # the cluster did not recover in time
        run.nemesis_error = str(exc)
    finally:
        workload.stop()
        await asyncio.to_thread(cluster.heal_all)
        try:
            await asyncio.wait_for(traffic, config.workload.request_timeout_s + 5)
        except TimeoutError:
            run.nemesis_error += "; the workload did not stop in time"


def _collect(cluster: ChaosCluster, run: ChaosRun) -> None:
    """After healing: final register reads, unique keys per view, converged listings."""
    try:
        leader = cluster.wait_healthy(run.config.heal_deadline_s)
    except AssertionError as exc:
        run.nemesis_error += f"; not healthy after healing: {exc}"
        return
    registers = sorted({e.key for e in run.events if e.kind in ("read", "put", "cas")})
    for key in registers:
        event = Event("final", "read", key, leader.name, time.monotonic())
        status, body = leader.get(f"/v1/kv/{key}?consistent", READ_TIMEOUT_S)
        event.complete = time.monotonic()
        if status in (200, 404):
            event.outcome = OK
            event.value = (
                base64.b64decode(json.loads(body)[0]["Value"] or "").decode()
                if status == 200
                else None
            )
            run.events.append(event)
    status, body = leader.get("/v1/kv/chaos/w/?keys&consistent", READ_TIMEOUT_S)
    run.views[f"{leader.name} (leader) ?consistent"] = (
        set(json.loads(body)) if status == 200 else set()
    )
    end = time.monotonic() + CONVERGE_DEADLINE_S
    while True:
        run.listings = {h.name: _listing(h) for h in cluster.servers}
        if len({json.dumps(sorted(v.items())) for v in run.listings.values()}) == 1:
            break
        if time.monotonic() > end:
            break
        time.sleep(0.2)
    for name, listing in run.listings.items():
        run.views[f"{name} ?stale"] = {k for k in listing if k.startswith("chaos/w/")}


def _listing(host: Host) -> dict[str, tuple[int, str]]:
    status, body = host.get("/v1/kv/chaos/?recurse&stale", READ_TIMEOUT_S)
    if status == 404:
        return {}
    if status != 200:
        return {"<error>": (status, body[:200].decode(errors="replace"))}
    return {
        row["Key"]: (int(row["ModifyIndex"]), base64.b64decode(row["Value"] or "").decode())
        for row in json.loads(body)
    }


# ----- judging -------------------------------------------------------------------------------


def judge(run: ChaosRun) -> Verdicts:
    config = run.config
    diffs: list[str] = []
    listings = run.listings
    if not listings:
        diffs.append("no listing collected (the cluster did not heal)")
    else:
        names = sorted(listings)
        first = listings[names[0]]
        for name in names[1:]:
            other = listings[name]
            for key in sorted(set(first) | set(other)):
                if first.get(key) != other.get(key):
                    diffs.append(f"{key}: {names[0]} {first.get(key)} != {name} {other.get(key)}")
    found: list[Traceback] = []
    for source, text in sorted(run.logs.items()):
        found += tracebacks(source, text)
    counts = {
        "operations": len(run.events),
        "acked unique writes": len(acked_keys(run.events)),
    }
    for outcome in ("ok", "fail", "unknown"):
        counts[f"outcome {outcome}"] = sum(e.outcome == outcome for e in run.events)
    return Verdicts(
        lost=lost_writes(run.events, run.views) if run.views else {"<no view>": ["-"]},
        linearizable=check_registers(run.events),
        replica_diffs=diffs,
        hangs=hangs(run.events, run.faults, run.samples, config.hold_s, config.margin_s, run.t0),
        tracebacks=found,
        unavailability=unavailability_by_fault(run.events, run.faults, config.settle_s),
        counts=counts,
    )


def summary(run: ChaosRun, verdicts: Verdicts) -> str:
    config = run.config
    lines = [
        f"chaos run: seed {config.seed} (CHAOS_SEED={config.seed} replays the schedule), "
        f"{run.wall_s:.0f}s wall, agents' logs in {run.tmp}",
        f"partitions: {'on' if not run.partition_note else 'skipped: ' + run.partition_note}",
    ]
    if run.nemesis_error:
        lines.append(f"RECOVERY FAILED: {run.nemesis_error}")
    lines.append("faults:")
    lines += [f"  {f.describe(run.t0)}" for f in run.faults]
    lines.append(f"{'fault':<20}{'count':>6}{'unavail. median':>17}{'max':>9}")
    for name, values in sorted(verdicts.unavailability.items()):
        med, top = summarize(values)
        lines.append(f"{name:<20}{len(values):>6}{_s(med):>17}{_s(top):>9}")
    for name, value in verdicts.counts.items():
        lines.append(f"{name:<28}{value:>8}")
    lost = sum(len(v) for v in verdicts.lost.values())
    lines.append(f"{'lost acked writes':<28}{lost:>8}")
    lin = verdicts.linearizable
    lines.append(
        f"{'registers linearizable':<28}{sum(bool(r and r.ok) for r in lin.values()):>8} "
        f"of {len(lin)}"
        + (
            f"  NOT (or undecided): {verdicts.not_linearizable}"
            if verdicts.not_linearizable
            else ""
        )
    )
    lines.append(f"{'replica differences':<28}{len(verdicts.replica_diffs):>8}")
    causes = Counter(h.cause for h in verdicts.hangs)
    lines.append(
        f"{'hangs past hold + margin':<28}{len(verdicts.hangs):>8}"
        + (f"  ({', '.join(f'{n} {c}' for c, n in sorted(causes.items()))})" if causes else "")
    )
    lines += [f"  {describe_hang(h, run.t0)}" for h in verdicts.hangs[:20]]
    known_tb = sum(t.known for t in verdicts.tracebacks)
    lines.append(
        f"{'tracebacks in logs':<28}{len(verdicts.tracebacks):>8}"
        f"  ({known_tb} Apply handler ConnectionError, {len(verdicts.tracebacks) - known_tb} other)"
    )
    lines += [
        f"  {t.source}: {t.header.strip()} ... {t.exception}"
        for t in verdicts.tracebacks
        if not t.known
    ][:20]
    return "\n".join(lines)


def _s(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.2f}s"
