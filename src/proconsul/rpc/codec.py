"""The server endpoints' wire shapes, and a typed caller for them.

Job: encode and decode the requests and answers of the server endpoints' RPC
methods (each read under its Consul name, "Health.ServiceNodes", "KVS.Get",
..., plus "Apply" for writes), and give the calling side (`EndpointsClient`)
back the same typed values an in-process call returns. The handlers that
serve them are in server/rpc_handlers.py.

Wire shapes (msgpack, via msgspec; the structs are in structs/requests.py
and structs/rpc.py):
- read request: a `ReadRequest`; read response: a `ReadResponse` whose
  `value` is decoded with `READ_RESULT_TYPES[method]` (it is `Any` in the
  struct, so the caller needs the table to get structs back, not dicts).
- "Apply" request: an `ApplyRequest` (the `Command`, a tagged union, and the
  caller's ACL token); response: `[index, result]` with `result` an
  `ApplyResult` (true/false/nil, a transaction's `TxnReply`, or an `ApplyError`).
- "Raft.Apply" (server to server, see server/raft_rpc.py) carries the same
  `ApplyRequest`: the first server authorized the command, and the leader
  authorizes it again with the caller's token before it enters the log.

Rules:
- Every name in `ServerEndpoints.reads` must have a result type here; a unit
  test checks the two stay in step.
- Payloads are decoded only through `decode_payload` (a request, on the
  server) and `decode_reply` (an answer, on the caller), which turn anything
  msgspec raises on hostile bytes into an `RPCError`: code "bad_request" for a
  request, "bad_response" for an answer. Nothing else escapes (tests/fuzz).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from proconsul.rpc.client import Address, RPCClient
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.structs.catalog import (
    CheckServiceNode,
    HealthCheck,
    KVEntry,
    Node,
    NodeService,
    ServiceNode,
)
from proconsul.structs.commands import ApplyError, ApplyResult, Command
from proconsul.structs.config_entries import ConfigEntry, Intention
from proconsul.structs.connect import CAConfiguration, IndexedCARoots
from proconsul.structs.coordinate import CoordinateEntry
from proconsul.structs.discovery_chain import CompiledDiscoveryChain
from proconsul.structs.duration import dec_hook, enc_hook
from proconsul.structs.intentions import IntentionCheckResponse
from proconsul.structs.prepared_query import ExecuteResponse, ExplainResponse, PreparedQuery
from proconsul.structs.requests import (
    DEFAULT_WAIT_S,
    MAX_WAIT_S,
    QueryMeta,
    ReadRequest,
    ReadResponse,
)
from proconsul.structs.rpc import ApplyRequest
from proconsul.structs.service_config import ServiceConfigResponse
from proconsul.structs.session import Session
from proconsul.structs.txn import TxnReply

APPLY_METHOD = "Apply"
FORWARD_METHOD = "Raft.Apply"

# What each read's `ReadResponse.value` holds (see ServerEndpoints.reads).
READ_RESULT_TYPES: Mapping[str, Any] = {
    "Catalog.ListNodes": list[Node],
    "Catalog.NodeServices": tuple[Node | None, list[NodeService]],
    "Catalog.ListServices": dict[str, list[str]],
    "Catalog.ServiceNodes": list[ServiceNode],
    "Catalog.ConnectServiceNodes": list[ServiceNode],
    "Health.ServiceNodes": list[CheckServiceNode],
    "Health.ConnectServiceNodes": list[CheckServiceNode],
    "Health.NodeChecks": list[HealthCheck],
    "Health.ServiceChecks": list[HealthCheck],
    "Health.ChecksInState": list[HealthCheck],
    "KVS.Get": KVEntry | None,
    "KVS.List": list[KVEntry],
    "KVS.ListKeys": list[str],
    "ConnectCA.Roots": IndexedCARoots,
    "ConfigEntry.Get": ConfigEntry | None,
    "ConfigEntry.List": list[ConfigEntry],
    "DiscoveryChain.Get": CompiledDiscoveryChain,
    "ConfigEntry.ResolveServiceConfig": ServiceConfigResponse,
    "ConnectCA.ConfigurationGet": CAConfiguration | None,
    "Intention.List": list[Intention],
    "Intention.Match": dict[str, list[Intention]],
    "Intention.Get": Intention | None,
    "Intention.Check": IntentionCheckResponse,
    "PreparedQuery.Get": list[PreparedQuery],
    "PreparedQuery.List": list[PreparedQuery],
    "PreparedQuery.Explain": ExplainResponse | None,
    "PreparedQuery.Execute": ExecuteResponse | None,
    "Coordinate.ListNodes": list[CoordinateEntry],
    "Coordinate.Node": list[CoordinateEntry],
    "Txn.Read": TxnReply,
    "Operator.Usage": dict[str, Any],
    "Session.Get": list[Session],
    "Session.List": list[Session],
    "Session.NodeSessions": list[Session],
}

# Time a non-blocking read or a write may take end to end (Consul's default
# rpc_hold_timeout is 7s; that much again covers a leader election).
DEFAULT_CALL_TIMEOUT_S = 15.0


class _ReadReply(msgspec.Struct):
    """`ReadResponse` as it arrives: the value left raw until its type is known."""

    meta: QueryMeta
    value: msgspec.Raw


# What msgspec may raise on hostile bytes: DecodeError (ValidationError is one)
# for bad shapes, UnicodeDecodeError (a ValueError) for a str that is not
# UTF-8, RecursionError for nesting past the recursion limit, and TypeError or
# ValueError from a decode hook.
DECODE_ERRORS = (msgspec.DecodeError, ValueError, TypeError, RecursionError, OverflowError)

# The hooks carry config entries' durations (structs/duration.py) as Go strings.
_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
# For answers without a declared type (Status.*, Operator.*).
ANY_DECODER: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()
_request_decoder = msgspec.msgpack.Decoder(ReadRequest)
_reply_decoder = msgspec.msgpack.Decoder(_ReadReply)
_apply_request_decoder = msgspec.msgpack.Decoder(ApplyRequest, dec_hook=dec_hook)
# msgspec decodes one untagged struct per union: ApplyError is a map and
# TxnReply an array, so the result is decoded loosely and typed by its shape.
_apply_decoder = msgspec.msgpack.Decoder(tuple[int, bool | dict[str, Any] | list[Any] | None])
_value_decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {
    method: msgspec.msgpack.Decoder(kind, dec_hook=dec_hook)
    for method, kind in READ_RESULT_TYPES.items()
}


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


# --- server side: decoding requests (the handlers are in server/rpc_handlers.py) ---


def decode_read_request(payload: bytes, method: str) -> ReadRequest:
    request: ReadRequest = decode_payload(_request_decoder, payload, method)
    return request


def decode_apply_request(payload: bytes, method: str) -> ApplyRequest:
    """An `ApplyRequest` payload ("Apply", and "Raft.Apply" between servers)."""
    request: ApplyRequest = decode_payload(_apply_request_decoder, payload, method)
    return request


def decode_payload(decoder: msgspec.msgpack.Decoder[Any], payload: bytes, method: str) -> Any:
    """`payload` decoded for `method`; a payload that does not decode is a bad request."""
    try:
        return decoder.decode(payload)
    except DECODE_ERRORS as exc:
        raise RPCError(f"rpc: bad {method} request: {exc}", ErrorCode.BAD_REQUEST) from None


def decode_reply(decoder: msgspec.msgpack.Decoder[Any], data: bytes, method: str) -> Any:
    """A server's answer to `method`; one that does not decode is an `RPCError`.

    Not a ConnectionError: the server did answer (a write may have happened), so
    the caller must not retry it elsewhere as if nothing had been sent.
    """
    try:
        return decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise RPCError(f"rpc: bad {method} response: {exc}", ErrorCode.BAD_RESPONSE) from None


# --- caller side ---------------------------------------------------------------


def decode_read_response(method: str, data: bytes) -> ReadResponse:
    """A read's response with its value typed per READ_RESULT_TYPES."""
    decoder = _value_decoders.get(method)
    if decoder is None:
        raise ValueError(f"rpc: no result type for {method}")
    reply: _ReadReply = decode_reply(_reply_decoder, data, method)
    return ReadResponse(meta=reply.meta, value=decode_reply(decoder, reply.value, method))


