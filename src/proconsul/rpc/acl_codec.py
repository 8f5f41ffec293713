"""The ACL API's RPC methods on the wire ("ACL.TokenRead", ...), and a caller for them.

Job: encode and decode the requests and answers of every operation in
`ACL_OPERATIONS` (acl/service.py), and give client agents, which hold no
store, the ACL API over RPC: `RemoteACLEndpoints`, an `ACLService` whose
every method is one call to a server. The handlers that serve them are in
server/acl_rpc.py.

Wire shapes (msgpack, via msgspec):
- every request is an `ACLCall` (structs/rpc.py) with the fields its
  operation declares set;
- the response is the operation's result, decoded with its declared type (a
  row, `[index, row]`, `[index, [rows]]`, nil, or a `ResolveReply`).

Rules:
- A refusal is an `ACLDenied` on both sides (the RPC layer carries it, see
  rpc/errors.py). An `ACLError` crosses as an `RPCError` whose code keeps its
  status: 400 is `ACL_BAD_REQUEST`, anything else `ACL_FAILED`; the caller
  gets the same `ACLError` back.
- A Duration (token TTLs) travels as float seconds.
- Secrets are never logged.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from proconsul.acl.errors import ACLError
from proconsul.acl.service import ACL_OPERATIONS, ACLOperation
from proconsul.rpc.codec import DEFAULT_CALL_TIMEOUT_S, decode_payload, decode_reply
from proconsul.rpc.errors import RPCError
from proconsul.structs.duration import Duration, dec_hook
from proconsul.structs.rpc import ACLCall

# Error codes of ACL.* calls (wire format: never change a value).
ACL_BAD_REQUEST = "acl_bad_request"
ACL_FAILED = "acl_failed"

CallRaw = Callable[[str, bytes, float], Awaitable[bytes]]


def _seconds_hook(kind: type, obj: Any) -> Any:
    # A Duration is a float subclass, so msgpack carries it as plain seconds
    # (the JSON hook would read a number as Go nanoseconds).
    if kind is Duration and isinstance(obj, int | float) and not isinstance(obj, bool):
        return Duration(obj)
    return dec_hook(kind, obj)


def _seconds_out(obj: Any) -> Any:
    if isinstance(obj, Duration):
        return float(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_BY_NAME = {op.name: op for op in ACL_OPERATIONS.values()}
_encoder = msgspec.msgpack.Encoder(enc_hook=_seconds_out)
_call_decoder = msgspec.msgpack.Decoder(ACLCall, dec_hook=_seconds_hook)
_result_decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {
    method: msgspec.msgpack.Decoder(op.result, dec_hook=_seconds_hook)
    for method, op in ACL_OPERATIONS.items()
}


def encode_call(call: ACLCall) -> bytes:
    return _encoder.encode(call)


def decode_call(payload: bytes, method: str) -> ACLCall:
    request: ACLCall = decode_payload(_call_decoder, payload, method)
    return request


def encode_result(result: Any) -> bytes:
    return _encoder.encode(result)


def decode_result(method: str, data: bytes) -> Any:
    """A server's answer to ACL `method`; one that does not decode is an `RPCError`."""
    return decode_reply(_result_decoders[method], data, method)


def rpc_error_from(exc: ACLError) -> RPCError:
    return RPCError(exc.message, ACL_BAD_REQUEST if exc.status == 400 else ACL_FAILED)


def acl_error_from(exc: RPCError) -> ACLError | None:
    """The `ACLError` an ACL.* call's `RPCError` stands for (None: not one of ours)."""
    status = {ACL_BAD_REQUEST: 400, ACL_FAILED: 500}.get(exc.code)
    return None if status is None else ACLError(status, exc.message)


class RemoteACLEndpoints:
    """`ACLService` over RPC: each method is its operation's "ACL.*" call to a
    server, carrying the caller's secret. `call_raw(method, payload, timeout_s)`
    reaches a server (agent/client_rpc.py picks which)."""

    def __init__(self, call_raw: CallRaw, timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self.call_raw = call_raw
        self.timeout_s = timeout_s

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        # Only names that are not attributes get here: the operations.
        op = _BY_NAME.get(name)
        if op is None:
            raise AttributeError(name)
        return functools.partial(self.call, op)

    async def call(self, op: ACLOperation, *args: Any, **kwargs: Any) -> Any:
        """`op` with these arguments (as its `ACLService` method takes them)."""
        payload = encode_call(op.encode(args, kwargs))
        try:
            data = await self.call_raw(op.rpc, payload, self.timeout_s)
        except RPCError as exc:
            error = acl_error_from(exc)
            if error is None:
                raise
            raise error from None
        return decode_result(op.rpc, data)
