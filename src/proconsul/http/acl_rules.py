"""The ACL rule of every HTTP route, and the middleware that enforces it.

Job: one declarative table, `ACL_RULES`, from (method, route pattern) to what
Consul requires for that endpoint; `acl_middleware` resolves the request's
token once, applies the rule, and leaves the `ResolvedToken` on the request
for handlers that filter lists or check a name only they know (a service in
a request body, the service of a local check).

Rules:
- Patterns are aiohttp's canonical form (`/v1/kv/{key}` for `{key:.*}`);
  HEAD follows GET (aiohttp adds a HEAD route for every GET).
- `SERVER`: the server endpoints enforce the rule (catalog, health, KV, the
  ACL API) with the token the handler passes along; nothing is done here.
- `NONE`: Consul requires nothing (status, UI). A token that is presented is
  still resolved, so an unknown secret is 403 "ACL not found" on every route.
- `require(...)`: checked here, before the handler runs, with Consul's
  resource, access and name (the agent's own node for agent/node rules).
- `filtered(...)` and `in_handler(...)`: the token is resolved here (unknown
  secret -> 403) and the handler filters rows or checks names itself, with
  `allowed`/`authorize` below.
- A route without a rule fails closed: 403 and an error log naming the route,
  whenever ACLs are enabled. `check_routes` lists such routes (and a unit test
  fails on them), so a new endpoint cannot ship without a rule.
- While ACLs are disabled (`resolve_token` answers None) everything is allowed
  and nothing is filtered.
- Secrets are never logged; log lines name routes and accessor IDs only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from aiohttp import web

from proconsul.acl.resolved import ResolvedToken
from proconsul.http.api import agent_of
from proconsul.http.common import HTTPError, request_token
from proconsul.structs.acl import ANONYMOUS_TOKEN_ACCESSOR_ID

log = logging.getLogger("proconsul.http.acl")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RouteKey = tuple[str, str]

RESOLVED_KEY: web.RequestKey[ResolvedToken | None] = web.RequestKey("acl_resolved")
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"
NO_RULE_TEXT = "Permission denied: no ACL rule for this endpoint"
# A rule's name taken from the agent itself, not from the request.
AGENT_NODE = "<agent node>"


class Kind(Enum):
    SERVER = "server"
    NONE = "none"
    REQUIRE = "require"
    FILTERED = "filtered"
    IN_HANDLER = "in handler"


@dataclass(frozen=True, slots=True)
class Rule:
    """What an endpoint needs. `name` is AGENT_NODE, a path parameter, or None
    (unlabelled resources such as operator, keyring and acl)."""

    kind: Kind
    resource: str = ""
    access: str = ""
    name: str | None = None
    note: str = ""

    def describe(self) -> str:
        if self.kind in (Kind.SERVER, Kind.NONE):
            return str(self.kind.value)
        text = f"{self.resource}:{self.access}" if self.resource else ""
        if self.note:
            text = f"{text} ({self.note})" if text else self.note
        return f"{self.kind.value}: {text}"


SERVER = Rule(Kind.SERVER)
NONE = Rule(Kind.NONE)


def require(resource: str, access: str, name: str | None = None) -> Rule:
    return Rule(Kind.REQUIRE, resource, access, name)


def filtered(note: str) -> Rule:
    return Rule(Kind.FILTERED, note=note)


def in_handler(resource: str, access: str, note: str) -> Rule:
    return Rule(Kind.IN_HANDLER, resource, access, note=note)


_SERVICE_WRITE_BY_ID = in_handler(
    "service", "write", "on the local service's name; unknown ID is 404"
)
_CHECK_WRITE = in_handler(
    "service", "write", "on the check's service, node:write on this node for a node check"
)

_INTENTION_WRITE = in_handler("intention", "write", "on the intention's destination")

# (method, canonical pattern) -> rule. Each entry follows the "ACL Required"
# column of Consul's API page for that endpoint (agent, event, operator,
# status, catalog, health, kv, session, acl).
ACL_RULES: dict[RouteKey, Rule] = {
    # --- enforced by the server endpoints -------------------------------------
    ("PUT", "/v1/catalog/register"): SERVER,
    ("PUT", "/v1/catalog/deregister"): SERVER,
    ("GET", "/v1/catalog/nodes"): SERVER,
    ("GET", "/v1/catalog/services"): SERVER,
    ("GET", "/v1/catalog/service/{service}"): SERVER,
    ("GET", "/v1/catalog/connect/{service}"): SERVER,
    ("GET", "/v1/catalog/node/{node}"): SERVER,
    ("GET", "/v1/catalog/node-services/{node}"): SERVER,
    ("GET", "/v1/health/service/{service}"): SERVER,
    ("GET", "/v1/health/connect/{service}"): SERVER,
    ("GET", "/v1/health/node/{node}"): SERVER,
    ("GET", "/v1/health/checks/{service}"): SERVER,
    ("GET", "/v1/health/state/{state}"): SERVER,
    ("GET", "/v1/kv/{key}"): SERVER,
    ("PUT", "/v1/kv/{key}"): SERVER,
    ("DELETE", "/v1/kv/{key}"): SERVER,
    ("PUT", "/v1/txn"): SERVER,
    ("PUT", "/v1/session/create"): SERVER,
    ("PUT", "/v1/session/destroy/{id}"): SERVER,
    ("PUT", "/v1/session/renew/{id}"): SERVER,
    ("GET", "/v1/session/info/{id}"): SERVER,
    ("GET", "/v1/session/node/{node}"): SERVER,
    ("GET", "/v1/session/list"): SERVER,
    ("PUT", "/v1/acl/bootstrap"): SERVER,
    ("PUT", "/v1/acl/token"): SERVER,
    ("GET", "/v1/acl/token/self"): SERVER,
    ("PUT", "/v1/acl/token/{id}/clone"): SERVER,
    ("GET", "/v1/acl/token/{id}"): SERVER,
    ("PUT", "/v1/acl/token/{id}"): SERVER,
    ("DELETE", "/v1/acl/token/{id}"): SERVER,
    ("GET", "/v1/acl/tokens"): SERVER,
    ("PUT", "/v1/acl/policy"): SERVER,
    ("GET", "/v1/acl/policy/name/{name}"): SERVER,
    ("GET", "/v1/acl/policy/{id}"): SERVER,
    ("PUT", "/v1/acl/policy/{id}"): SERVER,
    ("DELETE", "/v1/acl/policy/{id}"): SERVER,
    ("GET", "/v1/acl/policies"): SERVER,
    ("PUT", "/v1/acl/role"): SERVER,
    ("GET", "/v1/acl/role/name/{name}"): SERVER,
    ("GET", "/v1/acl/role/{id}"): SERVER,
    ("PUT", "/v1/acl/role/{id}"): SERVER,
    ("DELETE", "/v1/acl/role/{id}"): SERVER,
    ("GET", "/v1/acl/roles"): SERVER,
    # Prepared queries: query rules and ownership, on the server
    # (server/query_endpoints.py).
    ("POST", "/v1/query"): SERVER,
    ("GET", "/v1/query"): SERVER,
    ("GET", "/v1/query/{id}"): SERVER,
    ("PUT", "/v1/query/{id}"): SERVER,
    ("DELETE", "/v1/query/{id}"): SERVER,
    ("GET", "/v1/query/{id}/execute"): SERVER,
    ("GET", "/v1/query/{id}/explain"): SERVER,
    # Network coordinates: rows filtered by node:read, updates need node:write,
    # on the server (server/coordinate_endpoints.py); the datacenter map names
    # only this datacenter.
    ("GET", "/v1/coordinate/nodes"): SERVER,
    ("GET", "/v1/coordinate/node/{node}"): SERVER,
    ("GET", "/v1/coordinate/datacenters"): NONE,
    ("PUT", "/v1/coordinate/update"): SERVER,
    # Config entries: per kind, on the server (server/config_endpoints.py).
    ("PUT", "/v1/config"): SERVER,
    ("GET", "/v1/config/{kind}"): SERVER,
    ("GET", "/v1/config/{kind}/{name}"): SERVER,
    ("DELETE", "/v1/config/{kind}/{name}"): SERVER,
    ("GET", "/v1/discovery-chain/{service}"): SERVER,
    ("POST", "/v1/discovery-chain/{service}"): SERVER,
    # Intentions: reads filtered or refused by the server endpoints
    # (server/intention_endpoints.py); writes need intentions:write on the
    # destination, checked in the handler (and again by the server).
    ("GET", "/v1/connect/intentions"): SERVER,
    ("POST", "/v1/connect/intentions"): _INTENTION_WRITE,
    ("GET", "/v1/connect/intentions/exact"): SERVER,
    ("PUT", "/v1/connect/intentions/exact"): _INTENTION_WRITE,
    ("DELETE", "/v1/connect/intentions/exact"): _INTENTION_WRITE,
    ("GET", "/v1/connect/intentions/match"): SERVER,
    ("GET", "/v1/connect/intentions/check"): SERVER,
    ("GET", "/v1/connect/intentions/{id}"): SERVER,
    ("PUT", "/v1/connect/intentions/{id}"): _INTENTION_WRITE,
    ("DELETE", "/v1/connect/intentions/{id}"): _INTENTION_WRITE,
    # The server checks operator:write (Consul asks it for reading the
    # configuration too, since 1.8.6).
    ("GET", "/v1/connect/ca/configuration"): SERVER,
    ("PUT", "/v1/connect/ca/configuration"): SERVER,
    # 401 with ACLs off, else 404: nothing to protect.
    ("*", "/v1/acl/{tail}"): SERVER,
    # --- nothing required -------------------------------------------------------
    ("GET", "/v1/catalog/datacenters"): NONE,
    ("GET", "/v1/status/leader"): NONE,
    ("GET", "/v1/status/peers"): NONE,
    # Consul's API page: "ACL Required: none" (the roots are public certificates).
    ("GET", "/v1/connect/ca/roots"): NONE,
    ("GET", "/v1/agent/connect/ca/roots"): NONE,
    ("GET", "/"): NONE,
    ("GET", "/ui"): NONE,
    ("GET", "/ui/{path}"): NONE,
    # Tells the caller what its own token may do (http/ui_routes.py).
    ("POST", "/v1/internal/acl/authorize"): NONE,
    # --- the agent ----------------------------------------------------------------
    ("GET", "/v1/agent/self"): require("agent", "read", AGENT_NODE),
    ("GET", "/v1/agent/metrics"): require("agent", "read", AGENT_NODE),
    ("GET", "/v1/agent/metrics/stream"): require("agent", "read", AGENT_NODE),
    ("GET", "/v1/agent/monitor"): require("agent", "read", AGENT_NODE),
    ("GET", "/v1/agent/host"): require("operator", "read"),
    ("GET", "/v1/agent/version"): NONE,
    ("GET", "/v1/agent/health/service/name/{name}"): in_handler(
        "service", "read", "on the service name"
    ),
    ("GET", "/v1/agent/health/service/id/{service_id}"): in_handler(
        "service", "read", "on the local service's name; unknown ID is 404"
    ),
    ("GET", "/v1/agent/live"): require("agent", "read", AGENT_NODE),
    # Each followed read is made with the caller's token and checked where the
    # plain read is (http/watch_routes.py).
    ("GET", "/v1/agent/watch"): SERVER,
    ("PUT", "/v1/agent/reload"): require("agent", "write", AGENT_NODE),
    ("PUT", "/v1/agent/leave"): require("agent", "write", AGENT_NODE),
    ("PUT", "/v1/agent/join/{address}"): require("agent", "write", AGENT_NODE),
    ("PUT", "/v1/agent/force-leave/{node}"): require("operator", "write"),
    ("PUT", "/v1/agent/maintenance"): require("node", "write", AGENT_NODE),
    ("GET", "/v1/agent/members"): filtered("node:read on each member"),
    ("GET", "/v1/agent/services"): filtered("service:read on each service"),
    ("GET", "/v1/agent/checks"): filtered("service:read on a check's service, else node:read"),
    ("GET", "/v1/agent/service/{service_id}"): in_handler(
        "service", "read", "on the local service's name; unknown ID is 404"
    ),
    ("PUT", "/v1/agent/service/register"): in_handler(
        "service",
        "write",
        "on the name, on a service it replaces, on a proxy's destination and the sidecar",
    ),
    ("PUT", "/v1/agent/service/deregister/{service_id}"): _SERVICE_WRITE_BY_ID,
    ("PUT", "/v1/agent/service/maintenance/{service_id}"): _SERVICE_WRITE_BY_ID,
    ("PUT", "/v1/agent/check/register"): _CHECK_WRITE,
    ("PUT", "/v1/agent/check/deregister/{check_id}"): _CHECK_WRITE,
    ("PUT", "/v1/agent/check/pass/{check_id}"): _CHECK_WRITE,
    ("PUT", "/v1/agent/check/warn/{check_id}"): _CHECK_WRITE,
    ("PUT", "/v1/agent/check/fail/{check_id}"): _CHECK_WRITE,
    ("PUT", "/v1/agent/check/update/{check_id}"): _CHECK_WRITE,
    ("POST", "/v1/agent/connect/authorize"): in_handler(
        "service", "write", "on the Target named in the body"
    ),
    # The leader checks it again when it signs the CSR.
    ("GET", "/v1/agent/connect/ca/leaf/{service}"): require("service", "write", "service"),
    ("GET", "/v1/agent/connect/proxy/{proxy_id}/xds"): in_handler(
        "service", "read", "on the local proxy's destination service; unknown ID is 404"
    ),
    # Consul's docs: acl:write (with ACLs off the handler answers 401).
    ("PUT", "/v1/agent/token/{kind}"): require("acl", "write"),
    # --- events, keyring, operator ----------------------------------------------------
    ("PUT", "/v1/event/fire/{name}"): require("event", "write", "name"),
    ("GET", "/v1/event/list"): filtered("event:read on each event"),
    ("GET", "/v1/operator/keyring"): require("keyring", "read"),
    ("POST", "/v1/operator/keyring"): require("keyring", "write"),
    ("PUT", "/v1/operator/keyring"): require("keyring", "write"),
    ("DELETE", "/v1/operator/keyring"): require("keyring", "write"),
    ("GET", "/v1/operator/raft/configuration"): require("operator", "read"),
    ("DELETE", "/v1/operator/raft/peer"): require("operator", "write"),
    ("POST", "/v1/operator/raft/transfer-leader"): require("operator", "write"),
    ("GET", "/v1/operator/usage"): require("operator", "read"),
    ("GET", "/v1/operator/autopilot/health"): require("operator", "read"),
    ("GET", "/v1/operator/autopilot/state"): require("operator", "read"),
    ("GET", "/v1/operator/autopilot/configuration"): require("operator", "read"),
    ("PUT", "/v1/operator/autopilot/configuration"): require("operator", "write"),
    # Consul's "management": SnapshotAllowed asks acl:write.
    ("GET", "/v1/snapshot"): require("acl", "write"),
    ("PUT", "/v1/snapshot"): require("acl", "write"),
}


# ----- routes ------------------------------------------------------------------------


def route_key(route: web.AbstractRoute) -> RouteKey | None:
    """(method, canonical pattern) of a route; HEAD is looked up as GET."""
    resource = route.resource
    if resource is None:
        return None
    method = "GET" if route.method == "HEAD" else route.method
    return method, resource.canonical


def app_route_keys(app: web.Application) -> set[RouteKey]:
    keys = {route_key(route) for route in app.router.routes()}
    return {key for key in keys if key is not None}


def check_routes(app: web.Application) -> list[RouteKey]:
    """Routes of `app` with no rule, sorted; each is logged as an error."""
    missing = sorted(key for key in app_route_keys(app) if key not in ACL_RULES)
    for method, pattern in missing:
        log.error(
            "http: route %s %s has no ACL rule; it is refused while ACLs are on", method, pattern
        )
    return missing


@functools.lru_cache(maxsize=1024)
def _route_rule(route: web.AbstractRoute) -> tuple[RouteKey | None, Rule | None]:
    # Routes are fixed once the app starts: look each one up once, not per request.
    key = route_key(route)
    return key, (ACL_RULES.get(key) if key is not None else None)


def rule_for(request: web.Request) -> tuple[RouteKey | None, Rule | None]:
    return _route_rule(request.match_info.route)


# ----- the middleware -------------------------------------------------------------------


def _name(rule: Rule, request: web.Request) -> str | None:
    if rule.name is None:
        return None
    if rule.name == AGENT_NODE:
        return agent_of(request).node_name
    return request.match_info.get(rule.name, "")


@web.middleware
async def acl_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.http_exception is not None:
        return await handler(request)  # 404 or 405: no route, nothing to protect
    key, rule = rule_for(request)
    if rule is None:
        resolved = await agent_of(request).resolve_token(request_token(request))
        if resolved is None:
            return await handler(request)  # ACLs disabled: nothing is protected
        method, pattern = key or (request.method, request.path)
        log.error("http: refused %s %s: route has no ACL rule", method, pattern)
        raise HTTPError(403, NO_RULE_TEXT)
    if rule.kind is Kind.SERVER:
        return await handler(request)
    secret = request_token(request)
    if rule.kind is Kind.NONE and not secret:
        return await handler(request)
    resolved = await agent_of(request).resolve_token(secret)
    request[RESOLVED_KEY] = resolved
    if resolved is not None and rule.kind is Kind.REQUIRE:
        resolved.require(rule.resource, rule.access, _name(rule, request))
    return await handler(request)


# ----- for handlers -------------------------------------------------------------------------


def resolved_token(request: web.Request) -> ResolvedToken | None:
    """The request's token as the middleware resolved it; None with ACLs disabled."""
    return request.get(RESOLVED_KEY)


