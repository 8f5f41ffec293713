"""The ACL HTTP API and `proconsul acl` CLI on a real dev agent with ACLs on.

Covers the walkthrough's ACL steps as printed there (bootstrap, token list,
agent policies, node- and service-identity tokens), the bootstrap reset file,
JSON output, rule errors naming their line, the anonymous token's protection,
and 401 with ACLs disabled. Requests carry the bootstrap token; enforcement
itself is tested in test_acl_enforcement.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.agent_process import AgentProcess, proconsul_cmd, start_agent

ACL_HCL = 'acl { enabled = true default_policy = "deny" }'
ANONYMOUS = "00000000-0000-0000-0000-000000000002"
GLOBAL_MANAGEMENT = "00000000-0000-0000-0000-000000000001"
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC"
AGENT_RULES = """node "{name}" {{
  policy = "write"
}}
service_prefix "" {{
  policy = "read"
}}
"""


@dataclass
class ACLAgent:
    agent: AgentProcess
    data_dir: Path
    bootstrap: dict[str, object]
    second_bootstrap: tuple[int, bytes]

    @property
    def token(self) -> str:
        return str(self.bootstrap["SecretID"])

    def request(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, dict[str, str], bytes]:
        """A request made with the bootstrap (management) token."""
        return self.agent.request(method, path, body, headers={"X-Consul-Token": self.token})

    def get_json(self, path: str) -> Any:
        status, _, body = self.request("GET", path)
        assert status == 200, (status, body)
        return json.loads(body)


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ACLAgent]:
    tmp = tmp_path_factory.mktemp("acl")
    data_dir = tmp / "data"
    data_dir.mkdir()
    agent = start_agent(tmp, "-data-dir", str(data_dir), "-hcl", ACL_HCL)
    try:
        status, _, body = agent.request("PUT", "/v1/acl/bootstrap")
        assert status == 200, body
        again = agent.request("PUT", "/v1/acl/bootstrap")
        yield ACLAgent(agent, data_dir, json.loads(body), (again[0], again[2]))
    finally:
        agent.stop()


def cli(
    acl: ACLAgent, *args: str, token: str | None = None, stdin: str = ""
) -> tuple[int, str, str]:
    env = {**os.environ, "CONSUL_HTTP_ADDR": acl.agent.http_addr}
    env["CONSUL_HTTP_TOKEN"] = acl.token if token is None else token
    done = subprocess.run(
        proconsul_cmd(*args), capture_output=True, text=True, env=env, input=stdin, timeout=30
    )
    return done.returncode, done.stdout, done.stderr


def test_bootstrap_once_then_403_with_reset_index(acl_agent: ACLAgent) -> None:
    token = acl_agent.bootstrap
    assert token["ID"] == token["SecretID"]
    assert token["Description"] == "Bootstrap Token (Global Management)"
    assert token["Policies"] == [{"ID": GLOBAL_MANAGEMENT, "Name": "global-management"}]
    status, body = acl_agent.second_bootstrap
    index = token["CreateIndex"]
    assert status == 403
    assert body.decode() == (
        f"Permission denied: ACL bootstrap no longer allowed (reset index: {index})"
    )


def test_cli_bootstrap_refused_text(acl_agent: ACLAgent) -> None:
    code, _, err = cli(acl_agent, "acl", "bootstrap")
    assert code == 1
    assert re.fullmatch(
        r"Failed ACL bootstrapping: Unexpected response code: 403 \(Permission denied: "
        r"ACL bootstrap no longer allowed \(reset index: \d+\)\)\n",
        err,
    )


def test_token_list_shows_bootstrap_and_anonymous(acl_agent: ACLAgent) -> None:
    code, out, err = cli(acl_agent, "acl", "token", "list")
    assert code == 0, err
    boot = acl_agent.bootstrap
    blocks = out.rstrip("\n").split("\n\n")
    # Other tests add tokens; the first block is the bootstrap token, the last the anonymous one.
    assert re.fullmatch(
        f"AccessorID:       {boot['AccessorID']}\n"
        f"SecretID:         {boot['SecretID']}\n"
        "Description:      Bootstrap Token \\(Global Management\\)\n"
        "Local:            false\n"
        f"Create Time:      {TIME}\n"
        "Legacy:           false\n"
        "Policies:\n"
        f"   {GLOBAL_MANAGEMENT} - global-management",
        blocks[0],
    ), blocks[0]
    assert re.fullmatch(
        f"AccessorID:       {ANONYMOUS}\n"
        "SecretID:         anonymous\n"
        "Description:      Anonymous Token\n"
        "Local:            false\n"
        f"Create Time:      {TIME}\n"
        "Legacy:           false",
        blocks[-1],
    ), blocks[-1]


def test_bootstrap_and_anonymous_are_the_only_tokens_at_first(tmp_path: Path) -> None:
    agent = start_agent(tmp_path, "-hcl", ACL_HCL)
    try:
        status, _, body = agent.request("PUT", "/v1/acl/bootstrap")
        assert status == 200
        management = {"X-Consul-Token": json.loads(body)["SecretID"]}
        status, _, body = agent.request("GET", "/v1/acl/tokens", headers=management)
        assert status == 200, body
        tokens = json.loads(body)
        assert [t["Description"] for t in tokens] == [
            "Bootstrap Token (Global Management)",
            "Anonymous Token",
        ]
    finally:
        agent.stop()


def test_agent_policies_printed_as_in_walkthrough(acl_agent: ACLAgent, tmp_path: Path) -> None:
    for name in ("consul-server-1", "consul-client-1"):
        rules_file = tmp_path / f"{name}.hcl"
        rules_file.write_text(AGENT_RULES.format(name=name))
        code, out, err = cli(
            acl_agent, "acl", "policy", "create", "-name", name, "-rules", f"@{rules_file}"
        )
        assert code == 0, err
        policy_id = out.splitlines()[0].removeprefix("ID:           ")
        assert re.fullmatch(r"[0-9a-f-]{36}", policy_id)
        assert out == (
            f"ID:           {policy_id}\n"
            f"Name:         {name}\n"
            "Description:  \n"
            "Datacenters:  \n"
            "Rules:\n" + AGENT_RULES.format(name=name) + "\n"
        )
    code, out, _ = cli(acl_agent, "acl", "policy", "read", "-name", "consul-client-1")
    assert code == 0 and "Name:         consul-client-1\n" in out
    # A token from that policy, by name.
    code, out, err = cli(
        acl_agent,
        "acl",
        "token",
        "create",
        "-description",
        "old way",
        "-policy-name",
        "consul-server-1",
    )
    assert code == 0, err
    assert re.search(r"Policies:\n   [0-9a-f-]{36} - consul-server-1\n\n\Z", out), out


def test_rules_from_stdin_and_literal(acl_agent: ACLAgent) -> None:
    code, out, err = cli(
        acl_agent,
        "acl",
        "policy",
        "create",
        "-name",
        "from-stdin",
        "-rules",
        "-",
        stdin='key_prefix "" { policy = "read" }',
    )
    assert code == 0, err
    assert 'Rules:\nkey_prefix "" { policy = "read" }\n' in out


def test_node_identity_token_printed_as_in_walkthrough(acl_agent: ACLAgent) -> None:
    code, out, err = cli(
        acl_agent,
        "acl",
        "token",
        "create",
        "-description",
        "consul-server-1 agent token",
        "-node-identity",
        "consul-server-1:us-west-1",
    )
    assert code == 0, err
    assert re.fullmatch(
        r"AccessorID:       [0-9a-f-]{36}\n"
        r"SecretID:         [0-9a-f-]{36}\n"
        "Description:      consul-server-1 agent token\n"
        "Local:            false\n"
        f"Create Time:      {TIME}\n"
        "Node Identities:\n"
        "   consul-server-1 \\(Datacenter: us-west-1\\)\n\n",
        out,
    ), out


def test_service_identity_token_printed_as_in_walkthrough(acl_agent: ACLAgent) -> None:
    code, out, err = cli(
        acl_agent,
        "acl",
        "token",
        "create",
        "-description",
        "Token for API",
        "-service-identity",
        "api",
    )
    assert code == 0, err
    assert out.endswith("Service Identities:\n   api (Datacenters: all)\n\n"), out
    code, out, _ = cli(acl_agent, "acl", "token", "create", "-service-identity", "web:dc1,dc2")
    assert "   web (Datacenters: dc1, dc2)\n" in out
    tokens = acl_agent.get_json("/v1/acl/tokens?servicename=api")
    assert [t["Description"] for t in tokens] == ["Token for API"]


def test_json_formats(acl_agent: ACLAgent) -> None:
    code, out, err = cli(
        acl_agent,
        "acl",
        "token",
        "create",
        "-description",
        "json one",
        "-node-identity",
        "n1:dc1",
        "-expires-ttl",
        "10m",
        "-format",
        "json",
    )
    assert code == 0, err
    token = json.loads(out)
    assert token["NodeIdentities"] == [{"NodeName": "n1", "Datacenter": "dc1"}]
    assert token["ExpirationTime"] > token["CreateTime"]
    assert "ExpirationTTL" not in token
    code, out, _ = cli(
        acl_agent, "acl", "token", "read", "-id", token["AccessorID"], "-format=json"
    )
    assert json.loads(out)["AccessorID"] == token["AccessorID"]
    code, out, _ = cli(acl_agent, "acl", "token", "read", "-self", "-format=json")
    assert json.loads(out)["AccessorID"] == acl_agent.bootstrap["AccessorID"]
    code, out, _ = cli(acl_agent, "acl", "policy", "list", "-format=json")
    names = {p["Name"] for p in json.loads(out)}
    assert "global-management" in names
    assert all("Rules" not in p for p in json.loads(out))
    code, out, _ = cli(acl_agent, "acl", "token", "list", "-format=json")
    assert {t["AccessorID"] for t in json.loads(out)} >= {ANONYMOUS}


def test_bad_rules_name_the_line(acl_agent: ACLAgent) -> None:
    rules = 'node "a" {\n  policy = "write"\n}\nservice "b" {\n  policy = "wrte"\n}\n'
    code, _, err = cli(acl_agent, "acl", "policy", "create", "-name", "bad", "-rules", rules)
    assert code == 1
    assert err.startswith("Failed to create new policy: Unexpected response code: 400 (")
    assert "line 4" in err or "line 5" in err, err
    status, _, body = acl_agent.request(
        "PUT", "/v1/acl/policy", {"Name": "bad2", "Rules": "bogus {"}
    )
    assert status == 400 and b"line " in body


def test_anonymous_token_cannot_be_deleted(acl_agent: ACLAgent) -> None:
    status, _, body = acl_agent.request("DELETE", f"/v1/acl/token/{ANONYMOUS}")
    assert status == 400
    assert body == b"Delete operation not permitted on the anonymous token"
    code, _, err = cli(acl_agent, "acl", "token", "delete", "-id", ANONYMOUS)
    assert code == 1 and "not permitted" in err
    assert acl_agent.get_json(f"/v1/acl/token/{ANONYMOUS}")["SecretID"] == "anonymous"


def test_token_update_clone_delete(acl_agent: ACLAgent) -> None:
    code, out, _ = cli(acl_agent, "acl", "token", "create", "-description", "orig", "-format=json")
    token = json.loads(out)
    accessor = token["AccessorID"]
    code, out, err = cli(
        acl_agent,
        "acl",
        "token",
        "update",
        "-id",
        accessor,
        "-description",
        "changed",
        "-policy-name",
        "global-management",
        "-format=json",
    )
    assert code == 0, err
    updated = json.loads(out)
    assert updated["Description"] == "changed"
    assert updated["SecretID"] == token["SecretID"]
    assert updated["Policies"][0]["Name"] == "global-management"
    code, out, _ = cli(acl_agent, "acl", "token", "clone", "-id", accessor, "-format=json")
    clone = json.loads(out)
    assert clone["AccessorID"] != accessor and clone["Policies"] == updated["Policies"]
    code, out, _ = cli(acl_agent, "acl", "token", "delete", "-id", accessor)
    assert out == f'Token "{accessor}" deleted successfully\n'
    status, _, body = acl_agent.request("GET", f"/v1/acl/token/{accessor}")
    assert (status, body) == (403, b"ACL not found")


def test_policy_update_and_delete(acl_agent: ACLAgent) -> None:
    code, out, _ = cli(acl_agent, "acl", "policy", "create", "-name", "tmp-pol", "-format=json")
    pid = json.loads(out)["ID"]
    code, out, err = cli(
        acl_agent,
        "acl",
        "policy",
        "update",
        "-id",
        pid,
        "-description",
        "d",
        "-valid-datacenter",
        "dc1",
    )
    assert code == 0, err
    assert "Description:  d\nDatacenters:  dc1\n" in out
    code, out, _ = cli(acl_agent, "acl", "policy", "delete", "-name", "tmp-pol")
    assert out == f'Policy "{pid}" deleted successfully\n'
    status, _, _ = acl_agent.request("DELETE", f"/v1/acl/policy/{GLOBAL_MANAGEMENT}")
    assert status == 400


def test_roles(acl_agent: ACLAgent) -> None:
    code, out, err = cli(
        acl_agent,
        "acl",
        "role",
        "create",
        "-name",
        "ops",
        "-policy-name",
        "global-management",
        "-service-identity",
        "web",
    )
    assert code == 0, err
    assert "Name:         ops\n" in out
    assert f"Policies:\n   {GLOBAL_MANAGEMENT} - global-management\n" in out
    code, out, _ = cli(acl_agent, "acl", "role", "read", "-name", "ops", "-format=json")
    role = json.loads(out)
    code, out, _ = cli(acl_agent, "acl", "token", "create", "-role-name", "ops", "-format=json")
    assert json.loads(out)["Roles"] == [{"ID": role["ID"], "Name": "ops"}]
    assert [r["Name"] for r in acl_agent.get_json("/v1/acl/roles")] == ["ops"]
    code, out, _ = cli(acl_agent, "acl", "role", "delete", "-id", role["ID"])
    assert out == f'Role "{role["ID"]}" deleted successfully\n'


def test_reset_file_allows_one_more_bootstrap(acl_agent: ACLAgent) -> None:
    # Moves the bootstrap marker on; the first bootstrap token stays valid for the other tests.
    first_index = acl_agent.bootstrap["CreateIndex"]
    reset = acl_agent.data_dir / "acl-bootstrap-reset"
    reset.write_text(f"{first_index}\n")
    status, _, body = acl_agent.request("PUT", "/v1/acl/bootstrap")
    assert status == 200, body
    second = json.loads(body)
    assert second["AccessorID"] != acl_agent.bootstrap["AccessorID"]
    assert not reset.exists()
    status, _, body = acl_agent.request("PUT", "/v1/acl/bootstrap")
    assert status == 403
    assert f"(reset index: {second['CreateIndex']})".encode() in body


def test_acl_disabled_answers_401(dev_agent: AgentProcess) -> None:
    for method, path in (
        ("PUT", "/v1/acl/bootstrap"),
        ("GET", "/v1/acl/tokens"),
        ("GET", "/v1/acl/policy/name/x"),
        ("GET", "/v1/acl/whatever"),
    ):
        status, _, body = dev_agent.request(method, path)
        assert (status, body) == (401, b"ACL support disabled"), path


def test_initial_management_token_from_config(tmp_path: Path) -> None:
    secret = "5f4c1e7a-0d3b-4c8e-9a71-2b6d8e0f1a23"
    hcl = f'acl {{ enabled = true tokens {{ initial_management = "{secret}" }} }}'
    agent = start_agent(tmp_path, "-hcl", hcl)
    try:
        status, _, body = agent.request(
            "GET", "/v1/acl/token/self", headers={"X-Consul-Token": secret}
        )
        assert status == 200, body
        token = json.loads(body)
        assert token["Policies"] == [{"ID": GLOBAL_MANAGEMENT, "Name": "global-management"}]
        assert agent.request("PUT", "/v1/acl/bootstrap")[0] == 403
        assert secret not in agent.log_text()
    finally:
        agent.stop()


def test_ids_may_be_given_by_unique_prefix(acl_agent: ACLAgent) -> None:
    code, out, _ = cli(acl_agent, "acl", "policy", "create", "-name", "by-prefix", "-format=json")
    pid = json.loads(out)["ID"]
    code, out, err = cli(acl_agent, "acl", "policy", "read", "-id", pid[:8])
    assert code == 0, err
    assert "Name:         by-prefix\n" in out
    code, out, err = cli(acl_agent, "acl", "token", "create", "-policy-id", pid[:8], "-format=json")
    assert code == 0, err
    token = json.loads(out)
    assert token["Policies"] == [{"ID": pid, "Name": "by-prefix"}]
    code, out, _ = cli(acl_agent, "acl", "token", "read", "-id", token["AccessorID"][:8])
    assert f"AccessorID:       {token['AccessorID']}\n" in out
