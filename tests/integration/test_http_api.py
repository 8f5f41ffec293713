"""The HTTP API over real sockets: shapes, headers, blocking queries, bad input."""

from __future__ import annotations

import json
import threading
import time

from tests.agent_process import AgentProcess, wait_for


def register_ttl_service(agent: AgentProcess, name: str, check_id: str) -> None:
    status, _, body = agent.request(
        "PUT",
        "/v1/agent/service/register",
        {"Name": name, "Port": 8080, "Check": {"CheckID": check_id, "TTL": "60s"}},
    )
    assert status == 200, body


def test_blocking_query_returns_on_change_and_not_before(dev_agent: AgentProcess) -> None:
    register_ttl_service(dev_agent, "api", "api-ttl")
    wait_for(lambda: dev_agent.get_json("/v1/health/service/api"))
    _, headers, _ = dev_agent.request("GET", "/v1/health/service/api")
    index = int(headers["X-Consul-Index"])
    assert headers["X-Consul-KnownLeader"] == "true"

    result: dict[str, object] = {}

    def block() -> None:
        code, hdrs, body = dev_agent.request(
            "GET", f"/v1/health/service/api?index={index}&wait=30s", timeout_s=40
        )
        result.update(code=code, index=int(hdrs["X-Consul-Index"]), body=json.loads(body))
        result["returned_at"] = time.monotonic()

    thread = threading.Thread(target=block)
    thread.start()
    thread.join(timeout=1.5)
    assert thread.is_alive(), "a blocking query must not return while nothing changes"

    changed_at = time.monotonic()
    assert dev_agent.request("PUT", "/v1/agent/check/pass/api-ttl")[0] == 200
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert result["code"] == 200
    assert isinstance(result["index"], int) and result["index"] > index
    assert float(result["returned_at"]) - changed_at < 1.0  # type: ignore[arg-type]
    rows = result["body"]
    assert isinstance(rows, list)
    assert {c["CheckID"]: c["Status"] for c in rows[0]["Checks"]}["api-ttl"] == "passing"


def test_blocking_query_times_out_with_same_index(dev_agent: AgentProcess) -> None:
    status, headers, _ = dev_agent.request("GET", "/v1/catalog/services")
    index = headers["X-Consul-Index"]
    started = time.monotonic()
    status, headers, _ = dev_agent.request("GET", f"/v1/catalog/services?index={index}&wait=1s")
    elapsed = time.monotonic() - started
    assert status == 200
    assert headers["X-Consul-Index"] == index
    assert 1.0 <= elapsed < 1.0 + 1.0 / 16 + 0.5


def test_kv_http_semantics(dev_agent: AgentProcess) -> None:
    assert dev_agent.request("GET", "/v1/kv/missing")[0] == 404
    status, _, body = dev_agent.request("PUT", "/v1/kv/a/b?flags=42", b"hello")
    assert (status, body.strip()) == (200, b"true")
    rows = dev_agent.get_json("/v1/kv/a/b")
    assert rows[0]["Key"] == "a/b"
    assert rows[0]["Value"] == "aGVsbG8="  # base64
    assert rows[0]["Flags"] == 42
    assert set(rows[0]) >= {"CreateIndex", "ModifyIndex", "LockIndex", "Flags", "Key", "Value"}
    status, headers, raw = dev_agent.request("GET", "/v1/kv/a/b?raw")
    assert raw == b"hello"
    assert int(headers["X-Consul-Index"]) == rows[0]["ModifyIndex"]
    status, _, body = dev_agent.request("PUT", "/v1/kv/a/b?cas=1", b"nope")
    assert body.strip() == b"false"
    status, _, body = dev_agent.request("PUT", f"/v1/kv/a/b?cas={rows[0]['ModifyIndex']}", b"ok")
    assert body.strip() == b"true"
    status, _, body = dev_agent.request("PUT", "/v1/kv/big", b"x" * (512 * 1024 + 1))
    assert status == 413
    assert b"too large" in body
    assert dev_agent.request("GET", "/v1/kv/big")[0] == 404
    status, _, body = dev_agent.request("GET", "/v1/kv/a?pretty&recurse")
    assert status == 200 and b"\n    " in body


