"""Sidecar registration and connect discovery on a real server + client cluster.

The walkthrough's `api` and `web` service files, as printed, sit in the client's
config dir (with a third file whose sidecar takes an automatic port). The tests
read what a user would: the agent's and the catalog's view of the sidecars,
`/v1/health/connect/api` with and without `?passing` while nothing listens on
the sidecar port and after a listener starts, `api.connect.consul` over DNS,
`?hash=` blocking on `/v1/agent/service/:id`, and a parent's deregistration
taking its sidecar along.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from tests.agent_process import AgentProcess, free_port, wait_for
from tests.gossip_agents import GossipPool
from tests.unit.test_config_walkthrough import API_HCL, WEB_HCL

SIDECAR_PORT = 20000  # the walkthrough's, checked on 127.0.0.1
CACHE_HCL = """
service {
  name = "cache"
  port = 6379
  connect { sidecar_service {} }
}
"""
DEADLINE_S = 20.0


class Cluster:
    def __init__(
        self, pool: GossipPool, client: AgentProcess, dns_port: int, sidecar: socket.socket
    ) -> None:
        self.pool = pool
        self.client = client
        self.dns_port = dns_port
        # Bound, not yet listening: connections to the sidecar port are refused
        # (and no other process can take it) until a test calls listen().
        self.sidecar_socket = sidecar

    def get(self, path: str) -> tuple[Any, dict[str, str]]:
        status, headers, body = self.client.request("GET", path, timeout_s=40.0)
        assert status == 200, (path, status, body)
        return json.loads(body), headers

    def put(self, path: str, body: Any = None) -> tuple[int, str]:
        status, _, text = self.client.request("PUT", path, body)
        return status, text.decode()

    def ask(self, name: str, rdtype: str) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        return dns.query.udp(query, "127.0.0.1", port=self.dns_port, timeout=5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("sidecar")
    config_dir = tmp / "client-config"
    config_dir.mkdir()
    (config_dir / "api.hcl").write_text(API_HCL)
    (config_dir / "web.hcl").write_text(WEB_HCL)
    (config_dir / "cache.hcl").write_text(CACHE_HCL)
    pool = GossipPool(tmp / "agents", 2, base=226, server_first=True)
    dns_port = free_port()
    sidecar = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sidecar.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past runs' TIME_WAIT
    try:
        sidecar.bind(("127.0.0.1", SIDECAR_PORT))
    except OSError as exc:
        sidecar.close()
        pytest.skip(f"the walkthrough's sidecar port {SIDECAR_PORT} is taken: {exc}")
    try:
        pool.start(pool["n0"])
        client = pool.start(pool["n1"], "-config-dir", str(config_dir), "-dns-port", str(dns_port))
        cluster = Cluster(pool, client, dns_port, sidecar)
        wait_for(lambda: cluster.get("/v1/catalog/service/api-sidecar-proxy")[0], DEADLINE_S)
        yield cluster
    finally:
        pool.stop_all()
        sidecar.close()


def test_agent_and_catalog_show_the_sidecars_with_consuls_fields(cluster: Cluster) -> None:
    services, _ = cluster.get("/v1/agent/services")
    web = services["web-sidecar-proxy"]
    assert web["Kind"] == "connect-proxy"
    assert (web["Service"], web["Port"], web["Tags"]) == (
        "web-sidecar-proxy",
        20000,
        ["fake-service-web"],
    )
    proxy = web["Proxy"]
    assert proxy["DestinationServiceName"] == "web"
    assert proxy["DestinationServiceID"] == "web"
    assert proxy["LocalServiceAddress"] == "127.0.0.1"
    assert proxy["LocalServicePort"] == 8080
    assert proxy["Upstreams"] == [
        {
            "DestinationType": "service",
            "DestinationName": "api",
            "LocalBindPort": 8081,
            "MeshGateway": {},
        }
    ]
    assert "Kind" not in services["web"] and "Proxy" not in services["web"]
    assert services["cache-sidecar-proxy"]["Port"] == 21000  # from the sidecar range
    checks, _ = cluster.get("/v1/agent/checks")
    assert checks["service:api-sidecar-proxy"]["Name"] == "API Connect Envoy Sidecar"
    assert checks["service:cache-sidecar-proxy:1"]["Name"] == "Connect Sidecar Listening"
    assert checks["service:cache-sidecar-proxy:2"]["Name"] == "Connect Sidecar Aliasing cache"

    def in_catalog() -> Any:
        rows, _ = cluster.get("/v1/catalog/service/web-sidecar-proxy")
        return rows

    (row,) = wait_for(in_catalog, DEADLINE_S)
    assert row["ServiceKind"] == "connect-proxy"
    assert row["ServiceProxy"]["DestinationServiceName"] == "web"
    assert row["ServiceProxy"]["LocalServicePort"] == 8080
    assert row["ServiceProxy"]["Upstreams"][0]["DestinationName"] == "api"
    (connect_row,), _ = cluster.get("/v1/catalog/connect/web")
    assert connect_row["ServiceID"] == "web-sidecar-proxy"


def test_sighup_keeps_the_automatic_port(cluster: Cluster) -> None:
    before, _ = cluster.get("/v1/agent/service/cache-sidecar-proxy")
    cluster.client.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded configuration" in cluster.client.log_text(), DEADLINE_S)
    after, _ = cluster.get("/v1/agent/service/cache-sidecar-proxy")
    assert after["Port"] == before["Port"] == 21000
    assert after["ContentHash"] == before["ContentHash"]


def test_health_connect_follows_the_sidecar_check_and_dns_answers(cluster: Cluster) -> None:
    rows, headers = cluster.get("/v1/health/connect/api")
    assert [r["Service"]["ID"] for r in rows] == ["api-sidecar-proxy"]
    assert rows[0]["Service"]["Proxy"]["DestinationServiceName"] == "api"
    statuses = {c["CheckID"]: c["Status"] for c in rows[0]["Checks"]}
    assert statuses["service:api-sidecar-proxy"] == "critical"  # nothing on port 20000
    passing, headers = cluster.get("/v1/health/connect/api?passing")
    assert passing == []
    assert cluster.ask("api.connect.consul", "A").rcode() == dns.rcode.NXDOMAIN
    filtered, _ = cluster.get("/v1/health/connect/api?filter=Service.Port%20%3D%3D%2020000")
    assert len(filtered) == 1

    listener = cluster.sidecar_socket
    listener.listen(16)
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        # A blocking query wakes when the proxy's check passes (interval 10s).
        index = headers["X-Consul-Index"]
        end = time.monotonic() + 30.0
        found: list[Any] = []
        while not found and time.monotonic() < end:
            found, headers = cluster.get(f"/v1/health/connect/api?passing&index={index}&wait=25s")
            index = headers["X-Consul-Index"]
        assert [r["Service"]["ID"] for r in found] == ["api-sidecar-proxy"]
        answer = cluster.ask("api.connect.consul", "SRV")
        srv = [rr for rrset in answer.answer if rrset.rdtype == dns.rdatatype.SRV for rr in rrset]
        assert [(rr.port, rr.target.to_text()) for rr in srv] == [
            (SIDECAR_PORT, "n1.node.dc1.consul.")
        ]
        a = cluster.ask("api.connect.consul", "A")
        assert [rr.to_text() for rrset in a.answer for rr in rrset] == [cluster.pool["n1"].ip]
    finally:
        stop.set()
        thread.join(timeout=5)


def test_registration_over_http_hash_blocking_and_deregistration(cluster: Cluster) -> None:
    body: dict[str, Any] = {
        "Name": "db",
        "Port": 5432,
        "Tags": ["v1"],
        "Connect": {"SidecarService": {}},
    }
    assert cluster.put("/v1/agent/service/register", body) == (200, "")
    sidecar, headers = cluster.get("/v1/agent/service/db-sidecar-proxy")
    assert sidecar["Port"] == 21001, "21000 is the cache sidecar's"
    content_hash = headers["X-Consul-ContentHash"]
    assert content_hash == sidecar["ContentHash"]

    # Unchanged: the hash query waits out its wait.
    started = time.monotonic()
    same, _ = cluster.get(f"/v1/agent/service/db-sidecar-proxy?hash={content_hash}&wait=1s")
    assert time.monotonic() - started >= 0.9 and same["ContentHash"] == content_hash

    answers: list[Any] = []

    def block() -> None:
        answers.append(
            cluster.get(f"/v1/agent/service/db-sidecar-proxy?hash={content_hash}&wait=30s")
        )

    waiter = threading.Thread(target=block)
    started = time.monotonic()
    waiter.start()
    assert cluster.put("/v1/agent/service/register", {**body, "Tags": ["v2"]})[0] == 200
    waiter.join(timeout=35)
    assert time.monotonic() - started < 10
    ((changed, changed_headers),) = answers
    assert changed["Tags"] == ["v2"] and changed["ContentHash"] != content_hash
    assert changed_headers["X-Consul-ContentHash"] == changed["ContentHash"]

    wait_for(lambda: cluster.get("/v1/catalog/connect/db")[0], DEADLINE_S)
    assert cluster.put("/v1/agent/service/deregister/db") == (200, "")
    services, _ = cluster.get("/v1/agent/services")
    assert "db" not in services and "db-sidecar-proxy" not in services
    wait_for(lambda: cluster.get("/v1/health/connect/db")[0] == [], DEADLINE_S)
    assert cluster.get("/v1/catalog/service/db-sidecar-proxy")[0] == []


def test_bad_sidecars_are_refused_with_consuls_texts(cluster: Cluster) -> None:
    nested = {
        "Name": "x",
        "Port": 1,
        "Connect": {"SidecarService": {"Connect": {"SidecarService": {}}}},
    }
    status, text = cluster.put("/v1/agent/service/register", nested)
    assert status == 400
    assert text == "1 error occurred:\n\t* A SidecarService cannot have a nested SidecarService\n\n"
    upstream = {
        "Name": "x",
        "Port": 1,
        "Connect": {"SidecarService": {"Proxy": {"Upstreams": [{"LocalBindPort": 9}]}}},
    }
    status, text = cluster.put("/v1/agent/service/register", upstream)
    assert (status, text) == (
        400,
        "1 error occurred:\n\t* upstream destination name cannot be empty\n\n",
    )
    services, _ = cluster.get("/v1/agent/services")
    assert "x" not in services and "x-sidecar-proxy" not in services
