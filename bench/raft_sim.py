"""Raft core costs and failover timing, measured on the pure core and the simulator.

Three figures, each next to a baseline from the same run:

- core: entries/s committed by a 3-server cluster of RaftNodes on
  MemoryStorage with instant delivery (the CPU cost of consensus, no I/O),
  proposing 1 and 64 entries per Ready cycle; baseline: the dev agent's
  LocalLog shape (encode, decode, append), the floor of any log at all.
- disk: SQLiteStorage.save (WAL, synchronous=FULL) with 1 and 64 entries per
  transaction; baseline: a bare sqlite3 insert loop with the same pragmas.
  The ratio shows what checksums and bookkeeping cost over raw SQLite; the
  absolute rate is what one fsync per Ready allows on this disk.
- failover: virtual seconds from crashing the leader to the next leader that
  has committed its no-op, over many seeded runs at raft_multiplier 1 and 5;
  baseline: the election timeout range [T, 2T) the first candidate draws from.

Usage: .venv/bin/python bench/raft_sim.py [--entries 20000] [--runs 40]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec

# The simulator lives with the tests; run from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sim.raft.raft_harness import SimConfig, Simulation

from proconsul.raft.core import RaftNode
from proconsul.raft.messages import Configuration, Entry, EntryType, Message, Server
from proconsul.raft.params import RaftParams, params_from_multiplier
from proconsul.raft.ready import PersistentState, Proposal, Role
from proconsul.raft.storage import SQLiteStorage
from proconsul.raft.storage_api import MemoryStorage, persist_ready


def core_rate(entries: int, batch: int) -> float:
    params = RaftParams(
        election_timeout=1.0,
        heartbeat_interval=0.1,
        leader_lease_timeout=0.5,
        snapshot_threshold=1 << 30,
        max_append_entries=256,
    )
    ids = ["a", "b", "c"]
    storages = {i: MemoryStorage() for i in ids}
    nodes = {i: RaftNode(i, PersistentState(), params, random.Random(n)) for n, i in enumerate(ids)}
    config = Configuration(tuple(Server(i, i) for i in ids))
    for node in nodes.values():
        node.bootstrap(config)
    now = 0.0
    applied = 0

    def pump() -> None:
        nonlocal applied
        while True:
            queue: list[Message] = []
            for i, node in nodes.items():
                while node.has_ready():
                    ready = node.ready()
                    persist_ready(storages[i], ready)
                    queue += ready.messages
                    if i == "a":
                        applied += len(ready.committed_entries)
                    node.advance(ready)
            if not queue:
                return
            for m in queue:
                nodes[m.to_id].step(m)

    nodes["a"].tick(10.0)  # only "a" times out: it wins
    pump()
    assert nodes["a"].role is Role.LEADER
    payload = msgspec.msgpack.encode({"Op": "set", "Key": "k", "Value": "x" * 64})
    start = time.perf_counter()
    target = applied + entries
    while applied < target:
        for _ in range(batch):
            assert isinstance(nodes["a"].propose(payload), Proposal)
        now += 0.001
        pump()
    return entries / (time.perf_counter() - start)


def locallog_rate(entries: int) -> float:
    payload = msgspec.msgpack.encode({"Op": "set", "Key": "k", "Value": "x" * 64})
    log: list[object] = []
    decoder = msgspec.msgpack.Decoder()
    start = time.perf_counter()
    for _ in range(entries):
        log.append(decoder.decode(msgspec.msgpack.encode(decoder.decode(payload))))
    return entries / (time.perf_counter() - start)


def disk_rates(transactions: int, batch: int) -> tuple[float, float]:
    data = b"x" * 200
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStorage(Path(tmp) / "raft")
        index = 0
        start = time.perf_counter()
        for _ in range(transactions):
            entries = [Entry(index + k + 1, 1, EntryType.COMMAND, data) for k in range(batch)]
            store.save(None, entries)
            index += batch
        ours = transactions * batch / (time.perf_counter() - start)
        store.close()
        db = sqlite3.connect(Path(tmp) / "bare.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER, data BLOB)")
        index = 0
        start = time.perf_counter()
        for _ in range(transactions):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO log VALUES (?, ?, ?)",
                [(index + k + 1, 1, data) for k in range(batch)],
            )
            db.execute("COMMIT")
            index += batch
        bare = transactions * batch / (time.perf_counter() - start)
        db.close()
    return ours, bare


class FailoverSim(Simulation):
    """A quiet cluster: wait for a leader, crash it, time the next usable leader."""

    def measure(self) -> float:
        configuration = Configuration(tuple(Server(s, s) for s in self.ids))
        for sid in self.ids:
            self.start(sid)
            node = self.servers[sid].node
            assert node is not None
            node.bootstrap(configuration)
            self.pump(sid)
            self.schedule_tick(sid, self.servers[sid].epoch)
        self.run_until(self.params.election_timeout * 6)
        old = self.current_leader()
        assert old is not None
        self.crash(old)
        crashed_at = self.now
        while self.now < crashed_at + self.params.election_timeout * 30:
            self.run_until(self.now + self.params.heartbeat_interval / 4)
            new = self.current_leader()
            if new is not None:
                node = self.servers[new].node
                assert node is not None
                if node.log.term(node.log.commit) == node.term:
                    return self.now - crashed_at
        raise RuntimeError("no new leader")


def failover_times(multiplier: int, runs: int) -> list[float]:
    times = []
    for seed in range(runs):
        quiet = SimConfig(
            servers=3,
            randomize=False,
            stalls=False,
            drop=0.0,
            duplicate=0.0,
            slow_fraction=0.0,
            crash_after_ready=0.0,
            crash_before_sync=0.0,
        )
        sim = FailoverSim(seed, quiet)
        base = params_from_multiplier(multiplier)
        sim.params = RaftParams(
            election_timeout=base.election_timeout,
            heartbeat_interval=base.heartbeat_interval,
            leader_lease_timeout=base.leader_lease_timeout,
        )
        times.append(sim.measure())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()

    base = locallog_rate(args.entries)
    print(f"core   LocalLog baseline          {base:12,.0f} entries/s")
    for batch in (1, 64):
        rate = core_rate(args.entries, batch)
        print(
            f"core   3 servers, {batch:2d}/Ready        {rate:12,.0f} entries/s   "
            f"ratio {rate / base:.3f}"
        )

    for batch, transactions in ((1, 300), (64, 300)):
        ours, bare = disk_rates(transactions, batch)
        print(
            f"disk   {batch:2d} entries/transaction   ours {ours:10,.0f}/s   bare sqlite "
            f"{bare:10,.0f}/s   ratio {ours / bare:.2f}"
        )

    for multiplier in (1, 5):
        times = failover_times(multiplier, args.runs)
        t = params_from_multiplier(multiplier).election_timeout
        print(
            f"failover raft_multiplier={multiplier}: median {statistics.median(times):.2f}s "
            f"max {max(times):.2f}s over {len(times)} runs; first-candidate window "
            f"[{t:.1f}s, {2 * t:.1f}s); median/T {statistics.median(times) / t:.2f}"
        )


if __name__ == "__main__":
    main()
