"""Command-line options for the simulation tests (`--seed`, `--sim-seeds`).

pytest only honours `pytest_addoption` in the root conftest (or in a conftest
inside a directory named on the command line), so the root `tests/conftest.py`
calls `add_sim_options` too; registering twice is harmless.
"""

from __future__ import annotations

import pytest

DEFAULT_SEED_COUNT = 2


def add_sim_options(parser: pytest.Parser) -> None:
    try:
        parser.addoption(
            "--seed",
            action="store",
            type=int,
            default=None,
            help="run simulation tests with this seed only (replays a failure)",
        )
        parser.addoption(
            "--sim-seeds",
            action="store",
            type=int,
            default=DEFAULT_SEED_COUNT,
            help=f"number of seeds per simulation test (default {DEFAULT_SEED_COUNT})",
        )
    except ValueError:
        # Already registered (root conftest and this directory's conftest both ask).
        pass
