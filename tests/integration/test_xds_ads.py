"""The ADS server over real gRPC, with a client in the test acting as Envoy.

The server is the real `XDSServer` on a real port; the client speaks Envoy's
xDS protocol with grpcio and parses every resource into its typed message.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2
from tests.ads_client import (
    PROXY_ID,
    READ_TIMEOUT_S,
    DeltaEnvoy,
    SotwEnvoy,
    delta_names,
    expect_status,
    node,
    read,
    sotw_bring_up,
)
from tests.agent_process import wait_for_async
from tests.xds_helpers import (
    SHAPING_ENTRIES,
    instance,
    intentions,
    mesh_ca,
    snapshot,
    upstream,
)

from proconsul.tls.certs import LeafSpec, generate_ca, issue_leaf, load_ca
from proconsul.xds.common import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from proconsul.xds.server import Listen, TLSFiles, XDSAuthError, XDSServer
from proconsul.xds.snapshot import ProxySnapshot
from proconsul.xds.sources import SnapshotHub, UnknownProxy

TOKENS = {"write-web": {"web"}, "write-db": {"db"}}
CA = mesh_ca()


async def authorize(token: str, proxy_id: str) -> None:
    """The agent's check, by table: the token must write `web`."""
    if proxy_id != PROXY_ID:
        raise UnknownProxy(proxy_id)
    if token and token not in TOKENS:
        raise XDSAuthError("ACL not found", unauthenticated=True)
    if "web" not in TOKENS.get(token, set()):
        raise XDSAuthError("Permission denied: token lacks permission 'service:write' on \"web\"")


def web_snapshot(
    *, deny: Sequence[str] = (), api_hosts: Sequence[str] = ("10.0.0.2",)
) -> ProxySnapshot:
    rows = [instance("api", host, 21000, node=host) for host in api_hosts]
    api = upstream("api", 8081, endpoints={"api.default.default.dc1": rows})
    ixns = intentions("web", *({"Name": name, "Action": "deny"} for name in deny)) if deny else ()
    return snapshot(CA, "web", upstreams=[api], ixns=ixns)


@dataclass
class ADS:
    hub: SnapshotHub
    server: XDSServer
    stub: Any
    calls: list[Any] = field(default_factory=list)

    def open(self, delta: bool = False, token: str | None = "write-web") -> Any:
        metadata = (("x-consul-token", token),) if token is not None else ()
        method = (
            self.stub.DeltaAggregatedResources if delta else self.stub.StreamAggregatedResources
        )
        call = method(metadata=metadata)
        self.calls.append(call)
        return call


@pytest.fixture
async def ads() -> AsyncIterator[ADS]:
    hub = SnapshotHub(unknown_wait_s=0.5)
    server = XDSServer(hub, authorize)
    await server.start([Listen("127.0.0.1:0")])
    channel = grpc.aio.insecure_channel(server.bound[0])
    fixture = ADS(hub, server, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel))
    yield fixture
    await server.stop()
    await channel.close()


# ------------------------------------------------------- state of the world


async def test_sotw_stream_serves_every_type_typed(ads: ADS) -> None:
    ads.hub.publish(web_snapshot())
    envoy = SotwEnvoy(ads.open())
    got = await sotw_bring_up(envoy)
    assert sorted(got[LISTENER_TYPE]) == ["api:127.0.0.1:8081", "public_listener:0.0.0.0:21000"]
    assert "local_app" in got[CLUSTER_TYPE]
    (assignment,) = got[ENDPOINT_TYPE].values()
    address = assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("10.0.0.2", 21000)
    secrets = got[SECRET_TYPE]
    leaf = x509.load_pem_x509_certificate(
        secrets["leaf:web"].tls_certificate.certificate_chain.inline_string.encode()
    )
    root = x509.load_pem_x509_certificate(
        secrets["roots"].validation_context.trusted_ca.inline_string.encode()
    )
    leaf.verify_directly_issued_by(root)


async def test_sotw_routes_for_an_http_upstream(ads: ADS) -> None:
    api = upstream("api", 8081, SHAPING_ENTRIES)
    ads.hub.publish(snapshot(CA, "web", upstreams=[api]))
    envoy = SotwEnvoy(ads.open())
    await envoy.request(ROUTE_TYPE, ["api"])
    type_url, routes = await envoy.receive()
    assert type_url == ROUTE_TYPE
    legs = routes["api"].virtual_hosts[0].routes[-1].route.weighted_clusters.clusters
    assert [leg.weight.value for leg in legs] == [7500, 2500]


async def test_sotw_new_snapshot_arrives_as_a_new_version(ads: ADS) -> None:
    ads.hub.publish(web_snapshot())
    envoy = SotwEnvoy(ads.open())
    await sotw_bring_up(envoy)
    before = envoy.last[LISTENER_TYPE].version_info
    status = ads.server.proxy_status(PROXY_ID)
    assert status is not None and status.streams == 1 and status.error == ""
    assert status.versions[LISTENER_TYPE] == before  # what the agent last sent, per type
    ads.hub.publish(web_snapshot(deny=["db"]))  # an intention change: only the RBAC moves
    type_url, listeners = await envoy.receive()
    assert type_url == LISTENER_TYPE
    assert envoy.last[LISTENER_TYPE].version_info != before
    assert status.versions[LISTENER_TYPE] == envoy.last[LISTENER_TYPE].version_info
    public = listeners["public_listener:0.0.0.0:21000"]
    assert public.filter_chains[0].filters[0].name == "envoy.filters.network.rbac"