async def ensure_resolved(request: web.Request) -> ResolvedToken | None:
    """The resolved token, resolving it here if the middleware did not."""
    if RESOLVED_KEY in request:
        return request[RESOLVED_KEY]
    resolved = await agent_of(request).resolve_token(request_token(request))
    request[RESOLVED_KEY] = resolved
    return resolved


def allowed(request: web.Request, resource: str, access: str, name: str | None = None) -> bool:
    resolved = resolved_token(request)
    return resolved is None or resolved.authorizer.allowed(resource, access, name)


def authorize(request: web.Request, resource: str, access: str, name: str | None = None) -> None:
    """Raise `ACLDenied` (403, Consul's text) unless the request's token may."""
    resolved = resolved_token(request)
    if resolved is not None:
        resolved.require(resource, access, name)


async def authorize_secret(
    request: web.Request, secret: str, resource: str, access: str, name: str
) -> None:
    """As `authorize`, for a token named in a request body (a sidecar's own token)."""
    if not secret:
        authorize(request, resource, access, name)
        return
    resolved = await agent_of(request).resolve_token(secret)
    if resolved is not None:
        resolved.require(resource, access, name)


def mark_filtered(response: web.StreamResponse, request: web.Request, dropped: bool) -> None:
    """Consul's filtered-results header, only for a caller that named a token (or
    acts with the agent's default one): an anonymous caller is not told that
    something was hidden from it."""
    resolved = resolved_token(request)
    if not dropped or resolved is None:
        return
    if request_token(request) or resolved.accessor_id != ANONYMOUS_TOKEN_ACCESSOR_ID:
        response.headers[FILTERED_HEADER] = "true"


def rules_table(keys: Iterable[RouteKey]) -> list[str]:
    """`METHOD pattern -> rule` lines, for docs and failing-test messages."""
    return [f"{m} {p} -> {ACL_RULES[(m, p)].describe()}" for m, p in sorted(keys)]
