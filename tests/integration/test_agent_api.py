"""Agent endpoints beyond the basics: checks at run time, reaping, leave, filters."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.agent_process import AgentProcess, free_port, proconsul_cmd, wait_for


def put(agent: AgentProcess, path: str, body: object = None) -> tuple[int, bytes]:
    status, _, data = agent.request("PUT", path, body)  # type: ignore[arg-type]
    return status, data


def test_check_register_update_and_deregister(dev_agent: AgentProcess) -> None:
    assert put(dev_agent, "/v1/agent/service/register", {"Name": "web", "Port": 80})[0] == 200
    check = {"Name": "web ttl", "CheckID": "web-ttl", "ServiceID": "web", "TTL": "30s"}
    assert put(dev_agent, "/v1/agent/check/register", check)[0] == 200
    checks = dev_agent.get_json("/v1/agent/checks")
    assert checks["web-ttl"]["Status"] == "critical"
    assert checks["web-ttl"]["ServiceName"] == "web"

    update = {"Status": "warning", "Output": "disk 91% full"}
    assert put(dev_agent, "/v1/agent/check/update/web-ttl", update)[0] == 200
    row = dev_agent.get_json("/v1/agent/checks")["web-ttl"]
    assert (row["Status"], row["Output"]) == ("warning", "disk 91% full")
    wait_for(
        lambda: [c["Status"] for c in dev_agent.get_json("/v1/health/checks/web")] == ["warning"]
    )
    # A warning instance is not passing.
    assert dev_agent.get_json("/v1/health/service/web?passing") == []
    assert dev_agent.get_json("/v1/health/state/warning")[0]["CheckID"] == "web-ttl"

    status, body = put(dev_agent, "/v1/agent/check/update/web-ttl", {"Status": "bogus"})
    assert status == 400
    status, body = put(
        dev_agent, "/v1/agent/check/register", {"Name": "x", "ServiceID": "nope", "TTL": "5s"}
    )
    assert status == 400 and b"nope" in body
    status, body = put(dev_agent, "/v1/agent/check/register", {"Name": "x", "HTTP": "http://a"})
    assert status == 400 and b"Interval" in body

    assert put(dev_agent, "/v1/agent/check/deregister/web-ttl")[0] == 200
    assert "web-ttl" not in dev_agent.get_json("/v1/agent/checks")
    wait_for(lambda: dev_agent.get_json("/v1/health/checks/web") == [])


def test_critical_service_is_deregistered_after_the_limit(dev_agent: AgentProcess) -> None:
    service = {
        "Name": "flaky",
        "Port": 81,
        "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "2s"},
    }
    assert put(dev_agent, "/v1/agent/service/register", service)[0] == 200
    keep = {"Name": "steady", "Port": 82, "Check": {"TTL": "30s", "Status": "passing"}}
    assert put(dev_agent, "/v1/agent/service/register", keep)[0] == 200
    wait_for(lambda: "flaky" not in dev_agent.get_json("/v1/agent/services"), deadline_s=10)
    wait_for(lambda: "flaky" not in dev_agent.get_json("/v1/catalog/services"))
    assert "steady" in dev_agent.get_json("/v1/agent/services")


def test_agent_service_has_content_hash(dev_agent: AgentProcess) -> None:
    assert put(dev_agent, "/v1/agent/service/register", {"Name": "api", "Port": 9})[0] == 200
    status, headers, _body = dev_agent.request("GET", "/v1/agent/service/api")
    assert status == 200
    first = headers["X-Consul-ContentHash"]
    assert first
    update = {"Name": "api", "Port": 10}
    assert put(dev_agent, "/v1/agent/service/register", update)[0] == 200
    _, headers, _ = dev_agent.request("GET", "/v1/agent/service/api")
    assert headers["X-Consul-ContentHash"] != first
    assert dev_agent.request("GET", "/v1/agent/service/none")[0] == 404


def test_health_node_and_node_meta_filter(dev_agent: AgentProcess) -> None:
    node = dev_agent.get_json("/v1/agent/self")["Config"]["NodeName"]
    checks = dev_agent.get_json(f"/v1/health/node/{node}")
    assert [c["CheckID"] for c in checks] == ["serfHealth"]
    for name, rack in (("n-a", "r1"), ("n-b", "r2")):
        body = {
            "Node": name,
            "Address": "10.9.9.9",
            "NodeMeta": {"rack": rack},
            "Service": {"Service": "db", "ID": f"db-{name}"},
        }
        assert put(dev_agent, "/v1/catalog/register", body)[0] == 200
    nodes = dev_agent.get_json("/v1/catalog/nodes?node-meta=rack:r1")
    assert [n["Node"] for n in nodes] == ["n-a"]
    rows = dev_agent.get_json("/v1/catalog/service/db?node-meta=rack:r2")
    assert [r["ServiceID"] for r in rows] == ["db-n-b"]
    assert dev_agent.get_json("/v1/catalog/services?node-meta=rack:r9") == {}


def test_leave_stops_the_agent(dev_agent: AgentProcess) -> None:
    result = subprocess.run(
        proconsul_cmd("leave"),
        capture_output=True,
        text=True,
        env={"CONSUL_HTTP_ADDR": dev_agent.http_addr, "PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Graceful leave complete" in result.stdout
    assert dev_agent.proc.wait(timeout=15) == 0


def test_retry_join_gives_up_after_retry_max_and_exits_1(tmp_path: Path) -> None:
    result = subprocess.run(
        proconsul_cmd(
            "agent",
            "-dev",
            "-http-port",
            str(free_port()),
            "-dns-port",
            "-1",
            "-serf-lan-port",
            str(free_port()),
            "-retry-join",
            f"127.0.0.1:{free_port()}",
            "-hcl",
            "retry_max = 2",
            "-hcl",
            'retry_interval = "100ms"',
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "max join retry exhausted" in result.stderr + result.stdout