async def test_sotw_nack_keeps_the_old_version_and_is_logged(
    ads: ADS, caplog: pytest.LogCaptureFixture
) -> None:
    ads.hub.publish(web_snapshot())
    envoy = SotwEnvoy(ads.open())
    await sotw_bring_up(envoy)
    good = envoy.last[LISTENER_TYPE].version_info
    ads.hub.publish(web_snapshot(deny=["db"]))
    assert (await envoy.receive())[0] == LISTENER_TYPE
    with caplog.at_level(logging.WARNING, logger="proconsul.xds"):
        await envoy.nack(LISTENER_TYPE, good, "Proto constraint validation failed: bad rbac")
        await wait_for_async(lambda: ads.server.stats()["nacks"] == 1)
        # The same listeners again, with new endpoints: the rejected listeners
        # are not sent again, the endpoints are.
        ads.hub.publish(web_snapshot(deny=["db"], api_hosts=["10.0.0.2", "10.0.0.3"]))
        type_url, _ = await envoy.receive()
    assert type_url == ENDPOINT_TYPE
    assert "bad rbac" in caplog.text and PROXY_ID in caplog.text and good in caplog.text
    assert ads.server.stats()["nacks"] == 1
    # A real change of the listeners is sent.
    ads.hub.publish(web_snapshot(deny=["db", "cache"], api_hosts=["10.0.0.2", "10.0.0.3"]))
    type_url, _ = await envoy.receive()
    assert type_url == LISTENER_TYPE


# ------------------------------------------------------------------ delta


async def test_delta_stream_sends_only_what_changed(ads: ADS) -> None:
    ads.hub.publish(web_snapshot())
    envoy = DeltaEnvoy(ads.open(delta=True))
    await envoy.send(CLUSTER_TYPE)
    await envoy.send(LISTENER_TYPE)
    clusters, listeners = await envoy.receive(), await envoy.receive()
    assert (clusters.type_url, listeners.type_url) == (CLUSTER_TYPE, LISTENER_TYPE)
    await envoy.ack(clusters)
    await envoy.ack(listeners)
    eds = [n for n, c in delta_names(clusters).items() if c.type == cluster_pb2.Cluster.EDS]
    await envoy.send(ENDPOINT_TYPE, eds)
    await envoy.send(SECRET_TYPE, ["leaf:web", "roots"])
    endpoints, secrets = await envoy.receive(), await envoy.receive()
    assert sorted(delta_names(endpoints)) == eds
    assert sorted(delta_names(secrets)) == ["leaf:web", "roots"]
    await envoy.ack(endpoints)
    await envoy.ack(secrets)

    ads.hub.publish(web_snapshot(deny=["db"]))
    update = await envoy.receive()
    # Only the public listener changed; the upstream listener is not resent.
    assert update.type_url == LISTENER_TYPE
    assert sorted(delta_names(update)) == ["public_listener:0.0.0.0:21000"]

    # NACK it: logged, not resent; a later real change is.
    await envoy.send(
        LISTENER_TYPE,
        response_nonce=update.nonce,
        error_detail=status_pb2.Status(code=3, message="rejected by test"),
    )
    await wait_for_async(lambda: ads.server.stats()["nacks"] == 1)
    ads.hub.publish(web_snapshot(deny=["db"], api_hosts=["10.0.0.9"]))
    assert (await envoy.receive()).type_url == ENDPOINT_TYPE
    ads.hub.publish(web_snapshot(deny=["cache"], api_hosts=["10.0.0.9"]))
    again = await envoy.receive()
    assert again.type_url == LISTENER_TYPE
    assert sorted(delta_names(again)) == ["public_listener:0.0.0.0:21000"]


async def test_delta_reconnect_with_initial_versions_gets_nothing_new(ads: ADS) -> None:
    ads.hub.publish(web_snapshot())
    envoy = DeltaEnvoy(ads.open(delta=True))
    await envoy.send(CLUSTER_TYPE)
    clusters = await envoy.receive()
    held = {r.name: r.version for r in clusters.resources}
    again = DeltaEnvoy(ads.open(delta=True))
    await again.send(CLUSTER_TYPE, initial_resource_versions=held)
    await again.send(LISTENER_TYPE)  # this one is answered; the clusters were current
    assert (await again.receive()).type_url == LISTENER_TYPE


# ------------------------------------------------------------ refusals


