"""Every HTTP route x every kind of caller, on one real server agent with ACLs on.

One server (bootstrap_expect = 1, default deny, token persistence, an
initial management token) serves the whole module. Tokens are made through
the API: read-only, write (the same rules with write), a "partial" token that
sees only some rows, and management. Then, for every route the router has
(enumerated through the same table as the ACL rules, so a new route without
a sample fails here), each caller asks once:

- an unknown secret is 403 "ACL not found" everywhere;
- no token and the anonymous secret are refused what needs any right;
- the read token may read and is refused writes with "Permission denied";
- the write token may read and write, but not manage ACLs;
- the management token is never refused.

A refusal of a Connect, config entry or intentions route must name the
permission Consul asks there ('intention:write' on "web"), and an allowed
caller must be served. Tokens narrowed to one service then show the rules
follow the names: config entries per kind, intentions read on either end,
a check on the destination, authorize and leaf on the target.

List endpoints must say `X-Consul-Results-Filtered-By-ACLs: true` to the
partial token and nothing to a token that sees everything. Then the agent
tokens: `/v1/agent/token/default` set through the API survives a restart
(acl-tokens.json, 0600) and wins over the config; the CLI sets one too.
Last, no secret used here appears in any agent log.
"""

from __future__ import annotations

import functools
import json
import os
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from tests.agent_process import AgentProcess, free_port, proconsul_cmd, start_agent, wait_for

from proconsul.http.acl_rules import app_route_keys
from proconsul.http.api import AgentAPI
from proconsul.http.server import build_app

NODE = "acl-node"
# A client certificate URI for /v1/agent/connect/authorize (the trust domain is not checked there).
DB_URI = "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/db"
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
FILTERED = "X-Consul-Results-Filtered-By-ACLs"
KEY = "pPE2JQXsqSd/1RAHnbI7OYmvsSv5PxyhdwNH4fLMtbs="  # a valid 32-byte gossip key
ALL_RULES = """agent_prefix "" {{ policy = "{p}" }}
node_prefix "" {{ policy = "{p}" }}
service_prefix "" {{ policy = "{p}" intentions = "{p}" }}
key_prefix "" {{ policy = "{p}" }}
event_prefix "" {{ policy = "{p}" }}
session_prefix "" {{ policy = "{p}" }}
operator = "{p}"
keyring = "{p}"
query_prefix "" {{ policy = "{p}" }}
"""
# Sees one of each kind of row: the "web" service and its check, the "deploy"
# event, keys under pub/, and no node at all (so every member is hidden).
PARTIAL_RULES = """service "web" { policy = "read" }
event "deploy" { policy = "read" }
key_prefix "pub/" { policy = "read" }
node "nobody" { policy = "read" }
"""
CALLERS = ("none", "anonymous", "unknown", "read", "write", "management")


# ----- the agent and its tokens ------------------------------------------------------


@dataclass
class Matrix:
    tmp: Path
    args: list[str]
    agent: AgentProcess
    management: str
    initial_management_ok: bool
    secrets: dict[str, str] = field(default_factory=dict)  # caller -> secret
    accessors: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)  # path placeholders

    def call(
        self, method: str, path: str, caller: str = "management", body: Any = None
    ) -> tuple[int, dict[str, str], str]:
        headers = {}
        secret = self.secrets.get(caller, "")
        if secret:
            headers["X-Consul-Token"] = secret
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        status, got, raw = self.agent.request(method, path, data, headers=headers)
        return status, got, raw.decode(errors="replace")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, _, text = self.call(method, path, body=body)
        assert status == 200, (method, path, status, text)
        return json.loads(text) if text.strip() else None

    def make_token(self, rules: str, name: str) -> tuple[str, str]:
        policy = self.ok("PUT", "/v1/acl/policy", {"Name": name, "Rules": rules})
        token = self.ok("PUT", "/v1/acl/token", {"Policies": [{"ID": policy["ID"]}]})
        return str(token["SecretID"]), str(token["AccessorID"])


def _start(tmp: Path, args: list[str]) -> AgentProcess:
    return start_agent(tmp, *args, dev=False)


def _has_management(agent: AgentProcess, secret: str) -> bool:
    status, _, _ = agent.request("GET", "/v1/agent/self", headers={"X-Consul-Token": secret})
    return status == 200


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    tmp = tmp_path_factory.mktemp("aclmatrix")
    initial = str(uuid.uuid4())
    hcl = (
        'acl { enabled = true default_policy = "deny" enable_token_persistence = true\n'
        f'  tokens {{ initial_management = "{initial}" default = "anonymous" }} }}\n'
        "ui_config { enabled = true }\n"
    )
    args = [
        "-server",
        "-bootstrap-expect",
        "1",
        "-node",
        NODE,
        "-bind",
        "127.0.0.1",
        "-data-dir",
        str(tmp / "data"),
        "-server-port",
        str(free_port()),
        "-hcl",
        hcl,
    ]
    agent = _start(tmp, args)
    m: Matrix | None = None
    try:
        try:
            wait_for(lambda: _has_management(agent, initial), 30.0, 0.2)
            management, initial_ok = initial, True
        except AssertionError:
            # The initial management token never appeared: bootstrap instead so the
            # matrix still runs; test_initial_management_token reports the gap.
            status, _, raw = agent.request("PUT", "/v1/acl/bootstrap")
            assert status == 200, raw
            management, initial_ok = str(json.loads(raw)["SecretID"]), False
        m = Matrix(tmp, args, agent, management, initial_ok)
        m.secrets = {
            "none": "",
            "anonymous": "anonymous",
            "unknown": str(uuid.uuid4()),
            "management": management,
        }
        for level in ("read", "write"):
            m.secrets[level], m.accessors[level] = m.make_token(
                ALL_RULES.format(p=level), f"all-{level}"
            )
        m.secrets["partial"], m.accessors["partial"] = m.make_token(PARTIAL_RULES, "partial")
        _seed(m)
        yield m
    finally:
        # A test restarts the agent: stop whichever process is current.
        (m.agent if m is not None else agent).stop()


