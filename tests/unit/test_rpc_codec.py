"""The endpoint codec (rpc/codec.py) and handlers (server/rpc_handlers.py): every read
has a result type, and values survive msgpack typed."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from tests.local_log import LocalLog

from proconsul.connect.config_entries import parse_config_entry
from proconsul.connect.discovery_chain import ChainEntries, compile_chain
from proconsul.rpc import ErrorCode, PeerInfo, RPCError, codec
from proconsul.server import rpc_handlers
from proconsul.server.endpoints import ServerEndpoints
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import (
    CheckServiceNode,
    HealthCheck,
    KVEntry,
    Node,
    NodeService,
)
from proconsul.structs.commands import ApplyError
from proconsul.structs.config_entries import Intention, IntentionHTTPPermission, IntentionPermission
from proconsul.structs.intentions import IntentionCheckResponse
from proconsul.structs.requests import QueryMeta, QueryOptions, ReadRequest, ReadResponse
from proconsul.structs.service_config import ServiceConfigResponse, UpstreamServiceConfig


def test_every_read_has_a_result_type() -> None:
    store = StateStore()
    endpoints = ServerEndpoints(store, LocalLog(FSM(store)), "dc1")
    assert set(codec.READ_RESULT_TYPES) == set(endpoints.reads)
    assert set(rpc_handlers.endpoint_handlers(endpoints)) == {*endpoints.reads, codec.APPLY_METHOD}


NODE = Node(node="n1", address="10.0.0.1", meta={"rack": "a"}, create_index=3, modify_index=4)
SERVICE = NodeService(service="web", id="web-1", tags=["v1"], port=80)
CHECK = HealthCheck(node="n1", check_id="serfHealth", status="passing")
INTENTION = Intention(
    source_name="web",
    destination_name="api",
    permissions=[IntentionPermission(action="deny", http=IntentionHTTPPermission(path_exact="/x"))],
    precedence=9,
    id="abc",
    meta={"k": "v"},
)


@pytest.mark.parametrize(
    ("method", "value"),
    [
        ("Catalog.ListNodes", [NODE]),
        ("Catalog.NodeServices", (NODE, [SERVICE])),
        ("Catalog.NodeServices", (None, [])),
        ("Catalog.ListServices", {"web": ["v1"], "db": []}),
        ("Health.ServiceNodes", [CheckServiceNode(node=NODE, service=SERVICE, checks=[CHECK])]),
        ("Health.NodeChecks", [CHECK]),
        ("KVS.Get", KVEntry(key="a", value=b"\x00\xff", flags=7, modify_index=9)),
        ("KVS.Get", None),
        ("KVS.List", [KVEntry(key="a/b", value=None)]),
        ("KVS.ListKeys", ["a/", "b"]),
        ("Intention.List", [INTENTION]),
        ("Intention.Match", {"api": [INTENTION], "db": []}),
        ("Intention.Get", INTENTION),
        ("Intention.Get", None),
        ("Intention.Check", IntentionCheckResponse(allowed=True)),
    ],
)
def test_read_values_come_back_typed(method: str, value: Any) -> None:
    wire = codec.encode(ReadResponse(meta=QueryMeta(index=12, known_leader=False), value=value))
    response = codec.decode_read_response(method, wire)
    assert response.meta == QueryMeta(index=12, known_leader=False)
    assert response.value == value
    assert type(response.value) is type(value)


def test_config_entry_reads_carry_durations() -> None:
    resolver = parse_config_entry(
        {"Kind": "service-resolver", "Name": "api", "ConnectTimeout": "7s"}
    )
    chain = compile_chain(
        "api", ChainEntries.of([resolver]), datacenter="dc1", trust_domain="t.consul"
    )
    resolved = ServiceConfigResponse(
        proxy_config={"protocol": "http"},
        upstream_configs=[UpstreamServiceConfig("db", {"connect_timeout_ms": 5})],
    )
    for method, value in (
        ("ConfigEntry.Get", resolver),
        ("ConfigEntry.List", [resolver]),
        ("DiscoveryChain.Get", chain),
        ("ConfigEntry.ResolveServiceConfig", resolved),
    ):
        wire = codec.encode(ReadResponse(meta=QueryMeta(index=3), value=value))
        assert codec.decode_read_response(method, wire).value == value, method


def test_unknown_read_method_has_no_decoder() -> None:
    with pytest.raises(ValueError, match="no result type"):
        codec.decode_read_response("KVS.Nope", codec.encode(ReadResponse(QueryMeta(1), None)))


def test_apply_results() -> None:
    for result in (True, False, None, ApplyError("Must provide node")):
        assert codec.decode_apply_response(codec.encode((5, result))) == (5, result)


def test_read_timeouts_outlast_the_blocking_wait() -> None:
    assert codec.read_timeout_s(ReadRequest()) == codec.DEFAULT_CALL_TIMEOUT_S
    blocking = ReadRequest(options=QueryOptions(min_index=5, max_query_time_s=60))
    assert codec.read_timeout_s(blocking) == pytest.approx(60 * 17 / 16 + 15)
    default_wait = ReadRequest(options=QueryOptions(min_index=5))
    assert codec.read_timeout_s(default_wait) == pytest.approx(300 * 17 / 16 + 15)
    capped = ReadRequest(options=QueryOptions(min_index=5, max_query_time_s=3600))
    assert codec.read_timeout_s(capped) == pytest.approx(600 * 17 / 16 + 15)


async def test_bad_payloads_are_bad_requests() -> None:
    store = StateStore()
    handlers = rpc_handlers.endpoint_handlers(ServerEndpoints(store, LocalLog(FSM(store)), "dc1"))
    peer = PeerInfo(address=None)
    for method, payload in (
        ("KVS.Get", b"\xc1"),
        ("KVS.Get", msgspec.msgpack.encode({"name": 5})),
        (codec.APPLY_METHOD, msgspec.msgpack.encode({"Type": 99})),
    ):
        with pytest.raises(RPCError) as info:
            await handlers[method](payload, peer)
        assert info.value.code == ErrorCode.BAD_REQUEST


def test_blocking_waits_fit_the_callers_deadline() -> None:
    blocking = ReadRequest(name="k", options=QueryOptions(min_index=5, max_query_time_s=300))
    fitted = rpc_handlers._fit_wait(blocking, 10.0)
    wait = fitted.options.max_query_time_s
    assert wait * 17 / 16 <= 10.0 - rpc_handlers.BLOCKING_MARGIN_S + 1e-9
    assert fitted.name == "k" and fitted.options.min_index == 5
    assert blocking.options.max_query_time_s == 300  # the original is untouched
    # Default wait (0) counts as 5 minutes; enough time, nothing changes.
    default = ReadRequest(options=QueryOptions(min_index=5))
    assert rpc_handlers._fit_wait(default, 400.0) is default
    assert rpc_handlers._fit_wait(default, 30.0).options.max_query_time_s > 0
    # Non-blocking reads and calls without a deadline are left alone.
    assert rpc_handlers._fit_wait(ReadRequest(), 1.0) == ReadRequest()
    assert rpc_handlers._fit_wait(blocking, None) is blocking
    # Out of time already: the shortest wait there is, not "the default".
    assert rpc_handlers._fit_wait(blocking, 0.1).options.max_query_time_s == 0.001
