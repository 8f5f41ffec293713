"""Connect discovery in the state store and the server endpoints: the index of
proxies by destination, its "connect:<name>" index key, the connect reads,
their filters, blocking and ACLs. Real StateStore, FSM and LocalLog."""

from __future__ import annotations

import asyncio

from tests.local_log import LocalLog
from tests.unit.test_state import Harness as StateHarness

from proconsul.server.acl_endpoints import ACLEndpoints
from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.server.endpoints import ServerEndpoints
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.acl import ACLLink, ACLPolicy, ACLToken
from proconsul.structs.catalog import (
    ConnectProxyConfig,
    HealthCheck,
    NodeService,
    ServiceConnect,
)
from proconsul.structs.commands import DeregisterRequest, RegisterRequest
from proconsul.structs.requests import QueryOptions, ReadRequest

MGMT = "11111111-1111-4111-8111-111111111111"


class Harness(StateHarness):
    """test_state's harness, plus proxies."""

    def proxy(
        self,
        node: str,
        sid: str,
        destination: str,
        status: str = "passing",
        tags: list[str] | None = None,
    ) -> None:
        self.apply(
            RegisterRequest(
                node=node,
                address=f"10.0.0.{len(node)}",
                service=NodeService(
                    id=sid,
                    service=f"{destination}-sidecar-proxy",
                    kind="connect-proxy",
                    port=21000,
                    tags=tags or [],
                    proxy=ConnectProxyConfig(destination_service_name=destination),
                ),
                checks=[
                    HealthCheck(node=node, check_id=f"{sid}-tcp", status=status, service_id=sid)
                ],
            )
        )


def names(rows: list[object]) -> list[tuple[str, str]]:
    return [(r.node.node, r.service.id) for r in rows]  # type: ignore[attr-defined]


def test_proxies_and_native_instances_are_indexed_by_destination() -> None:
    h = Harness()
    h.proxy("n1", "api-sidecar-proxy", "api")
    h.proxy("n2", "api-sidecar-proxy", "api")
    h.proxy("n1", "web-sidecar-proxy", "web")
    h.apply(
        RegisterRequest(
            node="n3",
            address="10.0.0.3",
            service=NodeService(
                id="api-native", service="api", port=9, connect=ServiceConnect(native=True)
            ),
        )
    )
    h.apply(
        RegisterRequest(node="n3", address="10.0.0.3", service=NodeService(id="api", service="api"))
    )
    _, rows = h.store.health_service("api", connect=True)
    assert names(rows) == [
        ("n1", "api-sidecar-proxy"),
        ("n2", "api-sidecar-proxy"),
        ("n3", "api-native"),
    ]
    _, catalog = h.store.catalog_service("web", connect=True)
    assert [(r.node, r.service_id, r.service_kind) for r in catalog] == [
        ("n1", "web-sidecar-proxy", "connect-proxy")
    ]
    assert h.store.catalog_service("db", connect=True)[1] == []


def test_connect_key_moves_with_the_proxies_their_checks_and_nodes() -> None:
    h = Harness()
    h.proxy("n1", "p1", "api", status="critical")
    first = h.store.index("connect:api")
    assert first == h.index
    # The proxy's check changes: the destination's answer changed too.
    h.apply(
        RegisterRequest(
            node="n1",
            address="10.0.0.2",
            checks=[HealthCheck(node="n1", check_id="p1-tcp", status="passing", service_id="p1")],
        )
    )
    assert h.store.index("connect:api") == h.index > first
    # Something unrelated does not move it.
    h.apply(
        RegisterRequest(node="n9", address="10.0.0.9", service=NodeService(id="x", service="x"))
    )
    assert h.store.index("connect:api") == h.index - 1
    # Re-pointed at another destination: both answers change.
    h.proxy("n1", "p1", "db")
    assert h.store.index("connect:api") == h.store.index("connect:db") == h.index
    assert h.store.health_service("api", connect=True)[1] == []
    assert names(h.store.health_service("db", connect=True)[1]) == [("n1", "p1")]
    h.apply(DeregisterRequest(node="n1", service_id="p1"))
    assert h.store.index("connect:db") == h.index
    assert h.store.health_service("db", connect=True)[1] == []
    assert h.store.connect_instances == {}


def test_restore_rebuilds_the_connect_index() -> None:
    h = Harness()
    h.proxy("n1", "p1", "api")
    data = h.store.snapshot()
    other = StateStore()
    other.restore(data)
    assert names(other.health_service("api", connect=True)[1]) == [("n1", "p1")]
    assert other.index("connect:api") == h.store.index("connect:api")


