"""The server endpoints as RPC handlers: what a server registers on its RPC port.

Job: one handler per `ServerEndpoints` read under its Consul name
("Health.ServiceNodes", "KVS.Get", ...) plus "Apply" for writes; the wire
shapes and the caller's side are in rpc/codec.py.

Rules:
- A request that does not decode is an `RPCError` with code "bad_request".
- A blocking read's wait is shortened to fit the time its caller still waits
  (`remaining_s()`), so it answers with the current result before the caller
  gives up: Consul answers a blocking query that ran out of time with the
  data, never an error.
"""

from __future__ import annotations

import msgspec

from proconsul.rpc.codec import APPLY_METHOD, decode_apply_request, decode_read_request, encode
from proconsul.rpc.server import Handler, remaining_s
from proconsul.rpc.tls import PeerInfo
from proconsul.server.endpoints import ServerEndpoints
from proconsul.structs.requests import DEFAULT_WAIT_S, MAX_WAIT_S, ReadRequest

# A blocking read ends this long before its caller's deadline, for the answer's trip.
BLOCKING_MARGIN_S = 0.5


def endpoint_handlers(endpoints: ServerEndpoints) -> dict[str, Handler]:
    """Handlers for every read in `endpoints.reads` and for "Apply"."""
    handlers = {method: read_handler(endpoints, method) for method in endpoints.reads}
    handlers[APPLY_METHOD] = apply_handler(endpoints)
    return handlers


def read_handler(endpoints: ServerEndpoints, method: str) -> Handler:
    async def handle(payload: bytes, peer: PeerInfo) -> bytes:
        request = _fit_wait(decode_read_request(payload, method), remaining_s())
        return encode(await endpoints.read(method, request))

    return handle


def _fit_wait(request: ReadRequest, budget_s: float | None) -> ReadRequest:
    """Shorten a blocking read's wait so that, jitter included, it answers with
    the current result before its caller stops waiting."""
    options = request.options
    if options.min_index <= 0 or budget_s is None:
        return request
    wait = options.max_query_time_s if options.max_query_time_s > 0 else DEFAULT_WAIT_S
    longest = max(0.0, budget_s - BLOCKING_MARGIN_S) * 16 / 17  # the wait plus 1/16 jitter
    if min(wait, MAX_WAIT_S) <= longest:
        return request
    # A wait of 0 means "the default" to the endpoint, so never go below 1 ms.
    shorter = msgspec.structs.replace(options, max_query_time_s=max(longest, 0.001))
    return msgspec.structs.replace(request, options=shorter)


def apply_handler(endpoints: ServerEndpoints) -> Handler:
    async def handle(payload: bytes, peer: PeerInfo) -> bytes:
        request = decode_apply_request(payload, APPLY_METHOD)
        index, result = await endpoints.write(request.command, request.token)
        return encode((index, result))

    return handle
