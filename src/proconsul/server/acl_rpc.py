"""Consul's ACL.* RPC methods: what client agents call, since they hold no store.

Job: `acl_handlers` gives a server's `RPCServer` one handler per ACL operation
("ACL.TokenRead", "ACL.PolicySet", ...), each a thin wrapper around
`ACLEndpoints` that passes the caller's secret along, plus "ACL.Resolve",
which answers a secret with what a client needs to build the authorizer
itself: the token row (its SecretID blanked) and the policies and roles it
links, roles' policies included. Identities are expanded on the client
(acl/identity.py), so nothing here is compiled for it.

Wire shapes (msgpack, via msgspec; the structs are in structs/rpc.py):
- every request is an `ACLCall` (only the fields the operation uses are set);
- the response is the operation's result, typed by `RESULT_TYPES[method]`
  (a row, `[index, row]`, `[index, [rows]]`, nil, or a `ResolveReply`).

Rules:
- A refusal is an `ACLDenied`, which the RPC layer carries as it carries
  every other (code `acl_denied`; the caller gets an `ACLDenied` back, and a
  client's HTTP layer answers 403 with the same text). `ACLError` crosses
  the wire as an `RPCError` whose code keeps its status: 400 is
  `ACL_BAD_REQUEST`, anything else `ACL_FAILED`; `acl_error_from` turns it
  back into an `ACLError` on the caller's side.
- ACL.Resolve refuses an unknown or expired secret with `ACLNotFound`.
  It never returns a secret: the caller already holds it.
- Secrets are never logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from proconsul.acl.errors import ACLError, ACLNotFound
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.rpc.server import Handler
from proconsul.rpc.tls import PeerInfo
from proconsul.server.acl_endpoints import ACLEndpoints
from proconsul.structs.acl import (
    ANONYMOUS_TOKEN_SECRET_ID,
    ACLPolicy,
    ACLRole,
    ACLToken,
    token_expired,
)
from proconsul.structs.duration import Duration, dec_hook
from proconsul.structs.rpc import ACLCall, ResolveReply

ACL_BAD_REQUEST = "acl_bad_request"
ACL_FAILED = "acl_failed"
RESOLVE_METHOD = "ACL.Resolve"


RESULT_TYPES: Mapping[str, Any] = {
    "ACL.Bootstrap": ACLToken,
    "ACL.TokenRead": tuple[int, ACLToken],
    "ACL.TokenSelf": tuple[int, ACLToken],
    "ACL.TokenList": tuple[int, list[ACLToken]],
    "ACL.TokenCreate": ACLToken,
    "ACL.TokenUpdate": ACLToken,
    "ACL.TokenClone": ACLToken,
    "ACL.TokenDelete": None,
    "ACL.PolicySet": ACLPolicy,
    "ACL.PolicyRead": tuple[int, ACLPolicy],
    "ACL.PolicyReadByName": tuple[int, ACLPolicy],
    "ACL.PolicyList": tuple[int, list[ACLPolicy]],
    "ACL.PolicyDelete": None,
    "ACL.RoleSet": ACLRole,
    "ACL.RoleRead": tuple[int, ACLRole],
    "ACL.RoleReadByName": tuple[int, ACLRole],
    "ACL.RoleList": tuple[int, list[ACLRole]],
    "ACL.RoleDelete": None,
    RESOLVE_METHOD: ResolveReply,
}


def _seconds_hook(kind: type, obj: Any) -> Any:
    # A Duration is a float subclass, so msgpack carries it as plain seconds
    # (the JSON hook would read a number as Go nanoseconds).
    if kind is Duration and isinstance(obj, int | float) and not isinstance(obj, bool):
        return Duration(obj)
    return dec_hook(kind, obj)


_encoder = msgspec.msgpack.Encoder()
_call_decoder = msgspec.msgpack.Decoder(ACLCall, dec_hook=_seconds_hook)
_result_decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {
    method: msgspec.msgpack.Decoder(kind, dec_hook=_seconds_hook)
    for method, kind in RESULT_TYPES.items()
}


def encode_call(call: ACLCall) -> bytes:
    return _encoder.encode(call)


def decode_result(method: str, data: bytes) -> Any:
    return _result_decoders[method].decode(data)


def _need(row: Any, what: str) -> Any:
    if row is None:
        raise ACLError(400, f"Request decode failed: missing {what}")
    return row


Operation = Callable[[ACLEndpoints, ACLCall], Awaitable[Any]]

# method -> how to call ACLEndpoints with the decoded request
_OPERATIONS: dict[str, Operation] = {
    "ACL.Bootstrap": lambda acl, c: acl.bootstrap(),
    "ACL.TokenRead": lambda acl, c: acl.token_read(c.id, caller=c.caller),
    "ACL.TokenSelf": lambda acl, c: acl.token_self(c.caller),
    "ACL.TokenList": lambda acl, c: acl.token_list(c.policy, c.role, c.service, caller=c.caller),
    "ACL.TokenCreate": lambda acl, c: acl.token_create(
        _need(c.token_row, "token"), caller=c.caller
    ),
    "ACL.TokenUpdate": lambda acl, c: acl.token_update(
        c.id, _need(c.token_row, "token"), caller=c.caller
    ),
    "ACL.TokenClone": lambda acl, c: acl.token_clone(c.id, c.text, caller=c.caller),
    "ACL.TokenDelete": lambda acl, c: acl.token_delete(c.id, caller=c.caller),
    "ACL.PolicySet": lambda acl, c: acl.policy_set(
        _need(c.policy_row, "policy"), c.id, caller=c.caller
    ),
    "ACL.PolicyRead": lambda acl, c: acl.policy_read(c.id, caller=c.caller),
    "ACL.PolicyReadByName": lambda acl, c: acl.policy_read_by_name(c.text, caller=c.caller),
    "ACL.PolicyList": lambda acl, c: acl.policy_list(caller=c.caller),
    "ACL.PolicyDelete": lambda acl, c: acl.policy_delete(c.id, caller=c.caller),
    "ACL.RoleSet": lambda acl, c: acl.role_set(_need(c.role_row, "role"), c.id, caller=c.caller),
    "ACL.RoleRead": lambda acl, c: acl.role_read(c.id, caller=c.caller),
    "ACL.RoleReadByName": lambda acl, c: acl.role_read_by_name(c.text, caller=c.caller),
    "ACL.RoleList": lambda acl, c: acl.role_list(c.policy, caller=c.caller),
    "ACL.RoleDelete": lambda acl, c: acl.role_delete(c.id, caller=c.caller),
}


def rpc_error_from(exc: ACLError) -> RPCError:
    return RPCError(exc.message, ACL_BAD_REQUEST if exc.status == 400 else ACL_FAILED)


def acl_error_from(exc: RPCError) -> ACLError | None:
    """The `ACLError` an ACL.* call's `RPCError` stands for (None: not one of ours)."""
    status = {ACL_BAD_REQUEST: 400, ACL_FAILED: 500}.get(exc.code)
    return None if status is None else ACLError(status, exc.message)