def read(
    endpoints: ServerEndpoints, method: str, name: str, token: str = "", **kw: object
) -> object:
    request = ReadRequest(name=name, options=QueryOptions(token=token), **kw)  # type: ignore[arg-type]
    return asyncio.run(endpoints.read(method, request))


def test_connect_reads_filter_by_passing_tag_and_filter() -> None:
    h = Harness()
    h.proxy("n1", "p1", "api", status="critical", tags=["blue"])
    h.proxy("n2", "p2", "api", tags=["green"])
    endpoints = ServerEndpoints(h.store, LocalLog(h.fsm), "dc1")
    method = "Health.ConnectServiceNodes"
    assert names(read(endpoints, method, "api").value) == [("n1", "p1"), ("n2", "p2")]  # type: ignore[attr-defined]
    assert names(read(endpoints, method, "api", passing_only=True).value) == [("n2", "p2")]  # type: ignore[attr-defined]
    assert names(read(endpoints, method, "api", tags=["blue"]).value) == [("n1", "p1")]  # type: ignore[attr-defined]
    request = ReadRequest(name="api", options=QueryOptions(filter='Service.ID == "p2"'))
    found = asyncio.run(endpoints.read(method, request))
    assert names(found.value) == [("n2", "p2")]
    catalog = read(endpoints, "Catalog.ConnectServiceNodes", "api", tags=["green"]).value  # type: ignore[attr-defined]
    assert [r.service_id for r in catalog] == ["p2"]


def test_blocking_connect_read_wakes_on_a_proxy_check() -> None:
    h = Harness()
    h.proxy("n1", "p1", "api", status="critical")
    endpoints = ServerEndpoints(h.store, LocalLog(h.fsm), "dc1")

    async def body() -> None:
        index = h.store.index("connect:api")
        options = QueryOptions(min_index=index, max_query_time_s=5.0)
        waiting = asyncio.ensure_future(
            endpoints.read(
                "Health.ConnectServiceNodes",
                ReadRequest(name="api", passing_only=True, options=options),
            )
        )
        await asyncio.sleep(0.05)
        assert not waiting.done()
        h.apply(
            RegisterRequest(node="n9", address="10.0.0.9", service=NodeService(id="x", service="x"))
        )
        await asyncio.sleep(0.05)
        assert not waiting.done(), "an unrelated write wakes no connect query"
        h.apply(
            RegisterRequest(
                node="n1",
                address="10.0.0.2",
                checks=[
                    HealthCheck(node="n1", check_id="p1-tcp", status="passing", service_id="p1")
                ],
            )
        )
        found = await asyncio.wait_for(waiting, 2.0)
        assert names(found.value) == [("n1", "p1")]
        assert found.meta.index > index

    asyncio.run(body())


def test_connect_reads_need_read_on_the_destination() -> None:
    async def body() -> None:
        store = StateStore()
        fsm = FSM(store)
        endpoints = ServerEndpoints(store, LocalLog(fsm), "dc1")
        resolver = ServerACLResolver(store, "dc1")
        endpoints.acl = resolver
        acl = ACLEndpoints(store, endpoints.log, "dc1", resolver=resolver)
        await acl.establish(MGMT)

        async def token(rules: str, name: str) -> str:
            await acl.policy_set(ACLPolicy(name=name, rules=rules), caller=MGMT)
            made = await acl.token_create(ACLToken(policies=[ACLLink(name=name)]), caller=MGMT)
            return made.secret_id

        await endpoints.write(
            RegisterRequest(
                node="n1",
                address="10.0.0.1",
                service=NodeService(
                    id="p1",
                    service="api-sidecar-proxy",
                    kind="connect-proxy",
                    port=21000,
                    proxy=ConnectProxyConfig(destination_service_name="api"),
                ),
            ),
            MGMT,
        )
        both = await token(
            'service_prefix "api" { policy = "read" }\nnode_prefix "" { policy = "read" }', "both"
        )
        proxy_only = await token(
            'service "api-sidecar-proxy" { policy = "read" }\nnode_prefix "" { policy = "read" }',
            "proxy",
        )
        dest_only = await token(
            'service "api" { policy = "read" }\nnode_prefix "" { policy = "read" }', "dest"
        )
        for method in ("Health.ConnectServiceNodes", "Catalog.ConnectServiceNodes"):

            def req(secret: str) -> ReadRequest:
                return ReadRequest(name="api", options=QueryOptions(token=secret))

            seen = await endpoints.read(method, req(both))
            assert len(seen.value) == 1 and not seen.meta.results_filtered_by_acls
            hidden = await endpoints.read(method, req(proxy_only))
            assert hidden.value == [] and not hidden.meta.results_filtered_by_acls
            filtered = await endpoints.read(method, req(dest_only))
            assert filtered.value == [] and filtered.meta.results_filtered_by_acls

    asyncio.run(body())
