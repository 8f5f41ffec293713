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
