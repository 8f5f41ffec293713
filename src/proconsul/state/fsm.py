"""`fsm.apply(index, command)`: the one entry point that changes the state store.

On a dev agent a local log feeds it; on servers Raft does, in log order, on
every server. Apply must be deterministic: it reads nothing but the command and
the store, and a refused write is returned as an `ApplyError` value (never
raised), so every replica reaches the same result.

Commands travel as msgpack (`encode_command`); `apply_bytes` decodes and
applies one log entry, and answers an entry that does not decode with an
ApplyError on every replica alike. `snapshot`/`restore` hand the whole store
to Raft and back (see state/snapshot.py).
"""

from __future__ import annotations

import msgspec

from proconsul.state.acl_tables import ACLStateError, apply_acl
from proconsul.state.ca_tables import CAStateError
from proconsul.state.config_entry_tables import ConfigEntryStateError
from proconsul.state.prepared_query_tables import PreparedQueryStateError
from proconsul.state.session_ops import (
    create_session,
    destroy_session,
    invalidate_check,
    invalidate_node,
    kv_lock,
    kv_unlock,
)
from proconsul.state.snapshot import SnapshotError
from proconsul.state.snapshot_archive import read_archive
from proconsul.state.store import StateError, StateStore
from proconsul.state.txn import apply_txn
from proconsul.structs.catalog import HealthCheck, Node
from proconsul.structs.commands import (
    ACLCommand,
    ApplyError,
    ApplyResult,
    AutopilotSetConfigRequest,
    CAConfigSetRequest,
    CARootsSetRequest,
    Command,
    ConfigEntryRequest,
    CoordinateBatchUpdate,
    DeregisterRequest,
    KVSRequest,
    PreparedQueryRequest,
    RegisterRequest,
    SessionRequest,
    SnapshotRestoreRequest,
    TxnRequest,
)
from proconsul.structs.duration import dec_hook, enc_hook

# The hooks carry config entries' durations (structs/duration.py) as Go strings.
_command_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
_command_decoder: msgspec.msgpack.Decoder[Command] = msgspec.msgpack.Decoder(
    Command, dec_hook=dec_hook
)


def encode_command(command: Command) -> bytes:
    return _command_encoder.encode(command)


def decode_command(data: bytes) -> Command:
    """Raises msgspec.DecodeError/ValidationError for bytes that are not a Command."""
    return _command_decoder.decode(data)


