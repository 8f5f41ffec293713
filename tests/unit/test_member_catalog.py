"""The leader's reconcile from the catalog side (server/member_catalog.py).

Over a real StateStore, FSM, LocalLog and ServerEndpoints, with a stand-in
for the server (its `leader_read`/`leader_write` are the endpoints' own) and
for the gossip core (a fixed member list): a node with a `serfHealth` check
that is no gossip member is deregistered by a full pass; a node registered
without `serfHealth`, a member (in any state, any letter case) and the
agent's own node stay. The periodic pass runs again after the interval and
only while this server leads (it is a leader duty, started and cancelled by
`LeaderDuties`). Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.agent_process import wait_for_async
from tests.local_log import LocalLog

from proconsul.gossip import State
from proconsul.gossip.state import Member
from proconsul.server.endpoints import ServerEndpoints
from proconsul.server.leader_duties import LeaderDuties, LeaderDuty
from proconsul.server.member_catalog import MemberCatalog
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import SERF_CHECK_ID, HealthCheck
from proconsul.structs.commands import ApplyResult, Command, RegisterRequest
from proconsul.structs.requests import ReadRequest, ReadResponse

DEADLINE_S = 5.0


class FakeCore:
    def __init__(self, members: list[Member]) -> None:
        self._members = {m.name: m for m in members}

    def members(self) -> list[Member]:
        return list(self._members.values())

    def member(self, name: str) -> Member | None:
        return self._members.get(name)


class FakeAgent:
    """The leader's own reads and writes, backed by real endpoints."""

    node_name = "leader"
    datacenter = "dc1"

    def __init__(self) -> None:
        self.store = StateStore()
        self.endpoints = ServerEndpoints(self.store, LocalLog(FSM(self.store)), "dc1")

    async def leader_read(self, method: str, request: ReadRequest) -> ReadResponse:
        return await self.endpoints.local_read(method, request)

    async def leader_write(self, command: Command) -> tuple[int, ApplyResult]:
        return await self.endpoints.log.apply(command)

    async def register(self, node: str, serf: bool) -> None:
        checks = [HealthCheck(node=node, check_id=SERF_CHECK_ID, status="critical")] if serf else []
        await self.leader_write(RegisterRequest(node=node, address="10.0.0.9", checks=checks))

    def nodes(self) -> set[str]:
        return set(self.store.nodes)


def member(name: str, state: State = State.ALIVE) -> Member:
    return Member(name=name, addr=("10.0.0.1", 8301), tags={}, incarnation=1, state=state)


def make(members: list[Member]) -> tuple[FakeAgent, MemberCatalog]:
    agent = FakeAgent()
    catalog = MemberCatalog(
        FakeCore(members),
        agent.node_name,
        agent.datacenter,
        read=agent.leader_read,
        write=agent.leader_write,
    )
    return agent, catalog


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 30))


def test_reaped_serf_node_goes_and_others_stay() -> None:
    async def body() -> None:
        agent, catalog = make(
            [member("Web-1"), member("db", State.DEAD), member("old", State.LEFT)]
        )
        await agent.register("ghost", serf=True)  # reaped while no leader watched
        await agent.register("external", serf=False)  # /v1/catalog/register, no agent
        await agent.register("web-1", serf=True)  # a member, other letter case
        await agent.register("db", serf=True)  # failed, still a member
        await agent.register("leader", serf=True)  # this agent
        assert await catalog.reconcile_reaped() == ["ghost"]
        assert agent.nodes() == {"external", "web-1", "db", "leader"}
        assert await catalog.reconcile_reaped() == []

    run(body)


def test_periodic_pass_runs_while_leading() -> None:
    async def body() -> None:
        agent, catalog = make([member("web")])
        catalog.reconcile_interval_s = 0.1
        await agent.register("ghost-1", serf=True)
        await agent.register("external", serf=False)
        duties = LeaderDuties()
        duties.add(LeaderDuty("member-reconcile", catalog.run))
        duties.set_leading(True)
        try:
            # The first pass runs at once when leadership is gained.
            await wait_for_async(lambda: "ghost-1" not in agent.nodes(), DEADLINE_S)
            # The member itself was reconciled in the same pass.
            await wait_for_async(lambda: "web" in agent.nodes(), DEADLINE_S)
            await agent.register("ghost-2", serf=True)
            await wait_for_async(lambda: "ghost-2" not in agent.nodes(), DEADLINE_S)
            assert {"external", "web"} <= agent.nodes()
            # A follower leaves the catalog alone: the duty is no longer running.
            duties.set_leading(False)
            await wait_for_async(lambda: duties.running() == [], DEADLINE_S)
            passes = catalog.full_passes
            await agent.register("ghost-3", serf=True)
            catalog.mark("web")
            assert "ghost-3" in agent.nodes() and catalog.full_passes == passes
            # Leading again: a pass at once.
            duties.set_leading(True)
            await wait_for_async(lambda: "ghost-3" not in agent.nodes(), DEADLINE_S)
        finally:
            await duties.stop()

    run(body)
