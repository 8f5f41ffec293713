"""Snapshot archives: what `GET /v1/snapshot` hands out and `PUT /v1/snapshot` takes back.

Format (Consul's layout): a gzipped tar holding three files, in this order:
- `meta.json`: `{"Version", "ID", "Index", "Term", "Size"}`. `ID` is
  `<term>-<index>-<unix ms>`, `Size` the byte length of `state.bin`.
- `state.bin`: the state store's own snapshot (state/snapshot.py: every table
  as msgpack, with its own checksum).
- `SHA256SUMS`: `<hex sha256>  <name>` for meta.json and state.bin.

Rules:
- `read_archive` checks everything before it returns: gzip and tar framing,
  the three files present, every sum, the metadata and the size, and that
  state.bin decodes as a state snapshot. Any failure is a `SnapshotError`
  whose message says what failed; nothing half-read is returned, so a
  restore refuses a corrupt or truncated archive before anything changes.
- Archives are built from values only (the caller passes the time), so this
  module reads no clock.
- `table_stats` gives `snapshot inspect` its per-table record and byte counts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zlib
from typing import Any

import msgspec

from proconsul.state.snapshot import SnapshotBody, SnapshotError, decode_snapshot
from proconsul.structs.duration import enc_hook

ARCHIVE_VERSION = 1
META_NAME = "meta.json"
STATE_NAME = "state.bin"
SUMS_NAME = "SHA256SUMS"
# An archive larger than this once unpacked is refused (a gzip bomb guard).
MAX_UNPACKED_BYTES = 1 << 31


class SnapshotMeta(msgspec.Struct, rename="pascal"):
    """meta.json."""

    version: int
    id: str = msgspec.field(name="ID")
    index: int = 0
    term: int = 0
    size: int = 0


def snapshot_id(term: int, index: int, now_ms: int) -> str:
    return f"{term}-{index}-{now_ms}"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def build_archive(state: bytes, index: int, term: int, now_ms: int) -> bytes:
    """The archive for a state snapshot taken at `index` in `term`."""
    meta = SnapshotMeta(
        version=ARCHIVE_VERSION,
        id=snapshot_id(term, index, now_ms),
        index=index,
        term=term,
        size=len(state),
    )
    meta_bytes = msgspec.json.encode(meta)
    sums = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in ((META_NAME, meta_bytes), (STATE_NAME, state))
    ).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((META_NAME, meta_bytes), (STATE_NAME, state), (SUMS_NAME, sums)):
            _add(tar, name, data, now_ms // 1000)
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def _unpack(archive: bytes) -> dict[str, bytes]:
    try:
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        raw = decompressor.decompress(archive, MAX_UNPACKED_BYTES)
        if decompressor.unconsumed_tail:
            raise SnapshotError("snapshot archive is too large once unpacked")
        if not decompressor.eof:
            raise SnapshotError("snapshot archive is truncated (gzip stream ends early)")
        if decompressor.unused_data:
            raise SnapshotError("snapshot archive has trailing data after the gzip stream")
    except zlib.error as exc:
        raise SnapshotError(f"snapshot archive is not gzip data: {exc}") from None
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    raise SnapshotError(f"snapshot archive holds a non-file {member.name!r}")
                handle = tar.extractfile(member)
                if handle is None:
                    raise SnapshotError(f"snapshot archive member {member.name!r} is unreadable")
                files[member.name] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SnapshotError(f"snapshot archive is not a valid tar: {exc}") from None
    return files


def _parse_sums(text: bytes) -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in text.decode("utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 2:
            raise SnapshotError(f"bad line in {SUMS_NAME}: {line!r}")
        sums[parts[1]] = parts[0]
    return sums


def read_archive(archive: bytes) -> tuple[SnapshotMeta, bytes]:
    """The metadata and state of an intact archive; SnapshotError saying what failed."""
    files = _unpack(archive)
    for name in (META_NAME, STATE_NAME, SUMS_NAME):
        if name not in files:
            raise SnapshotError(f"snapshot archive is missing {name}")
    sums = _parse_sums(files[SUMS_NAME])
    for name in (META_NAME, STATE_NAME):
        expected = sums.get(name)
        if expected is None:
            raise SnapshotError(f"{SUMS_NAME} has no sum for {name}")
        if hashlib.sha256(files[name]).hexdigest() != expected:
            raise SnapshotError(f"SHA-256 mismatch for {name}")
    try:
        meta = msgspec.json.decode(files[META_NAME], type=SnapshotMeta)
    except (msgspec.DecodeError, ValueError) as exc:
        raise SnapshotError(f"{META_NAME} does not decode: {exc}") from None
    if meta.version != ARCHIVE_VERSION:
        raise SnapshotError(f"unsupported snapshot version {meta.version}")
    state = files[STATE_NAME]
    if meta.size != len(state):
        raise SnapshotError(f"{STATE_NAME} is {len(state)} bytes, {META_NAME} says {meta.size}")
    decode_snapshot(state)  # raises SnapshotError for a state that does not decode
    return meta, state


def _tables(body: SnapshotBody) -> list[tuple[str, list[Any]]]:
    """Each table of a state snapshot as `snapshot inspect` names it, with its rows."""
    acl, ca, entries = body.acl, body.ca, body.config_entries
    return [
        ("Node", list(body.nodes)),
        ("Service", list(body.services)),
        ("Check", list(body.checks)),
        ("KVS", list(body.kvs)),
        ("Tombstone", list(body.tombstones.items())),
        ("ACLToken", [] if acl is None else list(acl.tokens)),
        ("ACLPolicy", [] if acl is None else list(acl.policies)),
        ("ACLRole", [] if acl is None else list(acl.roles)),
        ("ConnectCA", [] if ca is None else list(ca.roots)),
        ("ConnectCAConfig", [] if ca is None or ca.config is None else [ca.config]),
        ("ConfigEntry", [] if entries is None else list(entries.entries)),
    ]


def table_stats(state: bytes) -> list[tuple[str, int, int]]:
    """(table, records, bytes) for each non-empty table of a state snapshot."""
    stats = []
    for label, rows in _tables(decode_snapshot(state)):
        if rows:
            size = sum(len(msgspec.msgpack.encode(row, enc_hook=enc_hook)) for row in rows)
            stats.append((label, len(rows), size))
    return stats
