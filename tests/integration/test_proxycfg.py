"""The agent's proxy view, end to end: a real agent feeds a gRPC client acting as Envoy.

Twice: on a dev agent, and on 1 server + 1 client with the walkthrough's TLS
(verify_incoming, auto_encrypt) where the services live on the client. ACLs
are on (default deny), gRPC on the agent with the services, and the
walkthrough's `proxy-defaults` (protocol http) bootstrap entry on the server.
`api` and `web` register as the walkthrough's service files do, each with a
sidecar, `web` with the upstream `api` on 8081, each with its
service-identity token. The client subscribes for `web-sidecar-proxy` as
Envoy does; nothing in the test publishes snapshots: they come from the
agent's blocking watches.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.config.core.v3 import health_check_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from tests.ads_client import (
    PROXY_ID,
    DeltaEnvoy,
    SotwEnvoy,
    delta_names,
    expect_status,
    node,
    sotw_bring_up,
    typed,
)
from tests.agent_process import AgentProcess, free_port, start_agent, wait_for, wait_for_async
from tests.gossip_agents import GossipPool
from tests.integration.test_auto_encrypt_builtin_ca import make_certs, walkthrough_configs

from proconsul.xds.common import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE

MGMT = "0aa0c000-0000-4000-8000-0000000000f1"
DEADLINE_S = 20.0
CHANGE_S = 5.0  # a change reaches the client well within this (the view publishes within 50 ms)
BASE = 243  # the cluster's server and client: 127.0.0.243-244
SERVER_ACL = f"""
acl {{
  enabled = true
  default_policy = "deny"
  tokens {{ initial_management = "{MGMT}" agent = "{MGMT}" }}
}}
"""
CLIENT_ACL = (
    f'acl {{\n enabled = true\n default_policy = "deny"\n tokens {{ agent = "{MGMT}" }}\n}}\n'
)
# The walkthrough's server config adds this; its client config adds `ports { grpc = ... }`.
PROXY_DEFAULTS = """
config_entries {
  bootstrap = [{ kind = "proxy-defaults", name = "global", config { protocol = "http" } }]
}
"""


@dataclass
class Mesh:
    agent: AgentProcess  # where the services and their sidecars are registered
    node_ip: str  # that agent's address: where its proxies are found
    grpc_port: int
    api_proxy_port: int
    web_proxy_port: int
    tokens: dict[str, str]
    web: dict[str, Any] = field(default_factory=dict)  # web's registration

    def call(self, method: str, path: str, body: Any = None, token: str = MGMT) -> Any:
        status, _, raw = self.agent.request(method, path, body, headers={"X-Consul-Token": token})
        assert status == 200, (method, path, status, raw)
        return json.loads(raw) if raw else None

    def metric(self, name: str) -> float:
        gauges = self.call("GET", "/v1/agent/metrics")["Gauges"]
        return next((float(g["Value"]) for g in gauges if g["Name"] == name), 0.0)


def service_file(name: str, port: int, proxy_port: int, upstreams: list[Any]) -> dict[str, Any]:
    """The walkthrough's service file with its `connect { sidecar_service { ... } }`."""
    sidecar: dict[str, Any] = {
        "Port": proxy_port,
        "Check": {
            "Name": "Connect Envoy Sidecar",
            "TCP": f"127.0.0.1:{proxy_port}",
            "Interval": "1s",
            "Timeout": "1s",
        },
    }
    if upstreams:
        sidecar["Proxy"] = {"Upstreams": upstreams}
    return {"Name": name, "ID": name, "Port": port, "Connect": {"SidecarService": sidecar}}


def register_walkthrough(mesh: Mesh) -> None:
    """Tokens, then the walkthrough's api and web with their sidecars."""
    headers = {"X-Consul-Token": MGMT}
    wait_for(
        lambda: mesh.agent.request("GET", "/v1/acl/tokens", headers=headers)[0] == 200,
        deadline_s=DEADLINE_S,
    )
    for name in ("web", "api"):
        token = mesh.call("PUT", "/v1/acl/token", {"ServiceIdentities": [{"ServiceName": name}]})
        mesh.tokens[name] = token["SecretID"]
    rules = 'service_prefix "" { policy = "read" }'
    mesh.call("PUT", "/v1/acl/policy", {"Name": "read-all", "Rules": rules})
    reader = mesh.call("PUT", "/v1/acl/token", {"Policies": [{"Name": "read-all"}]})
    mesh.tokens["reader"] = reader["SecretID"]
    api = service_file("api", 9003, mesh.api_proxy_port, [])
    mesh.call("PUT", "/v1/agent/service/register", api, mesh.tokens["api"])
    upstream = {"DestinationName": "api", "LocalBindPort": 8081}
    mesh.web = service_file("web", 9004, mesh.web_proxy_port, [upstream])
    mesh.call("PUT", "/v1/agent/service/register", mesh.web, mesh.tokens["web"])


