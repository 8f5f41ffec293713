"""Typed commands for `fsm.apply(index, command)`: the only way the state store changes,
and what applying one answers (`ApplyResult`).

Commands travel in the Raft log as msgpack, so this list is append-only: never
reuse or renumber a tag, never remove a field (add new ones with defaults).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from proconsul.structs.acl import ACLPolicy, ACLRole, ACLToken
from proconsul.structs.autopilot import AutopilotSettings
from proconsul.structs.catalog import HealthCheck, KVEntry, NodeService
from proconsul.structs.config_entries import ConfigEntry
from proconsul.structs.connect import CAConfiguration, CARoot
from proconsul.structs.coordinate import CoordinateEntry
from proconsul.structs.naming import pascal
from proconsul.structs.prepared_query import PreparedQuery
from proconsul.structs.session import Session
from proconsul.structs.txn import TxnOp, TxnReply


class RegisterRequest(msgspec.Struct, tag=1, tag_field="Type", rename=pascal):
    """Catalog register: a node plus optionally one service and its checks."""

    node: str
    address: str = ""
    id: str = ""
    datacenter: str = ""
    tagged_addresses: dict[str, str] = {}
    node_meta: dict[str, str] = {}
    service: NodeService | None = None
    check: HealthCheck | None = None
    checks: list[HealthCheck] = []
    skip_node_update: bool = False
    # The leader's wall clock in ms when it proposed this (see `stamp_leader_time`).
    now_ms: int = 0


class DeregisterRequest(msgspec.Struct, tag=2, tag_field="Type", rename=pascal):
    """Catalog deregister: the whole node, or one service, or one check."""

    node: str
    datacenter: str = ""
    service_id: str = ""
    check_id: str = ""
    now_ms: int = 0  # the leader's clock (see `stamp_leader_time`)


KVOp = Literal["set", "cas", "delete", "delete-cas", "delete-tree", "lock", "unlock"]


class KVSRequest(msgspec.Struct, tag=3, tag_field="Type", rename=pascal):
    """A KV write. For `cas`/`delete-cas` the entry's modify_index is the expected one;
    for `lock`/`unlock` (`?acquire=`/`?release=`) the entry's `session` is the
    session that takes or gives back the lock."""

    op: KVOp
    dir_ent: KVEntry
    datacenter: str = ""
    now_ms: int = 0  # the leader's clock: a lock compares it with the key's lock-delay


# ----- ACL commands (tags 4-10). IDs, secrets and times are chosen by the
# endpoint before the command enters the log, so apply stays deterministic.


class ACLBootstrapRequest(msgspec.Struct, tag=4, tag_field="Type", rename=pascal):
    """Create the bootstrap token; `reset_index` is the index from the reset file (0: none)."""

    token: ACLToken
    reset_index: int = 0


class ACLTokenSetRequest(msgspec.Struct, tag=5, tag_field="Type", rename=pascal):
    token: ACLToken


class ACLTokenDeleteRequest(msgspec.Struct, tag=6, tag_field="Type", rename=pascal):
    accessor_id: str


class ACLPolicySetRequest(msgspec.Struct, tag=7, tag_field="Type", rename=pascal):
    policy: ACLPolicy


class ACLPolicyDeleteRequest(msgspec.Struct, tag=8, tag_field="Type", rename=pascal):
    policy_id: str


class ACLRoleSetRequest(msgspec.Struct, tag=9, tag_field="Type", rename=pascal):
    role: ACLRole


class ACLRoleDeleteRequest(msgspec.Struct, tag=10, tag_field="Type", rename=pascal):
    role_id: str


ACLCommand = (
    ACLBootstrapRequest
    | ACLTokenSetRequest
    | ACLTokenDeleteRequest
    | ACLPolicySetRequest
    | ACLPolicyDeleteRequest
    | ACLRoleSetRequest
    | ACLRoleDeleteRequest
)

# ----- Connect CA (tags 11 and 13). The leader generates the root, its key and the
# cluster ID before the command enters the log, so apply stays deterministic.


class CARootsSetRequest(msgspec.Struct, tag=11, tag_field="Type", rename=pascal):
    """Replace the CA roots (check-and-set on `cas_index`, the roots' index the
    writer saw; 0: only while there are none). `signing_keys` maps root ID to
    its private key PEM (the built-in provider's state): never log this command."""

    roots: list[CARoot]
    cluster_id: str
    signing_keys: dict[str, str] = {}
    cas_index: int = 0

    def __repr__(self) -> str:  # keep the keys out of any log line
        ids = [root.id for root in self.roots]
        return (
            f"CARootsSetRequest(roots={ids!r}, cluster_id={self.cluster_id!r}, "
            f"signing_keys=<{len(self.signing_keys)} redacted>, cas_index={self.cas_index})"
        )


# ----- Config entries (tag 12; tag 13 is taken by the intentions' own command).

ConfigEntryOp = Literal["upsert", "upsert-cas", "delete", "delete-cas"]


class ConfigEntryRequest(msgspec.Struct, tag=12, tag_field="Type", rename=pascal):
    """Write or delete one config entry, keyed by (Kind, Name). The entry was
    normalized and validated before it entered the log. For the CAS ops
    `cas_index` is the ModifyIndex the writer saw (0 on `upsert-cas`: only if
    absent). Applying answers true, or for a CAS op whether it happened."""

    op: ConfigEntryOp
    entry: ConfigEntry
    cas_index: int = 0
    datacenter: str = ""
    # Written by the intentions API (/v1/connect/intentions): its sources may
    # carry the Legacy* fields (ID, Meta, times), which a config write must omit.
    intentions_api: bool = False


# Tag 12 is taken by another command (config entries); do not reuse it.


class CAConfigSetRequest(msgspec.Struct, tag=13, tag_field="Type", rename=pascal):
    """Set the CA configuration, and with it (a rotation, or the first
    initialization) the roots, atomically, as Consul's set-roots-config does.
    `config_cas_index` is the configuration's index the writer saw (0: none
    yet); when `roots` is given, `cas_index` is the roots' index it saw.
    `signing_keys` as in CARootsSetRequest: never log this command."""

    config: CAConfiguration
    config_cas_index: int = 0
    roots: list[CARoot] | None = None
    cluster_id: str = ""
    signing_keys: dict[str, str] = {}
    cas_index: int = 0

    def __repr__(self) -> str:  # keep the keys out of any log line
        ids = None if self.roots is None else [root.id for root in self.roots]
        return (
            f"CAConfigSetRequest(config={self.config!r}, roots={ids!r}, "
            f"signing_keys=<{len(self.signing_keys)} redacted>)"
        )


# ----- Prepared queries (tag 20; 14-19 belong to sessions, transactions and operator).

PreparedQueryOp = Literal["create", "update", "delete"]


class PreparedQueryRequest(msgspec.Struct, tag=20, tag_field="Type", rename=pascal):
    """Create, update or delete one prepared query (by `query.id`, chosen before
    the log). The query was validated before it entered the log. `owner` is the
    AccessorID of the token that created it (set by the server that took the
    write, never by the caller): an unnamed query is changed only by its owner
    or a management token."""

    op: PreparedQueryOp
    query: PreparedQuery
    owner: str = ""


class CoordinateBatchUpdate(msgspec.Struct, tag=21, tag_field="Type", rename=pascal):
    """Network coordinates of nodes, batched by a server (Consul's Coordinate.Update
    batches). Entries for nodes the catalog does not hold are skipped."""

    updates: list[CoordinateEntry]


# ----- Transactions (tag 16; tags 14-15 belong to sessions, 17-19 to the
# operator and snapshot commands).


class TxnRequest(msgspec.Struct, tag=16, tag_field="Type", rename=pascal):
    """Up to MAX_TXN_OPS operations applied all or nothing (state/txn.py).
    Applying answers a `TxnReply`: results, or the errors that rolled it back."""

    ops: list[TxnOp]
    datacenter: str = ""
    now_ms: int = 0  # the leader's clock: lock-delay of the lock verbs


class AutopilotSetConfigRequest(msgspec.Struct, tag=17, tag_field="Type", rename=pascal):
    """Replace the autopilot configuration (`PUT /v1/operator/autopilot/configuration`).
    With `cas`, only when its ModifyIndex is `cas_index` (0: none stored yet).
    Applying answers whether it was written."""

    config: AutopilotSettings
    cas: bool = False
    cas_index: int = 0


class SnapshotRestoreRequest(msgspec.Struct, tag=18, tag_field="Type", rename=pascal):
    """Replace the whole state with a snapshot archive's (`PUT /v1/snapshot`).
    The archive (state/snapshot_archive.py) was verified before it entered the
    log, and applying verifies it again: a bad one is an ApplyError on every
    server and changes nothing. Never log this command: it holds ACL secrets."""

    archive: bytes

    def __repr__(self) -> str:
        return f"SnapshotRestoreRequest(<{len(self.archive)} bytes>)"


# ----- Sessions (tag 14; tag 15 is reserved for them too). The endpoint picks
# the session ID before the log; the leader stamps `now_ms`.

SessionOp = Literal["create", "destroy"]


class SessionRequest(msgspec.Struct, tag=14, tag_field="Type", rename=pascal):
    """Create a session (validated, its ID chosen) or destroy one by `session.id`
    (the client's destroy, or the leader's when a TTL ran out). Destroying
    releases or deletes its locks and starts their lock-delay at `now_ms`."""

    op: SessionOp
    session: Session
    datacenter: str = ""
    now_ms: int = 0


Command = (
    RegisterRequest
    | DeregisterRequest
    | KVSRequest
    | ACLCommand
    | CARootsSetRequest
    | ConfigEntryRequest
    | CAConfigSetRequest
    | PreparedQueryRequest
    | CoordinateBatchUpdate
    | TxnRequest
    | AutopilotSetConfigRequest
    | SnapshotRestoreRequest
    | SessionRequest
)

# The commands whose effect depends on time: the leader writes its wall clock
# into them as it proposes them, so every replica applies the same value.
_CLOCKED = (RegisterRequest, DeregisterRequest, KVSRequest, SessionRequest, TxnRequest)


def stamp_leader_time(command: Command, now_ms: int) -> Command:
    """`command` with the proposing leader's clock (ms since the epoch) in
    `now_ms`, for the commands that carry one (see DESIGN.md, "Sessions and locks")."""
    if isinstance(command, _CLOCKED) and command.now_ms == 0:
        return msgspec.structs.replace(command, now_ms=now_ms)
    return command


class ApplyError(msgspec.Struct, frozen=True):
    """A command the state machine refused; `message` is Consul's wording."""

    message: str


# What `fsm.apply` answers: KV writes true/false (a failed check-and-set is
# false), a transaction its `TxnReply`, other commands nil, a refused command
# an `ApplyError` (never raised, so every replica reaches the same result).
# Travels back to RPC callers as is.
ApplyResult = bool | None | ApplyError | TxnReply
