"""What Raft storage must do, an in-memory implementation, and storage-level recovery.

Job: define `RaftStorage` (the SQLite store in storage.py and `MemoryStorage`
here both pass one conformance test), the helper that persists a Ready in the
contract's order, outage recovery (`recover_cluster`, driven by peers.json),
and the peers.json parser.

Rules:
- Every write method returns only once its data is durable; a Ready's
  messages may be sent after `persist_ready` returns, not before.
- `save` is atomic: the truncation, the new entries and the hard state all
  land, or none do.
- `install_snapshot` replaces the whole log (see ready.py); `save_snapshot`
  only adds a snapshot; `compact` only removes entries a snapshot covers.
- Nothing here touches the network or the clock; MemoryStorage is pure.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from typing import Protocol

from proconsul.raft.messages import (
    Configuration,
    Entry,
    EntryType,
    HardState,
    Server,
    Snapshot,
    SnapshotMeta,
    decode_configuration,
)
from proconsul.raft.ready import PersistentState, Ready


class StorageError(RuntimeError):
    """Storage cannot be used as it is (inconsistent, unreadable)."""


class CorruptLogError(StorageError):
    """A stored entry failed its checksum or breaks the sequence; it is never applied."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"raft log corrupt at index {index}: {reason}")
        self.index = index
        self.reason = reason


class RaftStorage(Protocol):
    def load(self) -> PersistentState:
        """Everything durable: hard state, newest valid snapshot, contiguous entries."""
        ...

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Atomically: drop stored entries >= entries[0].index, store entries and hard state."""
        ...

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot received from the leader and drop the whole log."""
        ...

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot of our own state machine; the log is untouched."""
        ...

    def compact(self, through: int) -> None:
        """Drop entries with index <= through."""
        ...

    def configuration(self) -> tuple[int, Configuration]:
        """The latest configuration stored (log or snapshot): (index, configuration)."""
        ...

    def close(self) -> None: ...


def persist_ready(storage: RaftStorage, ready: Ready) -> None:
    """Steps 1 and 2 of the Ready contract; messages may be sent when it returns."""
    if ready.snapshot is not None:
        storage.install_snapshot(ready.snapshot)
    if ready.entries or ready.hard_state is not None:
        storage.save(ready.hard_state, ready.entries)


def check_contiguous(entries: Sequence[Entry]) -> None:
    for before, after in itertools.pairwise(entries):
        if after.index != before.index + 1:
            raise CorruptLogError(after.index, f"expected index {before.index + 1}")


class MemoryStorage:
    """RaftStorage in memory: the simulator's disk. What `save` took survives `load`."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.closed = False

    def load(self) -> PersistentState:
        return PersistentState(self.hard_state, self.snapshot, tuple(self.entries))

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        check_contiguous(entries)
        if entries:
            first = entries[0].index
            if self.entries and first > self.entries[-1].index + 1:
                raise StorageError(f"gap: appending {first} after {self.entries[-1].index}")
            # The kept entries are contiguous: cut at `first` by position, not by
            # scanning (a scan made every append cost the length of the log).
            if self.entries:
                del self.entries[max(0, first - self.entries[0].index) :]
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def install_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.entries = []

    def save_snapshot(self, snapshot: Snapshot) -> None:
        if self.snapshot is None or snapshot.meta.index > self.snapshot.meta.index:
            self.snapshot = snapshot

    def compact(self, through: int) -> None:
        if self.entries:
            del self.entries[: max(0, through - self.entries[0].index + 1)]

    def configuration(self) -> tuple[int, Configuration]:
        for entry in reversed(self.entries):
            if entry.type is EntryType.CONFIGURATION:
                return entry.index, decode_configuration(entry.data)
        if self.snapshot is not None:
            return self.snapshot.meta.configuration_index, self.snapshot.meta.configuration
        return 0, Configuration()

    def close(self) -> None:
        self.closed = True


# ----- outage recovery ----------------------------------------------------------------


def parse_peers_json(data: bytes) -> Configuration:
    """Consul's raft/peers.json: a list of {"id", "address", "non_voter"} objects.

    The older (Raft protocol 2) form, a list of "ip:port" strings, is accepted
    too; the address then doubles as the id, as it did in Consul.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"peers.json is not valid JSON: {exc}") from None
    if not isinstance(doc, list) or not doc:
        raise ValueError("peers.json must be a non-empty JSON list")
    servers: list[Server] = []
    for item in doc:
        if isinstance(item, str):
            servers.append(Server(item, item, True))
            continue
        if not isinstance(item, dict):
            raise ValueError("peers.json entries must be objects or strings")
        server_id, address = item.get("id"), item.get("address")
        non_voter = item.get("non_voter", False)
        if not isinstance(server_id, str) or not server_id:
            raise ValueError('peers.json entry is missing a string "id"')
        if not isinstance(address, str) or not address:
            raise ValueError(f'peers.json entry {server_id!r} is missing a string "address"')
        if not isinstance(non_voter, bool):
            raise ValueError(f'peers.json entry {server_id!r}: "non_voter" must be a boolean')
        servers.append(Server(server_id, address, not non_voter))
    ids = [s.id for s in servers]
    if len(set(ids)) != len(ids):
        raise ValueError("peers.json lists a server id twice")
    if not any(s.voter for s in servers):
        raise ValueError("peers.json must list at least one voter")
    return Configuration(tuple(servers))


# Given the newest snapshot (or None) and every entry after it, return the
# state-machine bytes after applying them all, as a snapshot's data.
RebuildFn = Callable[[Snapshot | None, Sequence[Entry]], bytes]


def recover_cluster(
    storage: RaftStorage, configuration: Configuration, rebuild: RebuildFn
) -> SnapshotMeta:
    """Force `configuration` onto a stopped server's storage (the peers.json procedure).

    Like hashicorp/raft's RecoverCluster: every entry in the log is treated as
    committed (the operator accepts that), the state machine is rebuilt through
    the last entry, and a snapshot at the last entry carrying the new
    configuration replaces the log. Servers recovered from the same peers.json
    then agree on membership whatever their logs held.
    """
    state = storage.load()
    if state.is_empty():
        raise StorageError("refusing to recover a server that has no Raft state")
    base = state.snapshot.meta.index if state.snapshot else 0
    entries = [e for e in state.entries if e.index > base]
    if entries:
        last_index, last_term = entries[-1].index, entries[-1].term
    elif state.snapshot is not None:
        last_index, last_term = state.snapshot.meta.index, state.snapshot.meta.term
    else:
        raise StorageError("refusing to recover a server with an empty log")
    data = rebuild(state.snapshot, entries)
    meta = SnapshotMeta(last_index, last_term, configuration, last_index)
    storage.install_snapshot(Snapshot(meta, data))
    hard = state.hard_state
    term = max(hard.term, last_term)
    storage.save(HardState(term, hard.vote if term == hard.term else "", last_index), ())
    return meta
