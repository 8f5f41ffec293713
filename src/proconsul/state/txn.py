"""Applying a transaction to the state store: all operations, or none.

Two passes, both deterministic (they read nothing but the store and the ops):

1. `_check` walks the operations against an overlay, a record of what each
   key, node, service and check would be after the operations before it,
   falling back to the store for anything not yet touched. The first
   operation that would fail stops the walk; the transaction then answers
   that one error (Consul's wording, with its index) and the store is not
   touched at all.
2. Only when every operation passed does `_run` apply them to the store in
   order, collecting the results. The overlay mirrors every refusal the store
   can raise (a service on a missing node, a check naming an unknown service),
   so this pass does not fail halfway.

The writes of one transaction share one Raft index; `FSM.apply` wakes the
watchers once, after the last operation, so no reader sees part of it.
Results follow Consul: KV results carry the value only for get and get-tree;
deletes and check-not-exists add no result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from proconsul.state.session_ops import invalidate_check, invalidate_node, kv_lock, kv_unlock
from proconsul.state.store import StateStore, same_row
from proconsul.structs.catalog import HealthCheck, KVEntry, Node, NodeService
from proconsul.structs.filter_syntax import quote  # Go's %q, as Consul's texts print names
from proconsul.structs.txn import (
    TxnCheckOp,
    TxnError,
    TxnKVOp,
    TxnNodeOp,
    TxnOp,
    TxnReply,
    TxnResult,
    TxnServiceOp,
    op_problem,
)


def _service_id(service: NodeService) -> str:
    return service.id or service.service


@dataclass
class _Overlay:
    """The rows as the operations checked so far would leave them (None: gone)."""

    store: StateStore
    kvs: dict[str, KVEntry | None] = field(default_factory=dict)
    nodes: dict[str, Node | None] = field(default_factory=dict)
    services: dict[tuple[str, str], NodeService | None] = field(default_factory=dict)
    checks: dict[tuple[str, str], HealthCheck | None] = field(default_factory=dict)
    # Nodes deleted by an earlier operation: their stored services and checks are gone.
    dropped_nodes: set[str] = field(default_factory=set)

    def kv(self, key: str) -> KVEntry | None:
        if key in self.kvs:
            return self.kvs[key]
        return self.store.kvs.get(key)

    def node(self, name: str) -> Node | None:
        if name in self.nodes:
            return self.nodes[name]
        return self.store.nodes.get(name)

    def service(self, node: str, service_id: str) -> NodeService | None:
        key = (node, service_id)
        if key in self.services:
            return self.services[key]
        if node in self.dropped_nodes:
            return None
        return self.store.services.get(node, {}).get(service_id)

    def check(self, node: str, check_id: str) -> HealthCheck | None:
        key = (node, check_id)
        if key in self.checks:
            return self.checks[key]
        if node in self.dropped_nodes:
            return None
        return self.store.checks.get(node, {}).get(check_id)

    def drop_service_checks(self, node: str, service_id: str) -> None:
        if node not in self.dropped_nodes:
            for stored in self.store.checks.get(node, {}).values():
                if stored.service_id == service_id:
                    self.checks.setdefault((node, stored.check_id), stored)
        for key, row in self.checks.items():
            if key[0] == node and row is not None and row.service_id == service_id:
                self.checks[key] = None

    def drop_node(self, name: str) -> None:
        self.nodes[name] = None
        self.dropped_nodes.add(name)
        for key in self.services:
            if key[0] == name:
                self.services[key] = None
        for key in self.checks:
            if key[0] == name:
                self.checks[key] = None


def _stamped(row: msgspec.Struct, existing: msgspec.Struct | None, index: int) -> msgspec.Struct:
    """`row` with the indexes the store would give it."""
    if existing is not None and same_row(existing, row):
        return existing
    create = index if existing is None else existing.create_index  # type: ignore[attr-defined]
    return msgspec.structs.replace(row, create_index=create, modify_index=index)


def _cas_ok(existing: msgspec.Struct | None, expected: int) -> bool:
    """Consul's check-and-set: 0 means "only if absent", N "only at ModifyIndex N"."""
    if expected == 0:
        return existing is None
    return existing is not None and existing.modify_index == expected  # type: ignore[attr-defined]


def _stale(existing: msgspec.Struct | None, expected: int) -> bool:
    """A delete-cas refusal: the row exists at another index (a missing row is no refusal)."""
    return existing is not None and existing.modify_index != expected  # type: ignore[attr-defined]