def _decode_call(payload: bytes, method: str) -> ACLCall:
    try:
        return _call_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RPCError(f"rpc: bad {method} request: {exc}", ErrorCode.BAD_REQUEST) from None


def _handler(endpoints: ACLEndpoints, method: str, operation: Operation) -> Handler:
    async def handle(payload: bytes, peer: PeerInfo) -> bytes:
        call = _decode_call(payload, method)
        try:
            result = await operation(endpoints, call)
        except ACLError as exc:
            raise rpc_error_from(exc) from None
        return _encoder.encode(result)

    return handle


def resolve_reply(endpoints: ACLEndpoints, secret: str) -> ResolveReply:
    """The token behind `secret` with every policy and role it links (for ACL.Resolve)."""
    acl = endpoints.store.acl
    token = acl.token_by_secret(secret or ANONYMOUS_TOKEN_SECRET_ID)
    if token is None or token_expired(token, endpoints.now()):
        raise ACLNotFound()
    roles = [role for link in token.roles if (role := acl.roles.get(link.id)) is not None]
    policy_ids = dict.fromkeys(
        [link.id for link in token.policies] + [link.id for role in roles for link in role.policies]
    )
    policies = [policy for pid in policy_ids if (policy := acl.policies.get(pid)) is not None]
    blank = msgspec.structs.replace(token, secret_id="")
    return ResolveReply(token=blank, policies=policies, roles=roles)


def acl_handlers(endpoints: ACLEndpoints) -> dict[str, Handler]:
    """Handlers to add to a server's RPCServer when ACLs are enabled."""
    handlers = {
        method: _handler(endpoints, method, operation) for method, operation in _OPERATIONS.items()
    }

    async def resolve(payload: bytes, peer: PeerInfo) -> bytes:
        call = _decode_call(payload, RESOLVE_METHOD)
        try:
            reply = resolve_reply(endpoints, call.caller)
        except ACLError as exc:
            raise rpc_error_from(exc) from None
        return _encoder.encode(reply)

    handlers[RESOLVE_METHOD] = resolve
    return handlers
