"""An acknowledged write is synced to disk on a majority, not only in the page cache.

kill -9 leaves the page cache intact, so a crash test cannot tell an entry that
was synced from one that was merely written. This test watches the sync point
itself. Three Raft servers run in one process as in
tests/integration/test_raft_cluster.py (its `Cluster`: real RPC with mutual
TLS, real SQLite logs, raft_multiplier 1); each server's `SQLiteStorage` gets
its SQLite connection wrapped, so that every transaction's COMMIT is recorded,
once it returned, with the log entries (index, term) the transaction wrote.
In WAL mode with `synchronous=FULL` (asserted here) that commit is where SQLite
fsyncs the WAL: `SQLiteStorage.save` (raft/storage.py) runs truncation,
entries and hard state as one transaction, on each server's storage thread,
from the Ready loop (server/raft_log.py, `_process` via `persist_ready`)
before any message of that Ready is sent.

The assertion: whenever `RaftLog.apply` returns index i on the leader, at
least two of the three servers have already committed a transaction holding
entry i with the term it was applied in. Checked for concurrent writes, with a
follower down (the majority is then exactly the two left), and across a
leader crash and a new term.

Rules: the storage and Raft code run unchanged; only the connection object is
wrapped. Every wait has a deadline (the cluster's own).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_raft_cluster import Cluster, Member, put

import proconsul.server.raft_log as raft_log_module
from proconsul.raft import params_from_multiplier
from proconsul.raft.storage import SQLiteStorage
from proconsul.rpc.testing import make_pki

WRITERS = 4
WRITES_PER_PHASE = 15


class SyncRecord:
    """Per server: index -> term of every log entry whose transaction committed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # storage threads write, the event loop reads
        self.durable: dict[str, dict[int, int]] = {}
        self.commits: dict[str, int] = {}

    def committed(self, server: str, truncated_from: int | None, rows: dict[int, int]) -> None:
        with self.lock:
            durable = self.durable.setdefault(server, {})
            if truncated_from is not None:
                for index in [i for i in durable if i >= truncated_from]:
                    del durable[index]
            durable.update(rows)
            self.commits[server] = self.commits.get(server, 0) + 1

    def holders(self, index: int, term: int) -> list[str]:
        with self.lock:
            return sorted(s for s, d in self.durable.items() if d.get(index) == term)

    def term_at(self, server: str, index: int) -> int | None:
        with self.lock:
            return self.durable.get(server, {}).get(index)


class RecordingCursor:
    """A cursor that notes the log rows of its transaction and reports them at COMMIT."""

    def __init__(self, cursor: sqlite3.Cursor, server: str, record: SyncRecord) -> None:
        self._cursor = cursor
        self._server = server
        self._record = record
        self._rows: dict[int, int] = {}
        self._truncated_from: int | None = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        result = self._cursor.execute(sql, params)
        statement = " ".join(sql.split()).upper()
        if statement.startswith(("BEGIN", "ROLLBACK")):
            self._rows, self._truncated_from = {}, None
        elif statement.startswith("DELETE FROM LOG WHERE IDX >="):
            self._truncated_from = int(params[0])
        elif statement == "COMMIT":
            # Reached only once the commit returned: the transaction is synced.
            self._record.committed(self._server, self._truncated_from, self._rows)
            self._rows, self._truncated_from = {}, None
        return result

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        rows = list(rows)
        result = self._cursor.executemany(sql, rows)
        if " ".join(sql.split()).upper().startswith("INSERT INTO LOG"):
            self._rows.update((int(row[0]), int(row[1])) for row in rows)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class RecordingConnection:
    def __init__(self, db: sqlite3.Connection, server: str, record: SyncRecord) -> None:
        self._db = db
        self._server = server
        self._record = record

    def cursor(self) -> RecordingCursor:
        return RecordingCursor(self._db.cursor(), self._server, self._record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@pytest.fixture
async def watched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Cluster, SyncRecord]]:
    record = SyncRecord()
    opened: list[SQLiteStorage] = []

    def recording_storage(raft_dir: str | os.PathLike[str], **kwargs: Any) -> SQLiteStorage:
        storage = SQLiteStorage(raft_dir, **kwargs)
        server = Path(raft_dir).parent.name  # Cluster's data dirs are <root>/<server id>
        storage._db = RecordingConnection(storage._db, server, record)  # type: ignore[assignment]
        opened.append(storage)
        return storage

    monkeypatch.setattr(raft_log_module, "SQLiteStorage", recording_storage)
    cluster = Cluster(tmp_path, make_pki(tmp_path / "pki"), params_from_multiplier(1))
    try:
        await cluster.boot()
        for storage in opened:
            # The sync point is only one if SQLite really syncs at commit.
            assert storage._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert storage._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        yield cluster, record
    finally:
        await cluster.close()


async def write_and_check(
    cluster: Cluster, leader: Member, record: SyncRecord, tag: str
) -> list[int]:
    """Concurrent writes through the leader's RaftLog; each checked the moment apply returns."""
    voters = len(cluster.members)
    checked: list[int] = []

    async def writer(w: int) -> None:
        for n in range(WRITES_PER_PHASE):
            index, _ = await leader.log.apply(put(f"{tag}/{w}/{n}", "v"))
            # No await since apply returned: this is the state at acknowledgement.
            term = record.term_at(leader.id, index)
            assert term is not None, f"{tag}: the leader acknowledged {index} before syncing it"
            holders = record.holders(index, term)
            assert len(holders) > voters // 2, (
                f"{tag}: index {index} (term {term}) acknowledged while synced only on {holders}"
            )
            checked.append(index)

    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    return checked


async def test_an_acknowledged_write_is_synced_on_a_majority(
    watched: tuple[Cluster, SyncRecord],
) -> None:
    cluster, record = watched
    leader = await cluster.leader()

    # All three up.
    checked = await write_and_check(cluster, leader, record, "all")
    assert len(checked) == WRITERS * WRITES_PER_PHASE
    assert all(record.commits.get(m.id, 0) > 0 for m in cluster.members)

    # One follower down: the majority is exactly the leader and the other follower.
    down = next(m for m in cluster.members if m is not leader)
    await cluster.crash(down)
    synced_before = dict(record.durable[down.id])
    checked = await write_and_check(cluster, leader, record, "one-down")
    for index in checked:
        assert index not in synced_before
        term = record.term_at(leader.id, index)
        assert term is not None
        holders = record.holders(index, term)
        assert down.id not in holders and len(holders) == 2, (index, holders)
    await cluster.start(down)

    # A new term after the leader crashes: the same holds for the new leader.
    await cluster.all_applied(leader.log.status().commit_index)
    await cluster.crash(leader)
    new = await cluster.leader(cluster.running(), other_than=leader.id)
    checked = await write_and_check(cluster, new, record, "new-term")
    assert {record.term_at(new.id, i) for i in checked} == {new.log.status().term}
