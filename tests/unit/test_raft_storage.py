"""Raft storage: one conformance suite for SQLite and memory, then SQLite's own duties
(durability settings, checksums, corrupt tails, snapshot files, peers.json recovery)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import msgspec
import pytest

from proconsul.raft.messages import (
    Configuration,
    Entry,
    EntryType,
    HardState,
    Server,
    Snapshot,
    SnapshotMeta,
    encode_configuration,
)
from proconsul.raft.storage import SQLiteStorage, apply_peers_json, decode_snapshot_file
from proconsul.raft.storage_api import (
    CorruptLogError,
    MemoryStorage,
    RaftStorage,
    StorageError,
    parse_peers_json,
    recover_cluster,
)

CONFIG_A = Configuration((Server("a", "10.0.0.1:8300"),))
CONFIG_AB = Configuration((Server("a", "10.0.0.1:8300"), Server("b", "10.0.0.2:8300")))


def cmd(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(index, term, EntryType.COMMAND, data or b"cmd%d" % index)


def cfg(index: int, term: int, config: Configuration) -> Entry:
    return Entry(index, term, EntryType.CONFIGURATION, encode_configuration(config))


def snapshot(index: int, term: int, config: Configuration = CONFIG_A) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, config, 1), b"state@%d" % index)


# A factory opens the storage; calling it again "restarts" onto the same durable state.
Opener = Callable[[], RaftStorage]


@pytest.fixture(params=["memory", "sqlite"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[RaftStorage] = []
    memory = MemoryStorage()

    def open_storage() -> RaftStorage:
        store: RaftStorage = (
            memory if request.param == "memory" else SQLiteStorage(tmp_path / "raft")
        )
        opened.append(store)
        return store

    yield open_storage
    for store in opened:
        store.close()


def test_fresh_storage_is_empty(opener: Opener) -> None:
    state = opener().load()
    assert state.is_empty() and state.entries == () and state.snapshot is None


def test_save_and_reload(opener: Opener) -> None:
    store = opener()
    store.save(HardState(2, "a", 1), [cfg(1, 1, CONFIG_A), cmd(2, 2), cmd(3, 2)])
    state = opener().load()
    assert state.hard_state == HardState(2, "a", 1)
    assert [e.index for e in state.entries] == [1, 2, 3]
    assert state.entries[1] == cmd(2, 2)
    assert opener().configuration() == (1, CONFIG_A)


def test_hard_state_alone(opener: Opener) -> None:
    store = opener()
    store.save(HardState(5, "", 0), [])
    assert opener().load().hard_state == HardState(5, "", 0)


def test_save_truncates_from_the_first_new_entry(opener: Opener) -> None:
    store = opener()
    store.save(None, [cmd(1, 1), cmd(2, 1), cmd(3, 1), cfg(4, 1, CONFIG_AB)])
    assert store.configuration() == (4, CONFIG_AB)
    store.save(None, [cmd(3, 2, b"new")])
    state = opener().load()
    assert [(e.index, e.term) for e in state.entries] == [(1, 1), (2, 1), (3, 2)]
    assert state.entries[-1].data == b"new"
    # The configuration entry at 4 was truncated away.
    assert opener().configuration() == (0, Configuration())


def test_install_snapshot_replaces_the_log(opener: Opener) -> None:
    store = opener()
    store.save(HardState(1, "", 0), [cmd(1, 1), cmd(2, 1)])
    store.install_snapshot(snapshot(10, 3, CONFIG_AB))
    store.save(None, [cmd(11, 3)])
    state = opener().load()
    assert state.snapshot == snapshot(10, 3, CONFIG_AB)
    assert [e.index for e in state.entries] == [11]
    assert opener().configuration() == (1, CONFIG_AB)


def test_save_snapshot_then_compact(opener: Opener) -> None:
    store = opener()
    store.save(None, [cmd(i, 1) for i in range(1, 11)])
    store.save_snapshot(snapshot(8, 1))
    store.compact(6)
    state = opener().load()
    assert state.snapshot is not None and state.snapshot.meta.index == 8
    assert [e.index for e in state.entries] == [7, 8, 9, 10]


def test_non_contiguous_batch_is_refused(opener: Opener) -> None:
    with pytest.raises(StorageError):
        opener().save(None, [cmd(1, 1), cmd(3, 1)])


# ----- SQLite specifics ----------------------------------------------------------------


@pytest.fixture
def raft_dir(tmp_path: Path) -> Path:
    return tmp_path / "raft"


def test_sqlite_durability_settings_and_private_files(raft_dir: Path) -> None:
    store = SQLiteStorage(raft_dir)
    store.save(HardState(1, "", 0), [cmd(1, 1)])
    store.save_snapshot(snapshot(1, 1))
    db = sqlite3.connect(raft_dir / "raft.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert stat.S_IMODE(os.stat(raft_dir / "raft.db").st_mode) == 0o600
    (snap_file,) = (raft_dir / "snapshots").iterdir()
    assert stat.S_IMODE(snap_file.stat().st_mode) == 0o600
    store.close()


def _corrupt_row(raft_dir: Path, index: int) -> None:
    db = sqlite3.connect(raft_dir / "raft.db")
    db.execute("UPDATE log SET data = ? WHERE idx = ?", (b"tampered", index))
    db.commit()
    db.close()


def test_corrupt_entry_is_reported_with_its_index(raft_dir: Path) -> None:
    store = SQLiteStorage(raft_dir)
    store.save(HardState(1, "", 2), [cmd(i, 1) for i in range(1, 6)])
    store.close()
    _corrupt_row(raft_dir, 4)
    with pytest.raises(CorruptLogError) as info:
        SQLiteStorage(raft_dir).load()
    assert info.value.index == 4 and "checksum" in str(info.value)


def test_repair_drops_an_uncommitted_corrupt_tail_only(raft_dir: Path) -> None:
    store = SQLiteStorage(raft_dir)
    store.save(HardState(1, "", 2), [cmd(i, 1) for i in range(1, 6)])
    store.close()
    _corrupt_row(raft_dir, 4)
    state = SQLiteStorage(raft_dir, repair_tail=True).load()
    assert [e.index for e in state.entries] == [1, 2, 3]
    assert [e.index for e in SQLiteStorage(raft_dir).load().entries] == [1, 2, 3]
    # A corrupt committed entry is never dropped, even when asked to repair.
    _corrupt_row(raft_dir, 2)
    with pytest.raises(CorruptLogError):
        SQLiteStorage(raft_dir, repair_tail=True).load()


def test_gap_in_the_log_is_reported(raft_dir: Path) -> None:
    store = SQLiteStorage(raft_dir)
    store.save(None, [cmd(i, 1) for i in range(1, 6)])
    store._db.execute("DELETE FROM log WHERE idx = 3")
    with pytest.raises(CorruptLogError) as info:
        store.load()
    assert info.value.index == 4


def test_corrupt_snapshot_falls_back_to_the_previous_one(raft_dir: Path) -> None:
    store = SQLiteStorage(raft_dir)
    store.save(None, [cmd(i, 1) for i in range(1, 21)])
    store.save_snapshot(snapshot(5, 1))
    store.save_snapshot(snapshot(10, 1))
    newest = sorted((raft_dir / "snapshots").iterdir())[-1]
    raw = bytearray(newest.read_bytes())
    raw[-40] ^= 0xFF
    newest.write_bytes(bytes(raw))
    with pytest.raises(StorageError):
        decode_snapshot_file(bytes(raw))
    state = SQLiteStorage(raft_dir).load()
    assert state.snapshot is not None and state.snapshot.meta.index == 5


def test_snapshot_older_than_the_compacted_log_fails_loudly(raft_dir: Path) -> None:
    store = SQLiteStorage(raft_dir)
    store.save(None, [cmd(i, 1) for i in range(1, 21)])
    store.save_snapshot(snapshot(5, 1))
    store.save_snapshot(snapshot(15, 1))
    store.compact(12)
    newest = sorted((raft_dir / "snapshots").iterdir())[-1]
    newest.write_bytes(b"garbage")
    with pytest.raises(StorageError, match="entries in between are lost"):
        SQLiteStorage(raft_dir).load()


def test_only_the_newest_snapshots_are_kept(raft_dir: Path) -> None:
    store = SQLiteStorage(raft_dir, retain=2)
    store.save(None, [cmd(i, 1) for i in range(1, 11)])
    for index in (2, 4, 6, 8):
        store.save_snapshot(snapshot(index, 1))
    names = sorted(p.name for p in (raft_dir / "snapshots").iterdir())
    assert len(names) == 2 and names[-1].startswith("00000000000000000008-")


# ----- peers.json ----------------------------------------------------------------------


def test_parse_peers_json_protocol_3() -> None:
    raw = json.dumps(
        [
            {
                "id": "adf4238a-882b-9ddc-4a9d-5b6758e4159e",
                "address": "10.1.0.1:8300",
                "non_voter": False,
            },
            {"id": "8b6dda82-3103-11e7-93ae-92361f002671", "address": "10.1.0.2:8300"},
            {
                "id": "97e17742-3103-11e7-93ae-92361f002671",
                "address": "10.1.0.3:8300",
                "non_voter": True,
            },
        ]
    ).encode()
    config = parse_peers_json(raw)
    assert config.ids()[0] == "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
    assert [s.voter for s in config.servers] == [True, True, False]
    assert config.servers[1].address == "10.1.0.2:8300"


def test_parse_peers_json_protocol_2_addresses() -> None:
    config = parse_peers_json(b'["10.1.0.1:8300", "10.1.0.2:8300"]')
    assert config.voter_ids() == ("10.1.0.1:8300", "10.1.0.2:8300")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{}",
        b"[]",
        b'[{"address": "10.0.0.1:8300"}]',
        b'[{"id": "a"}]',
        b'[{"id": "a", "address": "x", "non_voter": "no"}]',
        b'[{"id": "a", "address": "x"}, {"id": "a", "address": "y"}]',
        b'[{"id": "a", "address": "x", "non_voter": true}]',
        b"[1]",
    ],
)
def test_parse_peers_json_rejects_bad_files(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_peers_json(raw)


def _rebuild(snap: Snapshot | None, entries: Sequence[Entry]) -> bytes:
    seen = list(msgspec.msgpack.decode(snap.data)) if snap else []
    return msgspec.msgpack.encode(seen + [e.data for e in entries if e.type is EntryType.COMMAND])


def test_apply_peers_json_forces_the_configuration_once(raft_dir: Path) -> None:
    store = SQLiteStorage(raft_dir)
    store.save(HardState(3, "b", 2), [cfg(1, 1, CONFIG_AB), cmd(2, 2), cmd(3, 3)])
    assert apply_peers_json(raft_dir, store, _rebuild) is None  # no file, nothing done
    (raft_dir / "peers.json").write_text(json.dumps([{"id": "a", "address": "10.9.9.9:8300"}]))
    config = apply_peers_json(raft_dir, store, _rebuild)
    assert config == Configuration((Server("a", "10.9.9.9:8300"),))
    assert not (raft_dir / "peers.json").exists()
    store.close()
    state = SQLiteStorage(raft_dir).load()
    assert state.snapshot is not None
    assert (state.snapshot.meta.index, state.snapshot.meta.term) == (3, 3)
    assert state.snapshot.meta.configuration == config
    # Every log entry was treated as committed and folded into the snapshot.
    assert msgspec.msgpack.decode(state.snapshot.data) == [b"cmd2", b"cmd3"]
    assert state.entries == () and state.hard_state.commit == 3


def test_bad_peers_json_stops_the_start_and_stays(raft_dir: Path) -> None:
    store = SQLiteStorage(raft_dir)
    store.save(HardState(1, "", 0), [cfg(1, 1, CONFIG_A)])
    (raft_dir / "peers.json").write_text("[{]")
    with pytest.raises(StorageError, match=r"peers\.json"):
        apply_peers_json(raft_dir, store, _rebuild)
    assert (raft_dir / "peers.json").exists()
    store.close()


def test_recovery_refuses_an_empty_server() -> None:
    with pytest.raises(StorageError):
        recover_cluster(MemoryStorage(), CONFIG_A, _rebuild)
