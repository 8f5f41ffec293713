"""ACL enforcement on the server endpoints, the ACL endpoints, ACL.* over RPC,
client-side token resolution (TTL, down_policy) and DNS answers under the
agent's default token, over a real StateStore and LocalLog.

Tokens are made through `ACLEndpoints` with a management token, as an
operator would; nothing of ours is mocked. The RPC tests call the real
handlers with real msgpack payloads (the socket is the only thing skipped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.asyncquery
import dns.message
import dns.rcode
import pytest
from tests.local_log import LocalLog

from proconsul.acl.errors import ACLDenied, ACLError, ACLNotFound
from proconsul.agent.acl_client import ClientACLResolver
from proconsul.agent.dns_setup import AgentCatalog
from proconsul.dns.core import DnsSettings
from proconsul.dns.server import DnsServer
from proconsul.rpc.acl_codec import RemoteACLEndpoints
from proconsul.rpc.tls import PeerInfo
from proconsul.server.acl_endpoints import ACLEndpoints
from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.server.acl_rpc import acl_handlers
from proconsul.server.endpoints import ServerEndpoints
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.acl import ACLLink, ACLPolicy, ACLToken
from proconsul.structs.catalog import HealthCheck, KVEntry, NodeService
from proconsul.structs.commands import (
    ACLTokenDeleteRequest,
    Command,
    DeregisterRequest,
    KVSRequest,
    RegisterRequest,
)
from proconsul.structs.requests import QueryOptions, ReadRequest, ReadResponse

MGMT = "11111111-1111-4111-8111-111111111111"

READ_API = """
service "api" { policy = "read" }
node_prefix "" { policy = "read" }
key_prefix "app/" { policy = "read" }
"""
WRITE_WEB = """
service "web" { policy = "write" }
key_prefix "web/" { policy = "write" }
key "web/locked" { policy = "read" }
"""
NODE_N1 = """
node "n1" { policy = "write" }
service_prefix "" { policy = "write" }
"""
ACL_READER = 'acl = "read"'


@dataclass
class World:
    store: StateStore
    endpoints: ServerEndpoints
    acl: ACLEndpoints

    async def token(self, rules: str, name: str) -> str:
        await self.acl.policy_set(ACLPolicy(name=name, rules=rules), caller=MGMT)
        made = await self.acl.token_create(ACLToken(policies=[ACLLink(name=name)]), caller=MGMT)
        return made.secret_id

    async def read(self, method: str, name: str, token: str, **kw: object) -> ReadResponse:
        request = ReadRequest(name=name, options=QueryOptions(token=token), **kw)  # type: ignore[arg-type]
        return await self.endpoints.read(method, request)


async def make_world(*, key_list_policy: bool = False) -> World:
    store = StateStore()
    endpoints = ServerEndpoints(store, LocalLog(FSM(store)), "dc1")
    resolver = ServerACLResolver(store, "dc1", enable_key_list_policy=key_list_policy)
    endpoints.acl = resolver
    acl = ACLEndpoints(store, endpoints.log, "dc1", resolver=resolver)
    await acl.establish(MGMT)
    world = World(store, endpoints, acl)
    for node, address, service in (("n1", "10.0.0.1", "api"), ("n2", "10.0.0.2", "db")):
        check = HealthCheck(node=node, check_id=f"{service}-ok", status="passing")
        check.service_id = service
        await endpoints.write(
            RegisterRequest(
                node=node,
                address=address,
                service=NodeService(id=service, service=service, port=80),
                checks=[HealthCheck(node=node, check_id="serfHealth", status="passing"), check],
            ),
            MGMT,
        )
    for key in ("app/a", "app/b", "secret/x"):
        await endpoints.write(KVSRequest(op="set", dir_ent=KVEntry(key=key, value=b"v")), MGMT)
    return world


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


# ----- reads ---------------------------------------------------------------------


def test_unknown_token_is_acl_not_found_on_reads_and_writes() -> None:
    async def body() -> None:
        world = await make_world()
        with pytest.raises(ACLDenied) as err:
            await world.read("Catalog.ListNodes", "", "no-such-secret")
        assert err.value.message == "ACL not found"
        with pytest.raises(ACLDenied) as err:
            await world.endpoints.write(KVSRequest(op="set", dir_ent=KVEntry(key="k")), "nope")
        assert err.value.message == "ACL not found"

    run(body)


def test_reads_are_filtered_and_flagged() -> None:
    async def body() -> None:
        world = await make_world()
        reader = await world.token(READ_API, "read-api")
        api = await world.read("Health.ServiceNodes", "api", reader)
        assert [r.service.service for r in api.value] == ["api"]
        assert not api.meta.results_filtered_by_acls
        db = await world.read("Health.ServiceNodes", "db", reader)
        assert db.value == [] and db.meta.results_filtered_by_acls
        services = await world.read("Catalog.ListServices", "", reader)
        assert set(services.value) == {"api"} and services.meta.results_filtered_by_acls
        nodes = await world.read("Catalog.ListNodes", "", reader)
        assert {n.node for n in nodes.value} == {"n1", "n2"}
        assert not nodes.meta.results_filtered_by_acls
        node, rows = (await world.read("Catalog.NodeServices", "n2", reader)).value
        assert node is not None and rows == []
        checks = await world.read("Health.ChecksInState", "", reader, state="any")
        assert {c.check_id for c in checks.value} == {"serfHealth", "api-ok"}
        assert checks.meta.results_filtered_by_acls
        anonymous = await world.read("Catalog.ListNodes", "", "")
        assert anonymous.value == [] and anonymous.meta.results_filtered_by_acls
        # The management token sees everything, unflagged.
        full = await world.read("Catalog.ListServices", "", MGMT)
        assert set(full.value) == {"api", "db"} and not full.meta.results_filtered_by_acls

    run(body)


def test_repeated_filtered_query_returns_the_same_list_until_rights_change() -> None:
    async def body() -> None:
        world = await make_world()
        reader = await world.token(READ_API, "read-api")
        first = await world.read("Health.ServiceNodes", "db", reader)
        again = await world.read("Health.ServiceNodes", "db", reader)
        assert first.value is again.value
        unfiltered = await world.read("Health.ServiceNodes", "db", MGMT)
        assert unfiltered.value is (await world.read("Health.ServiceNodes", "db", MGMT)).value
        # Widen the policy: the next read sees db, with no stale cached answer.
        policy = world.store.acl.policy_by_name("read-api")
        assert policy is not None
        widened = ACLPolicy(name="read-api", rules=READ_API + 'service "db" { policy = "read" }')
        await world.acl.policy_set(widened, policy.id, caller=MGMT)
        after = await world.read("Health.ServiceNodes", "db", reader)
        assert len(after.value) == 1 and not after.meta.results_filtered_by_acls

    run(body)


def test_kv_reads_need_key_read_and_list() -> None:
    async def body() -> None:
        world = await make_world(key_list_policy=True)
        reader = await world.token(READ_API, "read-api")
        assert (await world.read("KVS.Get", "app/a", reader)).value.key == "app/a"
        with pytest.raises(ACLDenied) as err:
            await world.read("KVS.Get", "secret/x", reader)
        assert err.value.message.startswith("Permission denied: token with AccessorID '")
        assert err.value.message.endswith("lacks permission 'key:read' on \"secret/x\"")
        # enable_key_list_policy: a read rule is not enough to list a prefix.
        with pytest.raises(ACLDenied, match="key:list"):
            await world.read("KVS.List", "app/", reader)
        lister = await world.token('key_prefix "" { policy = "list" }\n', "lister")
        everything = await world.read("KVS.ListKeys", "", lister)
        assert everything.value == ["app/a", "app/b", "secret/x"]

    run(body)


def test_kv_list_is_filtered_per_entry_without_key_list_policy() -> None:
    async def body() -> None:
        world = await make_world()
        reader = await world.token(READ_API, "read-api")
        listed = await world.read("KVS.List", "", reader)
        assert [e.key for e in listed.value] == ["app/a", "app/b"]
        assert listed.meta.results_filtered_by_acls
        keys = await world.read("KVS.ListKeys", "", reader)
        assert keys.value == ["app/a", "app/b"] and keys.meta.results_filtered_by_acls

    run(body)


# ----- writes --------------------------------------------------------------------


async def denied(world: World, command: Command, token: str) -> str:
    with pytest.raises(ACLDenied) as err:
        await world.endpoints.write(command, token)
    return err.value.message


def test_catalog_register_needs_node_write_unless_only_the_service_changes() -> None:
    async def body() -> None:
        world = await make_world()
        web = await world.token(WRITE_WEB, "web")
        service = NodeService(id="web", service="web", port=8080)
        # A new node needs node:write.
        message = await denied(
            world, RegisterRequest(node="n9", address="10.0.0.9", service=service), web
        )
        assert message.endswith("lacks permission 'node:write' on \"n9\"")
        # The same node, the same address: service:write is enough.
        await world.endpoints.write(
            RegisterRequest(node="n1", address="10.0.0.1", service=service), web
        )
        assert "web" in world.store.instances
        # ... but not a changed address, nor a node-level check, nor another service.
        await denied(world, RegisterRequest(node="n1", address="10.9.9.9", service=service), web)
        node_check = HealthCheck(node="n1", check_id="disk", status="passing")
        await denied(
            world, RegisterRequest(node="n1", address="10.0.0.1", checks=[node_check]), web
        )
        other = NodeService(id="api", service="api")
        message = await denied(
            world, RegisterRequest(node="n1", address="10.0.0.1", service=other), web
        )
        assert message.endswith("lacks permission 'service:write' on \"api\"")
        # A check on the token's own service is fine.
        web_check = HealthCheck(node="n1", check_id="web-ok", status="passing", service_id="web")
        await world.endpoints.write(
            RegisterRequest(node="n1", address="10.0.0.1", checks=[web_check]), web
        )
        # With node:write the whole registration goes through.
        node_writer = await world.token(NODE_N1, "node-n1")
        await world.endpoints.write(
            RegisterRequest(node="n1", address="10.0.0.1", checks=[node_check]), node_writer
        )

    run(body)


def test_deregister_needs_service_write_or_node_write() -> None:
    async def body() -> None:
        world = await make_world()
        web = await world.token(WRITE_WEB, "web")
        await denied(world, DeregisterRequest(node="n1", service_id="api"), web)
        await denied(world, DeregisterRequest(node="n1"), web)
        await denied(world, DeregisterRequest(node="n1", check_id="serfHealth"), web)
        node_writer = await world.token(NODE_N1, "node-n1")
        await world.endpoints.write(DeregisterRequest(node="n1", service_id="api"), node_writer)
        assert "api" not in world.store.instances

    run(body)


def test_kv_writes_need_key_write_and_recursive_delete_the_whole_prefix() -> None:
    async def body() -> None:
        world = await make_world()
        web = await world.token(WRITE_WEB, "web")
        await world.endpoints.write(KVSRequest(op="set", dir_ent=KVEntry(key="web/a")), web)
        message = await denied(world, KVSRequest(op="set", dir_ent=KVEntry(key="app/a")), web)
        assert message.endswith("lacks permission 'key:write' on \"app/a\"")
        await denied(world, KVSRequest(op="delete", dir_ent=KVEntry(key="web/locked")), web)
        # web/locked is read-only under web/, so the whole prefix may not go.
        await denied(world, KVSRequest(op="delete-tree", dir_ent=KVEntry(key="web/")), web)
        await world.endpoints.write(KVSRequest(op="delete", dir_ent=KVEntry(key="web/a")), web)

    run(body)


def test_raw_acl_commands_are_refused_even_for_management() -> None:
    async def body() -> None:
        world = await make_world()
        anonymous = "00000000-0000-0000-0000-000000000002"
        message = await denied(world, ACLTokenDeleteRequest(accessor_id=anonymous), MGMT)
        assert message.startswith("Permission denied")
        world.endpoints.acl = None  # ACLs off: still refused
        await denied(world, ACLTokenDeleteRequest(accessor_id=anonymous), MGMT)

    run(body)


# ----- ACL endpoints ------------------------------------------------------------------


def test_acl_endpoints_need_acl_read_and_write() -> None:
    async def body() -> None:
        world = await make_world()
        reader = await world.token(READ_API, "read-api")
        acl_reader = await world.token(ACL_READER, "acl-reader")
        with pytest.raises(ACLDenied) as err:
            await world.acl.token_list(caller=reader)
        assert err.value.message.endswith("lacks permission 'acl:read'")
        with pytest.raises(ACLDenied) as err:
            await world.acl.policy_set(ACLPolicy(name="x"), caller=acl_reader)
        assert err.value.message.endswith("lacks permission 'acl:write'")
        _, tokens = await world.acl.token_list(caller=acl_reader)
        assert {t.secret_id for t in tokens} == {"<hidden>"}
        _, own = await world.acl.token_self(reader)
        assert own.secret_id == reader
        with pytest.raises(ACLDenied, match="ACL not found"):
            await world.acl.policy_list(caller="unknown")
        _, full = await world.acl.token_list(caller=MGMT)
        assert MGMT in {t.secret_id for t in full}

    run(body)


# ----- ACL over RPC and client-side resolution -------------------------------------


def in_process(world: World) -> Callable[[str, bytes, float], Awaitable[bytes]]:
    handlers = acl_handlers(world.acl)
    peer = PeerInfo(address=("127.0.0.1", 1))  # type: ignore[call-arg]

    async def call_raw(method: str, payload: bytes, timeout_s: float) -> bytes:
        return await handlers[method](payload, peer)

    return call_raw


def test_remote_acl_endpoints_keep_statuses_and_texts() -> None:
    async def body() -> None:
        world = await make_world()
        remote = RemoteACLEndpoints(in_process(world))
        policy = await remote.policy_set(ACLPolicy(name="p1", rules=READ_API), caller=MGMT)
        token = await remote.token_create(
            ACLToken(policies=[ACLLink(name="p1")], expiration_ttl=3600.0),  # type: ignore[arg-type]
            caller=MGMT,
        )
        assert token.policies == [ACLLink(id=policy.id, name="p1")]
        _, read = await remote.token_read(token.accessor_id, caller=MGMT)
        assert read.secret_id == token.secret_id
        with pytest.raises(ACLDenied) as err:
            await remote.token_list(caller=token.secret_id)
        assert "acl:read" in err.value.message
        with pytest.raises(ACLError) as err:
            await remote.policy_set(ACLPolicy(name="bad name!"), caller=MGMT)
        assert err.value.status == 400
        await remote.token_delete(token.accessor_id, caller=MGMT)
        with pytest.raises(ACLDenied, match="ACL not found"):
            await remote.token_self(token.secret_id)

    run(body)


def test_client_resolver_matches_the_server_and_caches() -> None:
    async def body() -> None:
        world = await make_world()
        reader = await world.token(READ_API, "read-api")
        clock = [0.0]
        client = ClientACLResolver(in_process(world), "dc1", ttl_s=30.0, clock=lambda: clock[0])
        resolved = await client.resolve(reader)
        assert resolved.authorizer.service_read("api")
        assert not resolved.authorizer.service_read("db")
        assert resolved.authorizer.key_read("app/x") and not resolved.authorizer.key_write("app/x")
        assert await client.resolve(reader) is resolved
        assert client.stats()["fetches"] == 1
        clock[0] = 31.0
        assert await client.resolve(reader) is not resolved  # TTL passed: fetched again
        with pytest.raises(ACLNotFound):
            await client.resolve("unknown-secret")

    run(body)


@pytest.mark.parametrize(
    ("down_policy", "cached_allowed", "uncached_allowed"),
    [
        ("extend-cache", True, False),
        ("async-cache", True, False),
        ("allow", True, True),
        ("deny", False, False),
    ],
)
def test_down_policy_when_no_server_answers(
    down_policy: str, cached_allowed: bool, uncached_allowed: bool
) -> None:
    async def body() -> None:
        world = await make_world()
        reader = await world.token(READ_API, "read-api")
        up = in_process(world)
        servers_up = [True]

        async def call_raw(method: str, payload: bytes, timeout_s: float) -> bytes:
            if not servers_up[0]:
                raise ConnectionError("No known Consul servers")
            return await up(method, payload, timeout_s)

        clock = [0.0]
        client = ClientACLResolver(
            call_raw, "dc1", down_policy=down_policy, ttl_s=1.0, clock=lambda: clock[0]
        )
        await client.resolve(reader)
        servers_up[0] = False
        clock[0] = 5.0
        stale = await client.resolve(reader)
        if down_policy == "async-cache":
            await asyncio.sleep(0)  # let the background refresh fail
            stale = await client.resolve(reader)
        assert stale.authorizer.service_read("api") is cached_allowed
        never_seen = await client.resolve(MGMT)
        assert never_seen.authorizer.service_read("api") is uncached_allowed
        assert not never_seen.authorizer.acl_read()  # allow never grants ACL management

    run(body)


# ----- DNS with the agent's default token ------------------------------------------


class _DnsAgent:
    """The parts of an agent DNS reads through: its store and its read path."""

    def __init__(self, world: World) -> None:
        self.store: StateStore | None = world.store
        self.endpoints = world.endpoints

    async def rpc_read(self, method: str, request: ReadRequest) -> ReadResponse:
        return await self.endpoints.read(method, request)


def test_dns_answers_follow_the_default_token_and_acl_changes() -> None:
    async def body() -> None:
        world = await make_world()
        reader = await world.token(READ_API, "read-api")
        default = ["anonymous"]
        server = DnsServer(DnsSettings(), AgentCatalog(_DnsAgent(world), lambda: default[0]))
        _, port = await server.listen("127.0.0.1", 0)

        async def ask(name: str) -> int:
            query = dns.message.make_query(name, "A")
            reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=3)
            return reply.rcode()

        try:
            assert await ask("api.service.consul.") == dns.rcode.NXDOMAIN
            assert await ask("api.service.consul.") == dns.rcode.NXDOMAIN  # cached
            default[0] = reader  # e.g. PUT /v1/agent/token/default
            assert await ask("api.service.consul.") == dns.rcode.NOERROR
            assert await ask("db.service.consul.") == dns.rcode.NXDOMAIN
            # Narrow the policy: the cached api answer must not outlive it.
            policy = world.store.acl.policy_by_name("read-api")
            assert policy is not None
            narrowed = ACLPolicy(name="read-api", rules='node_prefix "" { policy = "read" }')
            await world.acl.policy_set(narrowed, policy.id, caller=MGMT)
            assert await ask("api.service.consul.") == dns.rcode.NXDOMAIN
        finally:
            await server.close()

    run(body)
