"""Durable Raft storage: the log and stable store in SQLite, snapshots as checked files.

Job: implement `RaftStorage` under `data_dir/raft/`:
- `raft.db` (SQLite, WAL journal, `synchronous=FULL`): table `log` (index,
  term, type, data, crc32) and table `stable` (hard state — term, vote,
  commit — and the latest configuration, each with a crc32);
- `snapshots/<index>-<term>.snap`: msgpack {version, meta, data, sha256},
  written atomically and privately (they hold the whole state store), the
  newest `retain` kept;
- `peers.json`: outage recovery, read at start, applied, then removed.

Rules:
- A method returns only when its writes are durable (SQLite commit with
  FULL sync; snapshot files through fileio.write_private_file, which fsyncs the
  file and the directory).
- `save` is one transaction: truncation, entries and hard state together.
- Every stored entry is checked on load. A bad checksum, an unknown type or a
  gap raises CorruptLogError naming the index; it is never handed to Raft.
  `repair_tail=True` instead drops a corrupt tail that lies wholly above the
  stored commit index (logged with the index), never a committed entry.
- A corrupt snapshot file is skipped with a warning; the next older one is
  used, and if the log no longer reaches back to it, loading fails loudly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from proconsul.fileio import write_private_file
from proconsul.raft.messages import (
    Configuration,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMeta,
    decode_configuration,
)
from proconsul.raft.ready import PersistentState
from proconsul.raft.storage_api import (
    CorruptLogError,
    RebuildFn,
    StorageError,
    check_contiguous,
    parse_peers_json,
    recover_cluster,
)

log = logging.getLogger("proconsul.raft")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    idx INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    type INTEGER NOT NULL,
    data BLOB NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stable (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    crc INTEGER NOT NULL
);
"""

_SNAPSHOT_VERSION = 1


class _SnapshotFile(msgspec.Struct, array_like=True):
    version: int
    meta: bytes
    data: bytes
    sha256: bytes


class _ConfigRecord(msgspec.Struct, array_like=True):
    index: int
    configuration: Configuration


_encoder = msgspec.msgpack.Encoder()
_hard_decoder = msgspec.msgpack.Decoder(HardState)
_config_decoder = msgspec.msgpack.Decoder(_ConfigRecord)
_file_decoder = msgspec.msgpack.Decoder(_SnapshotFile)
_meta_decoder = msgspec.msgpack.Decoder(SnapshotMeta)


def entry_crc(index: int, term: int, kind: int, data: bytes) -> int:
    # The header is covered too, so a row moved to another index fails.
    return zlib.crc32(data, zlib.crc32(struct.pack(">QQB", index, term, kind)))


def _snapshot_digest(meta: bytes, data: bytes) -> bytes:
    return hashlib.sha256(struct.pack(">Q", len(meta)) + meta + data).digest()


def encode_snapshot_file(snapshot: Snapshot) -> bytes:
    meta = _encoder.encode(snapshot.meta)
    return _encoder.encode(
        _SnapshotFile(_SNAPSHOT_VERSION, meta, snapshot.data, _snapshot_digest(meta, snapshot.data))
    )


def decode_snapshot_file(raw: bytes) -> Snapshot:
    """Parse and verify a snapshot file; StorageError if it is not intact."""
    try:
        file = _file_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"unreadable snapshot: {exc}") from None
    if file.version != _SNAPSHOT_VERSION:
        raise StorageError(f"unknown snapshot version {file.version}")
    if _snapshot_digest(file.meta, file.data) != file.sha256:
        raise StorageError("snapshot checksum mismatch")
    try:
        meta = _meta_decoder.decode(file.meta)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"unreadable snapshot metadata: {exc}") from None
    return Snapshot(meta, file.data)


