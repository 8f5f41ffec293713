"""Shared fixtures: real agent processes, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent_process import AgentProcess, start_agent
from tests.sim.options import add_sim_options


def pytest_addoption(parser: pytest.Parser) -> None:
    add_sim_options(parser)


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def factory(*args: str, **kwargs: object) -> AgentProcess:
        agent = start_agent(tmp_path, *args, **kwargs)  # type: ignore[arg-type]
        started.append(agent)
        return agent

    yield factory
    for agent in started:
        agent.stop()


@pytest.fixture
def dev_agent(agent_factory: Callable[..., AgentProcess]) -> AgentProcess:
    return agent_factory()
