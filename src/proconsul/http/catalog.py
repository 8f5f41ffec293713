"""/v1/catalog/*, /v1/health/* and /v1/status/*: reads through the server endpoints.

Reads become `ReadRequest`s for named endpoints (Consul's RPC names), so on a
client agent the same handlers forward to a server. Reads and writes carry the
caller's token (its own, else the agent's default); the server enforces ACLs. Encoded bodies are
cached per result object: the endpoints hand back the same list while the
index stands still, and then the JSON need not be encoded again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import (
    bad_request,
    decode_body,
    encode_json,
    json_bytes_response,
    json_response,
    node_meta_filter,
    query_bool,
    query_options,
)
from proconsul.structs.catalog import HEALTH_STATUSES, NodeServiceList, NodeServices
from proconsul.structs.commands import ApplyError, DeregisterRequest, RegisterRequest
from proconsul.structs.requests import ReadRequest

_SKIP_IN_CACHE_KEY = frozenset({"index", "wait", "token"})
_MAX_CACHED_BODIES = 4096


class BodyCache:
    """Encoded JSON per (path, query) while the endpoint returns the same result object."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, bytes]] = {}
        self._keys: dict[str, str] = {}  # raw path and query -> key
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(request: web.Request) -> str:
        query = request.query
        if not query:
            return request.path
        items = sorted((k, v) for k, v in query.items() if k not in _SKIP_IN_CACHE_KEY)
        return request.path + "?" + "&".join(f"{k}={v}" for k, v in items)

    def body(self, request: web.Request, value: Any) -> bytes:
        # The same raw path and query always give the same key: build it once.
        key = self._keys.get(request.raw_path)
        if key is None:
            if len(self._keys) >= _MAX_CACHED_BODIES:
                self._keys.clear()
            key = self._keys[request.raw_path] = self.key(request)
        cached = self._entries.get(key)
        if cached is not None and cached[0] is value:
            self.hits += 1
            return cached[1]
        self.misses += 1
        body = encode_json(request, value)
        if len(self._entries) >= _MAX_CACHED_BODIES:
            self._entries.clear()
        self._entries[key] = (value, body)
        return body


BODY_CACHE_KEY: web.AppKey[BodyCache] = web.AppKey("body_cache")


def near_node(request: web.Request) -> str:
    """`?near=`: a node name, `_agent` for this agent's node, "" for no order."""
    near = request.query.get("near", "")
    return agent_of(request).node_name if near == "_agent" else near


def _read_request(request: web.Request, name: str = "") -> ReadRequest:
    return ReadRequest(
        name=name,
        tags=request.query.getall("tag", []),
        passing_only=query_bool(request, "passing"),
        node_meta=node_meta_filter(request),
        near=near_node(request),
        options=query_options(request, caller_token(request)),
    )


async def _read(request: web.Request, method: str, name: str = "") -> web.Response:
    response = await agent_of(request).rpc_read(method, _read_request(request, name))
    body = request.app[BODY_CACHE_KEY].body(request, response.value)
    return json_bytes_response(request, body, response.meta)


# ----- catalog -------------------------------------------------------------


async def catalog_register(request: web.Request) -> web.Response:
    body = await decode_body(request, RegisterRequest)
    if not body.node:
        bad_request("Must provide node")
    if not body.address and not body.skip_node_update:
        bad_request("Must provide address")
    if body.service is not None and not body.service.service:
        bad_request("Must provide service name (Service.Service)")
    _, result = await agent_of(request).rpc_write(body, caller_token(request))
    if isinstance(result, ApplyError):
        bad_request(result.message)
    return json_response(request, True)


async def catalog_deregister(request: web.Request) -> web.Response:
    body = await decode_body(request, DeregisterRequest)
    if not body.node:
        bad_request("Must provide node")
    _, result = await agent_of(request).rpc_write(body, caller_token(request))
    if isinstance(result, ApplyError):
        bad_request(result.message)
    return json_response(request, True)


async def catalog_datacenters(request: web.Request) -> web.Response:
    return json_response(request, agent_of(request).datacenters())


async def catalog_nodes(request: web.Request) -> web.Response:
    return await _read(request, "Catalog.ListNodes")


async def catalog_services(request: web.Request) -> web.Response:
    return await _read(request, "Catalog.ListServices")


async def catalog_service(request: web.Request) -> web.Response:
    return await _read(request, "Catalog.ServiceNodes", request.match_info["service"])


async def catalog_connect(request: web.Request) -> web.Response:
    return await _read(request, "Catalog.ConnectServiceNodes", request.match_info["service"])


async def catalog_node(request: web.Request) -> web.Response:
    response = await agent_of(request).rpc_read(
        "Catalog.NodeServices", _read_request(request, request.match_info["node"])
    )
    node, services = response.value
    value = None if node is None else NodeServices(node, {s.id: s for s in services})
    return json_response(request, value, response.meta)


async def catalog_node_services(request: web.Request) -> web.Response:
    response = await agent_of(request).rpc_read(
        "Catalog.NodeServices", _read_request(request, request.match_info["node"])
    )
    node, services = response.value
    value = None if node is None else NodeServiceList(node, services)
    return json_response(request, value, response.meta)


# ----- health --------------------------------------------------------------


async def health_service(request: web.Request) -> web.Response:
    return await _read(request, "Health.ServiceNodes", request.match_info["service"])


async def health_connect(request: web.Request) -> web.Response:
    return await _read(request, "Health.ConnectServiceNodes", request.match_info["service"])


async def health_node(request: web.Request) -> web.Response:
    return await _read(request, "Health.NodeChecks", request.match_info["node"])


async def health_checks(request: web.Request) -> web.Response:
    return await _read(request, "Health.ServiceChecks", request.match_info["service"])


async def health_state(request: web.Request) -> web.Response:
    state = request.match_info["state"]
    if state != "any" and state not in HEALTH_STATUSES:
        bad_request("Bad check state")
    read = _read_request(request)
    read.state = state
    response = await agent_of(request).rpc_read("Health.ChecksInState", read)
    return json_response(request, response.value, response.meta)


# ----- status --------------------------------------------------------------


async def status_leader(request: web.Request) -> web.Response:
    return json_response(request, await agent_of(request).leader_address())


async def status_peers(request: web.Request) -> web.Response:
    return json_response(request, await agent_of(request).peer_addresses())


def add_routes(app: web.Application) -> None:
    app[BODY_CACHE_KEY] = BodyCache()
    router = app.router
    router.add_put("/v1/catalog/register", catalog_register)
    router.add_put("/v1/catalog/deregister", catalog_deregister)
    router.add_get("/v1/catalog/datacenters", catalog_datacenters)
    router.add_get("/v1/catalog/nodes", catalog_nodes)
    router.add_get("/v1/catalog/services", catalog_services)
    router.add_get("/v1/catalog/service/{service}", catalog_service)
    router.add_get("/v1/catalog/connect/{service}", catalog_connect)
    router.add_get("/v1/catalog/node/{node}", catalog_node)
    router.add_get("/v1/catalog/node-services/{node}", catalog_node_services)
    router.add_get("/v1/health/service/{service}", health_service)
    router.add_get("/v1/health/connect/{service}", health_connect)
    router.add_get("/v1/health/node/{node}", health_node)
    router.add_get("/v1/health/checks/{service}", health_checks)
    router.add_get("/v1/health/state/{state}", health_state)
    router.add_get("/v1/status/leader", status_leader)
    router.add_get("/v1/status/peers", status_peers)
