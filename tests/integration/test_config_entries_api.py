"""Config entries on real agent processes: `/v1/config`, `proconsul config ...`,
bootstrap entries, the discovery chain and central service config.

- A dev agent started with a `config_entries.bootstrap` proxy-defaults: the
  entry is there at once; write/read/list/delete over HTTP and the CLI, with
  CAS; malformed entries, bad values and unknown kinds are 400s with
  Consul's texts; a missing entry is Consul's 404; a blocking read wakes on
  a write; the traffic-shaping entries (HCL files through `config write`)
  compile to the expected chain, whose subset filters select the v1 and v2
  instances on `/v1/health/service/api?filter=`; `?filter=` on
  /v1/catalog/services.
- A dev agent with ACLs (default deny): 403s with Consul's text per kind,
  proxy-defaults readable by anyone, list filtered, intentions rights.
- A persistent server and a client agent: writes and reads through the
  client (the RPC codec carries durations); a user's change of a bootstrap
  entry survives a restart (a new term runs the duty again), and a deleted
  one is written again.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.agent_process import (
    AgentProcess,
    free_gossip_port,
    free_port,
    proconsul_cmd,
    start_agent,
    wait_for,
)
from tests.unit.test_discovery_chain import TRAFFIC_SHAPING, TRAFFIC_SHAPING_CHAIN, TRUST_DOMAIN

BOOTSTRAP_HCL = (
    'config_entries { bootstrap = [{ kind = "proxy-defaults", name = "global", '
    'config { protocol = "http" } }] }'
)
# The server's: a second entry, written after the first, shows the duty ran.
SERVER_BOOTSTRAP_HCL = (
    'config_entries { bootstrap = [{ kind = "proxy-defaults", name = "global", '
    'config { protocol = "http" } }, { kind = "service-defaults", name = "marker" }] }'
)
MGMT = "6b1c3f0e-2d4a-4e8b-9c7f-1a2b3c4d5e6f"
ACL_HCL = (
    f'acl {{ enabled = true default_policy = "deny" tokens {{ initial_management = "{MGMT}" }} }}'
)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    proc = start_agent(tmp_path_factory.mktemp("config-dev"), "-hcl", BOOTSTRAP_HCL)
    try:
        yield proc
    finally:
        proc.stop()


def call(
    agent: AgentProcess, method: str, path: str, body: Any = None, token: str = ""
) -> tuple[int, Any]:
    headers = {"X-Consul-Token": token} if token else {}
    status, _, raw = agent.request(method, path, body, headers)
    text = raw.decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def cli(
    agent: AgentProcess, *args: str, token: str = "", stdin: str | None = None
) -> tuple[int, str, str]:
    env = {**os.environ, "CONSUL_HTTP_ADDR": agent.http_addr, "CONSUL_HTTP_TOKEN": token}
    done = subprocess.run(
        proconsul_cmd(*args), capture_output=True, text=True, env=env, timeout=30, input=stdin
    )
    return done.returncode, done.stdout, done.stderr


# ----- a dev agent ----------------------------------------------------------------


def test_the_bootstrap_entry_is_there_at_start(agent: AgentProcess) -> None:
    status, entry = call(agent, "GET", "/v1/config/proxy-defaults/global")
    assert status == 200
    assert (entry["Kind"], entry["Name"], entry["Config"]) == (
        "proxy-defaults",
        "global",
        {"protocol": "http"},
    )
    assert entry["CreateIndex"] == entry["ModifyIndex"] > 0
    assert "wrote bootstrap config entry proxy-defaults/global" in agent.log_text()


def test_write_read_list_delete_over_http_with_cas(agent: AgentProcess) -> None:
    body = {"kind": "service-defaults", "name": "billing", "protocol": "GRPC"}
    assert call(agent, "PUT", "/v1/config", body) == (200, True)
    status, entry = call(agent, "GET", "/v1/config/service-defaults/billing")
    assert status == 200 and entry["Protocol"] == "grpc"  # normalized, PascalCase out
    index = entry["ModifyIndex"]
    # CAS: 0 means "only if absent"; a stale index loses; the current one wins.
    assert call(agent, "PUT", "/v1/config?cas=0", body) == (200, False)
    changed = {**body, "protocol": "http"}
    assert call(agent, "PUT", f"/v1/config?cas={index - 1}", changed) == (200, False)
    assert call(agent, "PUT", f"/v1/config?cas={index}", changed) == (200, True)
    status, names = call(agent, "GET", "/v1/config/service-defaults")
    assert status == 200 and "billing" in [e["Name"] for e in names]
    status, entry = call(agent, "GET", "/v1/config/service-defaults/billing")
    assert entry["Protocol"] == "http" and entry["CreateIndex"] < entry["ModifyIndex"]
    stale = entry["ModifyIndex"] - 1
    path = "/v1/config/service-defaults/billing"
    assert call(agent, "DELETE", f"{path}?cas={stale}") == (200, False)
    assert call(agent, "DELETE", f"{path}?cas={entry['ModifyIndex']}") == (200, True)
    assert call(agent, "DELETE", path) == (200, {})
    assert call(agent, "GET", path) == (
        404,
        'Config entry not found for "service-defaults" / "billing"',
    )
    assert call(agent, "GET", "/v1/config/service-router") == (200, [])


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            {"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 90}]},
            "the sum of all split weights must be 100, not 90.000000",
        ),
        (
            {"Kind": "proxy-defaults", "Name": "web"},
            'invalid name ("web"), only "global" is supported',
        ),
        (
            {"Kind": "service-defaults", "Name": "web", "Protocl": "http"},
            'Request decoding failed: invalid config key "Protocl"',
        ),
        (
            {"Kind": "service-nope", "Name": "web"},
            "Request decoding failed: invalid config entry kind: service-nope",
        ),
        (
            {"Name": "web"},
            "Request decoding failed: Payload does not contain a kind/Kind key at the top level",
        ),
        (
            {
                "Kind": "service-resolver",
                "Name": "web",
                "Subsets": {"v1": {"Filter": "Service.Nope == v1"}},
            },
            'Filter for subset "v1" is not a valid expression: Failed to create boolean '
            'expression evaluator: Selector "Service.Nope" is not valid',
        ),
    ],
)
def test_bad_entries_are_400_with_consuls_text(
    agent: AgentProcess, body: dict[str, Any], text: str
) -> None:
    assert call(agent, "PUT", "/v1/config", body) == (400, text)


def test_an_entry_that_breaks_a_chain_is_400(agent: AgentProcess) -> None:
    tcp = {"Kind": "service-defaults", "Name": "rawtcp", "Protocol": "tcp"}
    assert call(agent, "PUT", "/v1/config", tcp) == (200, True)
    router = {"Kind": "service-router", "Name": "rawtcp", "Routes": [{}]}
    assert call(agent, "PUT", "/v1/config", router) == (
        400,
        'discovery chain "rawtcp" uses a protocol "tcp" that does not permit advanced '
        "routing or splitting behavior",
    )
    split = {
        "Kind": "service-splitter",
        "Name": "web",
        "Splits": [{"Weight": 100, "ServiceSubset": "v9"}],
    }
    assert call(agent, "PUT", "/v1/config", split) == (
        400,
        'service "web" does not have a subset named "v9"',
    )


def test_bad_bodies_kinds_and_indexes_are_400(agent: AgentProcess) -> None:
    status, text = call(agent, "PUT", "/v1/config", "{not json")
    assert status == 400 and text.startswith("Request decode failed: ")
    status, text = call(agent, "PUT", "/v1/config", [1, 2])
    assert status == 400 and text.startswith("Request decode failed: ")
    for method, path in (
        ("GET", "/v1/config/nope"),
        ("GET", "/v1/config/nope/web"),
        ("DELETE", "/v1/config/nope/web"),
    ):
        assert call(agent, method, path) == (400, "invalid config entry kind: nope")
    good = {"Kind": "service-defaults", "Name": "x"}
    assert call(agent, "PUT", "/v1/config?cas=abc", good)[0] == 400
    assert call(agent, "GET", "/v1/config/service-defaults?index=x") == (400, "Invalid index")


def test_a_blocking_read_wakes_on_a_write(agent: AgentProcess) -> None:
    body = {"Kind": "service-defaults", "Name": "blocker", "Protocol": "http"}
    assert call(agent, "PUT", "/v1/config", body) == (200, True)
    _, headers, _ = agent.request("GET", "/v1/config/service-defaults/blocker")
    index = int(headers["X-Consul-Index"])
    answer: list[Any] = []

    def blocked_read() -> None:
        path = f"/v1/config/service-defaults/blocker?index={index}&wait=30s"
        answer.append(call(agent, "GET", path))

    reader = threading.Thread(target=blocked_read)
    reader.start()
    # The read must still be parked after a write of another kind.
    other = {"Kind": "service-resolver", "Name": "blocker", "ConnectTimeout": "3s"}
    assert call(agent, "PUT", "/v1/config", other) == (200, True)
    reader.join(0.5)
    assert reader.is_alive()
    assert call(agent, "PUT", "/v1/config", {**body, "Protocol": "grpc"}) == (200, True)
    reader.join(10)
    assert answer and answer[0][0] == 200 and answer[0][1]["Protocol"] == "grpc"


def test_cli_write_read_list_delete(agent: AgentProcess, tmp_path: Path) -> None:
    hcl_file = tmp_path / "resolver.hcl"
    hcl_file.write_text(
        'kind = "service-resolver"\nname = "ledger"\nconnect_timeout = "15s"\n'
        'subsets { v1 { filter = "Service.Meta.version == v1" } }\n'
    )
    assert cli(agent, "config", "write", str(hcl_file)) == (
        0,
        "Config entry written: service-resolver/ledger\n",
        "",
    )
    code, out, _ = cli(agent, "config", "read", "-kind", "service-resolver", "-name", "ledger")
    assert code == 0
    shown = json.loads(out)
    assert shown["ConnectTimeout"] == "15s"
    assert shown["Subsets"] == {"v1": {"Filter": "Service.Meta.version == v1"}}
    # CAS through the CLI: 0 refuses an existing entry.
    code, _, err = cli(agent, "config", "write", "-cas", "-modify-index=0", str(hcl_file))
    assert (code, err) == (1, "Config entry not updated: service-resolver/ledger\n")
    json_text = json.dumps({"Kind": "service-defaults", "Name": "ledger", "Protocol": "http"})
    assert cli(agent, "config", "write", "-", stdin=json_text)[:2] == (
        0,
        "Config entry written: service-defaults/ledger\n",
    )
    code, out, _ = cli(agent, "config", "list", "-kind", "service-resolver")
    assert code == 0 and "ledger" in out.splitlines()
    bad = tmp_path / "bad.hcl"
    bad.write_text('kind = "service-splitter"\nname = "ledger"\nsplits = [{ weight = 90 }]\n')
    assert cli(agent, "config", "write", str(bad)) == (
        1,
        "",
        "Error writing config entry service-splitter/ledger: Unexpected response code: 400 "
        "(the sum of all split weights must be 100, not 90.000000)\n",
    )
    assert cli(agent, "config", "delete", "-kind", "service-resolver", "-name", "ledger") == (
        0,
        "Config entry deleted: service-resolver/ledger\n",
        "",
    )
    assert cli(agent, "config", "read", "-kind", "service-resolver", "-name", "ledger") == (
        1,
        "",
        "Error reading config entry service-resolver/ledger: Unexpected response code: 404 "
        '(Config entry not found for "service-resolver" / "ledger")\n',
    )
    assert cli(agent, "config", "list", "-kind", "nope")[::2] == (
        1,
        'Error listing config entries for kind "nope": Unexpected response code: 400 '
        "(invalid config entry kind: nope)\n",
    )


def _register(agent: AgentProcess, instance: str, version: str, port: int) -> None:
    body = {
        "Node": "apps",
        "Address": "127.0.0.1",
        "Service": {"ID": instance, "Service": "api", "Port": port, "Meta": {"version": version}},
    }
    assert call(agent, "PUT", "/v1/catalog/register", body) == (200, True)


def test_the_traffic_shaping_chain(agent: AgentProcess, tmp_path: Path) -> None:
    for number, text in enumerate(TRAFFIC_SHAPING):
        path = tmp_path / f"entry{number}.hcl"
        path.write_text(text)
        code, _, err = cli(agent, "config", "write", str(path))
        assert code == 0, err
    status, body = call(agent, "GET", "/v1/discovery-chain/api")
    assert status == 200
    trust_domain = agent.get_json("/v1/connect/ca/roots")["TrustDomain"]
    expected = json.loads(json.dumps(TRAFFIC_SHAPING_CHAIN).replace(TRUST_DOMAIN, trust_domain))
    assert body == {"Chain": expected}
    assert call(agent, "POST", "/v1/discovery-chain/api")[1] == body
    # The subsets' filters pick the instances, as a proxy's health watch does.
    _register(agent, "api-v1", "v1", 9001)
    _register(agent, "api-v2", "v2", 9002)
    for target in body["Chain"]["Targets"].values():
        query = urllib.parse.quote(target["Subset"]["Filter"])
        rows = agent.get_json(f"/v1/health/service/api?filter={query}")
        assert [row["Service"]["ID"] for row in rows] == [f"api-{target['ServiceSubset']}"]
    # ?filter on /v1/catalog/services runs over the instances.
    query = urllib.parse.quote('ServiceMeta.version == "v2"')
    assert agent.get_json(f"/v1/catalog/services?filter={query}") == {"api": []}
    status, text = call(agent, "GET", "/v1/catalog/services?filter=Nope%20==%201")
    assert status == 400 and "Selector" in text


# ----- ACLs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    proc = start_agent(
        tmp_path_factory.mktemp("config-acl"), "-hcl", ACL_HCL, "-hcl", BOOTSTRAP_HCL
    )
    try:
        yield proc
    finally:
        proc.stop()


def token_with(agent: AgentProcess, name: str, rules: str) -> tuple[str, str]:
    status, policy = call(agent, "PUT", "/v1/acl/policy", {"Name": name, "Rules": rules}, MGMT)
    assert status == 200, policy
    body = {"Policies": [{"ID": policy["ID"]}]}
    status, token = call(agent, "PUT", "/v1/acl/token", body, MGMT)
    assert status == 200, token
    return token["SecretID"], token["AccessorID"]


def test_acl_rules_per_kind(acl_agent: AgentProcess) -> None:
    rules = 'service "web" { policy = "write" }\n'
    rules += 'service "api" { policy = "read" intentions = "write" }'
    secret, accessor = token_with(acl_agent, "web-owner", rules)
    denied = f"Permission denied: token with AccessorID '{accessor}' lacks permission"
    web = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}
    assert call(acl_agent, "PUT", "/v1/config", web, secret) == (200, True)
    assert call(acl_agent, "PUT", "/v1/config", {**web, "Name": "db"}, secret) == (
        403,
        f"{denied} 'service:write' on \"db\"",
    )
    proxy = {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "tcp"}}
    assert call(acl_agent, "PUT", "/v1/config", proxy, secret) == (
        403,
        f"{denied} 'operator:write'",
    )
    # proxy-defaults is readable by anyone, even the anonymous token.
    status, entry = call(acl_agent, "GET", "/v1/config/proxy-defaults/global")
    assert status == 200 and entry["Config"] == {"protocol": "http"}
    # Intentions need `intentions = "write"` on the destination.
    intentions = {
        "Kind": "service-intentions",
        "Name": "api",
        "Sources": [{"Name": "web", "Action": "allow"}],
    }
    assert call(acl_agent, "PUT", "/v1/config", intentions, secret) == (200, True)
    assert call(acl_agent, "PUT", "/v1/config", {**intentions, "Name": "web"}, secret) == (
        403,
        f"{denied} 'intention:write' on \"web\"",
    )
    # Reading: a Get needs the read right, a List leaves out what may not be read.
    assert call(acl_agent, "PUT", "/v1/config", {**web, "Name": "db"}, MGMT) == (200, True)
    assert call(acl_agent, "GET", "/v1/config/service-defaults/db", token=secret) == (
        403,
        f"{denied} 'service:read' on \"db\"",
    )
    status, headers, raw = acl_agent.request(
        "GET", "/v1/config/service-defaults", headers={"X-Consul-Token": secret}
    )
    assert status == 200 and [e["Name"] for e in json.loads(raw)] == ["web"]
    assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
    # Deleting needs the write right too; the CLI shows the 403.
    code, _, err = cli(
        acl_agent, "config", "delete", "-kind", "service-defaults", "-name", "db", token=secret
    )
    assert code == 1
    assert err == (
        "Error deleting config entry service-defaults/db: Unexpected response code: 403 "
        f"({denied} 'service:write' on \"db\")\n"
    )
    assert call(acl_agent, "GET", "/v1/discovery-chain/db", token=secret)[0] == 403


# ----- a persistent server and a client ---------------------------------------------


def start_server(tmp: Path, data_dir: Path, serf_port: int, server_port: int) -> AgentProcess:
    return start_agent(
        tmp,
        "-server",
        "-bootstrap-expect",
        "1",
        "-node",
        "cfg-server",
        "-bind",
        "127.0.0.1",
        "-serf-lan-port",
        str(serf_port),
        "-server-port",
        str(server_port),
        "-data-dir",
        str(data_dir),
        "-hcl",
        "performance { raft_multiplier = 1 }",
        "-hcl",
        SERVER_BOOTSTRAP_HCL,
        dev=False,
    )


def bootstrap_protocol(agent: AgentProcess) -> str | None:
    status, entry = call(agent, "GET", "/v1/config/proxy-defaults/global")
    return entry["Config"].get("protocol") if status == 200 else None


def test_bootstrap_entry_survives_a_user_change_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "server-data"
    serf_port, server_port = free_gossip_port(), free_port()
    server = start_server(tmp_path, data_dir, serf_port, server_port)
    client: AgentProcess | None = None
    try:
        assert wait_for(lambda: bootstrap_protocol(server), 20) == "http"
        client = start_agent(
            tmp_path,
            "-node",
            "cfg-client",
            "-bind",
            "127.0.0.1",
            "-data-dir",
            str(tmp_path / "client-data"),
            "-retry-join",
            f"127.0.0.1:{serf_port}",
            dev=False,
        )
        # Through the client: the server validates, the RPC codec carries durations.
        resolver = {"Kind": "service-resolver", "Name": "api", "ConnectTimeout": "7s"}
        assert wait_for(lambda: call(client, "PUT", "/v1/config", resolver)[0] == 200, 20)
        status, entry = call(client, "GET", "/v1/config/service-resolver/api")
        assert status == 200 and entry["ConnectTimeout"] == "7s"
        assert call(client, "PUT", "/v1/config", {**resolver, "ConnectTimeout": "x"})[0] == 400
        status, body = call(client, "GET", "/v1/discovery-chain/api")
        assert status == 200
        node = body["Chain"]["Nodes"][body["Chain"]["StartNode"]]
        assert node["Resolver"]["ConnectTimeout"] == "7s"
        # A user changes one bootstrap entry and deletes the other...
        user = {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "grpc"}}
        assert call(client, "PUT", "/v1/config", user) == (200, True)
        assert call(client, "DELETE", "/v1/config/service-defaults/marker") == (200, {})
        client.stop()
        client = None
        # ... and the new term after a restart writes back only the missing one.
        server.stop()
        server = start_server(tmp_path, data_dir, serf_port, server_port)
        marker = "/v1/config/service-defaults/marker"
        wait_for(lambda: call(server, "GET", marker)[0] == 200, 20)
        assert bootstrap_protocol(server) == "grpc"
        status, entry = call(server, "GET", "/v1/config/service-resolver/api")
        assert status == 200 and entry["ConnectTimeout"] == "7s"
    finally:
        if client is not None:
            client.stop()
        server.stop()
