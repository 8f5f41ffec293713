"""/v1/connect/ca/*: the Connect CA's roots, read through the server endpoints.

Job: `GET /v1/connect/ca/roots` in Consul's shape (`ActiveRootID`,
`TrustDomain`, `Roots[]` of CARoot rows), or with `?pem=true` the roots as one
PEM chain (`application/pem-certificate-chain`). The read is the server
endpoint "ConnectCA.Roots", so a client agent forwards it like any other
read; blocking queries and consistency modes work as for the catalog.

Rules:
- Consul requires no ACL for the roots (they are public certificates); the
  rows never hold a private key (structs/connect.py keeps keys out of them).
"""

from __future__ import annotations

from aiohttp import web

from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import json_response, query_bool, query_options, set_meta_headers
from proconsul.structs.connect import IndexedCARoots
from proconsul.structs.requests import ReadRequest

ROOTS_METHOD = "ConnectCA.Roots"
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
    if query_bool(request, "pem"):
        reply = web.Response(text=pem_chain(roots))
        # Set whole: aiohttp's content_type argument would add a charset.
        reply.headers["Content-Type"] = PEM_CHAIN_CONTENT_TYPE
        set_meta_headers(reply, response.meta)
        return reply
    return json_response(request, roots, response.meta)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/connect/ca/roots", ca_roots)