def dev_mesh(tmp: Path) -> tuple[Mesh, list[AgentProcess]]:
    grpc_port = free_port()
    hcl = SERVER_ACL + PROXY_DEFAULTS
    agent = start_agent(tmp, "-grpc-port", str(grpc_port), "-hcl", hcl)
    return Mesh(agent, "127.0.0.1", grpc_port, free_port(), free_port(), {}), [agent]


def cluster_mesh(tmp: Path) -> tuple[Mesh, list[AgentProcess]]:
    """1 server + 1 client with the walkthrough's TLS (auto_encrypt) and ACLs (default deny)."""
    make_certs(tmp / "certs")
    server_hcl, client_hcl = walkthrough_configs(tmp / "certs")
    agents = GossipPool(tmp / "agents", 2, base=BASE)
    server, client = agents["n0"], agents["n1"]
    server.args += [
        "-server",
        "-bootstrap-expect",
        "1",
        "-server-port",
        str(free_port(server.ip)),
        "-hcl",
        "performance { raft_multiplier = 1 }",
        "-hcl",
        server_hcl + SERVER_ACL + PROXY_DEFAULTS,
    ]
    grpc_port = free_port()
    client.args += ["-hcl", client_hcl + CLIENT_ACL, "-grpc-port", str(grpc_port)]
    started: list[AgentProcess] = []
    try:
        started.append(agents.start(server))
        wait_for(lambda: server.running.get_json("/v1/status/leader"), DEADLINE_S)
        started.append(agents.start(client))
        wait_for(
            lambda: "auto_encrypt: got a client certificate" in client.running.log_text(),
            DEADLINE_S,
        )
    except BaseException:
        for agent in started:
            agent.stop()
        raise
    mesh = Mesh(client.running, client.ip, grpc_port, free_port(), free_port(), {})
    return mesh, started


@pytest.fixture(scope="module", params=["dev", "cluster"])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    tmp: Path = tmp_path_factory.mktemp(f"proxycfg-{request.param}")
    found, agents = (dev_mesh if request.param == "dev" else cluster_mesh)(tmp)
    try:
        register_walkthrough(found)
        yield found
    finally:
        for agent in reversed(agents):  # the client first: its watches need the server
            agent.stop()
    for agent in agents:
        assert "Traceback" not in agent.log_text()


@pytest.fixture
async def stub(mesh: Mesh) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.grpc_port}") as channel:
        yield ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)


def open_envoy(stub: Any, token: str, proxy_id: str = PROXY_ID) -> SotwEnvoy:
    return SotwEnvoy(
        stub.StreamAggregatedResources(metadata=(("x-consul-token", token),)), proxy_id
    )


def api_cluster(clusters: dict[str, Any]) -> str:
    (name,) = [n for n in clusters if n.startswith("api.default.dc1.internal.")]
    return name


def endpoint_states(assignment: Any) -> list[tuple[str, int, int]]:
    return [
        (
            lb.endpoint.address.socket_address.address,
            lb.endpoint.address.socket_address.port_value,
            lb.health_status,
        )
        for group in assignment.endpoints
        for lb in group.lb_endpoints
    ]