def _check_kv(view: _Overlay, index: int, op: TxnKVOp, now_ms: int) -> str:
    key = op.key
    current = view.kv(key)
    verb = op.verb
    if verb == "lock":
        if view.store.sessions.get(op.session) is None:
            return f"invalid session {quote(op.session)}"
        held = current is not None and current.session not in ("", op.session)
        if held or view.store.sessions.lock_delayed(key, now_ms):
            return f"failed to lock key {quote(key)}, lock is already held"
        view.kvs[key] = KVEntry(
            key=key,
            session=op.session,
            create_index=index if current is None else current.create_index,
            modify_index=index,
        )
    elif verb == "unlock":
        if current is None or current.session != op.session:
            return (
                f"failed to unlock key {quote(key)}, lock isn't held, or is held by another session"
            )
        view.kvs[key] = msgspec.structs.replace(current, session="", modify_index=index)
    elif verb == "check-session":
        if current is None:
            return f"failed to check session, key {quote(key)} doesn't exist"
        if current.session != op.session:
            return (
                f"failed session check for key {quote(key)}, "
                f"current session {quote(current.session)} != {quote(op.session)}"
            )
    elif verb in ("set", "cas"):
        if verb == "cas" and not _cas_ok(current, op.index):
            return f"failed to set key {quote(key)}, index is stale"
        view.kvs[key] = KVEntry(
            key=key,
            create_index=index if current is None else current.create_index,
            modify_index=index,
        )
    elif verb == "get":
        if current is None:
            return f"key {quote(key)} doesn't exist"
    elif verb == "check-index":
        if current is None:
            return f"key {quote(key)} doesn't exist"
        if current.modify_index != op.index:
            return f"current modify index {current.modify_index} != {op.index}"
    elif verb == "check-not-exists":
        if current is not None:
            return f"key {quote(key)} exists"
    elif verb == "delete":
        view.kvs[key] = None
    elif verb == "delete-cas":
        if _stale(current, op.index):
            return f"failed to delete key {quote(key)}, index is stale"
        view.kvs[key] = None
    elif verb == "delete-tree":
        for stored in view.store.kv_list(key)[1]:
            view.kvs.setdefault(stored.key, stored)
        for name in view.kvs:
            if name.startswith(key):
                view.kvs[name] = None
    return ""


def _check_node(view: _Overlay, index: int, op: TxnNodeOp) -> str:
    name = op.node.node
    current = view.node(name)
    if op.verb in ("set", "cas"):
        if op.verb == "cas" and not _cas_ok(current, op.node.modify_index):
            return f"failed to set node {quote(name)}, index is stale"
        view.nodes[name] = _stamped(op.node, current, index)  # type: ignore[assignment]
    elif op.verb == "get":
        if current is None:
            return f"node {quote(name)} doesn't exist"
    elif op.verb in ("delete", "delete-cas"):
        if op.verb == "delete-cas" and _stale(current, op.node.modify_index):
            return f"failed to delete node {quote(name)}, index is stale"
        view.drop_node(name)
    return ""


def _check_service(view: _Overlay, index: int, op: TxnServiceOp) -> str:
    node, sid = op.node, _service_id(op.service)
    current = view.service(node, sid)
    if op.verb in ("set", "cas"):
        if op.verb == "cas" and not _cas_ok(current, op.service.modify_index):
            return f"failed to set service {quote(sid)} on node {quote(node)}, index is stale"
        if view.node(node) is None:
            return f"Missing node registration for {quote(node)}"
        row = msgspec.structs.replace(op.service, id=sid)
        view.services[(node, sid)] = _stamped(row, current, index)  # type: ignore[assignment]
    elif op.verb == "get":
        if current is None:
            return f"service {quote(sid)} on node {quote(node)} doesn't exist"
    elif op.verb in ("delete", "delete-cas"):
        if op.verb == "delete-cas" and _stale(current, op.service.modify_index):
            return f"failed to delete service {quote(sid)} on node {quote(node)}, index is stale"
        view.services[(node, sid)] = None
        view.drop_service_checks(node, sid)
    return ""


def _check_check(view: _Overlay, index: int, op: TxnCheckOp) -> str:
    node, cid = op.check.node, op.check.check_id
    current = view.check(node, cid)
    if op.verb in ("set", "cas"):
        if op.verb == "cas" and not _cas_ok(current, op.check.modify_index):
            return f"failed to set check {quote(cid)} on node {quote(node)}, index is stale"
        if view.node(node) is None:
            return f"Missing node registration for {quote(node)}"
        service_id = op.check.service_id
        if service_id and view.service(node, service_id) is None:
            return f"Unknown service ID {quote(service_id)} for check ID {quote(cid)}"
        view.checks[(node, cid)] = _stamped(op.check, current, index)  # type: ignore[assignment]
    elif op.verb == "get":
        if current is None:
            return f"check {quote(cid)} on node {quote(node)} doesn't exist"
    elif op.verb in ("delete", "delete-cas"):
        if op.verb == "delete-cas" and _stale(current, op.check.modify_index):
            return f"failed to delete check {quote(cid)} on node {quote(node)}, index is stale"
        view.checks[(node, cid)] = None
    return ""


