"""raft_snapshot_threshold, raft_trailing_logs and raft_snapshot_interval at work.

- The adapter (server/raft_log.py) with an interval: a threshold reached is
  acted on at the next interval check, never before the first one; a backlog
  of SNAPSHOT_BACKLOG_FACTOR thresholds is snapshotted at once.
- A real server process configured with raft_snapshot_threshold = 100,
  raft_trailing_logs = 10 and raft_snapshot_interval = "1s" (127.0.0.211):
  after 300 KV writes it has written a snapshot at index >= 100 and its SQLite
  log no longer starts at index 1, it keeps `raft_trailing_logs` entries behind
  the snapshot, and after a restart it still serves every key.

Every wait has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from tests.agent_process import free_port, wait_for, wait_for_async
from tests.gossip_agents import GossipPool
from tests.integration.test_cluster import kv_put, kv_value

from proconsul.raft import Server, params_from_multiplier
from proconsul.rpc import RPCClient
from proconsul.server.raft_log import RaftLog
from proconsul.server.raft_snapshots import SNAPSHOT_BACKLOG_FACTOR
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import KVEntry
from proconsul.structs.commands import KVSRequest

DEADLINE_S = 20.0
THRESHOLD = 100
TRAILING = 10
WRITES = 300


def put(key: str, value: str) -> KVSRequest:
    return KVSRequest(op="set", dir_ent=KVEntry(key=key, value=value.encode()))


async def solo(
    tmp_path: Path, threshold: int, trailing: int, interval: float = 0.0
) -> tuple[RaftLog, RPCClient]:
    params = params_from_multiplier(
        1, snapshot_threshold=threshold, trailing_logs=trailing, snapshot_interval=interval
    )
    client = RPCClient()
    raft = RaftLog(
        "solo", "127.0.0.1:1", FSM(StateStore()), client, data_dir=tmp_path, params=params
    )
    await raft.start()
    assert raft.bootstrap([Server("solo", "127.0.0.1:1")])
    await raft.wait_for_leader(DEADLINE_S)
    return raft, client


async def wait_snapshot(raft: RaftLog, at_least: int) -> float:
    """Poll (with a deadline) until a snapshot at `at_least` or later; returns when."""
    await wait_for_async(lambda: raft.status().snapshot_index >= at_least, DEADLINE_S)
    return time.monotonic()


async def test_interval_check_takes_the_snapshot_not_the_threshold_alone(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    raft, client = await solo(tmp_path, threshold=10, trailing=2, interval=1.0)
    try:
        for i in range(15):
            await raft.apply(put(f"k/{i}", "v"))
        taken = await wait_snapshot(raft, 10)
        # The first check runs at a random time in [interval, 2 * interval).
        assert taken - started >= 1.0
        assert raft.stats()["snapshot_checks"] >= 1
        assert raft.stats().get("snapshots_over_backlog", 0) == 0
    finally:
        await raft.close()
        await client.close()


async def test_a_backlog_of_thresholds_is_snapshotted_without_waiting(tmp_path: Path) -> None:
    raft, client = await solo(tmp_path, threshold=10, trailing=2, interval=3600.0)
    try:
        for i in range(SNAPSHOT_BACKLOG_FACTOR * 10 + 2):
            await raft.apply(put(f"k/{i}", "v"))
        await wait_snapshot(raft, SNAPSHOT_BACKLOG_FACTOR * 10)
        assert raft.stats()["snapshots_over_backlog"] >= 1
        assert raft.stats().get("snapshot_checks", 0) == 0
    finally:
        await raft.close()
        await client.close()


async def test_a_failed_snapshot_write_waits_for_the_interval_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raft, client = await solo(tmp_path, threshold=10, trailing=2, interval=3600.0)
    attempts: list[int] = []

    def broken(snapshot: object) -> None:
        attempts.append(1)
        raise OSError("snapshot disk full")

    try:
        assert raft._storage is not None
        monkeypatch.setattr(raft._storage, "save_snapshot", broken)
        for i in range(SNAPSHOT_BACKLOG_FACTOR * 10):
            await raft.apply(put(f"k/{i}", "v"))
        await wait_for_async(lambda: raft.stats().get("core_snapshots_failed", 0) >= 1, DEADLINE_S)
        # More writes (Readies) past the backlog: no retry until the interval check.
        for i in range(10):
            await raft.apply(put(f"more/{i}", "v"))
        assert len(attempts) == 1
        assert raft.failed is None and raft.status().snapshot_index == 0
    finally:
        await raft.close()
        await client.close()


async def test_interval_zero_snapshots_at_the_threshold(tmp_path: Path) -> None:
    raft, client = await solo(tmp_path, threshold=10, trailing=2)
    try:
        for i in range(12):
            await raft.apply(put(f"k/{i}", "v"))
        await wait_snapshot(raft, 10)
    finally:
        await raft.close()
        await client.close()


def log_bounds(db: Path) -> tuple[int, int]:
    """(first, last) index in the server's SQLite log, read without disturbing it."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        first, last = conn.execute("SELECT MIN(idx), MAX(idx) FROM log").fetchone()
    finally:
        conn.close()
    return int(first or 0), int(last or 0)


def snapshot_indexes(raft_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-", 1)[0]) for p in (raft_dir / "snapshots").glob("*.snap"))


@pytest.fixture
def server(tmp_path: Path) -> GossipPool:
    ip = "127.0.0.211"
    tuning = (
        f"raft_snapshot_threshold = {THRESHOLD}\n"
        f"raft_trailing_logs = {TRAILING}\n"
        'raft_snapshot_interval = "1s"'
    )
    return GossipPool(
        tmp_path,
        1,
        base=211,
        server_first=True,
        extra=["-hcl", tuning, "-server-port", str(free_port(ip))],
    )


def test_configured_threshold_compacts_a_real_servers_log(server: GossipPool) -> None:
    member = server.members[0]
    raft_dir = member.data_dir / "raft"
    try:
        server.start(member, join=False)
        for i in range(WRITES):
            kv_put(member, f"snap/{i}", str(i))

        def compacted() -> tuple[int, int] | None:
            snaps = snapshot_indexes(raft_dir)
            if not snaps:
                return None
            first, _ = log_bounds(raft_dir / "raft.db")
            # Compaction follows the snapshot write: the log starts after
            # (snapshot - trailing logs).
            return (snaps[-1], first) if first == snaps[-1] - TRAILING + 1 else None

        snap, first = wait_for(compacted, DEADLINE_S)
        assert snap >= THRESHOLD
        assert first > 1
        assert "snapshot at index" in member.running.log_text()
    finally:
        server.stop_all()

    # Stopped: the log on disk is still compacted and leaves no gap behind the
    # newest snapshot (a later one may not have been compacted behind yet).
    first, last = log_bounds(raft_dir / "raft.db")
    assert 1 < first <= max(snapshot_indexes(raft_dir)) - TRAILING + 1
    assert last >= WRITES

    # Restarted from the snapshot plus the log: every key is there.
    try:
        server.start(member, join=False)
        for i in (0, THRESHOLD, WRITES - 1):
            wait_for(lambda i=i: kv_value(member, f"snap/{i}") == str(i), DEADLINE_S)
    finally:
        server.stop_all()
