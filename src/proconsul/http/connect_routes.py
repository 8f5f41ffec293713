"""/v1/connect/ca/*, /v1/agent/connect/ca/* and the agent's xDS view of a proxy.

Job:
- `GET /v1/connect/ca/roots` in Consul's shape (`ActiveRootID`,
  `TrustDomain`, `Roots[]` of CARoot rows), or with `?pem=true` the roots as
  one PEM chain (`application/pem-certificate-chain`). The read is the
  server endpoint "ConnectCA.Roots", so a client agent forwards it like any
  other read; blocking queries and consistency modes work as for the catalog.
- `GET /v1/connect/ca/configuration` (the read "ConnectCA.ConfigurationGet",
  blocking; the server wants operator:write, Consul's rule since 1.8.6) and
  `PUT` (`{Provider, Config, ForceWithoutCrossSigning}`, operator:write,
  served on the leader; a new PrivateKey/RootCert rotates the root).
- `GET /v1/agent/connect/ca/roots`: the same body, from the agent's own view
  (agent/leaf_certs.py), blocking on `?index`.
- `GET /v1/agent/connect/ca/leaf/<service>`: the agent's leaf for the
  service (`IssuedCert`: SerialNumber, CertPEM, PrivateKeyPEM, Service,
  ServiceURI, ValidAfter, ValidBefore, CreateIndex, ModifyIndex), blocking on
  `?index` until a renewal; `X-Consul-Index` is the leaf's ModifyIndex.
- `GET /v1/agent/connect/proxy/<proxy-id>/xds` (Proconsul's, for
  `troubleshoot`): what this agent's xDS server last sent the local proxy,
  `{ProxyID, Streams, Versions: {type URL: version}, Error}`; `Error` says how
  the agent ended its last stream (a refused token), "" otherwise. 404 for a
  proxy not registered here; service:read on the service it fronts.

Rules:
- Consul requires no ACL for the roots (they are public certificates); the
  rows never hold a private key (structs/connect.py keeps keys out of them).
- The leaf needs service:write on the service (http/acl_rules.py checks it
  here, the leader again when signing); its reply is the only place a
  private key leaves the agent.
"""

from __future__ import annotations

from aiohttp import web

from proconsul.connect.ca_config import CAConfigError, api_config
from proconsul.http.acl_rules import authorize
from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import (
    HTTPError,
    bad_request,
    decode_body,
    json_response,
    not_found,
    query_bool,
    query_options,
    set_meta_headers,
)
from proconsul.structs.connect import CAConfiguration, IndexedCARoots
from proconsul.structs.requests import QueryMeta, ReadRequest

ROOTS_METHOD = "ConnectCA.Roots"
CONFIG_GET_METHOD = "ConnectCA.ConfigurationGet"
PEM_CHAIN_CONTENT_TYPE = "application/pem-certificate-chain"


def pem_chain(roots: IndexedCARoots) -> str:
    """Every root certificate (and intermediate) as one PEM bundle, each ending in a newline."""
    parts: list[str] = []
    for root in roots.roots:
        for pem in (root.root_cert, *(root.intermediate_certs or ())):
            parts.append(pem if pem.endswith("\n") else pem + "\n")
    return "".join(parts)


async def ca_roots(request: web.Request) -> web.Response:
    read = ReadRequest(options=query_options(request, caller_token(request)))
    response = await agent_of(request).rpc_read(ROOTS_METHOD, read)
    roots: IndexedCARoots = response.value
    return _roots_reply(request, roots, response.meta)


def _roots_reply(request: web.Request, roots: IndexedCARoots, meta: QueryMeta) -> web.Response:
    if query_bool(request, "pem"):
        reply = web.Response(text=pem_chain(roots))
        # Set whole: aiohttp's content_type argument would add a charset.
        reply.headers["Content-Type"] = PEM_CHAIN_CONTENT_TYPE
        set_meta_headers(reply, meta)
        return reply
    return json_response(request, roots, meta)


async def ca_configuration(request: web.Request) -> web.Response:
    read = ReadRequest(options=query_options(request, caller_token(request)))
    response = await agent_of(request).rpc_read(CONFIG_GET_METHOD, read)
    if response.value is None:
        raise HTTPError(500, "CA configuration is not initialized yet")
    return json_response(request, response.value, response.meta)


async def set_ca_configuration(request: web.Request) -> web.Response:
    given = await decode_body(request, CAConfiguration)
    try:
        given.config = api_config(given.config)
    except CAConfigError as exc:
        bad_request(str(exc))
    await agent_of(request).set_ca_configuration(given, caller_token(request))
    return json_response(request, True)


async def agent_ca_roots(request: web.Request) -> web.Response:
    options = query_options(request)
    index, roots = await agent_of(request).connect_ca_roots(
        options.min_index, options.max_query_time_s
    )
    return _roots_reply(request, roots, QueryMeta(index=max(index, 1)))


async def agent_ca_leaf(request: web.Request) -> web.Response:
    options = query_options(request)
    issued = await agent_of(request).connect_ca_leaf(
        request.match_info["service"],
        caller_token(request),
        options.min_index,
        options.max_query_time_s,
    )
    return json_response(request, issued, QueryMeta(index=max(issued.modify_index, 1)))


async def agent_proxy_xds(request: web.Request) -> web.Response:
    agent = agent_of(request)
    proxy_id = request.match_info["proxy_id"]
    proxy = agent.local_services().get(proxy_id)
    if proxy is None or proxy.kind != "connect-proxy":
        not_found(f"unknown proxy service ID: {proxy_id}")
    # Read on the service it fronts: the xDS stream itself needs write there.
    authorize(request, "service", "read", proxy.proxy.destination_service_name)
    status = {"Streams": 0, "Versions": {}, "Error": "", **agent.xds_proxy_status(proxy_id)}
    return json_response(request, {"ProxyID": proxy_id, **status})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/connect/ca/roots", ca_roots)
    app.router.add_get("/v1/connect/ca/configuration", ca_configuration)
    app.router.add_put("/v1/connect/ca/configuration", set_ca_configuration)
    app.router.add_get("/v1/agent/connect/ca/roots", agent_ca_roots)
    app.router.add_get("/v1/agent/connect/ca/leaf/{service}", agent_ca_leaf)
    app.router.add_get("/v1/agent/connect/proxy/{proxy_id}/xds", agent_proxy_xds)
