"""/v1/coordinate: network coordinates as the servers store them (Consul's API).

- `GET /v1/coordinate/nodes`: every node's `{Node, Segment, Coord}`;
- `GET /v1/coordinate/node/:node`: that node's, as a list; 404 (empty body)
  when it has none, as Consul answers;
- `GET /v1/coordinate/datacenters`: this datacenter only (no WAN pool), with
  its servers' coordinates;
- `PUT /v1/coordinate/update`: set one node's coordinate (`{Node, Segment, Coord}`),
  applied with the next batch; needs node:write.
Blocking queries and consistency modes as every read; rows the token may not
read (node:read) are left out.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import (
    HTTPError,
    bad_request,
    decode_body,
    json_response,
    query_options,
    set_meta_headers,
)
from proconsul.structs.commands import ApplyError, CoordinateBatchUpdate
from proconsul.structs.coordinate import CoordinateEntry
from proconsul.structs.naming import pascal
from proconsul.structs.requests import ReadRequest


class DatacenterMap(msgspec.Struct, rename=pascal):
    datacenter: str
    area_id: str = msgspec.field(default="wan", name="AreaID")
    coordinates: list[CoordinateEntry] = []


async def coordinate_nodes(request: web.Request) -> web.Response:
    read = ReadRequest(options=query_options(request, caller_token(request)))
    response = await agent_of(request).rpc_read("Coordinate.ListNodes", read)
    return json_response(request, response.value, response.meta)


async def coordinate_node(request: web.Request) -> web.Response:
    read = ReadRequest(
        name=request.match_info["node"], options=query_options(request, caller_token(request))
    )
    response = await agent_of(request).rpc_read("Coordinate.Node", read)
    if not response.value:
        missing = web.Response(status=404)
        set_meta_headers(missing, response.meta)
        return missing
    return json_response(request, response.value, response.meta)


async def coordinate_datacenters(request: web.Request) -> web.Response:
    agent = agent_of(request)
    return json_response(request, [DatacenterMap(datacenter=agent.datacenter)])


async def coordinate_update(request: web.Request) -> web.Response:
    entry = await decode_body(request, CoordinateEntry)
    if not entry.node:
        bad_request("Must provide a node name")
    if not entry.coord.is_valid():
        bad_request("invalid coordinate")
    command = CoordinateBatchUpdate(updates=[entry])
    _, result = await agent_of(request).rpc_write(command, caller_token(request))
    if isinstance(result, ApplyError):
        raise HTTPError(500, result.message)
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/coordinate/nodes", coordinate_nodes)
    router.add_get("/v1/coordinate/node/{node}", coordinate_node)
    router.add_get("/v1/coordinate/datacenters", coordinate_datacenters)
    router.add_put("/v1/coordinate/update", coordinate_update)
