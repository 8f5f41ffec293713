"""PUT /v1/txn: several KV, node, service and check operations, all or nothing.

The body is a JSON array of objects, each with one key, `KV`, `Node`,
`Service` or `Check`, holding that operation (Consul's shapes; KV values
base64). Rules, as Consul's endpoint:
- More than MAX_TXN_OPS operations is 413 (`Transaction contains too many
  operations (N > 128)`); a KV value above `limits.kv_max_value_size` is 413.
- An operation that does not parse (not an object, no kind or two, unknown
  verb, wrong field types, missing key or name) is 400 naming its index.
- A transaction that only reads is sent as the read "Txn.Read" with the
  request's consistency mode and answered with the read's meta headers; any
  other is one write through Raft (`TxnRequest`).
- 200 with `Results` when it applied, 409 with `Errors` (`OpIndex`, `What`)
  when it was rolled back; an operation the token may not perform is such an
  error, naming it.
- The KV verbs lock, unlock and check-session need sessions, which this
  agent does not have yet: 400 saying so.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import HTTPError, bad_request, decode_body, json_response, query_options
from proconsul.structs.catalog import HealthCheck, Node, NodeService
from proconsul.structs.commands import ApplyError, TxnRequest
from proconsul.structs.duration import dec_hook
from proconsul.structs.naming import conform_keys, pascal
from proconsul.structs.requests import ReadRequest
from proconsul.structs.txn import (
    CATALOG_VERBS,
    KV_VERBS,
    MAX_TXN_OPS,
    TxnCheckOp,
    TxnKVOp,
    TxnNodeOp,
    TxnOp,
    TxnReply,
    TxnServiceOp,
    is_read_only,
    op_problem,
)

_KINDS = ("KV", "Node", "Service", "Check")


class _KVJSON(msgspec.Struct, rename=pascal, forbid_unknown_fields=False):
    verb: str
    key: str = ""
    value: bytes | None = None
    flags: int = 0
    index: int = 0
    session: str = ""
    namespace: str = ""
    partition: str = ""


class _NodeJSON(msgspec.Struct, rename=pascal):
    verb: str
    node: Node


class _ServiceJSON(msgspec.Struct, rename=pascal):
    verb: str
    node: str
    service: NodeService


class _CheckJSON(msgspec.Struct, rename=pascal):
    verb: str
    check: HealthCheck


class _TxnElement(msgspec.Struct, rename=pascal):
    """The keys of one body element, for the body decoding rule (any case):
    `parse_op` converts each operation itself, to name the one that fails."""

    kv: _KVJSON | None = None
    node: _NodeJSON | None = None
    service: _ServiceJSON | None = None
    check: _CheckJSON | None = None


def _fail(position: int, problem: str) -> HTTPError:
    return HTTPError(400, f"Failed to parse transaction operation {position}: {problem}")


def parse_op(position: int, raw: Any, max_value_size: int) -> TxnOp:
    """One element of the body as an operation; 400 (413 for a big value) naming it."""
    if not isinstance(raw, dict):
        raise _fail(position, "not an object")
    kinds = [kind for kind in _KINDS if raw.get(kind) is not None]
    if len(kinds) != 1:
        raise _fail(position, "needs exactly one of KV, Node, Service or Check")
    kind = kinds[0]
    shape = {"KV": _KVJSON, "Node": _NodeJSON, "Service": _ServiceJSON, "Check": _CheckJSON}[kind]
    try:
        parsed = msgspec.convert(raw[kind], shape, dec_hook=dec_hook)
    except (msgspec.ValidationError, ValueError) as exc:
        raise _fail(position, f"{kind}: {exc}") from None
    op: TxnOp
    if isinstance(parsed, _KVJSON):
        if parsed.verb not in KV_VERBS:
            raise _fail(position, f"unknown KV verb {parsed.verb!r}")
        size = len(parsed.value or b"")
        if size > max_value_size:
            raise HTTPError(
                413,
                f'Value for key "{parsed.key}" is too large ({size} > {max_value_size} bytes)',
            )
        op = TxnKVOp(
            verb=parsed.verb,  # type: ignore[arg-type]
            key=parsed.key,
            value=parsed.value,
            flags=parsed.flags,
            index=parsed.index,
            session=parsed.session,
        )
    else:
        if parsed.verb not in CATALOG_VERBS:
            raise _fail(position, f"unknown {kind} verb {parsed.verb!r}")
        verb: Any = parsed.verb
        if isinstance(parsed, _NodeJSON):
            op = TxnNodeOp(verb=verb, node=parsed.node)
        elif isinstance(parsed, _ServiceJSON):
            op = TxnServiceOp(verb=verb, node=parsed.node, service=parsed.service)
        else:
            op = TxnCheckOp(verb=verb, check=parsed.check)
    problem = op_problem(op)
    if problem:
        raise _fail(position, problem)
    return op


def _reply_body(reply: TxnReply) -> dict[str, Any]:
    return {"Results": reply.results or None, "Errors": reply.errors or None}


async def txn(request: web.Request) -> web.Response:
    body = conform_keys(await decode_body(request, list[Any]), list[_TxnElement])
    if len(body) > MAX_TXN_OPS:
        raise HTTPError(
            413, f"Transaction contains too many operations ({len(body)} > {MAX_TXN_OPS})"
        )
    agent = agent_of(request)
    ops = [parse_op(i, raw, agent.kv_max_value_size) for i, raw in enumerate(body)]
    token = caller_token(request)
    if ops and is_read_only(ops):
        options = query_options(request, token)
        response = await agent.rpc_read("Txn.Read", ReadRequest(txn_ops=ops, options=options))
        reply: TxnReply = response.value
        status = 409 if reply.errors else 200
        return json_response(request, _reply_body(reply), response.meta, status=status)
    _, result = await agent.rpc_write(TxnRequest(ops=ops), token)
    if isinstance(result, ApplyError):
        raise HTTPError(500, result.message)
    if not isinstance(result, TxnReply):
        bad_request("transaction was not applied")
    return json_response(request, _reply_body(result), status=409 if result.errors else 200)


def add_routes(app: web.Application) -> None:
    app.router.add_put("/v1/txn", txn)
