"""/v1/config and /v1/discovery-chain: config entries and the chains compiled from them.

Job: Consul's config entry API over the server endpoints:
- `PUT /v1/config` (body: one entry, either key spelling; `?cas=N`) answers
  true, or for a CAS write whether it happened;
- `GET /v1/config/:kind/:name` one entry, `GET /v1/config/:kind` that kind's
  entries (blocking queries and consistency modes as for any read);
- `DELETE /v1/config/:kind/:name` answers `{}`, or with `?cas=N` true/false;
- `GET|POST /v1/discovery-chain/:service` answers `{"Chain": {...}}`, the
  chain the server compiles from the stored entries.

Rules:
- The body is decoded here (structs/config_entries.py) so a malformed one is
  a 400 `Request decoding failed: ...` with no RPC; the server that takes the
  write normalizes and validates it (a 400 with Consul's text, e.g. `the sum
  of all split weights must be 100, not 90.000000`) and checks ACLs (403).
- An unknown kind is a 400 `invalid config entry kind: <kind>` on every
  route; a missing entry is a 404 `Config entry not found for "<kind>" /
  "<name>"`, with the read's index headers.
- POST /v1/discovery-chain takes Consul's body of overrides; it is decoded
  (a bad one is a 400) but the overrides are not applied yet.
"""

from __future__ import annotations

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
    query_uint64,
    set_meta_headers,
)
from proconsul.structs.commands import ApplyError, ConfigEntryOp, ConfigEntryRequest
from proconsul.structs.config_entries import KINDS, ConfigEntryError, decode_config_entry
from proconsul.structs.discovery_chain import CompiledDiscoveryChain
from proconsul.structs.duration import Duration
from proconsul.structs.naming import pascal
from proconsul.structs.requests import ReadRequest

GET_METHOD = "ConfigEntry.Get"
LIST_METHOD = "ConfigEntry.List"
CHAIN_METHOD = "DiscoveryChain.Get"


class ChainResponse(msgspec.Struct, rename=pascal):
    chain: CompiledDiscoveryChain


class ChainOverrides(msgspec.Struct, rename=pascal, forbid_unknown_fields=True):
    """The body of POST /v1/discovery-chain/:service (decoded, not applied yet)."""

    override_connect_timeout: Duration | None = None
    override_protocol: str = ""
    override_mesh_gateway: dict[str, Any] | None = None


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in KINDS:
        bad_request(f"invalid config entry kind: {kind}")
    return kind


async def _write(request: web.Request, command: ConfigEntryRequest) -> Any:
    _, result = await agent_of(request).rpc_write(command, caller_token(request))
    if isinstance(result, ApplyError):
        raise HTTPError(500, result.message)
    return result


async def config_apply(request: web.Request) -> web.Response:
    op: ConfigEntryOp = "upsert"
    cas = 0
    if request.query.get("cas"):  # Consul: an empty ?cas= is no CAS
        op, cas = "upsert-cas", query_uint64(request, "cas")
    raw = await decode_body(request, dict[str, Any], keys="as-is")
    try:
        entry = decode_config_entry(raw)
    except ConfigEntryError as err:
        bad_request(f"Request decoding failed: {err}")
    result = await _write(request, ConfigEntryRequest(op=op, entry=entry, cas_index=cas))
    return json_response(request, bool(result))


async def config_get(request: web.Request) -> web.Response:
    kind = _kind(request)
    name = request.match_info["name"]
    read = ReadRequest(kind=kind, name=name, options=query_options(request, caller_token(request)))
    response = await agent_of(request).rpc_read(GET_METHOD, read)
    if response.value is None:
        missing = web.Response(status=404, text=f'Config entry not found for "{kind}" / "{name}"')
        set_meta_headers(missing, response.meta)
        return missing
    return json_response(request, response.value, response.meta)


async def config_list(request: web.Request) -> web.Response:
    kind = _kind(request)
    read = ReadRequest(kind=kind, options=query_options(request, caller_token(request)))
    response = await agent_of(request).rpc_read(LIST_METHOD, read)
    return json_response(request, response.value, response.meta)


async def config_delete(request: web.Request) -> web.Response:
    kind = _kind(request)
    op: ConfigEntryOp = "delete"
    cas = 0
    if request.query.get("cas"):
        op, cas = "delete-cas", query_uint64(request, "cas")
    entry = KINDS[kind](name=request.match_info["name"])
    result = await _write(request, ConfigEntryRequest(op=op, entry=entry, cas_index=cas))
    if op == "delete-cas":
        return json_response(request, bool(result))
    return json_response(request, {})


async def discovery_chain(request: web.Request) -> web.Response:
    if request.method == "POST" and request.can_read_body:
        await decode_body(request, ChainOverrides)
    read = ReadRequest(
        name=request.match_info["service"],
        options=query_options(request, caller_token(request)),
    )
    response = await agent_of(request).rpc_read(CHAIN_METHOD, read)
    return json_response(request, ChainResponse(response.value), response.meta)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_put("/v1/config", config_apply)
    router.add_get("/v1/config/{kind}", config_list)
    router.add_get("/v1/config/{kind}/{name}", config_get)
    router.add_delete("/v1/config/{kind}/{name}", config_delete)
    router.add_get("/v1/discovery-chain/{service}", discovery_chain)
    router.add_post("/v1/discovery-chain/{service}", discovery_chain)
