"""/v1/agent/*: the agent's own view — self, members, local services and checks.

These answer from the agent's local state, not the catalog. Register bodies
are accepted in PascalCase or snake_case, as Consul accepts them.

ACLs (the table and middleware are in acl_rules.py): list endpoints drop
the rows the token may not read and then say so with
`X-Consul-Results-Filtered-By-ACLs`; endpoints whose name is in the body or
in local state (a service's name behind its ID, the service of a check)
check it here, in Consul's order: a bad body is 400 before the check, an
unknown ID is 404 after it only where Consul looks the ID up first.
`PUT /v1/agent/token/<kind>` replaces one of the agent's own tokens; its
secret is never logged.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from proconsul.http.acl_rules import (
    allowed,
    authorize,
    authorize_secret,
    ensure_resolved,
    mark_filtered,
)
from proconsul.http.api import agent_of
from proconsul.http.common import (
    HTTPError,
    bad_request,
    decode_body,
    json_response,
    not_found,
    query_bool,
    query_options,
    request_token,
)
from proconsul.structs.catalog import (
    CONNECT_PROXY_KIND,
    SIDECAR_PROXY_SUFFIX,
    ConnectProxyConfig,
    HealthCheck,
    NodeService,
    ServiceAddress,
    ServiceConnect,
    Weights,
)
from proconsul.structs.definitions import CheckDefinition, ServiceDefinition
from proconsul.structs.filter import cached_filter
from proconsul.structs.filter_syntax import FilterError
from proconsul.structs.naming import pascal
from proconsul.structs.requests import DEFAULT_WAIT_S, MAX_WAIT_S

T = TypeVar("T")

log = logging.getLogger("proconsul.agent")


class AgentService(msgspec.Struct, rename=pascal, omit_defaults=True, kw_only=True):
    """A row of /v1/agent/services (Consul's api.AgentService)."""

    id: str
    service: str
    tags: list[str]
    meta: dict[str, str]
    port: int
    address: str
    tagged_addresses: dict[str, ServiceAddress] | None = None  # omitted when empty
    weights: Weights
    enable_tag_override: bool
    datacenter: str
    kind: str | None = None
    proxy: ConnectProxyConfig | None = None
    connect: ServiceConnect | None = None
    content_hash: str | None = None


def agent_service(service: NodeService, datacenter: str, with_hash: bool = False) -> AgentService:
    row = AgentService(
        id=service.id,
        service=service.service,
        tags=service.tags,
        meta=service.meta,
        port=service.port,
        address=service.address,
        tagged_addresses=service.tagged_addresses or None,
        weights=service.weights,
        enable_tag_override=service.enable_tag_override,
        datacenter=datacenter,
        kind=service.kind or None,
        proxy=service.proxy or None,
        connect=service.connect or None,
    )
    if with_hash:
        digest = hashlib.blake2b(msgspec.msgpack.encode(row), digest_size=8).hexdigest()
        row.content_hash = digest
    return row


async def agent_self(request: web.Request) -> web.Response:
    return json_response(request, agent_of(request).self_info())


def _filtered_response(request: web.Request, value: Any, dropped: bool) -> web.Response:
    response = json_response(request, value)
    mark_filtered(response, request, dropped)
    return response


async def agent_members(request: web.Request) -> web.Response:
    if query_bool(request, "wan"):
        return json_response(request, [])
    members = agent_of(request).members()
    visible = [m for m in members if allowed(request, "node", "read", str(m.get("Name", "")))]
    return _filtered_response(request, visible, len(visible) != len(members))


async def agent_services(request: web.Request) -> web.Response:
    agent = agent_of(request)
    services = agent.local_services()
    visible = {
        sid: agent_service(svc, agent.datacenter)
        for sid, svc in sorted(services.items())
        if allowed(request, "service", "read", svc.service)
    }
    dropped = len(visible) != len(services)
    return _filtered_response(request, _query_filter(request, visible, AgentService), dropped)


async def agent_service_get(request: web.Request) -> web.Response:
    """One local service with its `ContentHash`. With `?hash=`, Consul's
    hash-based blocking: answer once the hash differs or `?wait` (5m by
    default, at most 10m) has passed."""
    agent = agent_of(request)
    service_id = request.match_info["service_id"]
    wanted_hash = request.query.get("hash", "")
    wait_s = query_options(request).max_query_time_s or DEFAULT_WAIT_S
    deadline_s = time.monotonic() + min(wait_s, MAX_WAIT_S)
    while True:
        service = agent.local_services().get(service_id)
        if service is None:
            not_found(f"unknown service ID: {service_id}")
        authorize(request, "service", "read", service.service)
        row = agent_service(service, agent.datacenter, with_hash=True)
        remaining_s = deadline_s - time.monotonic()
        if not wanted_hash or row.content_hash != wanted_hash or remaining_s <= 0:
            break
        await agent.wait_local_change(remaining_s)
    response = json_response(request, row)
    response.headers["X-Consul-ContentHash"] = row.content_hash or ""
    return response


def _check_readable(request: web.Request, check: HealthCheck) -> bool:
    if check.service_id:
        return allowed(request, "service", "read", check.service_name)
    return allowed(request, "node", "read", check.node)


async def agent_checks(request: web.Request) -> web.Response:
    checks: dict[str, HealthCheck] = agent_of(request).local_checks()
    visible = {cid: c for cid, c in sorted(checks.items()) if _check_readable(request, c)}
    dropped = len(visible) != len(checks)
    return _filtered_response(request, _query_filter(request, visible, HealthCheck), dropped)


def _query_filter(request: web.Request, rows: dict[str, T], shape: type[T]) -> dict[str, T]:
    """`?filter` on the agent's own lists (after the ACL step, as on servers)."""
    text = request.query.get("filter", "")
    if not text:
        return rows
    try:
        compiled = cached_filter(text, shape)
    except FilterError as exc:
        bad_request(str(exc))
    views = msgspec.to_builtins(rows)
    return {key: row for key, row in rows.items() if compiled.matches(views[key])}


async def _vet_service_register(request: web.Request, definition: ServiceDefinition) -> None:
    """Consul's vetting: write on the service, on the one it replaces, on a
    proxy's destination, and on the sidecar (with the sidecar's own token)."""
    authorize(request, "service", "write", definition.name)
    existing = agent_of(request).local_services().get(definition.id or definition.name)
    if existing is not None:
        authorize(request, "service", "write", existing.service)
    if definition.kind == CONNECT_PROXY_KIND and definition.proxy is not None:
        authorize(request, "service", "write", definition.proxy.destination_service_name)
    sidecar = definition.connect.sidecar_service if definition.connect else None
    if sidecar is not None:
        name = sidecar.name or definition.name + SIDECAR_PROXY_SUFFIX
        await authorize_secret(request, sidecar.token, "service", "write", name)
        # A sidecar is a proxy for the service, so it must be allowed to act as it.
        await authorize_secret(request, sidecar.token, "service", "write", definition.name)


async def service_register(request: web.Request) -> web.Response:
    definition = await decode_body(request, ServiceDefinition, keys="snake")
    replace = query_bool(request, "replace-existing-checks")
    if definition.name:
        await _vet_service_register(request, definition)
    # Anti-entropy syncs the service with the token that registered it, as Consul does.
    definition.token = request_token(request) or definition.token
    try:
        await agent_of(request).register_service(definition, replace)
    except ValueError as exc:
        bad_request(str(exc))
    return web.Response(status=200)


def _vet_service_update(request: web.Request, service_id: str) -> None:
    """Write on the local service behind `service_id`; an unknown ID is the caller's 404."""
    service = agent_of(request).local_services().get(service_id)
    if service is not None:
        authorize(request, "service", "write", service.service)


def _vet_check_write(request: web.Request, check: HealthCheck) -> None:
    if check.service_id:
        authorize(request, "service", "write", check.service_name)
    else:
        authorize(request, "node", "write", agent_of(request).node_name)


def _vet_check_update(request: web.Request, check_id: str) -> None:
    """Write on an existing check; an unknown ID is the caller's 404."""
    check = agent_of(request).local_checks().get(check_id)
    if check is not None:
        _vet_check_write(request, check)


async def service_deregister(request: web.Request) -> web.Response:
    service_id = request.match_info["service_id"]
    _vet_service_update(request, service_id)
    if not await agent_of(request).deregister_service(service_id):
        not_found(
            f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
            "not the service name."
        )
    return web.Response(status=200)


def _vet_check_register(request: web.Request, definition: CheckDefinition) -> None:
    agent = agent_of(request)
    service_name = ""
    if definition.service_id:
        service = agent.local_services().get(definition.service_id)
        if service is None:
            return  # refused below as an unknown service; nothing is registered
        service_name = service.service
    _vet_check_write(
        request,
        HealthCheck(
            node=agent.node_name,
            check_id="",
            name=definition.name,
            service_id=definition.service_id,
            service_name=service_name,
        ),
    )
    existing = agent.local_checks().get(definition.check_id or definition.id or definition.name)
    if existing is not None:
        _vet_check_write(request, existing)


async def check_register(request: web.Request) -> web.Response:
    definition = await decode_body(request, CheckDefinition, keys="snake")
    _vet_check_register(request, definition)
    definition.token = request_token(request) or definition.token
    try:
        await agent_of(request).register_check(definition)
    except ValueError as exc:
        bad_request(str(exc))
    return web.Response(status=200)


async def check_deregister(request: web.Request) -> web.Response:
    check_id = request.match_info["check_id"]
    _vet_check_update(request, check_id)
    if not await agent_of(request).deregister_check(check_id):
        not_found(
            f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
            "not the check name."
        )
    return web.Response(status=200)


class CheckUpdate(msgspec.Struct, rename=pascal):
    status: str = ""
    output: str = ""


def _ttl_update(request: web.Request, status: str, output: str) -> web.Response:
    check_id = request.match_info["check_id"]
    _vet_check_update(request, check_id)
    error = agent_of(request).update_ttl_check(check_id, status, output)
    if error is not None:
        not_found(error)
    return web.Response(status=200)


async def check_pass(request: web.Request) -> web.Response:
    return _ttl_update(request, "passing", request.query.get("note", ""))


async def check_warn(request: web.Request) -> web.Response:
    return _ttl_update(request, "warning", request.query.get("note", ""))


async def check_fail(request: web.Request) -> web.Response:
    return _ttl_update(request, "critical", request.query.get("note", ""))


async def check_update(request: web.Request) -> web.Response:
    update = await decode_body(request, CheckUpdate)
    if update.status not in ("passing", "warning", "critical"):
        bad_request(f"Invalid check status: {update.status!r}")
    return _ttl_update(request, update.status, update.output)


def _maintenance_args(request: web.Request) -> tuple[bool, str]:
    enable_text = request.query.get("enable")
    if enable_text is None:
        bad_request("Missing value for enable")
    if enable_text.lower() not in ("true", "false"):
        bad_request(f"Invalid value for enable: {enable_text!r}")
    return enable_text.lower() == "true", request.query.get("reason", "")


async def node_maintenance(request: web.Request) -> web.Response:
    enable, reason = _maintenance_args(request)
    agent_of(request).set_node_maintenance(enable, reason)
    return web.Response(status=200)


async def service_maintenance(request: web.Request) -> web.Response:
    enable, reason = _maintenance_args(request)
    service_id = request.match_info["service_id"]
    _vet_service_update(request, service_id)
    if not agent_of(request).set_service_maintenance(service_id, enable, reason):
        not_found(f"Unknown service ID {service_id!r}")
    return web.Response(status=200)


async def agent_reload(request: web.Request) -> web.Response:
    try:
        await agent_of(request).reload()
    except ValueError as exc:
        raise HTTPError(500, f"Failed reloading config: {exc}") from None
    return web.Response(status=200)


async def agent_leave(request: web.Request) -> web.Response:
    agent_of(request).leave()
    return web.Response(status=200)


async def agent_metrics(request: web.Request) -> web.Response:
    agent = agent_of(request)
    if request.query.get("format") == "prometheus":
        return web.Response(
            text=agent.metrics_prometheus(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Prometheus-Format": "0.0.4"},
        )
    return json_response(request, agent.metrics_json())


class AgentTokenBody(msgspec.Struct, rename=pascal):
    token: str = ""


async def agent_token(request: web.Request) -> web.Response:
    """PUT /v1/agent/token/<kind>: Consul's order is 401 (ACLs off), 403, 400, 404."""
    resolved = await ensure_resolved(request)
    if resolved is None:
        raise HTTPError(401, "ACL support disabled")
    resolved.require("acl", "write")
    body = await decode_body(request, AgentTokenBody)
    target = request.match_info["kind"]
    try:
        agent_of(request).set_agent_token(target, body.token)
    except LookupError:
        not_found(f'Token "{target}" is unknown')
    log.info("agent: Updated agent's ACL token: token=%s", target)
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/agent/self", agent_self)
    router.add_get("/v1/agent/members", agent_members)
    router.add_get("/v1/agent/services", agent_services)
    router.add_get("/v1/agent/service/{service_id}", agent_service_get)
    router.add_get("/v1/agent/checks", agent_checks)
    router.add_put("/v1/agent/service/register", service_register)
    router.add_put("/v1/agent/service/deregister/{service_id}", service_deregister)
    router.add_put("/v1/agent/service/maintenance/{service_id}", service_maintenance)
    router.add_put("/v1/agent/check/register", check_register)
    router.add_put("/v1/agent/check/deregister/{check_id}", check_deregister)
    router.add_put("/v1/agent/check/pass/{check_id}", check_pass)
    router.add_put("/v1/agent/check/warn/{check_id}", check_warn)
    router.add_put("/v1/agent/check/fail/{check_id}", check_fail)
    router.add_put("/v1/agent/check/update/{check_id}", check_update)
    router.add_put("/v1/agent/maintenance", node_maintenance)
    router.add_put("/v1/agent/reload", agent_reload)
    router.add_put("/v1/agent/leave", agent_leave)
    router.add_get("/v1/agent/metrics", agent_metrics)
    router.add_put("/v1/agent/token/{kind}", agent_token)