def _seed(m: Matrix) -> None:
    """Rows for the samples: two local services with TTL checks, events, keys, a role."""
    for name in ("web", "db"):
        m.ok(
            "PUT",
            "/v1/agent/service/register",
            {"Name": name, "Port": 80, "Check": {"CheckID": f"ttl-{name}", "TTL": "300s"}},
        )
    m.ok("PUT", "/v1/agent/check/register", {"ID": "ttl-node", "Name": "node ttl", "TTL": "300s"})
    for name in ("deploy", "secret"):
        m.ok("PUT", f"/v1/event/fire/{name}", b"x")
    for key in ("pub/a", "priv/b"):
        m.ok("PUT", f"/v1/kv/{key}", b"v")
    # Config entries of three kinds with their three rules, and intentions: db -> web (a
    # legacy one, with an ID), api -> web, and api <-> db.
    m.ok("PUT", "/v1/config", {"Kind": "proxy-defaults", "Name": "global"})
    for name in ("web", "db"):
        m.ok("PUT", "/v1/config", {"Kind": "service-defaults", "Name": name, "Protocol": "tcp"})
    created = m.ok(
        "POST",
        "/v1/connect/intentions",
        {"SourceName": "db", "DestinationName": "web", "Action": "allow"},
    )
    m.ok("PUT", "/v1/connect/intentions/exact?source=api&destination=db", {"Action": "deny"})
    m.ok("PUT", "/v1/connect/intentions/exact?source=db&destination=api", {"Action": "allow"})
    m.ok("PUT", "/v1/connect/intentions/exact?source=api&destination=web", {"Action": "deny"})
    role = m.ok("PUT", "/v1/acl/role", {"Name": "matrix-role"})
    policy = m.ok("PUT", "/v1/acl/policy", {"Name": "matrix-policy", "Rules": ""})
    query = m.ok("POST", "/v1/query", {"Name": "matrix-query", "Service": {"Service": "web"}})
    session = m.ok("PUT", "/v1/session/create", {"Node": NODE, "NodeChecks": []})
    m.values.update(
        session_id=str(session["ID"]),
        read_accessor=m.accessors["read"],
        role_id=str(role["ID"]),
        policy_id=str(policy["ID"]),
        node=NODE,
        intention_id=str(created["ID"]),
        query_id=str(query["ID"]),
    )
    # Wait until anti-entropy put the local services into the catalog.
    wait_for(lambda: "web" in m.ok("GET", "/v1/catalog/services"), 10.0)


