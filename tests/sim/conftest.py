"""Seeds for the simulation tests.

A test that takes a `seed` argument runs once per seed (unless its module has
its own `pytest_generate_tests`): seeds 0..K-1 where K is
`--sim-seeds` (default 2, to keep CI short), or only the seed given with
`--seed=N`, which is how a failure is replayed. A test marked `single_seed`
runs with the first seed only (the large scenarios). A failing run prints the
command that replays it.

The options themselves are in `options.py`, which the root conftest also
registers so that `pytest --seed=N` works from the repository root.
"""

from __future__ import annotations

from collections.abc import Generator

import pluggy
import pytest

from tests.sim.options import DEFAULT_SEED_COUNT, add_sim_options


def pytest_addoption(parser: pytest.Parser) -> None:
    add_sim_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "single_seed: run a simulation with one seed only")


def _option(config: pytest.Config, name: str, default: int | None) -> int | None:
    try:
        value = config.getoption(name)
    except ValueError:
        return default
    return value if value is None or isinstance(value, int) else default


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" not in metafunc.fixturenames:
        return
    if hasattr(metafunc.module, "pytest_generate_tests"):
        # The module picks its own seeds (the Raft simulator does); only the
        # shared --seed option is common ground.
        return
    chosen = _option(metafunc.config, "--seed", None)
    if chosen is not None:
        seeds = [chosen]
    else:
        count = _option(metafunc.config, "--sim-seeds", DEFAULT_SEED_COUNT) or DEFAULT_SEED_COUNT
        seeds = list(range(count))
        if metafunc.definition.get_closest_marker("single_seed") is not None:
            seeds = seeds[:1]
    metafunc.parametrize("seed", seeds, ids=[f"seed={s}" for s in seeds])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    if report.failed and callspec is not None and "seed" in callspec.params:
        seed = callspec.params["seed"]
        path = item.nodeid.split("[", 1)[0]
        report.sections.append(
            ("simulation seed", f"seed={seed}; replay with: pytest '{path}' --seed={seed}")
        )