def _check(store: StateStore, index: int, ops: list[TxnOp], now_ms: int) -> TxnError | None:
    """The first operation that would fail, or None when all would apply."""
    view = _Overlay(store)
    for position, op in enumerate(ops):
        problem = op_problem(op)
        if problem:
            pass
        elif isinstance(op, TxnKVOp):
            problem = _check_kv(view, index, op, now_ms)
        elif isinstance(op, TxnNodeOp):
            problem = _check_node(view, index, op)
        elif isinstance(op, TxnServiceOp):
            problem = _check_service(view, index, op)
        else:
            problem = _check_check(view, index, op)
        if problem:
            return TxnError(op_index=position, what=problem)
    return None


def _run_kv(store: StateStore, index: int, op: TxnKVOp, now_ms: int) -> list[TxnResult]:
    key, verb = op.key, op.verb
    if verb in ("lock", "unlock"):
        entry = KVEntry(key=key, value=op.value, flags=op.flags, session=op.session)
        # The check pass refused every lock or unlock that would not take.
        (kv_lock(store, index, entry, now_ms) if verb == "lock" else kv_unlock(store, index, entry))
        return [TxnResult(kv=msgspec.structs.replace(store.kvs[key], value=None))]
    if verb == "check-session":
        return [TxnResult(kv=msgspec.structs.replace(store.kvs[key], value=None))]
    if verb in ("set", "cas"):
        entry = KVEntry(key=key, value=op.value, flags=op.flags)
        store.kv_set(index, entry)
        return [TxnResult(kv=msgspec.structs.replace(entry, value=None))]
    if verb in ("get", "get-or-empty"):
        found = store.kvs.get(key)
        return [] if found is None else [TxnResult(kv=msgspec.structs.replace(found))]
    if verb == "get-tree":
        return [TxnResult(kv=msgspec.structs.replace(entry)) for entry in store.kv_list(key)[1]]
    if verb == "check-index":
        found = store.kvs[key]
        return [TxnResult(kv=msgspec.structs.replace(found, value=None))]
    if verb in ("delete", "delete-cas"):
        store.kv_delete(index, key)
    elif verb == "delete-tree":
        store.kv_delete_tree(index, key)
    return []


def _run_node(store: StateStore, index: int, op: TxnNodeOp, now_ms: int) -> list[TxnResult]:
    name = op.node.node
    if op.verb in ("set", "cas"):
        store.apply_node(index, msgspec.structs.replace(op.node))
    elif op.verb in ("delete", "delete-cas"):
        invalidate_node(store, index, name, now_ms)
        store.delete_node(index, name)
        return []
    return [TxnResult(node=msgspec.structs.replace(store.nodes[name]))]


def _run_service(store: StateStore, index: int, op: TxnServiceOp, now_ms: int) -> list[TxnResult]:
    node, sid = op.node, _service_id(op.service)
    if op.verb in ("set", "cas"):
        store.apply_service(index, node, msgspec.structs.replace(op.service, id=sid))
    elif op.verb in ("delete", "delete-cas"):
        for check in list(store.checks.get(node, {}).values()):
            if check.service_id == sid:
                invalidate_check(store, index, node, check.check_id, now_ms)
        store.delete_service(index, node, sid)
        return []
    return [TxnResult(service=msgspec.structs.replace(store.services[node][sid]))]


def _run_check(store: StateStore, index: int, op: TxnCheckOp, now_ms: int) -> list[TxnResult]:
    node, cid = op.check.node, op.check.check_id
    if op.verb in ("set", "cas"):
        store.apply_check(index, msgspec.structs.replace(op.check))
        if op.check.status == "critical":
            invalidate_check(store, index, node, cid, now_ms)
    elif op.verb in ("delete", "delete-cas"):
        invalidate_check(store, index, node, cid, now_ms)
        store.delete_check(index, node, cid)
        return []
    return [TxnResult(check=msgspec.structs.replace(store.checks[node][cid]))]


def apply_txn(store: StateStore, index: int, ops: list[TxnOp], now_ms: int = 0) -> TxnReply:
    """Apply `ops` at `index`, all or none (see the module docstring). A
    transaction of reads only leaves the store as it was, whatever `index`.
    `now_ms` is the proposing leader's clock, for lock-delay (see
    DESIGN.md, "Sessions and locks"); deleting a node or check, or setting a check
    critical, invalidates its sessions as the catalog writes do."""
    error = _check(store, index, ops, now_ms)
    if error is not None:
        return TxnReply(errors=[error])
    results: list[TxnResult] = []
    for op in ops:
        if isinstance(op, TxnKVOp):
            results.extend(_run_kv(store, index, op, now_ms))
        elif isinstance(op, TxnNodeOp):
            results.extend(_run_node(store, index, op, now_ms))
        elif isinstance(op, TxnServiceOp):
            results.extend(_run_service(store, index, op, now_ms))
        else:
            results.extend(_run_check(store, index, op, now_ms))
    return TxnReply(results=results)
