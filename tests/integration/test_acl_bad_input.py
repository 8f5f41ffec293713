"""Bad input to the ACL HTTP API gets Consul's 400 with a reason, and changes nothing.

One real agent with ACLs on (default deny) and an initial management token;
each case sends one malformed write and then checks the tables did not move.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.agent_process import AgentProcess, start_agent

MANAGEMENT = str(uuid.uuid4())
ACL_HCL = (
    f'acl {{ enabled = true default_policy = "deny" '
    f'tokens {{ initial_management = "{MANAGEMENT}" }} }}'
)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    tmp: Path = tmp_path_factory.mktemp("acl-bad-input")
    process = start_agent(tmp, "-hcl", ACL_HCL)
    try:
        yield process
    finally:
        process.stop()


def put(agent: AgentProcess, path: str, body: Any) -> tuple[int, str]:
    status, _, raw = agent.request("PUT", path, body, headers={"X-Consul-Token": MANAGEMENT})
    return status, raw.decode(errors="replace")


def table_sizes(agent: AgentProcess) -> tuple[int, int]:
    headers = {"X-Consul-Token": MANAGEMENT}
    sizes = []
    for path in ("/v1/acl/policies", "/v1/acl/tokens"):
        status, _, raw = agent.request("GET", path, headers=headers)
        assert status == 200, raw
        sizes.append(len(json.loads(raw)))
    return sizes[0], sizes[1]


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        (
            "/v1/acl/policy",
            {"Name": "unknown-resource", "Rules": 'widget "x" { policy = "read" }'},
            "widget",
        ),
        (
            "/v1/acl/policy",
            {"Name": "bad-level", "Rules": 'service "x" {\n  policy = "sudo"\n}'},
            "line 2",
        ),
        (
            "/v1/acl/policy",
            {"Name": "huge", "Rules": 'service "x" { policy = "read" }\n' * 4000},
            "over the limit",
        ),
        ("/v1/acl/policy", {"Name": "bad name!", "Rules": ""}, "name"),
        (
            "/v1/acl/token",
            {"ServiceIdentities": [{"ServiceName": "Bad Name"}]},
            "service identity",
        ),
        (
            "/v1/acl/token",
            {"NodeIdentities": [{"NodeName": "n1"}]},
            "datacenter",
        ),
        (
            "/v1/acl/token",
            {"ExpirationTime": "2001-01-01T00:00:00Z"},
            "past",
        ),
        ("/v1/acl/token", {"ExpirationTTL": "-5s"}, "> 0"),
        ("/v1/acl/token", {"Policies": [{"Name": "no-such-policy"}]}, "no-such-policy"),
        ("/v1/acl/token", "{not json", "decode"),
    ],
)
def test_bad_acl_write_is_400_and_changes_nothing(
    agent: AgentProcess, path: str, body: Any, reason: str
) -> None:
    before = table_sizes(agent)
    status, text = put(agent, path, body)
    assert status == 400, text
    assert reason.lower() in text.lower(), text
    assert table_sizes(agent) == before
