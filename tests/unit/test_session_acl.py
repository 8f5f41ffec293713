"""Session ACLs on the server endpoints, over a real StateStore and LocalLog:
session:write on the node to create, destroy and renew; session:read filters
reads; key:write for acquire and release (Consul's rules)."""

from __future__ import annotations

import asyncio

import pytest
from tests.local_log import LocalLog

from proconsul.acl.errors import ACLDenied
from proconsul.server.acl_endpoints import ACLEndpoints
from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.server.endpoints import ServerEndpoints
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.acl import ACLLink, ACLPolicy, ACLToken
from proconsul.structs.catalog import HealthCheck, KVEntry
from proconsul.structs.commands import KVSRequest, RegisterRequest, SessionRequest
from proconsul.structs.requests import QueryOptions, ReadRequest
from proconsul.structs.session import Session

MGMT = "11111111-1111-4111-8111-111111111111"
N1_SESSIONS = """
session "n1" { policy = "write" }
session_prefix "" { policy = "read" }
key_prefix "locks/" { policy = "write" }
"""
N2_ONLY = 'session "n2" { policy = "read" }'


async def world() -> tuple[ServerEndpoints, ACLEndpoints]:
    store = StateStore()
    endpoints = ServerEndpoints(store, LocalLog(FSM(store)), "dc1")
    resolver = ServerACLResolver(store, "dc1")
    endpoints.acl = resolver
    acl = ACLEndpoints(store, endpoints.log, "dc1", resolver=resolver)
    await acl.establish(MGMT)
    for node in ("n1", "n2"):
        serf = HealthCheck(check_id="serfHealth", status="passing")
        await endpoints.write(RegisterRequest(node=node, address="10.0.0.1", checks=[serf]), MGMT)
    return endpoints, acl


async def token(acl: ACLEndpoints, rules: str, name: str) -> str:
    await acl.policy_set(ACLPolicy(name=name, rules=rules), caller=MGMT)
    made = await acl.token_create(ACLToken(policies=[ACLLink(name=name)]), caller=MGMT)
    return made.secret_id


def create(node: str, sid: str) -> SessionRequest:
    return SessionRequest(op="create", session=Session(id=sid, node=node, node_checks=[]))


def test_session_write_needs_session_write_on_the_node() -> None:
    async def body() -> None:
        endpoints, acl = await world()
        secret = await token(acl, N1_SESSIONS, "n1-sessions")
        await endpoints.write(create("n1", "s1"), secret)
        with pytest.raises(ACLDenied, match="lacks permission 'session:write' on \"n2\""):
            await endpoints.write(create("n2", "s2"), secret)
        await endpoints.write(create("n2", "s2"), MGMT)
        destroy = SessionRequest(op="destroy", session=Session(id="s2"))
        with pytest.raises(ACLDenied, match="session:write"):
            await endpoints.write(destroy, secret)
        await endpoints.write(SessionRequest(op="destroy", session=Session(id="s1")), secret)
        assert sorted(endpoints.store.sessions.sessions) == ["s2"]

    asyncio.run(body())


def test_session_reads_are_filtered_by_session_read() -> None:
    async def body() -> None:
        endpoints, acl = await world()
        await endpoints.write(create("n1", "s1"), MGMT)
        await endpoints.write(create("n2", "s2"), MGMT)
        secret = await token(acl, N2_ONLY, "n2-read")
        listed = await endpoints.read(
            "Session.List", ReadRequest(options=QueryOptions(token=secret))
        )
        assert [s.id for s in listed.value] == ["s2"]
        assert listed.meta.results_filtered_by_acls
        got = await endpoints.read(
            "Session.Get", ReadRequest(name="s1", options=QueryOptions(token=secret))
        )
        assert got.value == []

    asyncio.run(body())


def test_acquire_and_release_need_key_write() -> None:
    async def body() -> None:
        endpoints, acl = await world()
        await endpoints.write(create("n1", "s1"), MGMT)
        secret = await token(acl, N1_SESSIONS, "n1-locks")
        take = KVSRequest(op="lock", dir_ent=KVEntry(key="locks/a", session="s1"))
        assert (await endpoints.write(take, secret))[1] is True
        other = KVSRequest(op="lock", dir_ent=KVEntry(key="other/a", session="s1"))
        with pytest.raises(ACLDenied, match="key:write"):
            await endpoints.write(other, secret)
        give = KVSRequest(op="unlock", dir_ent=KVEntry(key="locks/a", session="s1"))
        assert (await endpoints.write(give, secret))[1] is True

    asyncio.run(body())
