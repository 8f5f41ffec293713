"""Anti-entropy on a real dev agent: check_update_interval, ACL-refused syncs,
and removal of catalog rows on the agent's node that the agent does not know.

Waits use deadlines (`wait_for`), never bare sleeps. "Not visible yet" is read
right after the change, and only asserted while the interval cannot have
passed, so a slow machine makes the test weaker, never wrong.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.agent_process import AgentProcess, wait_for

INTERVAL_S = 3.0


def put(agent: AgentProcess, path: str, body: object = None, token: str = "") -> int:
    headers = {"X-Consul-Token": token} if token else None
    status, _, data = agent.request("PUT", path, body, headers=headers)  # type: ignore[arg-type]
    assert status == 200, (path, status, data)
    return status


def catalog_row(agent: AgentProcess, service: str, check_id: str) -> tuple[str, str] | None:
    for row in agent.get_json(f"/v1/health/checks/{service}"):
        if row["CheckID"] == check_id:
            return row["Status"], row["Output"]
    return None


def test_check_output_alone_waits_for_check_update_interval(
    agent_factory: Callable[..., AgentProcess],
) -> None:
    agent = agent_factory("-hcl", f'check_update_interval = "{INTERVAL_S:g}s"')
    service = {"Name": "web", "Port": 80, "Check": {"CheckID": "web-ttl", "TTL": "10m"}}
    put(agent, "/v1/agent/service/register", service)

    def update(status: str, output: str) -> None:
        put(agent, "/v1/agent/check/update/web-ttl", {"Status": status, "Output": output})

    def row() -> tuple[str, str] | None:
        return catalog_row(agent, "web", "web-ttl")

    # A status change goes to the catalog at once.
    synced_no_earlier_than = time.monotonic()
    update("passing", "first")
    wait_for(lambda: row() == ("passing", "first"))

    # Output alone: the agent has it, the catalog not yet.
    update("passing", "second")
    seen = row()
    if time.monotonic() - synced_no_earlier_than < INTERVAL_S:
        assert seen == ("passing", "first")
    assert agent.get_json("/v1/agent/checks")["web-ttl"]["Output"] == "second"
    # ... until the interval has passed since the last sync.
    wait_for(lambda: row() == ("passing", "second"), deadline_s=INTERVAL_S + 10)

    # Output alone again, then a status change: the status change goes at
    # once, with the latest output, long before the interval would release it.
    synced_no_earlier_than = time.monotonic()
    update("passing", "third")
    seen = row()
    if time.monotonic() - synced_no_earlier_than < INTERVAL_S:
        assert seen == ("passing", "second")
    changed_at = time.monotonic()
    update("warning", "fourth")
    wait_for(lambda: row() == ("warning", "fourth"))
    assert time.monotonic() - changed_at < INTERVAL_S


ACL_HCL = """
acl {
  enabled = true
  default_policy = "deny"
  tokens {
    initial_management = "root-secret-0000"
    agent = "root-secret-0000"
    default = "root-secret-0000"
  }
}
"""


def test_a_service_refused_by_acls_is_logged_once_and_others_sync(
    tmp_path: Path, agent_factory: Callable[..., AgentProcess]
) -> None:
    services = tmp_path / "services"
    services.mkdir()
    (services / "ghost.hcl").write_text(
        'service {\n  name = "ghost"\n  port = 81\n  token = "no-such-secret-9999"\n}\n'
    )
    (services / "api.hcl").write_text(
        'service {\n  name = "api"\n  port = 8080\n  token = "root-secret-0000"\n}\n'
    )
    agent = agent_factory("-hcl", ACL_HCL, "-config-dir", str(services))
    root = {"X-Consul-Token": "root-secret-0000"}

    def catalog_services() -> dict[str, Any]:
        status, _, body = agent.request("GET", "/v1/catalog/services", headers=root)
        assert status == 200, (status, body)
        return dict(json.loads(body))

    wait_for(lambda: "api" in catalog_services())
    wait_for(lambda: "blocked by ACLs" in agent.log_text())
    assert "ghost" not in catalog_services()
    # More sync rounds (this one goes with the default token): the refusal
    # is not logged again.
    put(
        agent, "/v1/agent/service/register", {"Name": "extra", "Port": 82}, token="root-secret-0000"
    )
    wait_for(lambda: "extra" in catalog_services())
    log_text = agent.log_text()
    warnings = [line for line in log_text.splitlines() if "blocked by ACLs" in line]
    assert len(warnings) == 1, warnings
    assert "service=ghost" in warnings[0] and "ACL not found" in warnings[0]
    assert "no-such-secret-9999" not in log_text and "root-secret-0000" not in log_text


def test_rows_on_this_node_the_agent_does_not_know_are_removed(
    agent_factory: Callable[..., AgentProcess],
) -> None:
    agent = agent_factory("-hcl", ACL_HCL)
    root = "root-secret-0000"

    def read(path: str) -> Any:
        status, _, body = agent.request("GET", path, headers={"X-Consul-Token": root})
        assert status == 200, (path, status, body)
        return json.loads(body)

    node = read("/v1/agent/self")["Config"]["NodeName"]
    # Written straight into the catalog, behind the agent's back.
    legacy = {
        "Node": node,
        "Address": "127.0.0.1",
        "Service": {"ID": "legacy", "Service": "legacy", "Port": 9},
        "Check": {"CheckID": "stray", "Name": "stray", "Status": "passing"},
    }
    put(agent, "/v1/catalog/register", legacy, token=root)
    far = {"Node": "elsewhere", "Address": "10.9.9.9", "Service": {"Service": "far", "Port": 9}}
    put(agent, "/v1/catalog/register", far, token=root)

    def node_rows() -> set[str]:
        services = set(read(f"/v1/catalog/node/{node}")["Services"])
        return services | {c["CheckID"] for c in read(f"/v1/health/node/{node}")}

    assert {"legacy", "stray"} <= node_rows()
    # New agent tokens start a full sync (as in Consul), which removes them.
    put(agent, "/v1/agent/token/agent", {"Token": root}, token=root)
    wait_for(lambda: not {"legacy", "stray"} & node_rows())
    assert "serfHealth" in node_rows()
    assert "far" in read("/v1/catalog/services")
