"""Raft and autopilot operator endpoints over HTTP.

Routes: `GET /v1/operator/raft/configuration` (the committed Raft
configuration: Servers with ID, Node, Address, Leader, ProtocolVersion,
Voter; and Index), `DELETE /v1/operator/raft/peer?id=|?address=`,
`POST /v1/operator/raft/transfer-leader[?id=]` (`{"Success": true}` once
another server leads; TimeoutNow in the Raft core),
`GET /v1/operator/usage` (services, instances by kind and nodes of this
datacenter, the read "Operator.Usage", blocking and consistency modes as any
read), `GET /v1/operator/autopilot/health` (the leader's view: Healthy,
FailureTolerance, Servers), `GET /v1/operator/autopilot/state` (the same
facts in Consul's AutopilotState shape),
`GET /v1/operator/autopilot/configuration` and its `PUT` (`?cas=`), whose
settings are replicated through Raft and then win over every server's
`autopilot { }` block.

Rules (Consul's shapes and codes): a DELETE naming neither is 400; a server
that is not in the configuration, or no leader, is 500 with the error text
(the middleware maps RPC refusals to 500). The health body comes with 200
when the cluster is healthy and 429 when it is not, as Consul's does, so a
load balancer or script can poll it. Each call passes the caller's effective token: the agent's
middleware checked it already, and a client agent's server checks it again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import (
    bad_request,
    decode_body,
    json_response,
    query_options,
    query_uint64,
)
from proconsul.structs.autopilot import AutopilotSettings
from proconsul.structs.naming import conform_keys
from proconsul.structs.requests import ReadRequest


async def raft_configuration(request: web.Request) -> web.Response:
    return json_response(request, await agent_of(request).raft_configuration(caller_token(request)))


async def raft_remove_peer(request: web.Request) -> web.Response:
    server_id = request.query.get("id", "")
    address = request.query.get("address", "")
    if not server_id and not address:
        bad_request(
            "Must specify either ?id with the server's ID or "
            "?address with IP:port of peer to remove"
        )
    await agent_of(request).remove_raft_peer(server_id, address, caller_token(request))
    return web.Response(status=200)


async def raft_transfer_leader(request: web.Request) -> web.Response:
    server_id = request.query.get("id", "")
    found = await agent_of(request).transfer_leader(server_id, caller_token(request))
    return json_response(request, found)


async def usage(request: web.Request) -> web.Response:
    """Service and instance counts per datacenter, with the read's meta in the body
    as Consul puts it (Index, LastContact, KnownLeader, ...)."""
    options = query_options(request, caller_token(request))
    response = await agent_of(request).rpc_read("Operator.Usage", ReadRequest(options=options))
    meta = response.meta
    body = {
        "Usage": response.value,
        "Index": meta.index,
        "LastContact": meta.last_contact_ms,
        "KnownLeader": meta.known_leader,
        "ConsistencyLevel": _consistency(request),
        "NotModified": False,
        "Backend": 0,
        "ResultsFilteredByACLs": False,
    }
    return json_response(request, body, meta)


def _consistency(request: web.Request) -> str:
    if "stale" in request.query:
        return "stale"
    return "consistent" if "consistent" in request.query else "leader"


async def autopilot_health(request: web.Request) -> web.Response:
    found = await agent_of(request).autopilot_health(caller_token(request))
    return json_response(request, found, status=200 if found.get("Healthy") else 429)


async def autopilot_state(request: web.Request) -> web.Response:
    return json_response(request, await agent_of(request).autopilot_state(caller_token(request)))


async def autopilot_configuration(request: web.Request) -> web.Response:
    return json_response(
        request, await agent_of(request).autopilot_configuration(caller_token(request))
    )


async def set_autopilot_configuration(request: web.Request) -> web.Response:
    """Consul's PUT: the whole configuration (a missing field is its zero value),
    `?cas=<ModifyIndex>` to write only over that version; answers true, or with
    ?cas whether it was written."""
    cas_index = query_uint64(request, "cas") if "cas" in request.query else None
    # Keys by the body rule (any case); values are checked on the server (parse_settings).
    body = conform_keys(await decode_body(request, dict[str, Any]), AutopilotSettings)
    written = await agent_of(request).set_autopilot_configuration(
        body, cas_index, caller_token(request)
    )
    return json_response(request, written if cas_index is not None else True)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/operator/raft/configuration", raft_configuration)
    app.router.add_delete("/v1/operator/raft/peer", raft_remove_peer)
    app.router.add_post("/v1/operator/raft/transfer-leader", raft_transfer_leader)
    app.router.add_get("/v1/operator/usage", usage)
    app.router.add_get("/v1/operator/autopilot/health", autopilot_health)
    app.router.add_get("/v1/operator/autopilot/state", autopilot_state)
    app.router.add_get("/v1/operator/autopilot/configuration", autopilot_configuration)
    app.router.add_put("/v1/operator/autopilot/configuration", set_autopilot_configuration)
