"""Intentions end to end: real agents, the `proconsul intention` CLI and the HTTP API.

A dev agent (ACLs off) runs the walkthrough's step (`intention create -allow
web api` prints `Created: web => api (allow)`), a second create of the pair
failing with Consul's text, `-replace`, wildcard precedence seen through
`/check` and `intention check`'s exit codes, deny first among equal
precedences, list/get/match/delete output, `/v1/agent/connect/authorize`, and
bad input (400s with Consul's texts). A client agent joined to a server
forwards the same reads and writes over RPC. A second dev agent has ACLs on with
default deny: a token without `intentions = "write"` is refused (403), lists
are filtered row by row with the filtered header, and with no matching
intention the default policy denies.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.agent_process import AgentProcess, free_port, proconsul_cmd, start_agent, wait_for
from tests.gossip_agents import GossipPool

MANAGEMENT = str(uuid.uuid4())
ACL_HCL = (
    f'acl {{ enabled = true default_policy = "deny" '
    f'tokens {{ initial_management = "{MANAGEMENT}" }} }}'
)
TRUST_DOMAIN = "11111111-2222-4333-8444-555555555555.consul"


def spiffe(service: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/{service}"


def run(agent: AgentProcess, *args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONSUL_HTTP_ADDR": agent.http_addr}
    env.pop("CONSUL_HTTP_TOKEN", None)
    if token:
        env["CONSUL_HTTP_TOKEN"] = token
    return subprocess.run(
        proconsul_cmd("intention", *args), capture_output=True, text=True, env=env, timeout=60
    )


def call(
    agent: AgentProcess, method: str, path: str, body: Any = None, token: str = ""
) -> tuple[int, dict[str, str], str]:
    headers = {"X-Consul-Token": token} if token else {}
    status, reply_headers, raw = agent.request(method, path, body, headers=headers)
    return status, reply_headers, raw.decode()


def authorize(agent: AgentProcess, target: str, source: str, token: str = "") -> Any:
    body = {"Target": target, "ClientCertURI": spiffe(source), "ClientCertSerial": "01"}
    status, _, text = call(agent, "POST", "/v1/agent/connect/authorize", body, token)
    assert status == 200, text
    return json.loads(text)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(tmp_path_factory.mktemp("intentions"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(tmp_path_factory.mktemp("intentions-acl"), "-hcl", ACL_HCL)
    try:
        yield process
    finally:
        process.stop()


def test_the_walkthrough_step_and_a_second_create(agent: AgentProcess) -> None:
    created = run(agent, "create", "-allow", "web", "api")
    assert (created.returncode, created.stdout, created.stderr) == (
        0,
        "Created: web => api (allow)\n",
        "",
    )
    again = run(agent, "create", "-allow", "web", "api")
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr == (
        'Error creating intention "web => api (allow)": Unexpected response code: 400 '
        '(Sources[1] defines "web" more than once)\n'
    )
    got = run(agent, "get", "web", "api")
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    assert lines[:3] == ["Source:       web", "Destination:  api", "Action:       allow"]
    assert lines[3].startswith("ID:           ") and lines[4].startswith("Created At:   ")
    legacy_id = lines[3].split()[-1]
    # -replace updates it in place (same ID); Consul prints nothing for a replacement.
    replaced = run(agent, "create", "-replace", "-deny", "-meta", "owner=ops", "web", "api")
    assert (replaced.returncode, replaced.stdout, replaced.stderr) == (0, "", "")
    exact = json.loads(
        call(agent, "GET", "/v1/connect/intentions/exact?source=web&destination=api")[2]
    )
    assert (exact["Action"], exact["ID"], exact["Meta"]) == ("deny", legacy_id, {"owner": "ops"})
    checked = run(agent, "check", "web", "api")
    assert (checked.returncode, checked.stdout) == (1, "Denied\n")
    by_id = json.loads(call(agent, "GET", f"/v1/connect/intentions/{legacy_id}")[2])
    assert by_id["SourceName"] == "web" and by_id["Precedence"] == 9
    deleted = run(agent, "delete", "web", "api")
    assert (deleted.returncode, deleted.stdout) == (0, "Intention deleted.\n")
    missing = run(agent, "get", "web", "api")
    assert missing.returncode == 1
    assert missing.stderr == 'Intention not found with source "web" and destination "api"\n'
    # The last source took its service-intentions entry with it.
    status, _, _ = call(agent, "GET", "/v1/config/service-intentions/api")
    assert status == 404


def test_wildcard_precedence_and_deny_first(agent: AgentProcess) -> None:
    for args in (("-deny", "*", "db"), ("-allow", "web", "*"), ("-deny", "b", "cache")):
        assert run(agent, "create", *args).returncode == 0
    assert run(agent, "create", "-allow", "a", "cache").returncode == 0
    cases = [
        ("web", "db", False),  # * -> db (8) beats web -> * (6)
        ("web", "cache", True),  # web -> * (6)
        ("billing", "db", False),  # * -> db (8)
        ("billing", "queue", True),  # nothing matches: ACLs off allow
    ]
    for source, destination, allowed in cases:
        query = f"source={source}&destination={destination}"
        status, _, text = call(agent, "GET", f"/v1/connect/intentions/check?{query}")
        assert (status, json.loads(text)) == (200, {"Allowed": allowed}), (source, destination)
        checked = run(agent, "check", source, destination)
        expected = (0, "Allowed\n") if allowed else (1, "Denied\n")
        assert (checked.returncode, checked.stdout) == expected, (source, destination)
    # Equal precedence: the deny comes first in evaluation order.
    matched = run(agent, "match", "cache")
    assert matched.stdout.splitlines() == [
        "b => cache (deny)",
        "a => cache (allow)",
        "web => * (allow)",
    ]
    by_source = run(agent, "match", "-source", "web")
    assert by_source.stdout.splitlines() == ["* => db (deny)", "web => * (allow)"]
    listed = run(agent, "list")
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["ID", "Source", "Action", "Destination", "Precedence"]
    assert [row[1:] for row in rows[1:]] == [
        ["b", "deny", "cache", "9"],
        ["a", "allow", "cache", "9"],
        ["*", "deny", "db", "8"],
        ["web", "allow", "*", "6"],
    ]
    match = json.loads(
        call(agent, "GET", "/v1/connect/intentions/match?by=destination&name=db&name=cache")[2]
    )
    assert [row["SourceName"] for row in match["db"]] == ["*", "web"]
    assert [row["SourceName"] for row in match["cache"]] == ["b", "a", "web"]


def test_create_from_files_and_with_meta(agent: AgentProcess, tmp_path: Path) -> None:
    as_json = tmp_path / "one.json"
    as_json.write_text(
        json.dumps({"SourceName": "cron", "DestinationName": "reports", "Action": "deny"})
    )
    as_hcl = tmp_path / "two.hcl"
    as_hcl.write_text('SourceName = "mail"\nDestinationName = "reports"\nAction = "allow"\n')
    created = run(agent, "create", "-file", str(as_json), str(as_hcl))
    assert (created.returncode, created.stdout) == (
        0,
        "Created: cron => reports (deny)\nCreated: mail => reports (allow)\n",
    )
    tagged = run(agent, "create", "-meta", "owner=ops", "-meta", "tier=1", "ui", "reports")
    assert tagged.returncode == 0, tagged.stderr
    got = run(agent, "get", "ui", "reports").stdout.splitlines()
    assert "Meta[owner]:  ops" in got and "Meta[tier]:   1" in got
    missing = run(agent, "create", "-file", str(tmp_path / "nope.json"))
    assert missing.returncode == 1 and "nope.json" in missing.stderr


def test_agent_connect_authorize(agent: AgentProcess) -> None:
    assert run(agent, "create", "-allow", "frontend", "payments").returncode == 0
    assert run(agent, "create", "-deny", "*", "payments").returncode == 0
    allowed = authorize(agent, "payments", "frontend")
    assert allowed["Authorized"] is True
    assert allowed["Reason"].startswith(
        "Matched L4 intention: default/frontend => default/payments"
    )
    assert allowed["Reason"].endswith("Precedence: 9, Action: ALLOW)")
    denied = authorize(agent, "payments", "batch")
    assert denied["Authorized"] is False
    assert denied["Reason"].endswith("Precedence: 8, Action: DENY)")
    default = authorize(agent, "ledger", "batch")
    assert default == {"Authorized": True, "Reason": "Default behavior configured by ACLs"}


def test_bad_input_is_a_400_with_consuls_text(agent: AgentProcess) -> None:
    cases = [
        ("POST", "/v1/connect/intentions",
         {"SourceName": "web", "DestinationName": "api", "Action": "maybe"},
         "1 error occurred:\n\t* Action must be set to 'allow' or 'deny'\n\n"),
        ("PUT", "/v1/connect/intentions/exact?destination=api", {"Action": "allow"},
         "required query parameter 'source' not set"),
        ("PUT", "/v1/connect/intentions/exact?source=web&destination=api",
         {"Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/v2"}}]},
         'service "api" has protocol "tcp", which is incompatible with L7 intentions '
         "permissions"),
        ("GET", "/v1/connect/intentions/match?by=name&name=api", None,
         "'by' parameter must be one of 'source' or 'destination'"),
        ("PUT", "/v1/config", {"Kind": "service-intention", "Name": "api"},
         "Request decoding failed: invalid config entry kind: service-intention"),
        ("POST", "/v1/agent/connect/authorize",
         {"Target": "api", "ClientCertURI": "not a uri"},
         "ClientCertURI not a valid Connect identifier"),
    ]  # fmt: skip
    for method, path, body, text in cases:
        status, _, answer = call(agent, method, path, body)
        assert (status, answer) == (400, text), path
    status, _, answer = call(agent, "GET", "/v1/connect/intentions/exact?source=x&destination=y")
    assert (status, answer) == (404, "Intention not found")
    # An L7 intention is accepted once the destination speaks http.
    defaults = {"Kind": "service-defaults", "Name": "orders", "Protocol": "http"}
    assert call(agent, "PUT", "/v1/config", defaults)[0] == 200
    l7 = {"Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/v2"}}]}
    status, _, answer = call(
        agent, "PUT", "/v1/connect/intentions/exact?source=mobile&destination=orders", l7
    )
    assert (status, answer) == (200, "true")
    matched = run(agent, "match", "orders").stdout.splitlines()
    assert matched == ["mobile => orders (1 permission)", "web => * (allow)"]
    checked = run(agent, "check", "mobile", "orders")  # L4 semantics: an L7 intention denies
    assert (checked.returncode, checked.stdout) == (1, "Denied\n")


def make_token(agent: AgentProcess, name: str, rules: str) -> tuple[str, str]:
    """A token holding one policy with `rules`: (SecretID, AccessorID)."""
    policy = {"Name": name, "Rules": rules}
    status, _, text = call(agent, "PUT", "/v1/acl/policy", policy, MANAGEMENT)
    assert status == 200, text
    token = {"Policies": [{"Name": name}]}
    status, _, text = call(agent, "PUT", "/v1/acl/token", token, MANAGEMENT)
    assert status == 200, text
    made = json.loads(text)
    return made["SecretID"], made["AccessorID"]


def test_acls_on_intentions(acl_agent: AgentProcess) -> None:
    reader, reader_id = make_token(acl_agent, "api-read", 'service "api" { policy = "read" }')
    writer, _ = make_token(
        acl_agent,
        "api-write",
        'service "api" { policy = "write" intentions = "write" }\n'
        'service "web" { policy = "read" }',
    )
    refused = run(acl_agent, "create", "-allow", "web", "api", token=reader)
    assert refused.returncode == 1
    assert refused.stderr == (
        'Error creating intention "web => api (allow)": Unexpected response code: 403 '
        f"(Permission denied: token with AccessorID '{reader_id}' lacks permission "
        "'intention:write' on \"api\")\n"
    )
    status, _, _ = call(
        acl_agent,
        "PUT",
        "/v1/connect/intentions/exact?source=web&destination=api",
        {"Action": "allow"},
        reader,
    )
    assert status == 403
    assert run(acl_agent, "create", "-allow", "web", "api", token=writer).returncode == 0
    assert run(acl_agent, "create", "-deny", "web", "db", token=MANAGEMENT).returncode == 0
    # The reader reads api's intentions (service read grants intentions read), not db's.
    status, headers, text = call(acl_agent, "GET", "/v1/connect/intentions", token=reader)
    assert status == 200
    assert [(r["SourceName"], r["DestinationName"]) for r in json.loads(text)] == [("web", "api")]
    assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
    status, headers, text = call(acl_agent, "GET", "/v1/connect/intentions", token=MANAGEMENT)
    assert len(json.loads(text)) == 2 and "X-Consul-Results-Filtered-By-ACLs" not in headers
    # Default deny: no matching intention denies.
    checked = run(acl_agent, "check", "billing", "api", token=MANAGEMENT)
    assert (checked.returncode, checked.stdout) == (1, "Denied\n")
    assert authorize(acl_agent, "api", "web", writer)["Authorized"] is True
    assert authorize(acl_agent, "api", "billing", writer) == {
        "Authorized": False,
        "Reason": "Default behavior configured by ACLs",
    }
    # authorize needs service:write on the target.
    body = {"Target": "api", "ClientCertURI": spiffe("web")}
    status, _, text = call(acl_agent, "POST", "/v1/agent/connect/authorize", body, reader)
    assert status == 403 and "lacks permission 'service:write' on \"api\"" in text


def test_a_client_agent_forwards_intentions(tmp_path: Path) -> None:
    pool = GossipPool(tmp_path, 2, base=233, server_first=True)
    server, client = pool["n0"], pool["n1"]
    server.args += ["-server-port", str(free_port(server.ip))]
    try:
        server_agent = pool.start(server, join=False)
        client_agent = pool.start(client)
        wait_for(lambda: call(client_agent, "GET", "/v1/connect/intentions")[0] == 200, 20)
        created = run(client_agent, "create", "-deny", "web", "db")
        assert (created.returncode, created.stdout) == (0, "Created: web => db (deny)\n")
        checked = run(client_agent, "check", "web", "db")
        assert (checked.returncode, checked.stdout) == (1, "Denied\n")
        matched = json.loads(
            call(client_agent, "GET", "/v1/connect/intentions/match?by=source&name=web")[2]
        )
        assert [(r["SourceName"], r["DestinationName"]) for r in matched["web"]] == [("web", "db")]
        # The server holds it as a service-intentions entry of the destination.
        status, _, text = call(server_agent, "GET", "/v1/config/service-intentions/db")
        assert status == 200 and json.loads(text)["Sources"][0]["Name"] == "web"
        assert authorize(client_agent, "db", "web")["Authorized"] is False
    finally:
        pool.stop_all()
