"""The walkthrough's "Service Mesh" section, as printed, on 1 server + 2 clients.

The cluster has the walkthrough's gossip encryption, TLS (server certificate,
auto_encrypt for the clients) and ACLs (default deny); the server config adds
`ports { grpc = ... }` and the `proxy-defaults` bootstrap entry, the client
configs add `ports { grpc = ... }`. The steps run through the `proconsul` CLI
as the walkthrough runs `consul`:

1. service-identity tokens; the `api` service file (sidecar on 20000) on
   client 1 and the `web` file (sidecar on 20000, upstream api on 8081) on
   client 2, loaded by `reload`: both sidecars are in the catalog with
   Consul's fields;
2. `connect envoy -sidecar-for api -token ... -bootstrap` prints JSON that
   parses strictly into Envoy's `Bootstrap`;
3. a gRPC client speaking Envoy's side of ADS for web's sidecar gets every
   resource from client 2, with api's proxy on client 1 as the endpoint and a
   leaf that verifies against the roots;
4. `intention create -allow web api` prints `Created: web => api (allow)` and
   reaches api's sidecar as a new listener version with web in its RBAC; a
   NACK of it is logged and the version is not sent again;
5. a token without service:write on the proxy's service is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from tests.ads_client import SotwEnvoy, expect_status, node, sotw_bring_up
from tests.agent_process import wait_for, wait_for_async
from tests.integration.test_connect_envoy import strict_bootstrap
from tests.walkthrough_cluster import (
    CLIENT_1,
    CLIENT_2,
    DEADLINE_S,
    Mesh,
    running_mesh,
    service_file,
)

from proconsul.xds.common import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, SECRET_TYPE

CHANGE_S = 5.0
BASE = 176  # consul-server-1, consul-client-1, consul-client-2: 127.0.0.176-178


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("walkthrough-mesh"), BASE) as cluster:
        yield cluster


@pytest.fixture
async def channels(mesh: Mesh) -> AsyncIterator[dict[str, Any]]:
    opened = {
        name: grpc.aio.insecure_channel(f"127.0.0.1:{mesh.grpc_ports[name]}")
        for name in (CLIENT_1, CLIENT_2)
    }
    try:
        yield {
            name: ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            for name, channel in opened.items()
        }
    finally:
        for channel in opened.values():
            await channel.close()


def open_envoy(stub: Any, token: str, proxy_id: str) -> SotwEnvoy:
    call = stub.StreamAggregatedResources(metadata=(("x-consul-token", token),))
    return SotwEnvoy(call, proxy_id)


async def next_listeners(envoy: SotwEnvoy) -> dict[str, Any]:
    async with asyncio.timeout(CHANGE_S):
        while True:
            type_url, resources = await envoy.receive(CHANGE_S)
            if type_url == LISTENER_TYPE:
                return resources


def test_1_sidecars_are_registered_with_consuls_fields(mesh: Mesh) -> None:
    for name in ("api", "web"):
        mesh.create_service_token(name)
    for name, service in ((CLIENT_1, "api"), (CLIENT_2, "web")):
        mesh.add_service_file(name, f"{service}.hcl", service_file(service, mesh.tokens[service]))

    def sidecar(service: str) -> dict[str, Any] | None:
        rows = mesh.get(f"/v1/catalog/service/{service}-sidecar-proxy")
        return rows[0] if rows else None

    api = wait_for(lambda: sidecar("api"), DEADLINE_S)
    web = wait_for(lambda: sidecar("web"), DEADLINE_S)
    assert (api["Node"], api["ServiceID"], api["ServiceKind"]) == (
        CLIENT_1,
        "api-sidecar-proxy",
        "connect-proxy",
    )
    assert api["ServicePort"] == 20000 and api["ServiceTags"] == ["fake-service-api"]
    proxy = api["ServiceProxy"]
    assert (proxy["DestinationServiceName"], proxy["DestinationServiceID"]) == ("api", "api")
    assert (proxy["LocalServiceAddress"], proxy["LocalServicePort"]) == ("127.0.0.1", 8080)
    assert web["Node"] == CLIENT_2
    (upstream,) = web["ServiceProxy"]["Upstreams"]
    assert upstream["DestinationType"] == "service"
    assert (upstream["DestinationName"], upstream["LocalBindPort"]) == ("api", 8081)
    # Discovery of api's proxies, from any agent.
    connect = mesh.get("/v1/health/connect/api", agent=CLIENT_2)
    assert [row["Service"]["ID"] for row in connect] == ["api-sidecar-proxy"]
    checks = {c["Name"] for c in mesh.get("/v1/health/checks/api-sidecar-proxy")}
    assert "API Connect Envoy Sidecar" in checks


def test_2_envoy_bootstrap_parses_strictly(mesh: Mesh) -> None:
    out = mesh.cli(
        "connect",
        "envoy",
        "-sidecar-for=api",
        f"-token={mesh.tokens['api']}",
        "-bootstrap",
        # The walkthrough's agents listen on 8502; these on a free port.
        f"-grpc-addr=127.0.0.1:{mesh.grpc_ports[CLIENT_1]}",
        agent=CLIENT_1,
    )
    bootstrap = strict_bootstrap(out)
    assert (bootstrap.node.id, bootstrap.node.cluster) == ("api-sidecar-proxy", "api")
    (agent_cluster,) = bootstrap.static_resources.clusters
    assert agent_cluster.name == "local_agent"
    address = agent_cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert address.socket_address.port_value == mesh.grpc_ports[CLIENT_1]
    ads = bootstrap.dynamic_resources.ads_config
    metadata = {m.key: m.value for m in ads.grpc_services[0].initial_metadata}
    assert metadata["x-consul-token"] == mesh.tokens["api"]


async def test_3_webs_sidecar_gets_every_resource(mesh: Mesh, channels: dict[str, Any]) -> None:
    envoy = open_envoy(channels[CLIENT_2], mesh.tokens["web"], "web-sidecar-proxy")
    got = await sotw_bring_up(envoy, service="web")
    assert sorted(got[LISTENER_TYPE]) == [
        "api:127.0.0.1:8081",
        "public_listener:0.0.0.0:20000",
    ]
    api_clusters = [n for n in got[CLUSTER_TYPE] if n.startswith("api.default.")]
    assert len(api_clusters) == 1
    (assignment,) = got[ENDPOINT_TYPE].values()
    endpoint = assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (endpoint.address, endpoint.port_value) == (mesh.ip(CLIENT_1), 20000)
    secrets = got[SECRET_TYPE]
    leaf = x509.load_pem_x509_certificate(
        secrets["leaf:web"].tls_certificate.certificate_chain.inline_string.encode()
    )
    roots = secrets["roots"].validation_context.trusted_ca.inline_string.encode()
    root = x509.load_pem_x509_certificates(roots)[0]
    leaf.verify_directly_issued_by(root)
    (uri,) = leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uri.endswith("/ns/default/dc/dc1/svc/web")
    envoy.call.cancel()


def http_rbac(listener: Any) -> Any:
    manager = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[-1].typed_config.Unpack(manager)
    (rbac_filter,) = [f for f in manager.http_filters if f.name == "envoy.filters.http.rbac"]
    rbac = rbac_pb2.RBAC()
    assert rbac_filter.typed_config.Unpack(rbac)
    return rbac


async def test_4_intention_create_reaches_apis_sidecar_and_a_nack_keeps_the_old(
    mesh: Mesh, channels: dict[str, Any]
) -> None:
    envoy = open_envoy(channels[CLIENT_1], mesh.tokens["api"], "api-sidecar-proxy")
    await sotw_bring_up(envoy, service="api")
    before = envoy.last[LISTENER_TYPE].version_info
    public = "public_listener:0.0.0.0:20000"

    out = mesh.cli("intention", "create", "-allow", "web", "api", agent=CLIENT_2)
    assert out == "Created: web => api (allow)\n"
    listeners = await next_listeners(envoy)
    allowed = envoy.last[LISTENER_TYPE].version_info
    assert allowed != before
    assert "/svc/web" in str(http_rbac(listeners[public]))

    # Envoy refuses that version: the agent logs Envoy's detail, keeps the old
    # one in force and does not send the refused one again.
    await envoy.nack(LISTENER_TYPE, before, "Proto constraint validation failed: walkthrough")
    client = mesh.pool[CLIENT_1].running
    await wait_for_async(
        lambda: "Proto constraint validation failed: walkthrough" in client.log_text(),
        CHANGE_S,
        0.05,
    )
    # The next real change is sent: under default deny, a deny intention
    # leaves web out of the allow rules, as before the intention existed.
    mesh.cli("intention", "create", "-deny", "-replace", "web", "api", agent=CLIENT_2)
    listeners = await next_listeners(envoy)
    assert envoy.last[LISTENER_TYPE].version_info != allowed
    assert "/svc/web" not in str(http_rbac(listeners[public]))
    envoy.call.cancel()


async def test_5_a_token_without_service_write_is_refused(
    mesh: Mesh, channels: dict[str, Any]
) -> None:
    call = channels[CLIENT_1].StreamAggregatedResources(
        metadata=(("x-consul-token", mesh.tokens["web"]),)
    )
    request = discovery_pb2.DiscoveryRequest(node=node("api-sidecar-proxy"), type_url=LISTENER_TYPE)
    await call.write(request)
    details = await expect_status(call, grpc.StatusCode.PERMISSION_DENIED)
    assert "service:write" in details and mesh.tokens["web"] not in details
