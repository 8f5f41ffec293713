"""The follower's half of Raft: accepting entries, commit, and snapshots from the leader.

Job: apply what the current leader sends (AppendEntries, Heartbeat,
InstallSnapshot chunks) to the node's log and answer it. Functions of the
node, seen through `FollowerNode` (core.RaftNode is one; core.py is never
imported here), which has already checked the term.

Rules:
- An entry we already hold with the same term is never rewritten, so a
  stale or duplicated request cannot truncate what we acknowledged.
- A success reply acknowledges only what the request proved (prev + entries),
  never entries we happen to hold beyond it.
- Everything up to our commit index equals the leader's log: a request that
  starts below it is trimmed, and a snapshot at or below it is not installed.
- A snapshot is assembled from chunks in order; an installed snapshot replaces
  the whole log unless we already hold its last entry.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from proconsul.raft.log import RaftLog
from proconsul.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    Snapshot,
)
from proconsul.raft.params import RaftParams
from proconsul.raft.ready import Role


class FollowerNode(Protocol):
    """The node as its follower functions see it; core.RaftNode is one."""

    id: str
    term: int
    now: float
    role: Role
    params: RaftParams
    log: RaftLog
    counters: Counter[str]
    leader_id: str | None
    last_leader_contact: float | None
    snapshot: Snapshot | None
    pending_install: Snapshot | None
    snapshot_in_progress: bool
    configs: list[tuple[int, Configuration]]
    # The snapshot being received: (leader, term, index, snapshot term) and its bytes so far.
    incoming_key: tuple[str, int, int, int] | None
    incoming: bytearray

    @property
    def configuration(self) -> Configuration: ...

    def send(self, m: Message) -> None: ...

    def become_follower(self, term: int, leader_id: str | None) -> None: ...

    def reset_election_timer(self) -> None: ...

    def record_configs(self, entries: list[Entry] | tuple[Entry, ...]) -> None: ...

    def rollback_configs(self, first_removed: int) -> None: ...

    def on_config_changed(self) -> None: ...


def heard_from_leader(node: FollowerNode, leader_id: str) -> None:
    if node.role is not Role.FOLLOWER:
        node.become_follower(node.term, leader_id)
    node.leader_id = leader_id
    node.last_leader_contact = node.now
    node.reset_election_timer()


def on_append(node: FollowerNode, m: AppendEntries) -> None:
    heard_from_leader(node, m.from_id)
    log = node.log
    prev_index, prev_term, entries = m.prev_log_index, m.prev_log_term, m.entries
    if prev_index < log.commit:
        # Everything up to our commit index is identical on every server, so
        # skip what we have committed and continue from there.
        entries = tuple(e for e in entries if e.index > log.commit)
        if not entries:
            node.send(AppendEntriesResponse(node.term, node.id, m.from_id, True, log.commit))
            return
        prev_index = log.commit
        prev_term = log.term(log.commit) or 0
    result = log.maybe_append(prev_index, prev_term, entries)
    if result is None:
        conflict_index, conflict_term = log.conflict_hint(prev_index)
        node.counters["append_rejected"] += 1
        node.send(
            AppendEntriesResponse(
                node.term,
                node.id,
                m.from_id,
                False,
                reject_index=m.prev_log_index,
                conflict_index=conflict_index,
                conflict_term=conflict_term,
            )
        )
        return
    last_new, first_written = result
    if first_written:
        node.rollback_configs(first_written)
        node.record_configs([e for e in entries if e.index >= first_written])
    log.commit_to(min(m.leader_commit, last_new))
    node.send(AppendEntriesResponse(node.term, node.id, m.from_id, True, last_new))


def on_heartbeat(node: FollowerNode, m: Heartbeat) -> None:
    heard_from_leader(node, m.from_id)
    node.log.commit_to(m.commit)
    node.send(HeartbeatResponse(node.term, node.id, m.from_id, m.seq))


def on_install_snapshot(node: FollowerNode, m: InstallSnapshot) -> None:
    heard_from_leader(node, m.from_id)
    meta = m.meta

    def reply(next_offset: int, done: bool = False, match: int = 0) -> None:
        node.send(
            InstallSnapshotResponse(
                node.term, node.id, m.from_id, meta.index, next_offset, done, match
            )
        )

    if meta.index <= node.log.commit:
        reply(0, True, node.log.commit)
        return
    key = (m.from_id, m.term, meta.index, meta.term)
    if node.incoming_key != key:
        if m.total_size > node.params.max_snapshot_bytes:
            node.counters["snapshot_too_large"] += 1
            return
        node.incoming_key = key
        node.incoming = bytearray()
    if m.offset != len(node.incoming):
        reply(len(node.incoming))
        return
    node.incoming += m.data
    if not m.done and len(node.incoming) < m.total_size:
        reply(len(node.incoming))
        return
    if len(node.incoming) != m.total_size or not m.done:
        # Chunks that do not add up: start this snapshot over.
        node.counters["snapshot_chunks_inconsistent"] += 1
        node.incoming_key, node.incoming = None, bytearray()
        reply(0)
        return
    data = bytes(node.incoming)
    node.incoming_key, node.incoming = None, bytearray()
    install_snapshot(node, Snapshot(meta, data))
    reply(len(data), True, meta.index)


def install_snapshot(node: FollowerNode, snap: Snapshot) -> None:
    meta = snap.meta
    if node.log.match_term(meta.index, meta.term):
        # We already hold that entry: nothing to install, just commit up to it.
        node.log.commit_to(meta.index)
        return
    node.counters["snapshots_installed"] += 1
    node.log.restore(meta.index, meta.term)
    node.snapshot = snap
    node.pending_install = snap
    node.snapshot_in_progress = False
    before = node.configuration
    node.configs = [(meta.configuration_index, meta.configuration)]
    if node.configuration != before:
        node.on_config_changed()
