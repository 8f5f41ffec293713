"""What Consul clients written against real Consul notice on a dev agent:
request bodies in any casing, shapes, status codes and the agent endpoints
they call (monitor, host, version, health by service)."""

from __future__ import annotations

import json

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

    services = dev_agent.get_json("/v1/agent/services")
    assert "Kind" not in json.dumps(services) and "ContentHash" not in json.dumps(services)

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