@pytest.mark.parametrize("delta", [False, True])
async def test_token_without_service_write_is_refused(ads: ADS, delta: bool) -> None:
    ads.hub.publish(web_snapshot())
    for token, code in (
        ("write-db", grpc.StatusCode.PERMISSION_DENIED),
        (None, grpc.StatusCode.PERMISSION_DENIED),
        ("no-such-token", grpc.StatusCode.UNAUTHENTICATED),
    ):
        call = ads.open(delta=delta, token=token)
        request_cls = (
            discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
        )
        await call.write(request_cls(node=node(), type_url=LISTENER_TYPE))
        details = await expect_status(call, code)
        assert ("service:write" in details) or ("ACL not found" in details)
        status = ads.server.proxy_status(PROXY_ID)  # the agent remembers why it refused
        assert status is not None and status.streams == 0
        assert status.error == f"{code.name}: {details}"


@pytest.mark.parametrize(
    ("request_fields", "text"),
    [
        ({"type_url": LISTENER_TYPE}, "node.id"),
        ({"node": node(), "type_url": "type.googleapis.com/envoy.Nope"}, "unknown type URL"),
        ({"node": node()}, "type URL is required"),
        ({"node": base_pb2.Node(id="ghost"), "type_url": LISTENER_TYPE}, "ghost"),
    ],
)
async def test_malformed_requests_get_a_clear_error(
    ads: ADS, request_fields: dict[str, Any], text: str
) -> None:
    ads.hub.publish(web_snapshot())
    call = ads.open()
    await call.write(discovery_pb2.DiscoveryRequest(**request_fields))
    code = grpc.StatusCode.NOT_FOUND if text == "ghost" else grpc.StatusCode.INVALID_ARGUMENT
    assert text in await expect_status(call, code)
    # The server is fine: a good stream still works.
    envoy = SotwEnvoy(ads.open())
    await envoy.request(CLUSTER_TYPE)
    assert (await envoy.receive())[0] == CLUSTER_TYPE


async def test_proxy_without_snapshot_is_not_found_and_deregistration_ends_the_stream(
    ads: ADS,
) -> None:
    call = ads.open()
    await call.write(discovery_pb2.DiscoveryRequest(node=node(), type_url=LISTENER_TYPE))
    details = await expect_status(call, grpc.StatusCode.NOT_FOUND)
    assert PROXY_ID in details
    ads.hub.publish(web_snapshot())
    envoy = SotwEnvoy(ads.open())
    await envoy.request(LISTENER_TYPE)
    assert (await envoy.receive())[0] == LISTENER_TYPE
    ads.hub.forget(PROXY_ID)
    assert "deregistered" in await expect_status(envoy.call, grpc.StatusCode.ABORTED)


async def test_a_client_going_away_ends_its_stream_quietly(
    ads: ADS, caplog: pytest.LogCaptureFixture
) -> None:
    ads.hub.publish(web_snapshot())
    for delta in (False, True):
        call = ads.open(delta=delta)
        request_cls = (
            discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
        )
        await call.write(request_cls(node=node(), type_url=CLUSTER_TYPE))
        await read(call)
        call.cancel()  # Envoy restarting
    await wait_for_async(lambda: ads.server.stats()["active"] == 0)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_tls_listener_with_verify_incoming() -> None:
    now = datetime.now(UTC)
    ca_pair = generate_ca(now=now)
    ca = load_ca(ca_pair.cert_pem, ca_pair.key_pem)
    server_pair = issue_leaf(
        ca,
        LeafSpec(
            common_name="server.dc1.consul",
            valid_for=timedelta(days=1),
            dns_names=("localhost",),
            ip_addresses=(ipaddress.ip_address("127.0.0.1"),),
        ),
        now=now,
    )
    client_pair = issue_leaf(
        ca, LeafSpec(common_name="envoy", valid_for=timedelta(days=1)), now=now
    )
    tls = TLSFiles(
        cert=server_pair.cert_pem.encode(),
        key=server_pair.key_pem.encode(),
        ca=ca_pair.cert_pem.encode(),
        verify_incoming=True,
    )
    assert "BEGIN" not in repr(tls)  # the key never shows
    hub = SnapshotHub()
    hub.publish(web_snapshot())
    server = XDSServer(hub, authorize)
    await server.start([Listen("127.0.0.1:0", tls)])
    try:
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=ca_pair.cert_pem.encode(),
            private_key=client_pair.key_pem.encode(),
            certificate_chain=client_pair.cert_pem.encode(),
        )
        async with grpc.aio.secure_channel(server.bound[0], with_cert) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            envoy = SotwEnvoy(
                stub.StreamAggregatedResources(metadata=(("x-consul-token", "write-web"),))
            )
            await envoy.request(CLUSTER_TYPE)
            assert (await envoy.receive())[0] == CLUSTER_TYPE
            envoy.call.cancel()
        # Without a client certificate the handshake fails: no stream at all.
        no_cert = grpc.ssl_channel_credentials(root_certificates=ca_pair.cert_pem.encode())
        async with grpc.aio.secure_channel(server.bound[0], no_cert) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            call = stub.StreamAggregatedResources(metadata=(("x-consul-token", "write-web"),))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.write(discovery_pb2.DiscoveryRequest(node=node(), type_url=CLUSTER_TYPE))
                await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop()