def decode_apply_response(data: bytes, method: str = APPLY_METHOD) -> tuple[int, ApplyResult]:
    index, raw = decode_reply(_apply_decoder, data, method)
    if not isinstance(raw, dict | list):
        return index, raw
    kind: type[ApplyError | TxnReply] = ApplyError if isinstance(raw, dict) else TxnReply
    try:
        result: ApplyError | TxnReply = msgspec.convert(raw, kind, dec_hook=dec_hook)
    except DECODE_ERRORS as exc:
        raise RPCError(f"rpc: bad {method} response: {exc}", ErrorCode.BAD_RESPONSE) from None
    return index, result


def read_timeout_s(request: ReadRequest, base_s: float = DEFAULT_CALL_TIMEOUT_S) -> float:
    """A call timeout that outlasts the server's blocking wait for `request`:
    the wait (default 5 min, at most 10) plus its up-to-1/16 jitter, plus `base_s`."""
    options = request.options
    if options.min_index <= 0:
        return base_s
    wait = options.max_query_time_s if options.max_query_time_s > 0 else DEFAULT_WAIT_S
    return min(wait, MAX_WAIT_S) * 17 / 16 + base_s


class EndpointsClient:
    """`ServerEndpoints.read/write` on a remote server, same types back."""

    def __init__(self, client: RPCClient) -> None:
        self.client = client

    async def read(
        self,
        address: str | Address,
        method: str,
        request: ReadRequest,
        timeout_s: float | None = None,
    ) -> ReadResponse:
        if method not in READ_RESULT_TYPES:
            raise RPCError(f"rpc: can't find method {method}", ErrorCode.UNKNOWN_METHOD)
        timeout = read_timeout_s(request) if timeout_s is None else timeout_s
        data = await self.client.call(address, method, _encoder.encode(request), timeout)
        return decode_read_response(method, data)

    async def write(
        self,
        address: str | Address,
        command: Command,
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        token: str = "",
    ) -> tuple[int, ApplyResult]:
        payload = _encoder.encode(ApplyRequest(command, token))
        data = await self.client.call(address, APPLY_METHOD, payload, timeout_s)
        return decode_apply_response(data)

    async def forward(
        self,
        address: str | Address,
        command: Command,
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        token: str = "",
    ) -> tuple[int, ApplyResult]:
        """Hand a command to the leader (server to server only), with the token of
        the caller it is applied for: the leader authorizes it again."""
        payload = _encoder.encode(ApplyRequest(command, token))
        data = await self.client.call(address, FORWARD_METHOD, payload, timeout_s)
        return decode_apply_response(data, FORWARD_METHOD)
