"""State store snapshots: every table as msgpack, sealed with a SHA-256 checksum.

Job: turn the store's tables into bytes that Raft keeps as a snapshot (and
ships to a follower that fell behind), and turn such bytes back into tables,
refusing anything that is not exactly what was written.

Format: a msgpack array `[magic, version, body, sha256(body)]`; `body` is the
msgpack of `SnapshotBody`. The rows are the catalog structs themselves, so a
field added to a row (with a default) travels without a format change.

Rules:
- Rows keep the order the store holds them in: the order they were applied,
  which is the same on every replica. So servers at the same index produce the
  same bytes, and a restored store iterates (a node's checks, tombstone
  eviction) exactly like the original.
- Derived tables (service instances by name, the sorted KV key list) are not
  stored; the store rebuilds them on restore.
- A wrong magic, an unknown version, a checksum mismatch or a body that does
  not decode is a `SnapshotError`; nothing half-decoded is ever returned.
- APPEND-ONLY: new `SnapshotBody` fields go at the end with a default; a
  change that older servers cannot read bumps `VERSION`.
"""

from __future__ import annotations

import hashlib

import msgspec

from proconsul.state.acl_tables import ACLSnapshot
from proconsul.state.ca_tables import CASnapshot
from proconsul.state.config_entry_tables import ConfigEntrySnapshot
from proconsul.state.coordinate_tables import CoordinateSnapshot
from proconsul.state.prepared_query_tables import PreparedQuerySnapshot
from proconsul.state.session_tables import SessionSnapshot
from proconsul.structs.autopilot import AutopilotSettings
from proconsul.structs.catalog import HealthCheck, KVEntry, Node, NodeService
from proconsul.structs.duration import dec_hook, enc_hook

MAGIC = b"PCSS"  # Proconsul state snapshot
VERSION = 1


class SnapshotError(ValueError):
    """Bytes that are not an intact state store snapshot."""


class ServiceRow(msgspec.Struct, array_like=True):
    node: str
    service: NodeService


class SnapshotBody(msgspec.Struct, array_like=True):
    """Every table of the store, plus its index bookkeeping."""

    last_index: int
    indexes: dict[str, int]
    nodes: list[Node]
    services: list[ServiceRow]
    checks: list[HealthCheck]  # each row names its node
    kvs: list[KVEntry]
    tombstones: dict[str, int]
    tombstone_floor: int
    acl: ACLSnapshot | None = None  # ACL tables (acl_tables.py)
    ca: CASnapshot | None = None  # Connect CA tables (ca_tables.py); None restores empty
    # Config entries (config_entry_tables.py); None restores empty.
    config_entries: ConfigEntrySnapshot | None = None
    # Prepared queries (prepared_query_tables.py); None restores empty.
    prepared_queries: PreparedQuerySnapshot | None = None
    # Network coordinates (coordinate_tables.py); None restores empty.
    coordinates: CoordinateSnapshot | None = None
    # The autopilot configuration set through the API; None: the servers' files.
    autopilot: AutopilotSettings | None = None
    # Sessions and lock-delays (session_tables.py); None restores empty.
    sessions: SessionSnapshot | None = None


class _Envelope(msgspec.Struct, array_like=True):
    magic: bytes
    version: int
    body: bytes
    sha256: bytes


# What msgspec may raise on hostile bytes: DecodeError (ValidationError is one),
# UnicodeDecodeError (a ValueError) for a str that is not UTF-8, RecursionError
# for nesting past the recursion limit. The checksum does not rule these out:
# whoever sends a snapshot can checksum any body.
_DECODE_ERRORS = (msgspec.DecodeError, ValueError, TypeError, RecursionError, OverflowError)

# The hooks carry config entries' durations (structs/duration.py) as Go strings.
_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)
_body_decoder = msgspec.msgpack.Decoder(SnapshotBody, dec_hook=dec_hook)


def encode_snapshot(body: SnapshotBody) -> bytes:
    raw = _encoder.encode(body)
    return _encoder.encode(_Envelope(MAGIC, VERSION, raw, hashlib.sha256(raw).digest()))


def decode_snapshot(data: bytes) -> SnapshotBody:
    """Verify and decode; SnapshotError if the bytes are not an intact snapshot."""
    try:
        envelope = _envelope_decoder.decode(data)
    except _DECODE_ERRORS as exc:
        raise SnapshotError(f"state snapshot is unreadable: {exc}") from None
    if envelope.magic != MAGIC:
        raise SnapshotError("not a state snapshot (bad magic)")
    if envelope.version != VERSION:
        raise SnapshotError(f"unknown state snapshot version {envelope.version}")
    if hashlib.sha256(envelope.body).digest() != envelope.sha256:
        raise SnapshotError("state snapshot checksum mismatch")
    try:
        return _body_decoder.decode(envelope.body)
    except _DECODE_ERRORS as exc:
        # The checksum matched: a writer bug, a version skew, or a hostile sender.
        raise SnapshotError(f"state snapshot body does not decode: {exc}") from None
