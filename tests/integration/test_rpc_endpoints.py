"""The server endpoints driven over RPC (mutual TLS, real sockets): a real
StateStore, FSM and LocalLog behind `endpoint_handlers`, called through
`EndpointsClient` the way a client agent will."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from tests.local_log import LocalLog

from proconsul.rpc import RPCClient, RPCError, RPCServer
from proconsul.rpc.codec import EndpointsClient
from proconsul.rpc.testing import make_pki, tls_settings
from proconsul.rpc.tls import client_context, server_context
from proconsul.server.endpoints import ServerEndpoints
from proconsul.server.rpc_handlers import endpoint_handlers
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import HealthCheck, KVEntry, NodeService
from proconsul.structs.commands import ApplyError, KVSRequest, RegisterRequest
from proconsul.structs.requests import QueryOptions, ReadRequest

DEADLINE_S = 10.0


@dataclass
class Remote:
    server: RPCServer
    endpoints: EndpointsClient
    address: tuple[str, int]


@pytest.fixture
async def remote(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Remote]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    server_cert, client_cert = pki.issue("server", "server"), pki.issue("client", "client")
    store = StateStore()
    endpoints = ServerEndpoints(store, LocalLog(FSM(store)), "dc1")
    server = RPCServer(
        endpoint_handlers(endpoints),
        ssl_context=server_context(
            tls_settings(ca_file=pki.ca_file, cert=server_cert, verify_incoming=True)
        ),
    )
    address = await server.start()
    client = RPCClient(
        client_context(
            tls_settings(
                ca_file=pki.ca_file,
                cert=client_cert,
                verify_outgoing=True,
                verify_server_hostname=True,
            )
        ),
        "server.dc1.consul",
    )
    yield Remote(server, EndpointsClient(client), address)
    await client.close()
    await server.close()


async def test_kv_put_then_get(remote: Remote) -> None:
    put = KVSRequest(op="set", dir_ent=KVEntry(key="app/config", value=b"v1", flags=42))
    index, result = await remote.endpoints.write(remote.address, put)
    assert result is True
    assert index >= 1
    response = await remote.endpoints.read(
        remote.address, "KVS.Get", ReadRequest(name="app/config")
    )
    entry = response.value
    assert isinstance(entry, KVEntry)
    assert (entry.key, entry.value, entry.flags, entry.modify_index) == (
        "app/config",
        b"v1",
        42,
        index,
    )
    assert response.meta.index == index
    missing = await remote.endpoints.read(remote.address, "KVS.Get", ReadRequest(name="nope"))
    assert missing.value is None


async def test_refused_writes_come_back_as_apply_errors(remote: Remote) -> None:
    _, result = await remote.endpoints.write(remote.address, RegisterRequest(node=""))
    assert result == ApplyError("Must provide node")


async def test_blocking_query_over_rpc(remote: Remote) -> None:
    put = KVSRequest(op="set", dir_ent=KVEntry(key="k", value=b"1"))
    first, _ = await remote.endpoints.write(remote.address, put)
    blocking = ReadRequest(name="k", options=QueryOptions(min_index=first, max_query_time_s=30))
    waiting = asyncio.ensure_future(remote.endpoints.read(remote.address, "KVS.Get", blocking))
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while remote.server.stats()["in_flight"] == 0:  # parked on the server
        assert loop.time() < end, "the blocking read never reached the server"
        await asyncio.sleep(0.002)
    assert not waiting.done()
    second, _ = await remote.endpoints.write(
        remote.address, KVSRequest(op="set", dir_ent=KVEntry(key="k", value=b"2"))
    )
    response = await asyncio.wait_for(waiting, DEADLINE_S)
    assert response.meta.index == second
    assert response.value.value == b"2"


async def test_blocking_read_answers_before_a_short_caller_deadline(remote: Remote) -> None:
    index, _ = await remote.endpoints.write(
        remote.address, KVSRequest(op="set", dir_ent=KVEntry(key="k", value=b"1"))
    )
    blocking = ReadRequest(name="k", options=QueryOptions(min_index=index, max_query_time_s=300))
    # The caller waits 2s, not 5 minutes: the server answers with the data in time.
    response = await remote.endpoints.read(remote.address, "KVS.Get", blocking, timeout_s=2.0)
    assert response.meta.index == index
    assert response.value.value == b"1"


async def test_catalog_and_health_reads_are_typed(remote: Remote) -> None:
    register = RegisterRequest(
        node="web-node",
        address="10.0.0.5",
        service=NodeService(service="web", id="web-1", port=8080, tags=["v1"]),
        checks=[
            HealthCheck(check_id="web-alive", name="alive", status="passing", service_id="web-1")
        ],
    )
    _, result = await remote.endpoints.write(remote.address, register)
    assert result is None  # registrations answer nothing
    healthy = await remote.endpoints.read(
        remote.address, "Health.ServiceNodes", ReadRequest(name="web", passing_only=True)
    )
    (row,) = healthy.value
    assert (row.node.node, row.service.port, row.checks[0].status) == ("web-node", 8080, "passing")
    services = await remote.endpoints.read(remote.address, "Catalog.ListServices", ReadRequest())
    assert services.value == {"web": ["v1"]}
    node, node_services = (
        await remote.endpoints.read(
            remote.address, "Catalog.NodeServices", ReadRequest(name="web-node")
        )
    ).value
    assert node.address == "10.0.0.5"
    assert [s.id for s in node_services] == ["web-1"]


async def test_unknown_reads_are_refused(remote: Remote) -> None:
    with pytest.raises(RPCError, match=r"can't find method KVS\.Nope"):
        await remote.endpoints.read(remote.address, "KVS.Nope", ReadRequest())
    with pytest.raises(RPCError, match=r"can't find method Status\.Leader"):
        await remote.endpoints.client.call(remote.address, "Status.Leader", b"", DEADLINE_S)
