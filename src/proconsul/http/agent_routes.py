"""/v1/agent/*: the agent's own view — self, members, local services and checks.

These answer from the agent's local state, not the catalog. Register bodies
are accepted in PascalCase or snake_case, as Consul accepts them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from proconsul.http.api import agent_of
from proconsul.http.common import (
    HTTPError,
    bad_request,
    decode_body,
    json_response,
    not_found,
    query_bool,
)
from proconsul.structs.catalog import HealthCheck, NodeService, ServiceAddress, Weights
from proconsul.structs.definitions import CheckDefinition, ServiceDefinition
from proconsul.structs.naming import pascal


class AgentService(msgspec.Struct, rename=pascal):
    """A row of /v1/agent/services (Consul's api.AgentService)."""

    id: str
    service: str
    tags: list[str]
    meta: dict[str, str]
    port: int
    address: str
    tagged_addresses: dict[str, ServiceAddress]
    weights: Weights
    enable_tag_override: bool
    datacenter: str
    kind: str | None = None
    proxy: dict[str, Any] | None = None
    connect: dict[str, Any] | None = None
    content_hash: str | None = None


def agent_service(service: NodeService, datacenter: str, with_hash: bool = False) -> AgentService:
    row = AgentService(
        id=service.id,
        service=service.service,
        tags=service.tags,
        meta=service.meta,
        port=service.port,
        address=service.address,
        tagged_addresses=service.tagged_addresses,
        weights=service.weights,
        enable_tag_override=service.enable_tag_override,
        datacenter=datacenter,
        kind=service.kind or None,
        proxy=service.proxy or None,
        connect=service.connect or None,
    )
    if with_hash:
        import hashlib

        digest = hashlib.blake2b(msgspec.msgpack.encode(row), digest_size=8).hexdigest()
        row.content_hash = digest
    return row


async def agent_self(request: web.Request) -> web.Response:
    return json_response(request, agent_of(request).self_info())


async def agent_members(request: web.Request) -> web.Response:
    if query_bool(request, "wan"):
        return json_response(request, [])
    return json_response(request, agent_of(request).members())


async def agent_services(request: web.Request) -> web.Response:
    agent = agent_of(request)
    services = agent.local_services()
    return json_response(
        request,
        {sid: agent_service(svc, agent.datacenter) for sid, svc in sorted(services.items())},
    )


async def agent_service_get(request: web.Request) -> web.Response:
    agent = agent_of(request)
    service_id = request.match_info["service_id"]
    service = agent.local_services().get(service_id)
    if service is None:
        not_found(f"unknown service ID: {service_id}")
    row = agent_service(service, agent.datacenter, with_hash=True)
    response = json_response(request, row)
    response.headers["X-Consul-ContentHash"] = row.content_hash or ""
    return response


async def agent_checks(request: web.Request) -> web.Response:
    checks: dict[str, HealthCheck] = agent_of(request).local_checks()
    return json_response(request, dict(sorted(checks.items())))


async def service_register(request: web.Request) -> web.Response:
    definition = await decode_body(request, ServiceDefinition, keys="snake")
    replace = query_bool(request, "replace-existing-checks")
    try:
        await agent_of(request).register_service(definition, replace)
    except ValueError as exc:
        bad_request(str(exc))
    return web.Response(status=200)


async def service_deregister(request: web.Request) -> web.Response:
    service_id = request.match_info["service_id"]
    if not await agent_of(request).deregister_service(service_id):
        not_found(
            f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
            "not the service name."
        )
    return web.Response(status=200)


async def check_register(request: web.Request) -> web.Response:
    definition = await decode_body(request, CheckDefinition, keys="snake")
    try:
        await agent_of(request).register_check(definition)
    except ValueError as exc:
        bad_request(str(exc))
    return web.Response(status=200)


async def check_deregister(request: web.Request) -> web.Response:
    check_id = request.match_info["check_id"]
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
    error = agent_of(request).update_ttl_check(request.match_info["check_id"], status, output)
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
    router.add_put("/v1/agent/maint", node_maintenance)
    router.add_put("/v1/agent/reload", agent_reload)
    router.add_put("/v1/agent/leave", agent_leave)
    router.add_get("/v1/agent/metrics", agent_metrics)
