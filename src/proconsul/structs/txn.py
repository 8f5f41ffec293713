"""Transactions (`PUT /v1/txn`): the operations one transaction carries and
what applying it answers.

A transaction is one `TxnRequest` command (structs/commands.py) holding up to
`MAX_TXN_OPS` operations of four kinds: KV, Node, Service and Check, each with
Consul's verbs. Applied as one Raft entry, all or nothing (state/txn.py).

Wire rules: the operations travel in the log as msgpack, tagged on `Op`
(append-only: never reuse or renumber a tag). `TxnReply` is array-like so it
can sit in `ApplyResult` beside `ApplyError` (a map) in one msgspec union.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from proconsul.structs.catalog import HealthCheck, KVEntry, Node, NodeService
from proconsul.structs.naming import pascal

MAX_TXN_OPS = 128  # Consul's limit on operations in one transaction

KVVerb = Literal[
    "set",
    "cas",
    "lock",
    "unlock",
    "get",
    "get-or-empty",
    "get-tree",
    "check-index",
    "check-session",
    "check-not-exists",
    "delete",
    "delete-tree",
    "delete-cas",
]
KV_VERBS: tuple[str, ...] = KVVerb.__args__  # type: ignore[attr-defined]
# Verbs that need sessions (not in this state store yet).
KV_SESSION_VERBS = frozenset({"lock", "unlock", "check-session"})
KV_READ_VERBS = frozenset(
    {"get", "get-or-empty", "get-tree", "check-index", "check-not-exists", "check-session"}
)

CatalogVerb = Literal["set", "cas", "get", "delete", "delete-cas"]
CATALOG_VERBS: tuple[str, ...] = CatalogVerb.__args__  # type: ignore[attr-defined]


class TxnKVOp(msgspec.Struct, tag=1, tag_field="Op", rename=pascal):
    """A KV operation: `index` is the expected ModifyIndex for cas,
    check-index and delete-cas."""

    verb: KVVerb
    key: str
    value: bytes | None = None
    flags: int = 0
    index: int = 0
    session: str = ""


class TxnNodeOp(msgspec.Struct, tag=2, tag_field="Op", rename=pascal):
    verb: CatalogVerb
    node: Node


class TxnServiceOp(msgspec.Struct, tag=3, tag_field="Op", rename=pascal):
    verb: CatalogVerb
    node: str
    service: NodeService


class TxnCheckOp(msgspec.Struct, tag=4, tag_field="Op", rename=pascal):
    verb: CatalogVerb
    check: HealthCheck


TxnOp = TxnKVOp | TxnNodeOp | TxnServiceOp | TxnCheckOp


def is_read_only(ops: list[TxnOp]) -> bool:
    """True when no operation writes: Consul serves such a transaction as a read."""
    for op in ops:
        if isinstance(op, TxnKVOp):
            if op.verb not in KV_READ_VERBS:
                return False
        elif op.verb != "get":
            return False
    return True


def op_problem(op: TxnOp) -> str:
    """What makes `op` malformed ("" when nothing): checked before a
    transaction enters the log, and again where it is applied."""
    if isinstance(op, TxnKVOp):
        if not op.key and op.verb not in ("get-tree", "delete-tree"):
            return "KV operation needs a Key"
        if op.verb in KV_SESSION_VERBS and not op.session:
            return f"KV {op.verb} operation needs a Session"
        return ""
    if isinstance(op, TxnNodeOp):
        return "" if op.node.node else "Node operation needs Node.Node"
    if isinstance(op, TxnServiceOp):
        if not op.node:
            return "Service operation needs a Node"
        if op.verb in ("set", "cas") and not op.service.service:
            return "Must provide service name (Service.Service)"
        if not (op.service.id or op.service.service):
            return "Service operation needs Service.ID"
        return ""
    if not op.check.node:
        return "Check operation needs Check.Node"
    if not op.check.check_id:
        return "Check operation needs Check.CheckID"
    return ""


class TxnResult(msgspec.Struct, rename=pascal, omit_defaults=True):
    """One entry of `Results`: exactly one field is set."""

    kv: KVEntry | None = None
    node: Node | None = None
    service: NodeService | None = None
    check: HealthCheck | None = None


class TxnError(msgspec.Struct, rename=pascal):
    """Why operation `op_index` (0-based) failed; the transaction was rolled back."""

    op_index: int
    what: str


class TxnReply(msgspec.Struct, array_like=True):
    """A transaction's answer: results when it applied, errors when it did not."""

    results: list[TxnResult] = []
    errors: list[TxnError] = []