class FSM:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.applied = 0  # commands applied (a counter, not an index)
        self.restores = 0

    def apply_bytes(self, index: int, data: bytes) -> ApplyResult:
        """Apply one encoded command from the log at `index`."""
        try:
            command = decode_command(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # A newer server's command type, or a writer bug: refuse it the same
            # way everywhere and leave the store alone.
            return ApplyError(f"cannot decode command at index {index}: {exc}")
        return self.apply(index, command)

    def snapshot(self) -> bytes:
        return self.store.snapshot()

    def restore(self, data: bytes) -> None:
        """Replace the store's state; raises SnapshotError (store untouched) if corrupt."""
        self.store.restore(data)
        self.restores += 1

    def apply(self, index: int, command: Command) -> ApplyResult:
        try:
            if isinstance(command, RegisterRequest):
                return self._register(index, command)
            if isinstance(command, DeregisterRequest):
                return self._deregister(index, command)
            if isinstance(command, KVSRequest):
                return self._kvs(index, command)
            if isinstance(command, ACLCommand):
                apply_acl(self.store.acl, index, command)
                return None
            if isinstance(command, CARootsSetRequest):
                self.store.ca.set_roots(index, command)
                return None
            if isinstance(command, ConfigEntryRequest):
                return self.store.config.apply(index, command)
            if isinstance(command, CAConfigSetRequest):
                self.store.ca.set_config(index, command)
                return None
            if isinstance(command, CoordinateBatchUpdate):
                self.store.coordinates.apply(index, command, self.store.nodes)
                return None
            if isinstance(command, PreparedQueryRequest):
                self.store.queries.apply(index, command, self.store.sessions.sessions)
                return None
            if isinstance(command, TxnRequest):
                return apply_txn(self.store, index, command.ops, command.now_ms)
            if isinstance(command, AutopilotSetConfigRequest):
                return self.store.set_autopilot(index, command)
            if isinstance(command, SnapshotRestoreRequest):
                return self._restore_archive(command)
            if isinstance(command, SessionRequest):
                return self._session(index, command)
            return ApplyError(f"unknown command type {type(command).__name__}")
        except (
            StateError,
            ACLStateError,
            CAStateError,
            ConfigEntryStateError,
            PreparedQueryStateError,
        ) as exc:
            return ApplyError(str(exc))
        finally:
            self.applied += 1
            self.store.finish_write(index)

    def _restore_archive(self, command: SnapshotRestoreRequest) -> ApplyResult:
        """Replace every table with the archive's; the restored rows keep their
        indexes, and `finish_write` moves the store's index on to this entry's."""
        try:
            _, state = read_archive(command.archive)
            self.store.restore(state)
        except SnapshotError as exc:
            return ApplyError(f"snapshot restore failed: {exc}")
        self.restores += 1
        return None

    def _register(self, index: int, req: RegisterRequest) -> ApplyResult:
        store = self.store
        if not req.node:
            return ApplyError("Must provide node")
        if not req.skip_node_update or req.node not in store.nodes:
            if not req.address:
                return ApplyError("Must provide address")
            store.apply_node(
                index,
                Node(
                    node=req.node,
                    address=req.address,
                    id=req.id,
                    datacenter=req.datacenter,
                    tagged_addresses=req.tagged_addresses,
                    meta=req.node_meta,
                ),
            )
        if req.service is not None:
            if not req.service.service:
                return ApplyError("Must provide service name (Service.Service)")
            if not req.service.id:
                req.service.id = req.service.service
            store.apply_service(index, req.node, req.service)
        checks: list[HealthCheck] = list(req.checks)
        if req.check is not None:
            checks.append(req.check)
        for check in checks:
            if not check.check_id:
                check.check_id = check.name
            if not check.check_id:
                return ApplyError("Must provide check name or ID")
            check.node = req.node
            store.apply_check(index, check)
            if check.status == "critical":
                # Consul invalidates the sessions of a check as it turns critical.
                invalidate_check(store, index, req.node, check.check_id, req.now_ms)
        return None

    def _deregister(self, index: int, req: DeregisterRequest) -> ApplyResult:
        if not req.node:
            return ApplyError("Must provide node")
        store = self.store
        if req.service_id:
            # The service's checks go with it, and the sessions that named them.
            for check in list(store.checks.get(req.node, {}).values()):
                if check.service_id == req.service_id:
                    invalidate_check(store, index, req.node, check.check_id, req.now_ms)
            store.delete_service(index, req.node, req.service_id)
        elif req.check_id:
            invalidate_check(store, index, req.node, req.check_id, req.now_ms)
            store.delete_check(index, req.node, req.check_id)
        else:
            invalidate_node(store, index, req.node, req.now_ms)
            store.delete_node(index, req.node)
        return None

    def _session(self, index: int, req: SessionRequest) -> ApplyResult:
        if req.op == "create":
            create_session(self.store, index, req.session)
            return None
        if req.op == "destroy":
            destroy_session(self.store, index, req.session.id, req.now_ms)
            return True
        return ApplyError(f"Invalid session operation {req.op!r}")

    def _kvs(self, index: int, req: KVSRequest) -> ApplyResult:
        store = self.store
        entry = req.dir_ent
        if req.op == "set":
            store.kv_set(index, entry)
            return True
        if req.op == "cas":
            current = store.kvs.get(entry.key)
            expected = entry.modify_index
            if (expected == 0 and current is not None) or (
                expected != 0 and (current is None or current.modify_index != expected)
            ):
                return False
            store.kv_set(index, entry)
            return True
        if req.op == "delete":
            store.kv_delete(index, entry.key)
            return True
        if req.op == "delete-cas":
            current = store.kvs.get(entry.key)
            if current is None:
                return True  # nothing to delete: Consul reports success
            if current.modify_index != entry.modify_index:
                return False
            store.kv_delete(index, entry.key)
            return True
        if req.op == "delete-tree":
            store.kv_delete_tree(index, entry.key)
            return True
        if req.op == "lock":
            return kv_lock(store, index, entry, req.now_ms)
        if req.op == "unlock":
            return kv_unlock(store, index, entry)
        return ApplyError(f"Invalid KVS operation {req.op!r}")
