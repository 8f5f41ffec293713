"""/v1/session/*: Consul's session API.

- `PUT /v1/session/create` (body optional) answers `{"ID": ...}`. Defaults
  as Consul's: `Node` the agent's node, `LockDelay` 15s, `Behavior`
  `release`, and `NodeChecks` `["serfHealth"]` unless the body names
  `Checks`, `NodeChecks` or `ServiceChecks` (the deprecated `Checks` is
  folded into `NodeChecks`). `LockDelay` is a Go duration string, or a
  number: seconds below 1000, nanoseconds from there (Consul's rule).
- `PUT /v1/session/destroy/:id` answers true.
- `PUT /v1/session/renew/:id` answers `[session]`, or 404
  `Session id '<id>' not found`.
- `GET /v1/session/info/:id` (`[]` or `[session]`), `/node/:node`, `/list`:
  blocking reads with consistency modes, like every read.

The server checks the token (session:read filters, session:write for
writes); bad input is a 400 with Consul's text (server/session_rules.py).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import msgspec
from aiohttp import web

from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import (
    HTTPError,
    bad_request,
    decode_body,
    json_response,
    query_options,
)
from proconsul.structs.catalog import SERF_CHECK_ID
from proconsul.structs.commands import ApplyError, SessionRequest
from proconsul.structs.duration import parse_duration
from proconsul.structs.naming import pascal, shape_keys
from proconsul.structs.requests import ReadRequest
from proconsul.structs.session import (
    DEFAULT_LOCK_DELAY_NS,
    LOCK_DELAY_SECONDS_BELOW,
    MAX_LOCK_DELAY_NS,
    ServiceCheck,
    Session,
)


class SessionCreateBody(msgspec.Struct, rename=pascal):
    """The body of /v1/session/create as Consul accepts it."""

    name: str = ""
    node: str = ""
    lock_delay: str | int | float | None = None
    behavior: str = ""
    ttl: str = ""
    checks: list[str] | None = None
    node_checks: list[str] | None = None
    service_checks: list[ServiceCheck] | None = None


class CreatedSession(msgspec.Struct, rename=pascal):
    id: str


def lock_delay_ns(value: str | int | float | None) -> int:
    """Consul's reading of LockDelay: a duration string, or a number of
    seconds (below 1000) or nanoseconds."""
    if value is None:
        return DEFAULT_LOCK_DELAY_NS
    if isinstance(value, str):
        try:
            delay = round(float(parse_duration(value)) * 1e9)
        except ValueError as exc:
            bad_request(f"Request decode failed: {exc}")
        if delay < 0:
            bad_request(f"Request decode failed: invalid LockDelay {value!r}")
        return min(delay, MAX_LOCK_DELAY_NS)
    if not math.isfinite(value) or value < 0:
        bad_request(f"Request decode failed: invalid LockDelay {value!r}")
    # Longer than Consul's 60s cap is cut to it (here, before it can overflow).
    if value < LOCK_DELAY_SECONDS_BELOW:
        return min(int(value * 1_000_000_000), MAX_LOCK_DELAY_NS)
    return min(int(value), MAX_LOCK_DELAY_NS)


def session_from_body(body: SessionCreateBody, agent_node: str) -> Session:
    named = any(
        checks is not None for checks in (body.checks, body.node_checks, body.service_checks)
    )
    node_checks = list(body.node_checks or [])
    for check_id in body.checks or []:
        if check_id not in node_checks:
            node_checks.append(check_id)
    return Session(
        name=body.name,
        node=body.node or agent_node,
        lock_delay=lock_delay_ns(body.lock_delay),
        behavior=body.behavior or "release",
        ttl=body.ttl,
        node_checks=node_checks if named else [SERF_CHECK_ID],
        service_checks=body.service_checks if body.service_checks else None,
    )


def _create_body(raw: dict[str, Any]) -> SessionCreateBody:
    """Field names matched as Go's decoder matches them, whatever their case
    (py-consul sends `lockdelay`, `ttl`, ...)."""
    shaped, _ = shape_keys(raw, SessionCreateBody)
    try:
        return msgspec.convert(shaped, SessionCreateBody)
    except (msgspec.ValidationError, ValueError) as exc:
        bad_request(f"Request decode failed: {exc}")


async def _write(request: web.Request, command: SessionRequest) -> Any:
    _, result = await agent_of(request).rpc_write(command, caller_token(request))
    if isinstance(result, ApplyError):
        raise HTTPError(500, result.message)
    return result


async def session_create(request: web.Request) -> web.Response:
    body = SessionCreateBody()
    if request.can_read_body and (await request.read()).strip():
        body = _create_body(await decode_body(request, dict[str, Any], keys="as-is"))
    agent = agent_of(request)
    session = session_from_body(body, agent.node_name)
    # The ID is chosen here, before the log (a random UUID; the state refuses a
    # duplicate), so the answer can name it.
    session.id = str(uuid.uuid4())
    await _write(request, SessionRequest(op="create", session=session))
    return json_response(request, CreatedSession(id=session.id))


async def session_destroy(request: web.Request) -> web.Response:
    session_id = request.match_info["id"]
    if not session_id:
        bad_request("Missing session")
    await _write(request, SessionRequest(op="destroy", session=Session(id=session_id)))
    return json_response(request, True)


async def session_renew(request: web.Request) -> web.Response:
    session_id = request.match_info["id"]
    if not session_id:
        bad_request("Missing session")
    sessions = await agent_of(request).renew_session(session_id, caller_token(request))
    if not sessions:
        raise HTTPError(404, f"Session id '{session_id}' not found")
    return json_response(request, sessions)


async def _read(request: web.Request, method: str, name: str = "") -> web.Response:
    read = ReadRequest(name=name, options=query_options(request, caller_token(request)))
    response = await agent_of(request).rpc_read(method, read)
    return json_response(request, response.value, response.meta)


async def session_info(request: web.Request) -> web.Response:
    session_id = request.match_info["id"]
    if not session_id:
        bad_request("Missing session")
    return await _read(request, "Session.Get", session_id)


async def session_node(request: web.Request) -> web.Response:
    node = request.match_info["node"]
    if not node:
        bad_request("Missing node name")
    return await _read(request, "Session.NodeSessions", node)


async def session_list(request: web.Request) -> web.Response:
    return await _read(request, "Session.List")


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_put("/v1/session/create", session_create)
    router.add_put("/v1/session/destroy/{id}", session_destroy)
    router.add_put("/v1/session/renew/{id}", session_renew)
    router.add_get("/v1/session/info/{id}", session_info)
    router.add_get("/v1/session/node/{node}", session_node)
    router.add_get("/v1/session/list", session_list)