# ----- the samples: one request per route ---------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One request for a route. `needs`: none (anyone), list (anyone; rows are
    filtered), read, write, or acl (management only)."""

    method: str
    pattern: str
    path: str
    needs: str
    body: Any = None
    # Run (as management) before each caller's attempt, for routes that consume a row.
    setup: Callable[[Matrix], None] | None = None
    # Would stop or break the shared agent when allowed: only refusals are tried.
    destructive: bool = False
    # Statuses an unknown secret may get instead of 403 (no token is read there).
    unknown_may_get: tuple[int, ...] = ()
    # The route's own 403 that every caller gets (bootstrap once done).
    always_403_prefix: str = ""
    # The permission a refusal names ('service:write' on "web"): checked for the
    # read caller of a write sample and for the callers without a token of a read one,
    # so the sample says which rule the route needs, not only its level.
    denies: str = ""
    # An allowed caller gets 200 (the request is one that succeeds).
    served: bool = False
    # The status of a refusal: 409 for a transaction, whose refused operations
    # come back as its errors (Consul's Txn), else 403.
    denied_status: int = 403


def _victim_service(m: Matrix) -> None:
    m.ok("PUT", "/v1/agent/service/register", {"Name": "victim", "Port": 1})


def _web_proxy(m: Matrix) -> None:
    m.ok(
        "PUT",
        "/v1/agent/service/register",
        {
            "Kind": "connect-proxy",
            "ID": "web-proxy",
            "Name": "web-sidecar-proxy",
            "Port": 21000,
            "Proxy": {"DestinationServiceName": "web"},
        },
    )


def _victim_check(m: Matrix) -> None:
    m.ok("PUT", "/v1/agent/check/register", {"ID": "victim-check", "Name": "v", "TTL": "300s"})


def _victim_token(m: Matrix) -> None:
    token = m.ok("PUT", "/v1/acl/token", {"Description": "victim"})
    m.values["victim_token"] = str(token["AccessorID"])


def _victim_policy(m: Matrix) -> None:
    policy = m.ok("PUT", "/v1/acl/policy", {"Name": f"victim-{uuid.uuid4().hex[:8]}"})
    m.values["victim_policy"] = str(policy["ID"])


def _victim_role(m: Matrix) -> None:
    role = m.ok("PUT", "/v1/acl/role", {"Name": f"victim-{uuid.uuid4().hex[:8]}"})
    m.values["victim_role"] = str(role["ID"])


def _external_node(m: Matrix) -> None:
    m.ok("PUT", "/v1/catalog/register", {"Node": "ext-node", "Address": "10.9.9.9"})


def _victim_session(m: Matrix) -> None:
    made = m.ok("PUT", "/v1/session/create", {"Node": NODE, "NodeChecks": []})
    m.values["victim_session"] = str(made["ID"])


def _kv_victim(m: Matrix) -> None:
    m.ok("PUT", "/v1/kv/matrix/victim", b"v")


def _victim_entries(m: Matrix) -> None:
    """One entry of each kind to delete: proxy-defaults, service-defaults and
    service-intentions, all but the first named "victim"."""
    m.ok("PUT", "/v1/config", {"Kind": "proxy-defaults", "Name": "global"})
    m.ok("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "victim"})
    m.ok(
        "PUT",
        "/v1/config",
        {"Kind": "service-intentions", "Name": "victim",
         "Sources": [{"Name": "db", "Action": "allow"}]},
    )  # fmt: skip


def _victim_intention(m: Matrix) -> None:
    """An intention to web from a new source: by name for /exact, by ID for /{id}."""
    source = f"victim-{uuid.uuid4().hex[:8]}"
    created = m.ok(
        "POST",
        "/v1/connect/intentions",
        {"SourceName": source, "DestinationName": "web", "Action": "allow"},
    )
    m.values.update(victim_source=source, victim_intention=str(created["ID"]))


def _victim_query(m: Matrix) -> None:
    """A named query to change or delete (the last one goes first: names are unique)."""
    previous = m.values.pop("victim_query", None)
    if previous is not None:
        m.call("DELETE", f"/v1/query/{previous}")
    created = m.ok("POST", "/v1/query", {"Name": "victim-query", "Service": {"Service": "web"}})
    m.values["victim_query"] = str(created["ID"])


# A coordinate as an agent sends it (8 dimensions, seconds).
COORD = {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1.0e-5}

S = Sample


def _on(permission: str, name: str | None = None) -> str:
    """How a refusal names what was lacking: 'service:write' on "web"."""
    return f"'{permission}'" + (f' on "{name}"' if name is not None else "")


# A sample an allowed caller must be served by (200), not only not refused.
C = functools.partial(Sample, served=True)
WEB_READ = _on("service:read", "web")
WEB_WRITE = _on("service:write", "web")
WEB_INTENTIONS_READ = _on("intention:read", "web")
WEB_INTENTIONS_WRITE = _on("intention:write", "web")
SAMPLES: list[Sample] = [
    # catalog and health (enforced by the servers)
    S("PUT", "/v1/catalog/register", "/v1/catalog/register", "write",
      {"Node": "ext-node", "Address": "10.9.9.9"}),
    S("PUT", "/v1/catalog/deregister", "/v1/catalog/deregister", "write", {"Node": "ext-node"},
      setup=_external_node),
    S("GET", "/v1/catalog/datacenters", "/v1/catalog/datacenters", "none"),
    S("GET", "/v1/catalog/nodes", "/v1/catalog/nodes", "list"),
    S("GET", "/v1/catalog/services", "/v1/catalog/services", "list"),
    S("GET", "/v1/catalog/service/{service}", "/v1/catalog/service/web", "list"),
    S("GET", "/v1/catalog/connect/{service}", "/v1/catalog/connect/web", "list"),
    S("GET", "/v1/catalog/node/{node}", "/v1/catalog/node/{node}", "list"),
    S("GET", "/v1/catalog/node-services/{node}", "/v1/catalog/node-services/{node}", "list"),
    S("GET", "/v1/health/service/{service}", "/v1/health/service/web", "list"),
    S("GET", "/v1/health/connect/{service}", "/v1/health/connect/web", "list"),
    S("GET", "/v1/health/node/{node}", "/v1/health/node/{node}", "list"),
    S("GET", "/v1/health/checks/{service}", "/v1/health/checks/web", "list"),
    S("GET", "/v1/health/state/{state}", "/v1/health/state/any", "list"),
    S("GET", "/v1/status/leader", "/v1/status/leader", "none"),
    S("GET", "/v1/connect/ca/roots", "/v1/connect/ca/roots", "none"),
    # the Connect CA: operator:write for the configuration (read too, as Consul),
    # service:write for a leaf, nothing for the agent's roots
    C("GET", "/v1/connect/ca/configuration", "/v1/connect/ca/configuration", "write",
      denies=_on("operator:write")),
    C("PUT", "/v1/connect/ca/configuration", "/v1/connect/ca/configuration", "write",
      {"Provider": "consul", "Config": {"LeafCertTTL": "72h"}}, denies=_on("operator:write")),
    S("GET", "/v1/agent/connect/ca/roots", "/v1/agent/connect/ca/roots", "none"),
    C("GET", "/v1/agent/connect/ca/leaf/{service}", "/v1/agent/connect/ca/leaf/web", "write",
      denies=WEB_WRITE),
    C("POST", "/v1/agent/connect/authorize", "/v1/agent/connect/authorize", "write",
      {"Target": "web", "ClientCertURI": DB_URI}, denies=WEB_WRITE),
    # Proconsul's: what the agent's xDS server last sent a local proxy
    C("GET", "/v1/agent/connect/proxy/{proxy_id}/xds", "/v1/agent/connect/proxy/web-proxy/xds",
      "read", setup=_web_proxy, denies=WEB_READ),
    # config entries, per kind (server/config_endpoints.py): proxy-defaults is anyone's
    # to read and operator:write to write; service-* service:read/write on the name;
    # service-intentions intentions read/write on the destination
    C("PUT", "/v1/config", "/v1/config", "write",
      {"Kind": "proxy-defaults", "Name": "global"}, denies=_on("operator:write")),
    C("PUT", "/v1/config", "/v1/config", "write",
      {"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"}, denies=WEB_WRITE),
    C("PUT", "/v1/config", "/v1/config", "write",
      {"Kind": "service-intentions", "Name": "matrix-dest",
       "Sources": [{"Name": "matrix-src", "Action": "allow"}]},
      denies=_on("intention:write", "matrix-dest")),
    C("GET", "/v1/config/{kind}/{name}", "/v1/config/proxy-defaults/global", "none"),
    C("GET", "/v1/config/{kind}/{name}", "/v1/config/service-defaults/web", "read",
      denies=WEB_READ),
    C("GET", "/v1/config/{kind}/{name}", "/v1/config/service-intentions/web", "read",
      denies=WEB_INTENTIONS_READ),
    C("GET", "/v1/config/{kind}", "/v1/config/proxy-defaults", "list"),
    C("GET", "/v1/config/{kind}", "/v1/config/service-defaults", "list"),
    C("GET", "/v1/config/{kind}", "/v1/config/service-intentions", "list"),
    C("DELETE", "/v1/config/{kind}/{name}", "/v1/config/proxy-defaults/global", "write",
      setup=_victim_entries, denies=_on("operator:write")),
    C("DELETE", "/v1/config/{kind}/{name}", "/v1/config/service-defaults/victim", "write",
      setup=_victim_entries, denies=_on("service:write", "victim")),
    C("DELETE", "/v1/config/{kind}/{name}", "/v1/config/service-intentions/victim", "write",
      setup=_victim_entries, denies=_on("intention:write", "victim")),
    C("GET", "/v1/discovery-chain/{service}", "/v1/discovery-chain/web", "read",
      denies=WEB_READ),
    C("POST", "/v1/discovery-chain/{service}", "/v1/discovery-chain/web", "read", {},
      denies=WEB_READ),
    # the intentions API: a row is read with intentions read on either end, lists
    # filter, a check needs service:read on the destination, writes need
    # intentions write on the destination
    C("GET", "/v1/connect/intentions", "/v1/connect/intentions", "list"),
    C("POST", "/v1/connect/intentions", "/v1/connect/intentions", "write",
      {"SourceName": "m-{caller}", "DestinationName": "web", "Action": "allow"},
      denies=WEB_INTENTIONS_WRITE),
    C("GET", "/v1/connect/intentions/exact",
      "/v1/connect/intentions/exact?source=db&destination=web", "read", denies=WEB_INTENTIONS_READ),
    C("PUT", "/v1/connect/intentions/exact",
      "/v1/connect/intentions/exact?source=x-{caller}&destination=web", "write",
      {"Action": "deny"}, denies=WEB_INTENTIONS_WRITE),
    C("DELETE", "/v1/connect/intentions/exact",
      "/v1/connect/intentions/exact?source={victim_source}&destination=web", "write",
      setup=_victim_intention, denies=WEB_INTENTIONS_WRITE),
    C("GET", "/v1/connect/intentions/match",
      "/v1/connect/intentions/match?by=destination&name=web", "read",
      denies=WEB_INTENTIONS_READ),
    C("GET", "/v1/connect/intentions/check",
      "/v1/connect/intentions/check?source=db&destination=web", "read", denies=WEB_READ),
    C("GET", "/v1/connect/intentions/{id}", "/v1/connect/intentions/{intention_id}", "read",
      denies=WEB_INTENTIONS_READ),
    C("PUT", "/v1/connect/intentions/{id}", "/v1/connect/intentions/{victim_intention}", "write",
      {"SourceName": "{victim_source}", "DestinationName": "web", "Action": "deny"},
      setup=_victim_intention, denies=WEB_INTENTIONS_WRITE),
    C("DELETE", "/v1/connect/intentions/{id}", "/v1/connect/intentions/{victim_intention}",
      "write", setup=_victim_intention, denies=WEB_INTENTIONS_WRITE),
    S("GET", "/v1/status/peers", "/v1/status/peers", "none"),
    # prepared queries: query rules on the name (server/query_endpoints.py);
    # executing needs no right on the query (its rows are filtered)
    C("POST", "/v1/query", "/v1/query", "write",
      {"Name": "m-{caller}", "Service": {"Service": "web"}}, denies=_on("query:write", "m-read")),
    C("GET", "/v1/query", "/v1/query", "list"),
    C("GET", "/v1/query/{id}", "/v1/query/{query_id}", "read",
      denies=_on("query:read", "matrix-query")),
    C("PUT", "/v1/query/{id}", "/v1/query/{victim_query}", "write",
      {"Name": "victim-query", "Service": {"Service": "db"}}, setup=_victim_query,
      denies=_on("query:write", "victim-query")),
    C("DELETE", "/v1/query/{id}", "/v1/query/{victim_query}", "write", setup=_victim_query,
      denies=_on("query:write", "victim-query")),
    C("GET", "/v1/query/{id}/execute", "/v1/query/matrix-query/execute", "none"),
    C("GET", "/v1/query/{id}/explain", "/v1/query/matrix-query/explain", "read",
      denies=_on("query:read", "matrix-query")),
    # network coordinates: rows by node:read, an update needs node:write
    S("GET", "/v1/coordinate/nodes", "/v1/coordinate/nodes", "list"),
    S("GET", "/v1/coordinate/node/{node}", "/v1/coordinate/node/{node}", "list"),
    C("GET", "/v1/coordinate/datacenters", "/v1/coordinate/datacenters", "none"),
    C("PUT", "/v1/coordinate/update", "/v1/coordinate/update", "write",
      {"Node": NODE, "Coord": COORD}, denies=_on("node:write", NODE)),
    # KV
    S("GET", "/v1/kv/{key}", "/v1/kv/pub/a", "read"),
    S("PUT", "/v1/kv/{key}", "/v1/kv/matrix/key", "write", b"v"),
    S("DELETE", "/v1/kv/{key}", "/v1/kv/matrix/victim", "write", setup=_kv_victim),
    # sessions (enforced by the servers: session rules on the session's node)
    S("PUT", "/v1/session/create", "/v1/session/create", "write",
      {"Node": NODE, "NodeChecks": []}),
    S("PUT", "/v1/session/destroy/{id}", "/v1/session/destroy/{victim_session}", "write",
      setup=_victim_session),
    S("PUT", "/v1/session/renew/{id}", "/v1/session/renew/{session_id}", "write"),
    S("GET", "/v1/session/info/{id}", "/v1/session/info/{session_id}", "list"),
    S("GET", "/v1/session/node/{node}", "/v1/session/node/{node}", "list"),
    S("GET", "/v1/session/list", "/v1/session/list", "list"),
    # the agent
    S("GET", "/v1/agent/self", "/v1/agent/self", "read"),
    S("GET", "/v1/agent/members", "/v1/agent/members", "list"),
    S("GET", "/v1/agent/services", "/v1/agent/services", "list"),
    S("GET", "/v1/agent/service/{service_id}", "/v1/agent/service/web", "read"),
    S("GET", "/v1/agent/checks", "/v1/agent/checks", "list"),
    S("PUT", "/v1/agent/service/register", "/v1/agent/service/register", "write",
      {"Name": "matrix-svc", "Port": 2}),
    S("PUT", "/v1/agent/service/deregister/{service_id}",
      "/v1/agent/service/deregister/victim", "write", setup=_victim_service),
    S("PUT", "/v1/agent/service/maintenance/{service_id}",
      "/v1/agent/service/maintenance/web?enable=false", "write"),
    S("PUT", "/v1/agent/check/register", "/v1/agent/check/register", "write",
      {"ID": "matrix-check", "Name": "m", "TTL": "300s"}),
    S("PUT", "/v1/agent/check/deregister/{check_id}", "/v1/agent/check/deregister/victim-check",
      "write", setup=_victim_check),
    S("PUT", "/v1/agent/check/pass/{check_id}", "/v1/agent/check/pass/ttl-web", "write"),
    S("PUT", "/v1/agent/check/warn/{check_id}", "/v1/agent/check/warn/ttl-node", "write"),
    S("PUT", "/v1/agent/check/fail/{check_id}", "/v1/agent/check/fail/ttl-db", "write"),
    S("PUT", "/v1/agent/check/update/{check_id}", "/v1/agent/check/update/ttl-web", "write",
      {"Status": "passing", "Output": "ok"}),
    S("PUT", "/v1/agent/maintenance", "/v1/agent/maintenance?enable=false", "write"),
    # A bad level: the rule is checked first, an allowed caller then gets the 400.
    S("GET", "/v1/agent/monitor", "/v1/agent/monitor?loglevel=bogus", "read"),
    # A stream that never ends for an allowed caller: only refusals are tried.
    S("GET", "/v1/agent/metrics/stream", "/v1/agent/metrics/stream", "read", destructive=True),
    S("GET", "/v1/agent/host", "/v1/agent/host", "read"),
    S("GET", "/v1/agent/version", "/v1/agent/version", "none"),
    S("GET", "/v1/agent/health/service/name/{name}", "/v1/agent/health/service/name/web",
      "read"),
    S("GET", "/v1/agent/health/service/id/{service_id}", "/v1/agent/health/service/id/web",
      "read"),
    S("PUT", "/v1/agent/reload", "/v1/agent/reload", "write"),
    S("PUT", "/v1/agent/leave", "/v1/agent/leave", "write", destructive=True),
    S("GET", "/v1/agent/metrics", "/v1/agent/metrics", "read"),
    S("GET", "/v1/agent/live", "/v1/agent/live?once", "read", denies="agent:read"),
    # A stream whose every read is checked as the plain read is (test_ui_browser.py
    # follows one with a limited token); without ?path it is a 400 for anyone.
    S("GET", "/v1/agent/watch", "/v1/agent/watch", "none", unknown_may_get=(400,)),
    S("PUT", "/v1/agent/token/{kind}", "/v1/agent/token/replication", "acl",
      {"Token": "matrix-replication"}),
    S("PUT", "/v1/agent/join/{address}", "/v1/agent/join/127.0.0.1:1", "write"),
    S("PUT", "/v1/agent/force-leave/{node}", "/v1/agent/force-leave/nobody", "write"),
    # keyring and events
    S("GET", "/v1/operator/keyring", "/v1/operator/keyring", "read"),
    S("POST", "/v1/operator/keyring", "/v1/operator/keyring", "write", {"Key": KEY}),
    S("PUT", "/v1/operator/keyring", "/v1/operator/keyring", "write", {"Key": KEY}),
    S("DELETE", "/v1/operator/keyring", "/v1/operator/keyring", "write", {"Key": KEY}),
    S("PUT", "/v1/event/fire/{name}", "/v1/event/fire/deploy", "write", b"x"),
    S("GET", "/v1/event/list", "/v1/event/list", "list"),
    # operator
    S("GET", "/v1/operator/raft/configuration", "/v1/operator/raft/configuration", "read"),
    S("DELETE", "/v1/operator/raft/peer", "/v1/operator/raft/peer?id=nobody", "write"),
    S("GET", "/v1/operator/autopilot/health", "/v1/operator/autopilot/health", "read"),
    S("GET", "/v1/operator/autopilot/state", "/v1/operator/autopilot/state", "read"),
    S("GET", "/v1/operator/autopilot/configuration", "/v1/operator/autopilot/configuration",
      "read"),
    S("PUT", "/v1/operator/autopilot/configuration", "/v1/operator/autopilot/configuration",
      "write", {"CleanupDeadServers": True, "LastContactThreshold": "200ms",
                "MaxTrailingLogs": 250, "ServerStabilizationTime": "10s"}),
    S("POST", "/v1/operator/raft/transfer-leader", "/v1/operator/raft/transfer-leader", "write"),
    S("GET", "/v1/operator/usage", "/v1/operator/usage", "read"),
    # snapshots: a management token (acl:write); a restore would replace the state
    S("GET", "/v1/snapshot", "/v1/snapshot", "acl"),
    S("PUT", "/v1/snapshot", "/v1/snapshot", "acl", b"x", destructive=True),
    # transactions: each operation is checked; a refused one is an error of a 409
    S("PUT", "/v1/txn", "/v1/txn", "write",
      [{"KV": {"Verb": "set", "Key": "matrix/txn", "Value": "dg=="}}], denied_status=409),
    # the ACL API (enforced by the servers)
    S("PUT", "/v1/acl/bootstrap", "/v1/acl/bootstrap", "none",
      always_403_prefix="Permission denied: ACL bootstrap no longer allowed"),
    S("PUT", "/v1/acl/token", "/v1/acl/token", "acl", {"Description": "matrix"}),
    S("GET", "/v1/acl/token/self", "/v1/acl/token/self", "none"),
    S("PUT", "/v1/acl/token/{id}/clone", "/v1/acl/token/{read_accessor}/clone", "acl", {}),
    S("GET", "/v1/acl/token/{id}", "/v1/acl/token/{read_accessor}", "acl"),
    S("PUT", "/v1/acl/token/{id}", "/v1/acl/token/{victim_token}", "acl",
      {"Description": "updated"}, setup=_victim_token),
    S("DELETE", "/v1/acl/token/{id}", "/v1/acl/token/{victim_token}", "acl",
      setup=_victim_token),
    S("GET", "/v1/acl/tokens", "/v1/acl/tokens", "acl"),
    S("PUT", "/v1/acl/policy", "/v1/acl/policy", "acl", {"Name": "m-{caller}", "Rules": ""}),
    S("GET", "/v1/acl/policy/name/{name}", "/v1/acl/policy/name/matrix-policy", "acl"),
    S("GET", "/v1/acl/policy/{id}", "/v1/acl/policy/{policy_id}", "acl"),
    S("PUT", "/v1/acl/policy/{id}", "/v1/acl/policy/{victim_policy}", "acl",
      {"Description": "updated"}, setup=_victim_policy),
    S("DELETE", "/v1/acl/policy/{id}", "/v1/acl/policy/{victim_policy}", "acl",
      setup=_victim_policy),
    S("GET", "/v1/acl/policies", "/v1/acl/policies", "acl"),
    S("PUT", "/v1/acl/role", "/v1/acl/role", "acl", {"Name": "r-{caller}"}),
    S("GET", "/v1/acl/role/name/{name}", "/v1/acl/role/name/matrix-role", "acl"),
    S("GET", "/v1/acl/role/{id}", "/v1/acl/role/{role_id}", "acl"),
    S("PUT", "/v1/acl/role/{id}", "/v1/acl/role/{victim_role}", "acl",
      {"Description": "updated"}, setup=_victim_role),
    S("DELETE", "/v1/acl/role/{id}", "/v1/acl/role/{victim_role}", "acl", setup=_victim_role),
    S("GET", "/v1/acl/roles", "/v1/acl/roles", "acl"),
    # An unknown ACL path is 404 for everyone; no token is read there.
    S("*", "/v1/acl/{tail}", "/v1/acl/no-such-thing", "none", unknown_may_get=(404,)),
    # the UI
    S("GET", "/", "/", "none"),
    S("GET", "/ui", "/ui", "none"),
    S("GET", "/ui/{path}", "/ui/app.js", "none"),
    S(
        "POST",
        "/v1/internal/acl/authorize",
        "/v1/internal/acl/authorize",
        "none",
        body=[{"Resource": "key", "Segment": "k", "Access": "read"}],
        served=True,
    ),
]  # fmt: skip


class _BuildOnly:
    kv_max_value_size = 512 * 1024


def test_every_route_has_a_sample() -> None:
    """The same enumeration as the rule table: a route without a sample fails."""
    routes = app_route_keys(build_app(cast(AgentAPI, _BuildOnly()), ui_enabled=True))
    sampled = {(s.method, s.pattern) for s in SAMPLES}
    assert sorted(routes - sampled) == [], "routes without a sample request"
    assert sorted(sampled - routes) == [], "samples for routes that do not exist"


# ----- the matrix -------------------------------------------------------------------------


def _refused(status: int, text: str, denied_status: int = 403) -> bool:
    if denied_status == 409:
        return status == 409 and '"What":"Permission denied' in text
    return status == 403 and text.startswith("Permission denied")


def _may(needs: str, caller: str) -> bool:
    if needs in ("none", "list"):
        return True
    if needs == "read":
        return caller in ("read", "write", "management")
    if needs == "write":
        return caller in ("write", "management")
    return caller == "management"


def _judge(sample: Sample, caller: str, status: int, text: str) -> str | None:
    """What is wrong with this answer, or None."""
    if caller == "unknown":
        if status in sample.unknown_may_get:
            return None
        if sample.always_403_prefix and text.startswith(sample.always_403_prefix):
            return None  # refused before any token is read, as in Consul
        return None if (status, text) == (403, "ACL not found") else "want 403 ACL not found"
    if sample.always_403_prefix:
        return None if status == 403 and text.startswith(sample.always_403_prefix) else "want 403"
    if _may(sample.needs, caller):
        if status in (403, sample.denied_status):
            return "refused"
        return "want 200" if sample.served and status != 200 else None
    if not _refused(status, text, sample.denied_status):
        return f"want {sample.denied_status} Permission denied"
    if sample.denies and (caller == "read" or sample.needs == "read"):
        return None if sample.denies in text else f"want the refusal to name {sample.denies}"
    return None


def _run(m: Matrix, sample: Sample, caller: str) -> tuple[int, str]:
    if sample.setup is not None:
        sample.setup(m)
    values = {**m.values, "caller": caller}
    path = sample.path.format(**values)
    body = sample.body
    if isinstance(body, dict):
        body = {k: v.format(**values) if isinstance(v, str) else v for k, v in body.items()}
    method = "GET" if sample.method == "*" else sample.method
    status, _, text = m.call(method, path, caller, body)
    return status, text


def test_matrix(matrix: Matrix) -> None:
    problems: list[str] = []
    for sample in SAMPLES:
        for caller in CALLERS:
            if sample.destructive and _may(sample.needs, caller):
                continue
            status, text = _run(matrix, sample, caller)
            wrong = _judge(sample, caller, status, text)
            if wrong is not None:
                kind = sample.body.get("Kind") if isinstance(sample.body, dict) else None
                what = f"{sample.method} {sample.path}" + (f" ({kind})" if kind else "")
                problems.append(f"{what} as {caller}: {status} {text[:160]!r} ({wrong})")
            if status == 200 and caller == "unknown":
                problems.append(f"{sample.method} {sample.path}: 200 to an unknown secret")
    assert problems == [], "\n" + "\n".join(problems)


def test_denial_names_the_accessor_and_permission(matrix: Matrix) -> None:
    status, _, text = matrix.call("PUT", "/v1/agent/reload", "read")
    accessor = matrix.accessors["read"]
    assert (status, text) == (
        403,
        f"Permission denied: token with AccessorID '{accessor}' lacks permission "
        f"'agent:write' on \"{NODE}\"",
    )


def test_register_needs_write_on_the_sidecar_and_the_destination(matrix: Matrix) -> None:
    web_only = matrix.make_token('service "api" { policy = "write" }', "api-only")[0]
    matrix.secrets["api-only"] = web_only
    status, _, text = matrix.call(
        "PUT",
        "/v1/agent/service/register",
        "api-only",
        {"Name": "api", "Port": 3, "Connect": {"SidecarService": {}}},
    )
    assert status == 403 and "api-sidecar-proxy" in text, (status, text)
    status, _, text = matrix.call(
        "PUT",
        "/v1/agent/service/register",
        "api-only",
        {
            "Name": "api-proxy",
            "Kind": "connect-proxy",
            "Port": 4,
            "Proxy": {"DestinationServiceName": "web"},
        },
    )
    assert status == 403 and "service:write" in text, (status, text)


def _denied(matrix: Matrix, caller: str, method: str, path: str, body: Any = None) -> str:
    """The permission a refusal names ('service:write' on "db"); fails on any other answer."""
    status, _, text = matrix.call(method, path, caller, body)
    assert status == 403 and " lacks permission " in text, (method, path, status, text)
    return text.split(" lacks permission ", 1)[1]


def _served(matrix: Matrix, caller: str, method: str, path: str, body: Any = None) -> Any:
    status, _, text = matrix.call(method, path, caller, body)
    assert status == 200, (method, path, status, text)
    return json.loads(text) if text.strip() else None


def _caller(matrix: Matrix, name: str, rules: str) -> str:
    """A caller whose token has exactly `rules` (made once per module)."""
    if name not in matrix.secrets:
        matrix.secrets[name] = matrix.make_token(rules, name)[0]
    return name


def test_config_entry_rules_follow_the_kind_and_name(matrix: Matrix) -> None:
    """A token with service:write on web only (Consul's config entry ACL table)."""
    who = _caller(matrix, "web-writer", 'service "web" { policy = "write" }')
    entry = {"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"}
    assert _served(matrix, who, "PUT", "/v1/config", entry) is True
    assert _denied(matrix, who, "PUT", "/v1/config", {**entry, "Name": "db"}) == _on(
        "service:write", "db"
    )
    proxy = {"Kind": "proxy-defaults", "Name": "global"}
    assert _denied(matrix, who, "PUT", "/v1/config", proxy) == _on("operator:write")
    # service write grants reading the service's intentions, not writing them
    sources = [{"Name": "db", "Action": "allow"}]
    intentions = {"Kind": "service-intentions", "Name": "web", "Sources": sources}
    assert _denied(matrix, who, "PUT", "/v1/config", intentions) == _on("intention:write", "web")
    assert _served(matrix, who, "GET", "/v1/config/service-intentions/web")["Name"] == "web"
    assert _denied(matrix, who, "GET", "/v1/config/service-defaults/db") == _on(
        "service:read", "db"
    )
    # a resolver that sends web's traffic to db also needs service:read on db
    resolver = {"Kind": "service-resolver", "Name": "web", "Redirect": {"Service": "db"}}
    assert _denied(matrix, who, "PUT", "/v1/config", resolver) == _on("service:read", "db")
    assert _denied(matrix, who, "GET", "/v1/discovery-chain/db") == _on("service:read", "db")
    listed = _served(matrix, who, "GET", "/v1/config/service-defaults")
    assert [e["Name"] for e in listed] == ["web"]


def test_intention_reads_need_either_end_and_check_the_destination(matrix: Matrix) -> None:
    """A token that reads service db (and so db's intentions) and nothing else."""
    who = _caller(matrix, "db-reader", 'service "db" { policy = "read" }')
    found = _served(matrix, who, "GET", "/v1/connect/intentions/exact?source=db&destination=web")
    assert (found["SourceName"], found["DestinationName"]) == ("db", "web")
    assert _served(matrix, who, "GET", f"/v1/connect/intentions/{matrix.values['intention_id']}")
    path = "/v1/connect/intentions/match?by=destination&name=web"
    assert _denied(matrix, who, "GET", path) == _on("intention:read", "web")
    by_source = _served(matrix, who, "GET", "/v1/connect/intentions/match?by=source&name=db")
    assert sorted(i["DestinationName"] for i in by_source["db"]) == ["api", "web"]
    # a check tells only allowed or not: service:read on the destination, whatever the source
    path = "/v1/connect/intentions/check?source=db&destination=web"
    assert _denied(matrix, who, "GET", path) == _on("service:read", "web")
    path = "/v1/connect/intentions/check?source=api&destination=db"
    assert _served(matrix, who, "GET", path) == {"Allowed": False}
    status, headers, text = matrix.call("GET", "/v1/connect/intentions", who)
    rows = json.loads(text)
    assert status == 200 and headers.get(FILTERED) == "true", (status, headers)
    assert sorted((r["SourceName"], r["DestinationName"]) for r in rows) == [
        ("api", "db"),
        ("db", "api"),
        ("db", "web"),
    ]


def test_intention_writes_need_intentions_write_on_the_destination(matrix: Matrix) -> None:
    rules = 'service_prefix "" { policy = "read" }\n'
    rules += 'service "web" { policy = "read" intentions = "write" }'
    who = _caller(matrix, "web-intentions", rules)
    path = "/v1/connect/intentions/exact?source=ixn-src&destination=web"
    assert _served(matrix, who, "PUT", path, {"Action": "allow"}) is True
    path = "/v1/connect/intentions/exact?source=web&destination=db"
    assert _denied(matrix, who, "PUT", path, {"Action": "allow"}) == _on("intention:write", "db")
    body = {"SourceName": "web", "DestinationName": "db", "Action": "allow"}
    assert _denied(matrix, who, "POST", "/v1/connect/intentions", body) == _on(
        "intention:write", "db"
    )
    path = "/v1/connect/intentions/exact?source=ixn-src&destination=web"
    assert _served(matrix, who, "DELETE", path) is True


def test_authorize_and_leaf_need_service_write_on_the_target(matrix: Matrix) -> None:
    who = _caller(matrix, "web-writer", 'service "web" { policy = "write" }')
    body = {"Target": "web", "ClientCertURI": DB_URI}
    answer = _served(matrix, who, "POST", "/v1/agent/connect/authorize", body)
    assert answer["Authorized"] is True and "default/db => default/web" in answer["Reason"]
    body = {"Target": "db", "ClientCertURI": DB_URI}
    assert _denied(matrix, who, "POST", "/v1/agent/connect/authorize", body) == _on(
        "service:write", "db"
    )
    assert _served(matrix, who, "GET", "/v1/agent/connect/ca/leaf/web")["Service"] == "web"
    assert _denied(matrix, who, "GET", "/v1/agent/connect/ca/leaf/db") == _on("service:write", "db")


# ----- filtered lists ---------------------------------------------------------------------

LISTS = [
    "/v1/agent/members",
    "/v1/agent/services",
    "/v1/agent/checks",
    "/v1/event/list",
    "/v1/catalog/services",
    "/v1/catalog/nodes",
    "/v1/health/state/any",
    "/v1/kv/?recurse",
    "/v1/config/service-defaults",
    "/v1/config/service-intentions",
    "/v1/connect/intentions",
]


@pytest.mark.parametrize("path", LISTS)
def test_partial_view_is_flagged(matrix: Matrix, path: str) -> None:
    status, headers, text = matrix.call("GET", path, "partial")
    assert status == 200, (status, text)
    assert headers.get(FILTERED) == "true", (path, headers)
    status, headers, _ = matrix.call("GET", path, "management")
    assert status == 200 and FILTERED not in headers, (path, headers)


def test_partial_view_keeps_what_it_may_read(matrix: Matrix) -> None:
    services = json.loads(matrix.call("GET", "/v1/agent/services", "partial")[2])
    assert sorted(services) == ["web"]
    checks = json.loads(matrix.call("GET", "/v1/agent/checks", "partial")[2])
    assert sorted(checks) == ["ttl-web"]
    events = json.loads(matrix.call("GET", "/v1/event/list", "partial")[2])
    assert {e["Name"] for e in events} == {"deploy"}
    assert json.loads(matrix.call("GET", "/v1/agent/members", "partial")[2]) == []


def test_anonymous_is_not_told_what_was_hidden(matrix: Matrix) -> None:
    for path in ("/v1/agent/services", "/v1/agent/checks", "/v1/event/list"):
        status, headers, text = matrix.call("GET", path, "none")
        assert (status, text.strip()) in ((200, "{}"), (200, "[]")), (path, status, text)
        assert FILTERED not in headers, path


# ----- agent tokens ----------------------------------------------------------------------


def test_initial_management_token(matrix: Matrix) -> None:
    assert matrix.initial_management_ok, "tokens.initial_management was not created on the leader"


def test_agent_token_unknown_kind_and_bad_body(matrix: Matrix) -> None:
    assert matrix.call("PUT", "/v1/agent/token/nope", body={"Token": "x"})[::2] == (
        404,
        'Token "nope" is unknown',
    )
    status, _, text = matrix.call("PUT", "/v1/agent/token/default", body="{")
    assert status == 400 and text.startswith("Request decode failed"), (status, text)


def test_agent_token_old_names_are_accepted(matrix: Matrix) -> None:
    for kind in ("acl_replication_token", "replication"):
        status, _, text = matrix.call("PUT", f"/v1/agent/token/{kind}", body={"Token": "r"})
        assert (status, text) == (200, ""), kind


def test_cli_set_agent_token(matrix: Matrix) -> None:
    env = {**os.environ, "CONSUL_HTTP_ADDR": matrix.agent.http_addr}
    done = subprocess.run(
        proconsul_cmd(
            "acl", "set-agent-token", f"-token={matrix.management}", "replication", "cli-r"
        ),
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        'ACL token "replication" set successfully\n',
        "",
    )
    denied = subprocess.run(
        proconsul_cmd(
            "acl", "set-agent-token", f"-token={matrix.secrets['read']}", "agent", "cli-a"
        ),
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert denied.returncode == 1
    assert denied.stderr.startswith(
        'Failed to set ACL token "agent": Unexpected response code: 403 (Permission denied'
    ), denied.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((), "Error! Missing TYPE and TOKEN arguments\n"),
        (("agent",), "Error! Missing TOKEN argument\n"),
        (("bogus", "x"), "Unknown token type\n"),
        (("agent", "x", "y"), "Error! Too many arguments: expected 2 got 3\n"),
    ],
)
def test_cli_set_agent_token_argument_errors(args: tuple[str, ...], error: str) -> None:
    env = {**os.environ, "CONSUL_HTTP_ADDR": "127.0.0.1:1"}  # never reached
    done = subprocess.run(
        proconsul_cmd("acl", "set-agent-token", *args),
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert (done.returncode, done.stdout, done.stderr) == (1, "", error)


def test_acls_disabled(dev_agent: AgentProcess) -> None:
    """No ACLs: agent tokens are 401 as in Consul, and nothing is refused or filtered."""
    status, _, body = dev_agent.request("PUT", "/v1/agent/token/default", {"Token": "x"})
    assert (status, body) == (401, b"ACL support disabled")
    headers = {"X-Consul-Token": str(uuid.uuid4())}
    status, got, _ = dev_agent.request("GET", "/v1/agent/services", headers=headers)
    assert status == 200 and FILTERED not in got
    assert dev_agent.request("GET", "/v1/agent/self", headers=headers)[0] == 200


def test_default_token_persists_and_wins_over_config(matrix: Matrix) -> None:
    """Config says default = "anonymous"; the API sets the read token; a restart keeps it."""
    assert matrix.call("GET", "/v1/agent/self", "none")[0] == 403
    status, _, text = matrix.call(
        "PUT", "/v1/agent/token/default", body={"Token": matrix.secrets["read"]}
    )
    assert (status, text) == (200, "")
    assert matrix.call("GET", "/v1/agent/self", "none")[0] == 200
    path = matrix.tmp / "data" / "acl-tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["default"] == matrix.secrets["read"]
    matrix.agent.stop()
    matrix.agent = _start(matrix.tmp, matrix.args)
    wait_for(lambda: _has_management(matrix.agent, matrix.management), 15.0, 0.2)
    assert matrix.call("GET", "/v1/agent/self", "none")[0] == 200


def test_no_secret_in_any_log(matrix: Matrix) -> None:
    """Runs last: every agent log of this module, scanned for every secret used."""
    secrets = {s for s in matrix.secrets.values() if s and s != "anonymous"}
    secrets |= {"matrix-replication", "cli-r", "cli-a"}
    logs = sorted(matrix.tmp.glob("*.log"))
    assert logs, "no agent logs found"
    for log_path in logs:
        text = log_path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret appears in {log_path.name}"
