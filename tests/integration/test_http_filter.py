"""`?filter=` on the list endpoints, over real sockets (a dev agent).

Two versions of `api` told apart by `Meta.version`, and `web`: the health,
catalog and agent lists keep exactly the rows the expression selects; a
filter that does not parse, or names a field the rows do not have, is a 400
with Consul's "Failed to create boolean expression evaluator" text; an empty
filter selects everything.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from tests.agent_process import AgentProcess, wait_for


def register(agent: AgentProcess, service_id: str, name: str, version: str) -> None:
    body = {
        "ID": service_id,
        "Name": name,
        "Port": 8080,
        "Meta": {"version": version},
        "Check": {"CheckID": f"{service_id}-ttl", "TTL": "60s", "Status": "passing"},
    }
    status, _, text = agent.request("PUT", "/v1/agent/service/register", body)
    assert status == 200, text


def get(agent: AgentProcess, path: str, expression: str) -> tuple[int, object]:
    status, _, body = agent.request("GET", f"{path}?filter={quote(expression)}")
    if status != 200:
        return status, body.decode()
    return status, json.loads(body)


def test_filters_select_rows_and_bad_ones_are_400(dev_agent: AgentProcess) -> None:
    register(dev_agent, "api-v1", "api", "v1")
    register(dev_agent, "api-v2", "api", "v2")
    register(dev_agent, "web-1", "web", "v1")
    wait_for(lambda: len(dev_agent.get_json("/v1/health/service/api")) == 2)

    status, rows = get(dev_agent, "/v1/health/service/api", "Service.Meta.version == v2")
    assert status == 200 and isinstance(rows, list)
    assert [row["Service"]["ID"] for row in rows] == ["api-v2"]

    status, rows = get(dev_agent, "/v1/catalog/service/api", 'ServiceMeta.version != "v2"')
    assert status == 200 and isinstance(rows, list)
    assert [row["ServiceID"] for row in rows] == ["api-v1"]

    status, rows = get(dev_agent, "/v1/catalog/nodes", "Node == nobody")
    assert (status, rows) == (200, [])

    status, found = get(dev_agent, "/v1/agent/services", "Service == web or Meta.version == v2")
    assert status == 200 and isinstance(found, dict)
    assert sorted(found) == ["api-v2", "web-1"]

    status, found = get(dev_agent, "/v1/agent/checks", 'ServiceName == "web"')
    assert status == 200 and isinstance(found, dict) and list(found) == ["web-1-ttl"]

    # Everything when empty.
    status, rows = get(dev_agent, "/v1/health/service/api", "")
    assert status == 200 and isinstance(rows, list) and len(rows) == 2

    for path in ("/v1/health/service/api", "/v1/agent/services"):
        status, text = get(dev_agent, path, "foo")
        assert status == 400 and isinstance(text, str), (path, status, text)
        assert text.startswith("Failed to create boolean expression evaluator: 1:4 (3):"), text
    status, text = get(dev_agent, "/v1/health/service/api", "Service.Nope == x")
    assert status == 400 and "Service.Nope" in str(text), text
