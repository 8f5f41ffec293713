"""Seeded Raft simulations: safety after every event, linearizable KV histories.

Replay one seed with `pytest tests/sim/raft/test_raft_sim.py --seed=N` (add
`-k <scenario>` for one scenario; RAFT_SIM_SEED=N works too). Run many with
`--sim-seeds 1000` or RAFT_SIM_SEEDS=1000, from RAFT_SIM_SEED_START=... if set;
`-n` is not needed: a seed takes about a quarter of a second.
"""

from __future__ import annotations

import os

import pytest

from tests.lincheck import check, lock_safety
from tests.sim.raft.raft_harness import LOCK_KEY, SimConfig, Simulation, SimViolation

SCENARIOS: dict[str, SimConfig] = {
    "3-servers": SimConfig(servers=3),
    "5-servers": SimConfig(servers=5),
    "3-membership": SimConfig(servers=3, membership=True),
    "5-membership": SimConfig(servers=5, membership=True, crashes=True),
    "3-lossy": SimConfig(servers=3, drop=0.15, duplicate=0.1, slow_fraction=0.2),
    # Frozen leaders that wake up believing they still lead, read-heavy clients
    # on one key: the schedule that exposes stale reads.
    "3-stale-leader": SimConfig(
        servers=3,
        clients=6,
        keys=("x",),
        read_fraction=0.5,
        crashes=False,
        stall_range=(1.0, 4.0),
        stall_leader_bias=0.9,
    ),
    # Transactions: every write sets all keys in one entry, every read reads
    # them all at one read index, under crashes, partitions and stalls.
    "3-txn": SimConfig(servers=3, multi_key=True, keys=("x", "y", "z")),
    # New leaders keep dying soon after election, leaving divergent uncommitted
    # tails of several terms behind (the schedule of the Raft paper's Figure 8).
    "5-leader-churn": SimConfig(
        servers=5,
        nemesis_interval=(0.3, 1.5),
        crash_leader_bias=0.9,
        restart_range=(0.1, 1.5),
        crash_before_sync=0.01,
        transfers=False,
        stalls=False,
    ),
    # Lock holders beside the KV clients, under crashes, partitions and
    # stalls: acquisitions and releases through the log never overlap.
    "3-locks": SimConfig(servers=3, lock_clients=4, stall_leader_bias=0.8),
}
# Seeds per scenario in a default run: about 15 s on a laptop core, well under a
# minute on slow CI cores. Thousands run locally with --sim-seeds.
DEFAULT_SEEDS = {
    "3-servers": 12,
    "5-servers": 8,
    "3-membership": 8,
    "5-membership": 6,
    "3-lossy": 6,
    "3-stale-leader": 8,
    "3-txn": 8,
    "5-leader-churn": 8,
    "3-locks": 8,
}


def _option(config: pytest.Config, name: str) -> int | None:
    try:
        value = config.getoption(name)
    except ValueError:  # not registered (tests/sim/conftest.py not loaded)
        return None
    return value if isinstance(value, int) else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" not in metafunc.fixturenames:
        return
    chosen = _option(metafunc.config, "--seed")
    if chosen is None and os.environ.get("RAFT_SIM_SEED"):
        chosen = int(os.environ["RAFT_SIM_SEED"])
    # Many seeds: --sim-seeds N (when above a scenario's default) or RAFT_SIM_SEEDS=N.
    many = max(
        _option(metafunc.config, "--sim-seeds") or 0, int(os.environ.get("RAFT_SIM_SEEDS", "0"))
    )
    start = int(os.environ.get("RAFT_SIM_SEED_START", "0"))
    params = []
    for name in SCENARIOS:
        if chosen is not None:
            seeds = [chosen]
        elif many > DEFAULT_SEEDS[name]:
            seeds = list(range(start, start + many))
        else:
            seeds = list(range(start, start + DEFAULT_SEEDS[name]))
        params += [pytest.param(name, s, id=f"{name}-seed{s}") for s in seeds]
    metafunc.parametrize(("scenario", "seed"), params)


def run_seed(scenario: str, seed: int) -> Simulation:
    sim = Simulation(seed, SCENARIOS[scenario])
    try:
        sim.run()
        result = check(sim.history)
        if not result.ok:
            raise SimViolation(
                f"history for key {result.key!r} is not linearizable "
                f"(longest linearizable prefix {len(result.partial)} ops)"
            )
        overlap = lock_safety(sim.history, LOCK_KEY)
        if overlap is not None:
            raise SimViolation(f"lock safety: {overlap}")
    except Exception as exc:
        raise AssertionError(
            f"raft simulation {scenario} failed for seed {seed}: {exc}\n"
            f"replay: pytest tests/sim/raft/test_raft_sim.py -k {scenario} --seed={seed}\n"
            f"last events:\n{sim.describe()}"
        ) from exc
    return sim


def test_simulation(scenario: str, seed: int) -> None:
    sim = run_seed(scenario, seed)
    # The run must have done real work, or it proves nothing.
    counts = sim.counters
    writes = counts.get("ok_put", 0) + counts.get("ok_cas", 0) + counts.get("ok_mput", 0)
    assert writes > 20, counts
    assert counts.get("ok_get", 0) + counts.get("ok_mget", 0) > 5, counts
    if SCENARIOS[scenario].lock_clients:
        acquired = [
            op
            for op in sim.history
            if op.key == LOCK_KEY and op.input[0] is None and op.output is True
        ]
        assert len({op.client for op in acquired}) > 1, sim.counters
