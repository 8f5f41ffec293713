"""/v1/kv/<key>: Consul's KV store over HTTP.

GET returns rows (404 when nothing matches), `?raw` the bare value, `?keys`
the key list; PUT writes the raw body (`?cas`, `?flags`; `?acquire=<session>`
takes the key's lock and `?release=<session>` gives it back, both writing the
value: DESIGN.md, "Sessions and locks") and answers true/false; DELETE
takes `?recurse` and `?cas`. Values above the configured limit (512 KiB
by default) are refused with 413 before anything is written.
Every read and write carries the caller's token; the server enforces ACLs
(403 for a key the token may not read or write).
"""

from __future__ import annotations

from aiohttp import web

from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import (
    HTTPError,
    bad_request,
    json_response,
    query_options,
    query_uint64,
    set_meta_headers,
)
from proconsul.structs.catalog import KVEntry
from proconsul.structs.commands import ApplyError, KVOp, KVSRequest
from proconsul.structs.requests import QueryMeta, ReadRequest


def _key(request: web.Request) -> str:
    return request.match_info["key"]


def _not_found(meta: QueryMeta) -> web.Response:
    response = web.Response(status=404)
    set_meta_headers(response, meta)
    return response


async def kv_get(request: web.Request) -> web.Response:
    key = _key(request)
    agent = agent_of(request)
    options = query_options(request, caller_token(request))
    if "keys" in request.query:
        separator = request.query.get("separator", "")
        response = await agent.rpc_read(
            "KVS.ListKeys", ReadRequest(name=key, separator=separator, options=options)
        )
        if not response.value:
            return _not_found(response.meta)
        return json_response(request, response.value, response.meta)
    if "recurse" in request.query:
        response = await agent.rpc_read("KVS.List", ReadRequest(name=key, options=options))
        if not response.value:
            return _not_found(response.meta)
        return json_response(request, response.value, response.meta)
    if not key:
        bad_request("Missing key name")
    response = await agent.rpc_read("KVS.Get", ReadRequest(name=key, options=options))
    entry: KVEntry | None = response.value
    if entry is None:
        return _not_found(response.meta)
    if "raw" in request.query:
        raw = web.Response(body=entry.value or b"", content_type="application/octet-stream")
        set_meta_headers(raw, response.meta)
        return raw
    return json_response(request, [entry], response.meta)


async def kv_put(request: web.Request) -> web.Response:
    key = _key(request)
    if not key:
        bad_request("Missing key name")
    # The query is checked before the body is read, as Consul does: a refused
    # request costs no body.
    flags = query_uint64(request, "flags")
    op: KVOp = "set"
    modify_index = 0
    session = ""
    if "cas" in request.query:
        op = "cas"
        modify_index = query_uint64(request, "cas")
    # As in Consul: acquire beats cas, and release beats both.
    if "acquire" in request.query:
        op, session = "lock", request.query["acquire"]
    if "release" in request.query:
        op, session = "unlock", request.query["release"]
    agent = agent_of(request)
    limit = agent.kv_max_value_size
    length = request.content_length
    if length is not None and length > limit:
        raise HTTPError(413, f"Request body({length} bytes) too large, max size: {limit} bytes.")
    value = await request.read()
    if len(value) > limit:
        raise HTTPError(
            413, f"Request body({len(value)} bytes) too large, max size: {limit} bytes."
        )
    # An empty body is no value at all: Consul shows it as `"Value": null`.
    entry = KVEntry(
        key=key, value=value or None, flags=flags, modify_index=modify_index, session=session
    )
    _, result = await agent.rpc_write(KVSRequest(op=op, dir_ent=entry), caller_token(request))
    if isinstance(result, ApplyError):
        raise HTTPError(500, result.message)
    return json_response(request, bool(result))


async def kv_delete(request: web.Request) -> web.Response:
    key = _key(request)
    entry = KVEntry(key=key)
    op: KVOp
    if "recurse" in request.query:
        op = "delete-tree"
    elif "cas" in request.query:
        op = "delete-cas"
        entry.modify_index = query_uint64(request, "cas")
    else:
        if not key:
            bad_request("Missing key name")
        op = "delete"
    _, result = await agent_of(request).rpc_write(
        KVSRequest(op=op, dir_ent=entry), caller_token(request)
    )
    if isinstance(result, ApplyError):
        raise HTTPError(500, result.message)
    return json_response(request, bool(result))


def add_routes(app: web.Application) -> None:
    router = app.router
    for path in ("/v1/kv/{key:.*}",):
        router.add_get(path, kv_get)
        router.add_put(path, kv_put)
        router.add_delete(path, kv_delete)
