"""Raft operator endpoints over HTTP.

Routes: `GET /v1/operator/raft/configuration` (the committed Raft
configuration: Servers with ID, Node, Address, Leader, ProtocolVersion,
Voter; and Index) and `DELETE /v1/operator/raft/peer?id=|?address=`.

Rules (Consul's shapes and codes): a DELETE naming neither is 400; a server
that is not in the configuration, or no leader, is 500 with the error text
(the middleware maps RPC refusals to 500).
"""

from __future__ import annotations

from aiohttp import web

from proconsul.http.api import agent_of
from proconsul.http.common import bad_request, json_response


async def raft_configuration(request: web.Request) -> web.Response:
    return json_response(request, await agent_of(request).raft_configuration())


async def raft_remove_peer(request: web.Request) -> web.Response:
    server_id = request.query.get("id", "")
    address = request.query.get("address", "")
    if not server_id and not address:
        bad_request(
            "Must specify either ?id with the server's ID or "
            "?address with IP:port of peer to remove"
        )
    await agent_of(request).remove_raft_peer(server_id, address)
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/operator/raft/configuration", raft_configuration)
    app.router.add_delete("/v1/operator/raft/peer", raft_remove_peer)