def test_consul_shapes_and_errors(dev_agent: AgentProcess) -> None:
    assert dev_agent.get_json("/v1/health/service/nope") == []
    assert dev_agent.get_json("/v1/catalog/service/nope") == []
    assert dev_agent.get_json("/v1/catalog/datacenters") == ["dc1"]
    status, _, body = dev_agent.request("GET", "/v1/health/state/bogus")
    assert (status, body) == (400, b"Bad check state")
    status, headers, _ = dev_agent.request("DELETE", "/v1/catalog/services")
    assert status == 405
    assert "GET" in headers["Allow"]
    assert dev_agent.request("GET", "/v1/no/such/path")[0] == 404
    status, _, body = dev_agent.request("PUT", "/v1/agent/service/register", b"{not json")
    assert status == 400
    assert body.startswith(b"Request decode failed:")
    status, _, body = dev_agent.request(
        "PUT", "/v1/agent/service/register", {"Name": "x", "Port": "eighty"}
    )
    assert status == 400
    assert b"port" in body
    status, _, body = dev_agent.request("PUT", "/v1/agent/service/register", {"Port": 1})
    assert (status, body) == (400, b"Missing service name")
    status, _, body = dev_agent.request("PUT", "/v1/catalog/register", {"Node": "n"})
    assert (status, body) == (400, b"Must provide address")
    status, _, body = dev_agent.request("PUT", "/v1/agent/check/pass/nope")
    assert status == 404
    assert dev_agent.request("PUT", "/v1/agent/service/deregister/nope")[0] == 404
    # The agent is still healthy after all of that.
    assert dev_agent.request("GET", "/v1/status/leader")[0] == 200


def test_maintenance_mode(dev_agent: AgentProcess) -> None:
    register_ttl_service(dev_agent, "web", "web-ttl")
    dev_agent.request("PUT", "/v1/agent/check/pass/web-ttl")
    wait_for(lambda: dev_agent.get_json("/v1/health/service/web?passing"))
    assert dev_agent.request("PUT", "/v1/agent/service/maintenance/web?enable=true")[0] == 200
    checks = dev_agent.get_json("/v1/agent/checks")
    assert checks["_service_maintenance:web"]["Status"] == "critical"
    wait_for(lambda: dev_agent.get_json("/v1/health/service/web?passing") == [])
    assert dev_agent.request("PUT", "/v1/agent/service/maintenance/web?enable=false")[0] == 200
    wait_for(lambda: dev_agent.get_json("/v1/health/service/web?passing"))
    assert dev_agent.request("PUT", "/v1/agent/maintenance?enable=true&reason=upgrade")[0] == 200
    checks = dev_agent.get_json("/v1/agent/checks")
    assert checks["_node_maintenance"]["Notes"] == "upgrade"
    wait_for(lambda: dev_agent.get_json("/v1/health/service/web?passing") == [])


def test_metrics(dev_agent: AgentProcess) -> None:
    metrics = dev_agent.get_json("/v1/agent/metrics")
    names = {g["Name"] for g in metrics["Gauges"]}
    assert "consul.http.requests" in names
    status, headers, body = dev_agent.request("GET", "/v1/agent/metrics?format=prometheus")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert b"# TYPE consul_http_requests gauge" in body


def test_dev_agent_has_a_connect_ca_root(dev_agent: AgentProcess) -> None:
    """A dev agent leads itself, so it initializes the built-in Connect CA."""
    roots = dev_agent.get_json("/v1/connect/ca/roots")
    active = [root for root in roots["Roots"] if root["Active"]]
    assert [root["ID"] for root in active] == [roots["ActiveRootID"]]
    assert roots["TrustDomain"].endswith(".consul")
    assert active[0]["RootCert"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in json.dumps(roots)  # the signing key never leaves the state
