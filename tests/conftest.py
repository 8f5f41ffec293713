"""Shared fixtures: real agent processes, stopped after each test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent_process import AgentProcess, start_agent
from tests.sim.options import add_sim_options


def pytest_addoption(parser: pytest.Parser) -> None:
    add_sim_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    # Tests fork processes (demo services, agents) while gRPC runs in the test
    # process; gRPC's fork handlers then run in the child and now and then abort
    # it. Off before any test module imports grpc.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


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
