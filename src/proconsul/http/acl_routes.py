"""/v1/acl/*: Consul's ACL HTTP API (bootstrap, tokens, policies, roles).

Job: decode requests, call the ACL endpoints the agent exposes (server-local
`ACLEndpoints`, or on a client agent `RemoteACLEndpoints` over RPC: both are
an `ACLService`), passing the caller's token (its own, else the agent's
default), and answer in Consul's JSON shapes (`api_dict`: PascalCase,
omitempty fields dropped). The endpoints enforce `acl:read`/`acl:write`.

Rules:
- With ACLs disabled every route answers 401 `ACL support disabled`.
- Endpoint errors are the error middleware's (http/server.py): refusals
  (`ACLDenied`) are 403 `ACL not found` (also a missing token or policy, as in
  Consul; a missing role is a bare 404) or `Permission denied: ...`, other
  failures (`ACLError`) keep their status and text (400, 500).
- `GET /v1/acl/tokens` filters by `policy`, `role`, `servicename` and
  `authmethod` (tokens whose AuthMethod is that name; no auth methods exist
  yet, so none).
- Writes answer the stored row; deletes answer `true`. `/v1/acl/bootstrap`
  adds `ID`, a copy of the SecretID, as Consul does.
- Secrets are never logged.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from proconsul.acl.service import ACLService
from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import HTTPError, decode_body, json_response
from proconsul.structs.acl import ACLPolicy, ACLRole, ACLToken, api_dict, policy_list_stub
from proconsul.structs.requests import QueryMeta


@runtime_checkable
class ACLHost(Protocol):
    def acl_endpoints(self) -> ACLService | None:
        """None when ACLs are disabled."""


def acl_service(request: web.Request) -> ACLService:
    agent = agent_of(request)
    endpoints = agent.acl_endpoints() if isinstance(agent, ACLHost) else None
    if endpoints is None:
        raise HTTPError(401, "ACL support disabled")
    return endpoints


def _meta(index: int) -> QueryMeta:
    return QueryMeta(index=index)


def _answer(request: web.Request, value: Any, index: int = 0) -> web.Response:
    return json_response(request, value, _meta(index) if index else None)


# ----- bootstrap --------------------------------------------------------------------


async def bootstrap(request: web.Request) -> web.Response:
    acl = acl_service(request)
    token = await acl.bootstrap()
    body = api_dict(token)
    body = {"ID": token.secret_id, **body}
    return _answer(request, body)


# ----- tokens -----------------------------------------------------------------------


async def token_create(request: web.Request) -> web.Response:
    acl = acl_service(request)
    token = await decode_body(request, ACLToken)
    stored = await acl.token_create(token, caller=caller_token(request))
    return _answer(request, api_dict(stored))


async def token_read(request: web.Request) -> web.Response:
    acl = acl_service(request)
    index, token = await acl.token_read(request.match_info["id"], caller=caller_token(request))
    return _answer(request, api_dict(token), index)


async def token_self(request: web.Request) -> web.Response:
    acl = acl_service(request)
    index, token = await acl.token_self(caller_token(request))
    return _answer(request, api_dict(token), index)


async def token_update(request: web.Request) -> web.Response:
    acl = acl_service(request)
    token = await decode_body(request, ACLToken)
    stored = await acl.token_update(request.match_info["id"], token, caller=caller_token(request))
    return _answer(request, api_dict(stored))


async def token_clone(request: web.Request) -> web.Response:
    acl = acl_service(request)
    description = ""
    if (await request.read()).strip():
        description = (await decode_body(request, ACLToken)).description
    stored = await acl.token_clone(
        request.match_info["id"], description, caller=caller_token(request)
    )
    return _answer(request, api_dict(stored))


async def token_delete(request: web.Request) -> web.Response:
    acl = acl_service(request)
    await acl.token_delete(request.match_info["id"], caller=caller_token(request))
    return _answer(request, True)


async def token_list(request: web.Request) -> web.Response:
    acl = acl_service(request)
    query = request.query
    index, tokens = await acl.token_list(
        policy=query.get("policy", ""),
        role=query.get("role", ""),
        service=query.get("servicename", ""),
        caller=caller_token(request),
    )
    method = query.get("authmethod", "")
    if method:
        # Only tokens made by that auth method's login (none: we have no auth methods).
        tokens = [t for t in tokens if t.auth_method == method]
    return _answer(request, [api_dict(t) for t in tokens], index)


# ----- policies ---------------------------------------------------------------------


async def policy_create(request: web.Request) -> web.Response:
    acl = acl_service(request)
    policy = await decode_body(request, ACLPolicy)
    stored = await acl.policy_set(policy, caller=caller_token(request))
    return _answer(request, api_dict(stored))


async def policy_update(request: web.Request) -> web.Response:
    acl = acl_service(request)
    policy = await decode_body(request, ACLPolicy)
    stored = await acl.policy_set(policy, request.match_info["id"], caller=caller_token(request))
    return _answer(request, api_dict(stored))


async def policy_read(request: web.Request) -> web.Response:
    acl = acl_service(request)
    index, policy = await acl.policy_read(request.match_info["id"], caller=caller_token(request))
    return _answer(request, api_dict(policy), index)


async def policy_read_by_name(request: web.Request) -> web.Response:
    acl = acl_service(request)
    index, policy = await acl.policy_read_by_name(
        request.match_info["name"], caller=caller_token(request)
    )
    return _answer(request, api_dict(policy), index)


async def policy_delete(request: web.Request) -> web.Response:
    acl = acl_service(request)
    await acl.policy_delete(request.match_info["id"], caller=caller_token(request))
    return _answer(request, True)


async def policy_list(request: web.Request) -> web.Response:
    acl = acl_service(request)
    index, policies = await acl.policy_list(caller=caller_token(request))
    return _answer(request, [api_dict(policy_list_stub(p)) for p in policies], index)


# ----- roles ------------------------------------------------------------------------


async def role_create(request: web.Request) -> web.Response:
    acl = acl_service(request)
    role = await decode_body(request, ACLRole)
    stored = await acl.role_set(role, caller=caller_token(request))
    return _answer(request, api_dict(stored))


async def role_update(request: web.Request) -> web.Response:
    acl = acl_service(request)
    role = await decode_body(request, ACLRole)
    stored = await acl.role_set(role, request.match_info["id"], caller=caller_token(request))
    return _answer(request, api_dict(stored))


async def role_read(request: web.Request) -> web.Response:
    acl = acl_service(request)
    index, role = await acl.role_read(request.match_info["id"], caller=caller_token(request))
    if role is None:
        return web.Response(status=404)
    return _answer(request, api_dict(role), index)


async def role_read_by_name(request: web.Request) -> web.Response:
    acl = acl_service(request)
    index, role = await acl.role_read_by_name(
        request.match_info["name"], caller=caller_token(request)
    )
    if role is None:
        return web.Response(status=404)
    return _answer(request, api_dict(role), index)


async def role_delete(request: web.Request) -> web.Response:
    acl = acl_service(request)
    await acl.role_delete(request.match_info["id"], caller=caller_token(request))
    return _answer(request, True)


async def role_list(request: web.Request) -> web.Response:
    acl = acl_service(request)
    index, roles = await acl.role_list(
        policy=request.query.get("policy", ""), caller=caller_token(request)
    )
    return _answer(request, [api_dict(r) for r in roles], index)


async def disabled_or_unknown(request: web.Request) -> web.Response:
    acl_service(request)
    raise web.HTTPNotFound()


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_put("/v1/acl/bootstrap", bootstrap)
    r.add_put("/v1/acl/token", token_create)
    r.add_get("/v1/acl/token/self", token_self)
    r.add_put("/v1/acl/token/{id}/clone", token_clone)
    r.add_get("/v1/acl/token/{id}", token_read)
    r.add_put("/v1/acl/token/{id}", token_update)
    r.add_delete("/v1/acl/token/{id}", token_delete)
    r.add_get("/v1/acl/tokens", token_list)
    r.add_put("/v1/acl/policy", policy_create)
    r.add_get("/v1/acl/policy/name/{name}", policy_read_by_name)
    r.add_get("/v1/acl/policy/{id}", policy_read)
    r.add_put("/v1/acl/policy/{id}", policy_update)
    r.add_delete("/v1/acl/policy/{id}", policy_delete)
    r.add_get("/v1/acl/policies", policy_list)
    r.add_put("/v1/acl/role", role_create)
    r.add_get("/v1/acl/role/name/{name}", role_read_by_name)
    r.add_get("/v1/acl/role/{id}", role_read)
    r.add_put("/v1/acl/role/{id}", role_update)
    r.add_delete("/v1/acl/role/{id}", role_delete)
    r.add_get("/v1/acl/roles", role_list)
    r.add_route("*", "/v1/acl/{tail:.*}", disabled_or_unknown)
