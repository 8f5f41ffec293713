"""What Consul clients written against real Consul notice on a dev agent:
request bodies in any casing, shapes, status codes and the agent endpoints
they call (monitor, host, version, health by service)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from tests.agent_process import AgentProcess


def test_register_bodies_in_any_casing(dev_agent: AgentProcess) -> None:
    status, _, body = dev_agent.request(
        "PUT",
        "/v1/agent/service/register",
        {
            "name": "web",
            "id": "web-1",
            "port": 80,
            "enabletagoverride": True,
            "TaggedAddresses": {"lan": {"address": "10.0.0.1", "port": 8080}},
        },
    )
    assert status == 200, body
    status, _, body = dev_agent.request(
        "PUT",
        "/v1/agent/check/register",
        {
            "name": "web-ttl",
            "serviceid": "web-1",
            "ttl": "30s",
            "deregister_critical_service_after": "1h",
        },
    )
    assert status == 200, body
    service = dev_agent.get_json("/v1/agent/service/web-1")
    assert service["EnableTagOverride"] is True
    assert service["TaggedAddresses"]["lan"] == {"Address": "10.0.0.1", "Port": 8080}
    assert dev_agent.get_json("/v1/agent/checks")["web-ttl"]["ServiceID"] == "web-1"

    catalog = {
        "node": "ext",
        "address": "10.9.9.9",
        "service": {
            "service": "db",
            "taggedaddresses": {"wan": {"address": "1.2.3.4", "port": 5432}},
        },
    }
    status, _, body = dev_agent.request("PUT", "/v1/catalog/register", catalog)
    assert status == 200, body
    row = dev_agent.get_json("/v1/catalog/service/db")[0]
    assert row["Node"] == "ext"
    assert row["ServiceTaggedAddresses"]["wan"] == {"Address": "1.2.3.4", "Port": 5432}

    status, _, body = dev_agent.request(
        "PUT", "/v1/agent/service/register", {"Name": "x", "Bogus": 1}
    )
    assert (status, body) == (400, b'Request decode failed: json: unknown field "Bogus"')
    assert json.loads(dev_agent.request("GET", "/v1/agent/services")[2]).keys() == {"web-1"}


def test_shapes_and_status_codes(dev_agent: AgentProcess) -> None:
    status, _, _ = dev_agent.request("PUT", "/v1/kv/empty", b"")
    assert status == 200
    assert dev_agent.get_json("/v1/kv/empty")[0]["Value"] is None
    assert dev_agent.request("GET", "/v1/kv/")[::2] == (400, b"Missing key name")

    for method, path in (
        ("PUT", "/v1/kv/far?dc=nowhere"),
        ("GET", "/v1/catalog/nodes?dc=nowhere"),
        ("GET", "/v1/health/service/consul?dc=nowhere"),
    ):
        assert dev_agent.request(method, path)[::2] == (500, b"No path to datacenter"), path
    assert dev_agent.request("GET", "/v1/kv/far")[0] == 404  # nothing written locally
    assert dev_agent.request("GET", "/v1/catalog/nodes?dc=dc1")[0] == 200

    conn = dev_agent.connect()
    conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = conn.recv(65536).decode()
    conn.close()
    assert head.startswith("HTTP/1.1 301")
    assert "\r\nLocation: /ui/\r\n" in head

    stats = dev_agent.get_json("/v1/agent/self")["Stats"]
    assert {"agent", "build", "consul", "raft", "runtime", "serf_lan"} <= set(stats)
    consul = stats["consul"]
    assert consul["server"] == "true" and consul["leader"] == "true"
    assert consul["known_datacenters"] == "1"
    assert consul["leader_addr"]
    assert stats["raft"]["state"] == "Leader"
    assert all(isinstance(v, str) for section in stats.values() for v in section.values())

    body = {"Name": "ip", "Address": "10.1.2.3", "Port": 80}
    assert dev_agent.request("PUT", "/v1/agent/service/register", body)[0] == 200
    assert dev_agent.request("PUT", "/v1/agent/service/register", {"Name": "plain"})[0] == 200
    services = dev_agent.get_json("/v1/agent/services")
    assert services["ip"]["TaggedAddresses"] == {
        "lan_ipv4": {"Address": "10.1.2.3", "Port": 80},
        "wan_ipv4": {"Address": "10.1.2.3", "Port": 80},
    }
    plain = json.dumps(services["plain"])
    for omitted in ("Kind", "Proxy", "Connect", "ContentHash", "TaggedAddresses"):
        assert omitted not in plain, omitted

    assert dev_agent.request("PUT", "/v1/agent/maint?enable=true")[0] == 404
    assert dev_agent.request("PUT", "/v1/agent/maintenance?enable=true&reason=r")[0] == 200
    assert dev_agent.get_json("/v1/agent/checks")["_node_maintenance"]["Status"] == "critical"
    assert dev_agent.request("PUT", "/v1/agent/maintenance?enable=false")[0] == 200
    assert "_node_maintenance" not in dev_agent.get_json("/v1/agent/checks")
    dev_agent.request("PUT", "/v1/agent/service/register", {"Name": "db"})
    assert dev_agent.request("PUT", "/v1/agent/service/maintenance/db?enable=true")[0] == 200
    assert "_service_maintenance:db" in dev_agent.get_json("/v1/agent/checks")
    assert dev_agent.request("PUT", "/v1/agent/service/maintenance/db?enable=false")[0] == 200
    assert "_service_maintenance:db" not in dev_agent.get_json("/v1/agent/checks")


def test_missing_acl_rows_answer_as_consul(agent_factory: object) -> None:
    agent = agent_factory(  # type: ignore[operator]
        "-hcl",
        'acl { enabled = true, default_policy = "deny", tokens { initial_management = "root" } }',
    )
    root = {"X-Consul-Token": "root"}
    for path in (
        "/v1/acl/token/00000000-0000-0000-0000-00000000dead",
        "/v1/acl/policy/00000000-0000-0000-0000-00000000dead",
    ):
        assert agent.request("GET", path, headers=root)[::2] == (403, b"ACL not found"), path
    status, _, body = agent.request("PUT", "/v1/acl/role", {"Name": "r1"}, headers=root)
    assert status == 200, body
    role_id = json.loads(body)["ID"]
    assert agent.request("DELETE", f"/v1/acl/role/{role_id}", headers=root)[0] == 200
    assert agent.request("GET", f"/v1/acl/role/{role_id}", headers=root)[::2] == (404, b"")
    assert agent.request("GET", "/v1/acl/role/name/r1", headers=root)[::2] == (404, b"")
    status, _, _ = agent.request("GET", f"/v1/acl/role/{role_id}", headers={"X-Consul-Token": "x"})
    assert status == 403


def _stream(agent: AgentProcess, path: str) -> socket.socket:
    conn = agent.connect()
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return conn


def _read_until(conn: socket.socket, needle: bytes, deadline_s: float = 10.0) -> bytes:
    end = time.monotonic() + deadline_s
    seen = b""
    while needle not in seen:
        remaining = end - time.monotonic()
        assert remaining > 0, f"{needle!r} not seen in {seen[-2000:]!r}"
        conn.settimeout(remaining)
        chunk = conn.recv(65536)
        assert chunk, f"closed before {needle!r}: {seen[-2000:]!r}"
        seen += chunk
    return seen


def test_monitor_streams_the_log(agent_factory: Any) -> None:
    dev_agent = agent_factory("-log-level", "info")
    assert dev_agent.request("GET", "/v1/agent/monitor?loglevel=loud")[::2] == (
        400,
        b"Unknown log level: loud",
    )
    info = _stream(dev_agent, "/v1/agent/monitor?loglevel=info")
    debug = _stream(dev_agent, "/v1/agent/monitor?loglevel=debug")
    as_json = _stream(dev_agent, "/v1/agent/monitor?loglevel=info&logjson")
    try:
        for conn in (info, debug, as_json):
            _read_until(conn, b"\r\n\r\n")
        time.sleep(0.2)  # every handler attached (the headers go out just before)
        assert dev_agent.request("PUT", "/v1/agent/reload")[0] == 200
        _read_until(info, b"[INFO]  agent: reloaded configuration")
        _read_until(as_json, b'"@message": "reloaded configuration"')
        bad = dev_agent.connect()
        bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n")
        bad.close()
        _read_until(debug, b"[DEBUG] http: malformed request")
        assert b"malformed request" not in dev_agent.log_path.read_bytes()
    finally:
        for conn in (info, debug, as_json):
            conn.close()


def test_metrics_stream_version_and_host(dev_agent: AgentProcess) -> None:
    conn = _stream(dev_agent, "/v1/agent/metrics/stream")
    try:
        seen = _read_until(conn, b'"Gauges"')
        assert b"consul.agent.services" in seen
    finally:
        conn.close()
    version = dev_agent.get_json("/v1/agent/version")
    assert version["HumanVersion"].startswith("1.16")
    host = dev_agent.get_json("/v1/agent/host")
    assert host["Memory"]["total"] > 0 and host["CPU"] and host["Host"]["hostname"]
    assert host["Disk"]["total"] > 0 and host["Errors"] is None


def test_agent_health_by_service(dev_agent: AgentProcess) -> None:
    assert dev_agent.request("GET", "/v1/agent/health/service/name/web")[0] == 404
    assert dev_agent.request("GET", "/v1/agent/health/service/name/web?format=text")[::2] == (
        404,
        b"ServiceName web Not Found",
    )
    assert dev_agent.request("GET", "/v1/agent/health/service/id/web-1?format=text")[::2] == (
        404,
        b"ServiceId web-1 not found",
    )
    for number in (1, 2):
        body = {"Name": "web", "ID": f"web-{number}", "Check": {"TTL": "10m"}}
        assert dev_agent.request("PUT", "/v1/agent/service/register", body)[0] == 200
    path = "/v1/agent/health/service/name/web"
    status, _, body = dev_agent.request("GET", path)
    assert status == 503
    found = json.loads(body)
    assert [f["Service"]["ID"] for f in found] == ["web-1", "web-2"]
    assert {f["AggregatedStatus"] for f in found} == {"critical"}
    assert found[0]["Checks"][0]["CheckID"] == "service:web-1"
    for number in (1, 2):
        dev_agent.request("PUT", f"/v1/agent/check/pass/service:web-{number}")
    assert dev_agent.request("GET", path + "?format=text")[::2] == (200, b"passing")
    dev_agent.request("PUT", "/v1/agent/check/warn/service:web-2")
    assert dev_agent.request("GET", path + "?format=text")[::2] == (429, b"warning")
    status, _, body = dev_agent.request("GET", "/v1/agent/health/service/id/web-1")
    assert status == 200 and json.loads(body)["AggregatedStatus"] == "passing"
    dev_agent.request("PUT", "/v1/agent/service/maintenance/web-1?enable=true")
    assert dev_agent.request("GET", "/v1/agent/health/service/id/web-1?format=text")[::2] == (
        503,
        b"maintenance",
    )
