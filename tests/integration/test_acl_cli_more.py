"""More of the ACL CLI and token handling on a real dev agent with ACLs on.

One dev agent (default deny, `initial_management` from config) serves most
tests; the agent recovery token gets its own agents (a dev agent, and a
client agent that knows no server). Covered here:

- tokens from `Authorization: Bearer` and `?token=`;
- `acl token create -secret -accessor -local`, `update -append-*`, `-meta`;
- the anonymous token by name (`-id anonymous`), its policies edited, and the
  new right applying to a tokenless request;
- `acl policy create -valid-datacenter` (and a policy valid elsewhere granting
  nothing here), `policy read -id global-management`;
- `acl role list`/`read`/`update` output as Consul prints it;
- Consul's texts for a bad ID prefix and for refused reads and deletes;
- the agent recovery token: the agent endpoints, and nothing else.

Token expiry is not driven through a real agent: the shortest TTL Consul (and
we) accept is one minute, so expiry is covered by the unit tests
(test_acl_structs, test_state_acl); here only the refusal of a too-short
ExpirationTime is checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.agent_process import AgentProcess, proconsul_cmd, start_agent

MGMT = "6b1c3f0e-2d4a-4e8b-9c7f-1a2b3c4d5e6f"
RECOVERY = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"
ANONYMOUS = "00000000-0000-0000-0000-000000000002"
GLOBAL_MANAGEMENT = "00000000-0000-0000-0000-000000000001"
ACL_HCL = (
    f'acl {{ enabled = true default_policy = "deny" tokens {{ initial_management = "{MGMT}" }} }}'
)
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    proc = start_agent(tmp_path_factory.mktemp("acl-more"), "-hcl", ACL_HCL)
    try:
        yield proc
    finally:
        proc.stop()


def cli(agent: AgentProcess, *args: str, token: str = MGMT) -> tuple[int, str, str]:
    env = {**os.environ, "CONSUL_HTTP_ADDR": agent.http_addr, "CONSUL_HTTP_TOKEN": token}
    done = subprocess.run(proconsul_cmd(*args), capture_output=True, text=True, env=env, timeout=30)
    return done.returncode, done.stdout, done.stderr


def cli_json(agent: AgentProcess, *args: str) -> Any:
    code, out, err = cli(agent, *args, "-format=json")
    assert code == 0, err
    return json.loads(out)


def mgmt(agent: AgentProcess, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    status, _, data = agent.request(method, path, body, headers={"X-Consul-Token": MGMT})
    return status, data


# ----- where a token comes from ------------------------------------------------------


def test_token_from_bearer_header_and_query(agent: AgentProcess) -> None:
    status, _, body = agent.request(
        "GET", "/v1/acl/token/self", headers={"Authorization": f"Bearer {MGMT}"}
    )
    assert status == 200, body
    accessor = json.loads(body)["AccessorID"]
    assert re.fullmatch(UUID, accessor)
    status, _, body = agent.request("GET", f"/v1/acl/token/self?token={MGMT}")
    assert status == 200 and json.loads(body)["AccessorID"] == accessor
    status, _, body = agent.request(
        "GET", "/v1/acl/token/self", headers={"Authorization": "Bearer not-a-token"}
    )
    assert (status, body) == (403, b"ACL not found")
    status, _, body = agent.request("GET", "/v1/acl/tokens?token=not-a-token")
    assert (status, body) == (403, b"ACL not found")


# ----- token create / update -----------------------------------------------------------


def test_token_create_with_secret_accessor_and_local(agent: AgentProcess) -> None:
    accessor = "a1b2c3d4-0000-4000-8000-00000000c0de"
    secret = "5ec12e70-1111-4111-8111-111111111111"
    code, out, err = cli(
        agent,
        "acl",
        "token",
        "create",
        "-accessor",
        accessor,
        "-secret",
        secret,
        "-local",
        "-description",
        "chosen ids",
        "-policy-name",
        "global-management",
    )
    assert code == 0, err
    assert out.startswith(
        f"AccessorID:       {accessor}\n"
        f"SecretID:         {secret}\n"
        "Description:      chosen ids\n"
        "Local:            true\n"
    ), out
    status, _, body = agent.request("GET", "/v1/acl/token/self", headers={"X-Consul-Token": secret})
    assert status == 200 and json.loads(body)["Local"] is True


def test_token_update_appends_roles_and_identities(agent: AgentProcess) -> None:
    cli_json(agent, "acl", "role", "create", "-name", "appendable")
    token = cli_json(agent, "acl", "token", "create", "-service-identity", "web")
    accessor = token["AccessorID"]
    updated = cli_json(
        agent,
        "acl",
        "token",
        "update",
        "-id",
        accessor[:13],
        "-append-role-name",
        "appendable",
        "-append-service-identity",
        "api:dc1",
        "-append-service-identity",
        "web:dc2",
        "-append-node-identity",
        "n1:dc1",
    )
    assert [r["Name"] for r in updated["Roles"]] == ["appendable"]
    assert updated["ServiceIdentities"] == [
        {"ServiceName": "api", "Datacenters": ["dc1"]},
        {"ServiceName": "web", "Datacenters": ["dc2"]},
    ]
    assert updated["NodeIdentities"] == [{"NodeName": "n1", "Datacenter": "dc1"}]
    again = cli_json(
        agent, "acl", "token", "update", "-id", accessor, "-append-role-name", "appendable"
    )
    assert len(again["Roles"]) == 1  # already linked: not added twice


def test_token_update_merge_flags_add_where_plain_flags_replace(agent: AgentProcess) -> None:
    cli_json(
        agent,
        "acl",
        "policy",
        "create",
        "-name",
        "merge-a",
        "-rules",
        'key "a" { policy = "read" }',
    )
    cli_json(
        agent,
        "acl",
        "policy",
        "create",
        "-name",
        "merge-b",
        "-rules",
        'key "b" { policy = "read" }',
    )
    token = cli_json(
        agent,
        "acl",
        "token",
        "create",
        "-policy-name",
        "merge-a",
        "-service-identity",
        "web",
        "-node-identity",
        "n1:dc1",
    )
    accessor = token["AccessorID"]
    merged = cli_json(
        agent,
        "acl",
        "token",
        "update",
        "-id",
        accessor,
        "-datacenter",
        "dc1",
        "-merge-policies",
        "-policy-name",
        "merge-b",
        "-merge-service-identities",
        "-service-identity",
        "api",
        "-merge-node-identities",
        "-node-identity",
        "n2:dc1",
    )
    assert sorted(p["Name"] for p in merged["Policies"]) == ["merge-a", "merge-b"]
    assert [s["ServiceName"] for s in merged["ServiceIdentities"]] == ["web", "api"]
    assert [n["NodeName"] for n in merged["NodeIdentities"]] == ["n1", "n2"]
    replaced = cli_json(
        agent,
        "acl",
        "token",
        "update",
        "-id",
        accessor,
        "-policy-name",
        "merge-a",
        "-service-identity",
        "db",
    )
    assert [p["Name"] for p in replaced["Policies"]] == ["merge-a"]
    assert [s["ServiceName"] for s in replaced["ServiceIdentities"]] == ["db"]


def test_meta_shows_hash_and_indexes(agent: AgentProcess) -> None:
    code, out, err = cli(agent, "acl", "policy", "read", "-id", "global-management", "-meta")
    assert code == 0, err
    assert re.search(
        "Datacenters:  \nHash:         [0-9a-f]+\nCreate Index: \\d+\nModify Index: \\d+\nRules:\n",
        out,
    ), out
    code, out, err = cli(agent, "acl", "token", "read", "-id", ANONYMOUS, "-meta")
    assert code == 0, err
    assert re.search(
        "Hash:             [0-9a-f]+\nCreate Index:     \\d+\nModify Index:     \\d+\n", out
    ), out
    code, out, _ = cli(agent, "acl", "token", "list", "-meta")
    assert out.count("Create Index:     ") == out.count("AccessorID:") > 0


# ----- the anonymous token and built-in names ----------------------------------------------


def test_anonymous_policies_apply_to_tokenless_requests(agent: AgentProcess) -> None:
    assert mgmt(agent, "PUT", "/v1/kv/pub/x", "hello")[0] == 200
    status, _, body = agent.request("GET", "/v1/kv/pub/x?raw")
    assert status == 403, body
    code, _, err = cli(
        agent,
        "acl",
        "policy",
        "create",
        "-name",
        "pub-read",
        "-rules",
        'key_prefix "pub/" { policy = "read" }',
    )
    assert code == 0, err
    code, out, err = cli(
        agent, "acl", "token", "update", "-id", "anonymous", "-policy-name", "pub-read"
    )
    assert code == 0, err
    assert f"AccessorID:       {ANONYMOUS}\nSecretID:         anonymous\n" in out
    assert re.search(f"Policies:\n   {UUID} - pub-read\n", out), out
    status, _, body = agent.request("GET", "/v1/kv/pub/x?raw")
    assert (status, body) == (200, b"hello")
    assert agent.request("GET", "/v1/kv/other?raw")[0] == 403
    code, out, err = cli(agent, "acl", "token", "read", "-id", "anonymous")
    assert code == 0 and f"AccessorID:       {ANONYMOUS}\n" in out, err


def test_global_management_by_name(agent: AgentProcess) -> None:
    code, out, err = cli(agent, "acl", "policy", "read", "-id", "global-management")
    assert code == 0, err
    assert out.startswith(f"ID:           {GLOBAL_MANAGEMENT}\nName:         global-management\n")


def test_bad_id_prefixes_use_consuls_words(agent: AgentProcess) -> None:
    code, _, err = cli(agent, "acl", "token", "read", "-id", "zzzz")
    assert (code, err) == (1, "Error determining token ID: No such token ID with prefix: zzzz\n")
    code, _, err = cli(agent, "acl", "policy", "read", "-id", "zzzz")
    assert (code, err) == (
        1,
        "Error determining policy ID: No such policy ID with prefix: zzzz\n",
    )
    code, _, err = cli(agent, "acl", "role", "read", "-id", "zzzz")
    assert (code, err) == (1, "Error determining role ID: No such role ID with prefix: zzzz\n")
    for accessor in (
        "dddd0000-0000-4000-8000-000000000001",
        "dddd0000-0000-4000-8000-000000000002",
    ):
        cli_json(agent, "acl", "token", "create", "-accessor", accessor)
    code, _, err = cli(agent, "acl", "token", "read", "-id", "dddd0000")
    assert (code, err) == (1, "Error determining token ID: Partial token ID is not unique\n")


def test_refused_reads_and_deletes_quote_the_id(agent: AgentProcess) -> None:
    missing = "eeee0000-0000-4000-8000-000000000009"
    code, _, err = cli(agent, "acl", "token", "read", "-id", missing)
    assert code == 1
    assert err.startswith(f'Error reading token "{missing}": Unexpected response code: 403'), err
    code, _, err = cli(agent, "acl", "token", "read", "-id", missing, token="nope")
    assert err.startswith(f'Error reading token "{missing}": '), err
    code, _, err = cli(agent, "acl", "token", "delete", "-id", ANONYMOUS)
    assert code == 1
    assert err.startswith(f'Error deleting token "{ANONYMOUS}": '), err
    code, _, err = cli(agent, "acl", "policy", "delete", "-id", GLOBAL_MANAGEMENT)
    assert code == 1
    assert err.startswith(f'Error deleting policy "{GLOBAL_MANAGEMENT}": '), err
    # A missing role is the API's bare 404; the CLI says so in Consul's words.
    code, _, err = cli(agent, "acl", "role", "read", "-name", "no-such-role")
    assert (code, err) == (1, 'Role not found with name "no-such-role"\n')


# ----- policies ------------------------------------------------------------------------


def test_policy_valid_datacenters(agent: AgentProcess) -> None:
    code, out, err = cli(
        agent,
        "acl",
        "policy",
        "create",
        "-name",
        "elsewhere",
        "-valid-datacenter",
        "dc8",
        "-valid-datacenter",
        "dc9",
        "-rules",
        'key_prefix "far/" { policy = "read" }',
    )
    assert code == 0, err
    assert "Datacenters:  dc8, dc9\n" in out
    token = cli_json(agent, "acl", "token", "create", "-policy-name", "elsewhere")
    assert mgmt(agent, "PUT", "/v1/kv/far/x", "v")[0] == 200
    status, _, _ = agent.request(
        "GET", "/v1/kv/far/x", headers={"X-Consul-Token": token["SecretID"]}
    )
    assert status == 403  # the policy is not valid in dc1
    code, out, _ = cli(agent, "acl", "policy", "list")
    assert "elsewhere:\n" in out and "   Datacenters:  dc8, dc9\n" in out


# ----- roles --------------------------------------------------------------------------


def test_role_list_read_and_update_output(agent: AgentProcess) -> None:
    crawler = cli_json(
        agent,
        "acl",
        "role",
        "create",
        "-name",
        "crawler",
        "-description",
        "web crawler",
        "-policy-name",
        "global-management",
        "-service-identity",
        "crawler",
    )
    archiver = cli_json(
        agent,
        "acl",
        "role",
        "create",
        "-name",
        "archiver",
        "-description",
        "archiver role",
        "-service-identity",
        "archiver:dc2",
    )
    code, out, err = cli(agent, "acl", "role", "list")
    assert code == 0, err
    crawler_block = (
        "crawler:\n"
        f"   ID:           {crawler['ID']}\n"
        "   Description:  web crawler\n"
        "   Policies:\n"
        f"      {GLOBAL_MANAGEMENT} - global-management\n"
        "   Service Identities:\n"
        "      crawler (Datacenters: all)\n"
    )
    archiver_block = (
        "archiver:\n"
        f"   ID:           {archiver['ID']}\n"
        "   Description:  archiver role\n"
        "   Service Identities:\n"
        "      archiver (Datacenters: dc2)\n"
    )
    # Blocks follow each other with no blank line, then Ui.Info's newline. Other
    # tests' roles may sit between these two (the list is in role ID order).
    assert crawler_block in out and archiver_block in out, out
    assert "\n\n" not in out.rstrip("\n")
    code, out, err = cli(agent, "acl", "role", "read", "-id", archiver["ID"][:8])
    assert code == 0, err
    assert out == (
        f"ID:           {archiver['ID']}\n"
        "Name:         archiver\n"
        "Description:  archiver role\n"
        "Service Identities:\n"
        "   archiver (Datacenters: dc2)\n\n"
    )
    # update merges: the new policy and identity join what the role has.
    code, out, err = cli(
        agent,
        "acl",
        "role",
        "update",
        "-id",
        archiver["ID"][:8],
        "-description",
        "archiver v2",
        "-policy-id",
        "global-management",
        "-node-identity",
        "n1:dc1",
    )
    assert code == 0, err
    assert out == (
        f"ID:           {archiver['ID']}\n"
        "Name:         archiver\n"
        "Description:  archiver v2\n"
        "Policies:\n"
        f"   {GLOBAL_MANAGEMENT} - global-management\n"
        "Service Identities:\n"
        "   archiver (Datacenters: dc2)\n"
        "Node Identities:\n"
        "   n1 (Datacenter: dc1)\n\n"
    )
    # -no-merge: the role becomes exactly what the flags say.
    replaced = cli_json(
        agent,
        "acl",
        "role",
        "update",
        "-id",
        archiver["ID"],
        "-no-merge",
        "-name",
        "archiver2",
        "-service-identity",
        "store",
    )
    assert replaced["Name"] == "archiver2"
    assert replaced["ServiceIdentities"] == [{"ServiceName": "store"}]
    assert not replaced.get("Policies") and not replaced.get("NodeIdentities")


# ----- expiry --------------------------------------------------------------------------


def test_expiration_time_under_a_minute_is_refused(agent: AgentProcess) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    status, body = mgmt(agent, "PUT", "/v1/acl/token", {"ExpirationTime": soon})
    assert status == 400, body
    assert b"Expiration Time" in body


# ----- the agent recovery token ------------------------------------------------------------


def _recovery_checks(proc: AgentProcess) -> None:
    headers = {"X-Consul-Token": RECOVERY}
    status, _, body = proc.request("GET", "/v1/agent/self", headers=headers)
    assert status == 200, body
    node = json.loads(body)["Config"]["NodeName"]
    status, _, body = proc.request("GET", "/v1/agent/members", headers=headers)
    assert status == 200, body
    assert node in [m["Name"] for m in json.loads(body)]
    status, _, body = proc.request("GET", "/v1/kv/x", headers=headers)
    assert status in (403, 500), body  # not an ACL token the servers know, or no server
    assert status != 200
    assert proc.request("GET", "/v1/agent/self")[0] == 403  # and tokenless is refused
    assert RECOVERY not in proc.log_text()


def test_agent_recovery_token_on_a_dev_agent(tmp_path: Path) -> None:
    hcl = (
        'acl { enabled = true default_policy = "deny" '
        f'tokens {{ agent_recovery = "{RECOVERY}" }} }}'
    )
    proc = start_agent(tmp_path, "-hcl", hcl)
    try:
        _recovery_checks(proc)
        status, _, body = proc.request("GET", "/v1/kv/x", headers={"X-Consul-Token": RECOVERY})
        assert (status, body) == (403, b"ACL not found")
    finally:
        proc.stop()


def test_agent_recovery_token_on_a_client_without_servers(tmp_path: Path) -> None:
    hcl = (
        'acl { enabled = true default_policy = "deny" '
        f'tokens {{ agent_recovery = "{RECOVERY}" }} }}'
    )
    proc = start_agent(
        tmp_path,
        "-bind",
        "127.0.0.77",
        "-data-dir",
        str(tmp_path / "data"),
        "-hcl",
        hcl,
        dev=False,
    )
    try:
        _recovery_checks(proc)
    finally:
        proc.stop()
