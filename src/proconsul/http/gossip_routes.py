"""The gossip pool over HTTP: join, force-leave, the keyring and user events.

Routes: `PUT /v1/agent/join/:address`, `PUT /v1/agent/force-leave/:node`,
`GET|POST|PUT|DELETE /v1/operator/keyring`, `PUT /v1/event/fire/:name` and
`GET /v1/event/list` (blocking on `?index`).

Rules (Consul's shapes and codes):
- Failed pool operations are 500 with the error text; a keyring key that is
  not valid base64 of 16, 24 or 32 bytes is refused with 400 before anything
  is sent to the pool.
- The event list index is Consul's: derived from the newest event's ID, 1
  when there are none; a request whose `?index` equals it waits (up to
  `?wait`, default and cap 10 minutes) for the next event.
- ACLs (rules in acl_rules.py): join needs agent:write, force-leave
  operator:write, the keyring keyring:read/write, firing an event
  event:write on its name; the event list keeps only the events the token
  may read (event:read), with `X-Consul-Results-Filtered-By-ACLs` when it
  dropped some.
- Keys are never logged.
"""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from proconsul.http.acl_rules import allowed, mark_filtered
from proconsul.http.api import GossipAPI, agent_of
from proconsul.http.common import (
    HTTPError,
    bad_request,
    decode_body,
    json_response,
    query_bool,
    query_int,
    query_options,
)
from proconsul.structs.naming import pascal

MAX_QUERY_TIME_S = 600.0


class KeyringBody(msgspec.Struct, rename=pascal):
    key: str = ""


def _gossip(request: web.Request) -> GossipAPI:
    gossip = agent_of(request).gossip
    if gossip is None:
        raise HTTPError(500, "gossip is not running on this agent")
    return gossip


async def agent_join(request: web.Request) -> web.Response:
    address = request.match_info["address"]
    if query_bool(request, "wan"):
        raise HTTPError(500, "WAN gossip is not supported by this agent")
    try:
        await _gossip(request).join_lan(address)
    except (RuntimeError, ValueError) as exc:
        raise HTTPError(500, str(exc)) from None
    return web.Response(status=200)


async def agent_force_leave(request: web.Request) -> web.Response:
    node = request.match_info["node"]
    if query_bool(request, "wan"):
        raise HTTPError(500, "WAN gossip is not supported by this agent")
    try:
        _gossip(request).force_leave(node, "prune" in request.query)
    except LookupError as exc:
        raise HTTPError(500, str(exc.args[0] if exc.args else exc)) from None
    return web.Response(status=200)


def _relay_factor(request: web.Request) -> int:
    relay = query_int(request, "relay-factor", 0)
    if not 0 <= relay <= 5:
        bad_request("Error parsing relay factor: Relay factor must be in range: [0, 5]")
    return relay


async def _keyring(request: web.Request, op: str) -> web.Response:
    _relay_factor(request)
    if op != "list" and query_bool(request, "local-only"):
        bad_request("local-only can only be set for list requests")
    key = ""
    if op != "list":
        key = (await decode_body(request, KeyringBody)).key
    try:
        response, error = await _gossip(request).keyring_operation(op, key)
    except ValueError as exc:
        bad_request(str(exc))
    if error is not None:
        raise HTTPError(500, error)
    if op == "list":
        return json_response(request, [response])
    return web.Response(status=200)


async def keyring_list(request: web.Request) -> web.Response:
    return await _keyring(request, "list")


async def keyring_install(request: web.Request) -> web.Response:
    return await _keyring(request, "install")


async def keyring_use(request: web.Request) -> web.Response:
    return await _keyring(request, "use")


async def keyring_remove(request: web.Request) -> web.Response:
    return await _keyring(request, "remove")


async def event_fire(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "")
    if not name:
        bad_request("Missing name")
    query = request.query
    payload = await request.read()
    try:
        event = _gossip(request).fire_user_event(
            name,
            payload,
            query.get("node", ""),
            query.get("service", ""),
            query.get("tag", ""),
        )
    except ValueError as exc:
        raise HTTPError(500, str(exc)) from None
    return json_response(request, event)


async def event_list(request: web.Request) -> web.Response:
    gossip = _gossip(request)
    options = query_options(request)
    name = request.query.get("name", "")
    wait_s = options.max_query_time_s
    if options.min_index > 0 and (wait_s <= 0 or wait_s > MAX_QUERY_TIME_S):
        wait_s = MAX_QUERY_TIME_S
    deadline = time.monotonic() + wait_s
    while True:
        events, index = gossip.list_user_events(name)
        remaining = deadline - time.monotonic()
        if options.min_index == 0 or index != options.min_index or remaining <= 0:
            break
        if not await gossip.wait_user_events(remaining):
            events, index = gossip.list_user_events(name)
            break
    # Filtered after the name filter, as Consul does, so the header only tells
    # of events the caller asked for.
    visible = [e for e in events if allowed(request, "event", "read", str(e.get("Name", "")))]
    response = json_response(request, visible)
    mark_filtered(response, request, len(visible) != len(events))
    response.headers["X-Consul-Index"] = str(index)
    return response


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_put("/v1/agent/join/{address}", agent_join)
    router.add_put("/v1/agent/force-leave/{node}", agent_force_leave)
    router.add_get("/v1/operator/keyring", keyring_list)
    router.add_post("/v1/operator/keyring", keyring_install)
    router.add_put("/v1/operator/keyring", keyring_use)
    router.add_delete("/v1/operator/keyring", keyring_remove)
    router.add_put("/v1/event/fire/{name:.*}", event_fire)
    router.add_get("/v1/event/list", event_list)
