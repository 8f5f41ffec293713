"""/v1/query: Consul's prepared query API over the server endpoints.

- `POST /v1/query` creates (the body is a query; its ID is chosen here) and
  answers `{"ID": ...}`; `GET /v1/query` lists;
- `GET /v1/query/:id` answers a list of one; `PUT` replaces it (the URL's ID
  wins over the body's), `DELETE` removes it; both answer 200 with no body;
- `GET /v1/query/:id_or_name/execute` (`?near=`, `?limit=`) runs it, and
  `/explain` shows the query it resolves to (a template rendered).

Rules: a body that does not decode is a 400; a definition Consul refuses is a
400 with its text (server/query_endpoints.py); an unknown ID or name is a 404
`Query not found`; ACL refusals are 403 (the server checks, see there).
"""

from __future__ import annotations

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
    set_meta_headers,
)
from proconsul.structs.commands import ApplyError, PreparedQueryOp, PreparedQueryRequest
from proconsul.structs.naming import pascal, shape_keys
from proconsul.structs.prepared_query import PreparedQuery
from proconsul.structs.requests import ReadRequest, ReadResponse

NOT_FOUND = "Query not found"


class CreatedQuery(msgspec.Struct, rename=pascal):
    id: str


async def _write(request: web.Request, op: PreparedQueryOp, query: PreparedQuery) -> None:
    command = PreparedQueryRequest(op=op, query=query)
    _, result = await agent_of(request).rpc_write(command, caller_token(request))
    if isinstance(result, ApplyError):
        raise HTTPError(500, result.message)


async def _read(request: web.Request, method: str, read: ReadRequest) -> ReadResponse:
    return await agent_of(request).rpc_read(method, read)


def _missing(response: ReadResponse) -> web.Response:
    missing = web.Response(status=404, text=NOT_FOUND)
    set_meta_headers(missing, response.meta)
    return missing


def _request(request: web.Request, name: str = "") -> ReadRequest:
    return ReadRequest(name=name, options=query_options(request, caller_token(request)))


async def _decode_query(request: web.Request) -> PreparedQuery:
    """The body as Go decodes it: field names in any case (py-consul sends
    `onlypassing`, `nearestn`), unknown fields ignored, meta keys as written."""
    raw = await decode_body(request, dict[str, Any], keys="as-is")
    shaped, _ = shape_keys(raw, PreparedQuery)
    try:
        return msgspec.convert(shaped, PreparedQuery)
    except msgspec.ValidationError as exc:
        bad_request(f"Request decode failed: {exc}")


async def query_create(request: web.Request) -> web.Response:
    query = await _decode_query(request)
    query = msgspec.structs.replace(query, id=str(uuid.uuid4()), create_index=0, modify_index=0)
    await _write(request, "create", query)
    return json_response(request, CreatedQuery(query.id))


async def query_list(request: web.Request) -> web.Response:
    response = await _read(request, "PreparedQuery.List", _request(request))
    return json_response(request, response.value, response.meta)


async def query_get(request: web.Request) -> web.Response:
    read = _request(request, request.match_info["id"])
    response = await _read(request, "PreparedQuery.Get", read)
    if not response.value:
        return _missing(response)
    return json_response(request, response.value, response.meta)


async def query_update(request: web.Request) -> web.Response:
    query = await _decode_query(request)
    query = msgspec.structs.replace(query, id=request.match_info["id"])
    await _write(request, "update", query)
    return web.Response(status=200)


async def query_delete(request: web.Request) -> web.Response:
    await _write(request, "delete", PreparedQuery(id=request.match_info["id"]))
    return web.Response(status=200)


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "")
    if not text:
        return 0
    try:
        limit = int(text)
    except ValueError:
        bad_request(f"Bad limit: strconv.Atoi: parsing {text!r}: invalid syntax")
    return max(limit, 0)


async def query_execute(request: web.Request) -> web.Response:
    read = _request(request, request.match_info["id"])
    read.near = request.query.get("near", "")
    read.limit = _limit(request)
    read.source_node = agent_of(request).node_name
    response = await _read(request, "PreparedQuery.Execute", read)
    if response.value is None:
        return _missing(response)
    return json_response(request, response.value, response.meta)


async def query_explain(request: web.Request) -> web.Response:
    response = await _read(
        request, "PreparedQuery.Explain", _request(request, request.match_info["id"])
    )
    if response.value is None:
        return _missing(response)
    return json_response(request, response.value, response.meta)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/v1/query", query_create)
    router.add_get("/v1/query", query_list)
    router.add_get("/v1/query/{id}", query_get)
    router.add_put("/v1/query/{id}", query_update)
    router.add_delete("/v1/query/{id}", query_delete)
    router.add_get("/v1/query/{id}/execute", query_execute)
    router.add_get("/v1/query/{id}/explain", query_explain)