class SQLiteStorage:
    """RaftStorage in `raft_dir` (normally data_dir/raft)."""

    def __init__(
        self, raft_dir: str | os.PathLike[str], *, retain: int = 2, repair_tail: bool = False
    ) -> None:
        self.dir = Path(raft_dir)
        self.snapshot_dir = self.dir / "snapshots"
        self.snapshot_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.retain = max(1, retain)
        self.repair_tail = repair_tail
        self.counters: dict[str, int] = {"transactions": 0, "entries_written": 0}
        db_path = self.dir / "raft.db"
        if not db_path.exists():
            # Create it private first; SQLite gives its WAL files the same mode.
            os.close(os.open(db_path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"could not put {db_path.name} in WAL mode (got {mode})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._snapshot: Snapshot | None = None
        self._config: tuple[int, Configuration] | None = None

    # ----- plumbing --------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        self.counters["transactions"] += 1

    def _put_stable(self, cur: sqlite3.Cursor, key: str, value: bytes) -> None:
        cur.execute(
            "INSERT OR REPLACE INTO stable (key, value, crc) VALUES (?, ?, ?)",
            (key, value, zlib.crc32(value)),
        )

    def _get_stable(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value, crc FROM stable WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value, crc = bytes(row[0]), row[1]
        if zlib.crc32(value) != crc:
            raise StorageError(f"raft stable store: checksum mismatch for {key!r}")
        return value

    # ----- RaftStorage -----------------------------------------------------------------

    def load(self) -> PersistentState:
        raw = self._get_stable("hard_state")
        hard = _hard_decoder.decode(raw) if raw is not None else HardState()
        snapshot = self._load_snapshot()
        self._snapshot = snapshot
        entries = self._load_entries(hard.commit)
        if snapshot is not None and entries and entries[0].index > snapshot.meta.index + 1:
            raise StorageError(
                f"raft log starts at index {entries[0].index} but the newest readable "
                f"snapshot ends at {snapshot.meta.index}; entries in between are lost"
            )
        if snapshot is None and entries and entries[0].index != 1:
            raise StorageError(
                f"raft log starts at index {entries[0].index} and no snapshot covers the rest"
            )
        return PersistentState(hard, snapshot, tuple(entries))

    def _load_entries(self, commit: int) -> list[Entry]:
        entries: list[Entry] = []
        # fetchall: a repair below writes, which must not overlap an open read.
        rows = self._db.execute(
            "SELECT idx, term, type, data, crc FROM log ORDER BY idx"
        ).fetchall()
        for index, term, kind, data, crc in rows:
            data = bytes(data)
            problem = None
            if entry_crc(index, term, kind, data) != crc:
                problem = "checksum mismatch"
            elif kind not in EntryType._value2member_map_:
                problem = f"unknown entry type {kind}"
            elif entries and index != entries[-1].index + 1:
                problem = f"gap after index {entries[-1].index}"
            if problem is not None:
                self._corrupt(index, problem, commit)
                break
            entries.append(Entry(index, term, EntryType(kind), data))
        return entries

    def _corrupt(self, index: int, problem: str, commit: int) -> None:
        if not self.repair_tail or index <= commit:
            raise CorruptLogError(index, problem)
        log.warning(
            "raft: dropping corrupt log tail from index %d (%s); it was never committed",
            index,
            problem,
        )
        with self._tx() as cur:
            cur.execute("DELETE FROM log WHERE idx >= ?", (index,))

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        check_contiguous(entries)
        with self._tx() as cur:
            if entries:
                first = entries[0].index
                cur.execute("DELETE FROM log WHERE idx >= ?", (first,))
                cur.executemany(
                    "INSERT INTO log (idx, term, type, data, crc) VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            e.index,
                            e.term,
                            int(e.type),
                            e.data,
                            entry_crc(e.index, e.term, int(e.type), e.data),
                        )
                        for e in entries
                    ],
                )
                configs = [e for e in entries if e.type is EntryType.CONFIGURATION]
                current = self.configuration()
                if configs:
                    last = configs[-1]
                    self._put_config(cur, last.index, decode_configuration(last.data))
                elif current[0] >= first:
                    self._put_config(cur, *self._config_from_log(cur))
            if hard_state is not None:
                self._put_stable(cur, "hard_state", _encoder.encode(hard_state))
        self.counters["entries_written"] += len(entries)

    def _config_from_log(self, cur: sqlite3.Cursor) -> tuple[int, Configuration]:
        row = cur.execute(
            "SELECT idx, data FROM log WHERE type = ? ORDER BY idx DESC LIMIT 1",
            (int(EntryType.CONFIGURATION),),
        ).fetchone()
        if row is not None:
            return int(row[0]), decode_configuration(bytes(row[1]))
        snap = self._snapshot if self._snapshot is not None else self._load_snapshot()
        if snap is not None:
            return snap.meta.configuration_index, snap.meta.configuration
        return 0, Configuration()

    def _put_config(self, cur: sqlite3.Cursor, index: int, config: Configuration) -> None:
        self._put_stable(cur, "configuration", _encoder.encode(_ConfigRecord(index, config)))
        self._config = (index, config)

    def install_snapshot(self, snapshot: Snapshot) -> None:
        self._write_snapshot(snapshot)
        meta = snapshot.meta
        with self._tx() as cur:
            cur.execute("DELETE FROM log")
            self._put_config(cur, meta.configuration_index, meta.configuration)
        self._prune_snapshots()

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self._write_snapshot(snapshot)
        self._prune_snapshots()

    def compact(self, through: int) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM log WHERE idx <= ?", (through,))

    def configuration(self) -> tuple[int, Configuration]:
        if self._config is None:
            raw = self._get_stable("configuration")
            if raw is not None:
                record = _config_decoder.decode(raw)
                self._config = (record.index, record.configuration)
            else:
                self._config = (0, Configuration())
        return self._config

    def close(self) -> None:
        self._db.close()

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    # ----- snapshots -------------------------------------------------------------------

    def _snapshot_path(self, meta: SnapshotMeta) -> Path:
        return self.snapshot_dir / f"{meta.index:020d}-{meta.term:020d}.snap"

    def _snapshot_files(self) -> list[Path]:
        return sorted(self.snapshot_dir.glob("*.snap"), reverse=True)

    def _write_snapshot(self, snapshot: Snapshot) -> None:
        write_private_file(self._snapshot_path(snapshot.meta), encode_snapshot_file(snapshot))
        self._snapshot = snapshot

    def _prune_snapshots(self) -> None:
        for stale in self._snapshot_files()[self.retain :]:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    def _load_snapshot(self) -> Snapshot | None:
        for path in self._snapshot_files():
            try:
                return decode_snapshot_file(path.read_bytes())
            except (OSError, StorageError) as exc:
                log.warning("raft: skipping unusable snapshot %s: %s", path.name, exc)
        return None


def apply_peers_json(
    raft_dir: str | os.PathLike[str], storage: SQLiteStorage, rebuild: RebuildFn
) -> Configuration | None:
    """Consul's outage recovery: if raft_dir/peers.json exists, force its configuration.

    The file is parsed, applied through `recover_cluster` (see storage_api.py),
    and deleted, so the next start does not apply it again. A bad file stops the
    start with the reason; it is left in place for the operator to fix.
    """
    path = Path(raft_dir) / "peers.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        configuration = parse_peers_json(raw)
    except ValueError as exc:
        raise StorageError(f"recovery failed to parse peers.json: {exc}") from None
    log.info("raft: found peers.json, recovering the Raft configuration")
    recover_cluster(storage, configuration, rebuild)
    path.unlink()
    log.info("raft: deleted peers.json after successful recovery")
    return configuration
