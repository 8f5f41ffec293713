"""Transactions on the server: checks before the log, and read-only ones served as reads.

Rules (Consul's Txn endpoint):
- A transaction of more than MAX_TXN_OPS operations, or with a malformed
  operation, is refused before anything else (`BAD_QUERY`, HTTP 400, naming
  the operation's index).
- ACLs are checked per operation before the log: each refused operation
  becomes a `TxnError` naming its index with the Permission denied text, and
  the transaction is answered (HTTP 409) without entering the log. The
  server that applies it checks again (`first_denial`), since a forwarded
  command may meet a token whose rights changed on the way.
- Per operation: KV reads (get, get-or-empty, check-index, check-not-exists)
  need key:read, get-tree lists its prefix (filtered by key:read, refused
  only under `enable_key_list_policy` without key:list); KV writes need
  key:write, delete-tree write on the whole prefix. Node get needs node:read,
  other node verbs node:write. Service get needs service:read, others
  service:write on the service's name (for a delete by ID, the stored
  instance's name). Check get needs node:read (and service:read when it
  belongs to a service); other check verbs node:write, or service:write for a
  service's check, as Consul's vetting does.
- A read-only transaction ("Txn.Read") runs against the local store like any
  read (consistency modes apply, no blocking); one that writes is refused
  there, since a read never changes the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from proconsul.acl.resolved import ResolvedToken
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.state.store import StateStore
from proconsul.state.txn import apply_txn
from proconsul.structs.requests import ReadRequest
from proconsul.structs.txn import (
    MAX_TXN_OPS,
    TxnCheckOp,
    TxnError,
    TxnKVOp,
    TxnNodeOp,
    TxnOp,
    TxnReply,
    TxnServiceOp,
    is_read_only,
    op_problem,
)

TXN_READ = "Txn.Read"
TXN_WATCH_KEYS = ("kvs", "nodes", "services", "checks")


def check_ops(ops: Sequence[TxnOp]) -> None:
    """Refuse a transaction that may not enter the log at all (HTTP 400)."""
    if len(ops) > MAX_TXN_OPS:
        raise RPCError(
            f"Transaction contains too many operations ({len(ops)} > {MAX_TXN_OPS})",
            ErrorCode.BAD_QUERY,
        )
    for position, op in enumerate(ops):
        problem = op_problem(op)
        if problem:
            raise RPCError(f"Operation {position}: {problem}", ErrorCode.BAD_QUERY)


def _kv_denial(resolved: ResolvedToken, op: TxnKVOp) -> Exception | None:
    authz = resolved.authorizer
    if op.verb == "get-tree":
        if authz.enable_key_list_policy and not authz.key_list(op.key):
            return resolved.deny("key", "list", op.key)
        return None
    if op.verb in ("get", "get-or-empty", "check-index", "check-not-exists", "check-session"):
        return None if authz.key_read(op.key) else resolved.deny("key", "read", op.key)
    if op.verb == "delete-tree":
        if authz.key_write_prefix(op.key):
            return None
        return resolved.deny("key", "write", op.key, recursive=True)
    return None if authz.key_write(op.key) else resolved.deny("key", "write", op.key)


def _denial(store: StateStore, resolved: ResolvedToken, op: TxnOp) -> Exception | None:
    authz = resolved.authorizer
    if isinstance(op, TxnKVOp):
        return _kv_denial(resolved, op)
    if isinstance(op, TxnNodeOp):
        name = op.node.node
        if op.verb == "get":
            return None if authz.node_read(name) else resolved.deny("node", "read", name)
        return None if authz.node_write(name) else resolved.deny("node", "write", name)
    if isinstance(op, TxnServiceOp):
        service = op.service.service
        if not service:
            stored = store.services.get(op.node, {}).get(op.service.id)
            service = "" if stored is None else stored.service
        if op.verb == "get":
            if authz.service_read(service):
                return None
            return resolved.deny("service", "read", service)
        if authz.service_write(service):
            return None
        return resolved.deny("service", "write", service)
    return _check_denial(store, resolved, op)


def _check_denial(store: StateStore, resolved: ResolvedToken, op: TxnCheckOp) -> Exception | None:
    authz = resolved.authorizer
    check = op.check
    service = check.service_name
    if check.service_id and not service:
        stored = store.services.get(check.node, {}).get(check.service_id)
        service = "" if stored is None else stored.service
    if op.verb == "get":
        if not authz.node_read(check.node):
            return resolved.deny("node", "read", check.node)
        if service and not authz.service_read(service):
            return resolved.deny("service", "read", service)
        return None
    if service:
        return None if authz.service_write(service) else resolved.deny("service", "write", service)
    return None if authz.node_write(check.node) else resolved.deny("node", "write", check.node)


def acl_errors(store: StateStore, resolved: ResolvedToken, ops: Sequence[TxnOp]) -> list[TxnError]:
    """One `TxnError` per operation the token may not perform."""
    errors = []
    for position, op in enumerate(ops):
        denied = _denial(store, resolved, op)
        if denied is not None:
            errors.append(TxnError(op_index=position, what=str(denied)))
    return errors


def first_denial(store: StateStore, resolved: ResolvedToken, ops: Sequence[TxnOp]) -> None:
    """Raise the refusal of the first operation the token may not perform."""
    for op in ops:
        denied = _denial(store, resolved, op)
        if denied is not None:
            raise denied


def filter_reply(resolved: ResolvedToken, reply: TxnReply) -> tuple[TxnReply, bool]:
    """A read transaction's results without the KV rows the token may not read
    (get-tree lists a prefix; Consul filters it the same way)."""
    authz = resolved.authorizer
    kept = [r for r in reply.results if r.kv is None or authz.key_read(r.kv.key)]
    if len(kept) == len(reply.results):
        return reply, False
    return TxnReply(results=kept, errors=reply.errors), True


def txn_read(store: StateStore) -> Callable[[ReadRequest], tuple[Sequence[str], Callable[[], Any]]]:
    """The "Txn.Read" endpoint: a read-only transaction against the local store."""

    def read(request: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        ops = request.txn_ops
        check_ops(ops)
        if not is_read_only(ops):
            raise RPCError("Txn.Read takes read operations only", ErrorCode.BAD_QUERY)

        def run() -> tuple[int, TxnReply]:
            index = max(store.index(key) for key in TXN_WATCH_KEYS)
            return index, apply_txn(store, store.last_index, ops)

        return TXN_WATCH_KEYS, run

    return read