async def wait_endpoints(
    envoy: SotwEnvoy, cluster: str, wanted: list[tuple[str, int, int]]
) -> None:
    """Until the latest endpoints of `cluster` are `wanted` (each update ACKed)."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            latest = envoy.last[ENDPOINT_TYPE]
            assignments = [typed(ENDPOINT_TYPE, r) for r in latest.resources]
            found = {a.cluster_name: endpoint_states(a) for a in assignments}
            if found.get(cluster) == wanted:
                return
            await receive_type(envoy, ENDPOINT_TYPE)
            await envoy.request(ENDPOINT_TYPE, [cluster])  # ACK


async def receive_type(envoy: SotwEnvoy, type_url: str) -> dict[str, Any]:
    """The next response of `type_url` (others that come first are taken as they are)."""
    async with asyncio.timeout(CHANGE_S):
        while True:
            got, resources = await envoy.receive(CHANGE_S)
            if got == type_url:
                return resources


async def test_envoy_gets_every_resource_from_the_agents_view(mesh: Mesh, stub: Any) -> None:
    envoy = open_envoy(stub, mesh.tokens["web"])
    got = await sotw_bring_up(envoy)
    listeners = got[LISTENER_TYPE]
    public = f"public_listener:0.0.0.0:{mesh.web_proxy_port}"
    assert sorted(listeners) == ["api:127.0.0.1:8081", public]
    # mTLS on the public listener: a client certificate from the mesh CA is required.
    chain = listeners[public].filter_chains[0]
    context = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(context)
    assert context.require_client_certificate.value
    # proxy-defaults says http: an HTTP connection manager, and routes for api.
    (manager,) = [f for f in chain.filters if f.name.endswith("http_connection_manager")]
    hcm = hcm_pb2.HttpConnectionManager()
    assert manager.typed_config.Unpack(hcm)
    assert "local_app" in got[CLUSTER_TYPE]
    cluster = api_cluster(got[CLUSTER_TYPE])
    secrets = got["type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"]
    leaf = x509.load_pem_x509_certificate(
        secrets["leaf:web"].tls_certificate.certificate_chain.inline_string.encode()
    )
    root = x509.load_pem_x509_certificate(
        secrets["roots"].validation_context.trusted_ca.inline_string.encode()
    )
    leaf.verify_directly_issued_by(root)
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (uri,) = uris.get_values_for_type(x509.UniformResourceIdentifier)
    assert uri.endswith("/ns/default/dc/dc1/svc/web")
    # api's proxy (once the agent synced it to the catalog), unhealthy while its
    # sidecar check fails: nothing listens on its port.
    api_proxy = (mesh.node_ip, mesh.api_proxy_port)
    await wait_endpoints(envoy, cluster, [(*api_proxy, health_check_pb2.UNHEALTHY)])
    # Something listens there: the check passes, the endpoint turns healthy.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", mesh.api_proxy_port))
        listener.listen()
        await wait_endpoints(envoy, cluster, [(*api_proxy, health_check_pb2.HEALTHY)])
        await envoy.request(ROUTE_TYPE, ["api"])
        routes = await receive_type(envoy, ROUTE_TYPE)
    assert routes["api"].virtual_hosts[0].routes[0].route.cluster == cluster


async def test_an_intention_change_is_a_new_listener_version_and_a_nack_keeps_the_old(
    mesh: Mesh, stub: Any
) -> None:
    envoy = open_envoy(stub, mesh.tokens["web"])
    await sotw_bring_up(envoy)
    good = envoy.last[LISTENER_TYPE].version_info
    public = f"public_listener:0.0.0.0:{mesh.web_proxy_port}"
    entry = {
        "Kind": "service-intentions",
        "Name": "web",
        "Sources": [{"Name": "api", "Action": "allow"}],
    }
    mesh.call("PUT", "/v1/config", entry)
    listeners = await receive_type(envoy, LISTENER_TYPE)
    changed = envoy.last[LISTENER_TYPE].version_info
    assert changed != good
    filters = [f.name for f in listeners[public].filter_chains[0].filters]
    manager = hcm_pb2.HttpConnectionManager()
    assert listeners[public].filter_chains[0].filters[-1].typed_config.Unpack(manager), filters
    assert "envoy.filters.http.rbac" in [f.name for f in manager.http_filters]

    # Envoy refuses it: the agent logs the detail and does not send it again.
    nacks = mesh.metric("consul.xds.nacks")
    await envoy.nack(LISTENER_TYPE, good, "Proto constraint validation failed: test")
    await wait_for_async(lambda: mesh.metric("consul.xds.nacks") == nacks + 1, CHANGE_S, 0.05)
    assert "Proto constraint validation failed: test" in mesh.agent.log_text()
    # A real change of the intentions is sent.
    entry["Sources"] = [{"Name": "api", "Action": "allow"}, {"Name": "db", "Action": "allow"}]
    mesh.call("PUT", "/v1/config", entry)
    await receive_type(envoy, LISTENER_TYPE)
    assert envoy.last[LISTENER_TYPE].version_info not in (good, changed)


async def test_a_token_without_service_write_is_refused(mesh: Mesh, stub: Any) -> None:
    for token, code in (
        (mesh.tokens["reader"], grpc.StatusCode.PERMISSION_DENIED),
        (mesh.tokens["api"], grpc.StatusCode.PERMISSION_DENIED),
        ("f0000000-0000-4000-8000-00000000dead", grpc.StatusCode.UNAUTHENTICATED),
    ):
        call = stub.StreamAggregatedResources(metadata=(("x-consul-token", token),))
        await call.write(discovery_pb2.DiscoveryRequest(node=node(), type_url=LISTENER_TYPE))
        details = await expect_status(call, code)
        assert ("service:write" in details) or (details == "ACL not found")
        assert token not in details


async def test_deregistering_web_ends_its_sidecars_stream(mesh: Mesh, stub: Any) -> None:
    """Over delta ADS, as `connect envoy`'s bootstrap has Envoy speak."""

    def delta(token: str) -> DeltaEnvoy:
        metadata = (("x-consul-token", token),)
        return DeltaEnvoy(stub.DeltaAggregatedResources(metadata=metadata))

    public = f"public_listener:0.0.0.0:{mesh.web_proxy_port}"
    envoy = delta(mesh.tokens["web"])
    await envoy.send(LISTENER_TYPE)
    response = await envoy.receive()
    assert response.type_url == LISTENER_TYPE and public in delta_names(response)
    mesh.call("PUT", "/v1/agent/service/deregister/web", token=mesh.tokens["web"])
    assert "deregistered" in await expect_status(envoy.call, grpc.StatusCode.ABORTED)
    await wait_for_async(lambda: mesh.metric("consul.agent.proxycfg.proxies") == 1, CHANGE_S, 0.05)
    # Registered again, its sidecar is served again.
    mesh.call("PUT", "/v1/agent/service/register", mesh.web, mesh.tokens["web"])
    again = delta(mesh.tokens["web"])
    await again.send(LISTENER_TYPE)
    response = await again.receive()
    assert response.type_url == LISTENER_TYPE and public in delta_names(response)
