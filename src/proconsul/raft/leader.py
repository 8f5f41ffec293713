"""The leader's half of Raft: replication to each follower, commit, reads, transfer.

Job: exist only while its node leads (one `Leader` per term of leadership) and
turn proposals and follower responses into AppendEntries, InstallSnapshot,
Heartbeat and TimeoutNow messages, the commit index, and confirmed reads.

Rules:
- Per follower a `Progress` (progress.py keeps its books and states).
  PROBE: one AppendEntries at a time, resent after a heartbeat interval.
  REPLICATE: up to `max_inflight_appends` requests outstanding. SNAPSHOT: the
  snapshot in chunks, a chunk resent when unanswered for two heartbeats.
- Replication is batched: proposals only mark work; `flush` (run when the
  adapter asks for a Ready) sends one AppendEntries per follower covering
  everything new, capped by entries and bytes.
- Commit is the quorum commit index of the latest configuration's voters, and
  only an entry of the current term is committed by counting (§5.4.2).
- Reads (§6.4): a read takes the commit index once the leader has committed an
  entry of its term, then waits for a heartbeat round started after it to be
  acknowledged by a quorum. Reads arriving together share one round.
- Check-quorum: no contact with a quorum within the lease timeout means the
  leader steps down; a lost link cannot leave two leaders serving reads.
- Layering: the node is only a `LeaderNode` here and core.py is never
  imported; quorum.py does the counting, progress.py the per-follower books.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Protocol

from proconsul.raft.log import RaftLog, entry_size
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
    TimeoutNow,
)
from proconsul.raft.params import RaftParams
from proconsul.raft.progress import Progress, ProgressState
from proconsul.raft.quorum import quorum_acked, quorum_commit_index
from proconsul.raft.ready import ReadState, Rejected


class LeaderNode(Protocol):
    """The node as its leader sees it; core.RaftNode is one.

    Besides its counters, the leader changes the node only by committing in its
    log, sending, stepping it down, and appending to `read_states` and
    `dropped_reads`.
    """

    id: str
    term: int
    now: float
    params: RaftParams
    log: RaftLog
    snapshot: Snapshot | None
    counters: Counter[str]
    read_states: list[ReadState]
    dropped_reads: list[bytes]

    @property
    def configuration(self) -> Configuration: ...

    def committed_configuration(self) -> tuple[int, Configuration]: ...

    def send(self, m: Message) -> None: ...

    def become_follower(self, term: int, leader_id: str | None) -> None: ...


@dataclass(slots=True)
class PendingRead:
    ctx: bytes
    index: int
    seq: int = 0  # heartbeat round confirming it; 0 until the round is sent


class Leader:
    def __init__(self, node: LeaderNode) -> None:
        self.node = node
        # Fixed while this leadership lasts (a new term means a new Leader).
        self.id = node.id
        self.term = node.term
        self.params = node.params
        self.log = node.log
        # Set once the node stepped down: a response handler that committed
        # (and so maybe stepped down) must not go on sending.
        self.stopped = False
        self.progress: dict[str, Progress] = {}
        self.seq = 0
        self.reads: deque[PendingRead] = deque()
        self.reads_waiting_commit: list[bytes] = []
        self.transfer_target: str | None = None
        self.transfer_deadline = 0.0
        self.uncommitted_bytes = 0
        self.next_heartbeat = node.now
        self.broadcast_pending = False
        self.commit_pending = False
        self.read_round_pending = False
        self.on_config_changed()

    # ----- bookkeeping -----------------------------------------------------------------

    def on_config_changed(self) -> None:
        """Track every server of the latest and the committed configuration but us.

        A removed server keeps receiving the log until its removal commits, so it
        learns of it and stops campaigning.
        """
        node = self.node
        wanted = set(node.configuration.ids()) | set(node.committed_configuration()[1].ids())
        wanted.discard(self.id)
        for peer in list(self.progress):
            if peer not in wanted:
                del self.progress[peer]
        for peer in sorted(wanted - set(self.progress)):
            self.progress[peer] = Progress(
                next=self.log.last_index() + 1, last_contact=node.now, progress_at=node.now
            )
        if self.transfer_target is not None and not node.configuration.is_voter(
            self.transfer_target
        ):
            self.transfer_target = None

    def on_appended(self, entry: Entry) -> None:
        self.uncommitted_bytes += entry_size(entry)
        self.broadcast_pending = True
        self.maybe_commit()

    def has_pending_sends(self) -> bool:
        return self.broadcast_pending or self.commit_pending or self.read_round_pending

    def stop(self) -> None:
        """Leadership is over: every read still waiting must be failed by the adapter."""
        self.stopped = True
        self.node.dropped_reads.extend(r.ctx for r in self.reads)
        self.node.dropped_reads.extend(self.reads_waiting_commit)
        self.reads.clear()
        self.reads_waiting_commit.clear()

    def quorum_active(self, window: float) -> bool:
        node = self.node
        since = node.now - window
        active = {peer for peer, pr in self.progress.items() if pr.last_contact >= since}
        active.add(self.id)
        return quorum_acked(node.configuration.voter_ids(), active)

    # ----- time ------------------------------------------------------------------------

    def tick(self) -> None:
        node = self.node
        now = node.now
        if not self.quorum_active(self.params.leader_lease_timeout):
            node.counters["leader_lost_quorum"] += 1
            node.become_follower(self.term, None)
            return
        if self.transfer_target is not None and now >= self.transfer_deadline:
            node.counters["transfer_timed_out"] += 1
            self.transfer_target = None
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.params.heartbeat_interval
            for peer, pr in self.progress.items():
                self.send_heartbeat(peer, pr)
                if (
                    pr.state is ProgressState.SNAPSHOT
                    and now - pr.snapshot_sent_at > 2 * self.params.heartbeat_interval
                ):
                    self.send_snapshot_chunk(peer, pr)

    # ----- sending ---------------------------------------------------------------------

    def flush(self) -> None:
        """Send what accumulated since the last Ready: read rounds, new entries, commit."""
        touched: set[str] = set()
        if self.read_round_pending:
            self.read_round_pending = False
            self.seq += 1
            for read in self.reads:
                if read.seq == 0:
                    read.seq = self.seq
            for peer, pr in self.progress.items():
                self.send_heartbeat(peer, pr)
                touched.add(peer)
        if self.broadcast_pending:
            self.broadcast_pending = False
            for peer, pr in self.progress.items():
                if self.send_append(peer, pr, allow_empty=False):
                    touched.add(peer)
        if self.commit_pending:
            # Followers learn the new commit index from the next append or,
            # when there is none, from a heartbeat now (stale reads see it sooner).
            self.commit_pending = False
            for peer, pr in self.progress.items():
                if peer not in touched:
                    self.send_heartbeat(peer, pr)

    def send_heartbeat(self, peer: str, pr: Progress) -> None:
        node = self.node
        commit = min(pr.match, self.log.commit)
        node.send(Heartbeat(self.term, self.id, peer, commit, self.seq))

    def send_append(self, peer: str, pr: Progress, *, allow_empty: bool) -> bool:
        """Send what `peer` is missing; True if anything was sent."""
        node = self.node
        log = self.log
        params = self.params
        if pr.state is ProgressState.SNAPSHOT:
            return False
        if pr.next <= log.prev_index:
            self.start_snapshot(peer, pr)
            return True
        last = log.last_index()
        if pr.state is ProgressState.PROBE:
            if pr.probe_paused(node.now, params.heartbeat_interval):
                return False  # one probe at a time
            entries = (
                log.slice(pr.next, last + 1, params.max_append_bytes, params.max_append_entries)
                if pr.next <= last
                else ()
            )
            if not entries and not allow_empty:
                return False
            self._append_message(peer, pr.next - 1, entries)
            pr.probe_sent_at = node.now
            return True
        sent = False
        while len(pr.inflight) < params.max_inflight_appends and pr.next <= last:
            entries = log.slice(
                pr.next, last + 1, params.max_append_bytes, params.max_append_entries
            )
            self._append_message(peer, pr.next - 1, entries)
            pr.sent_entries(entries[-1].index)
            sent = True
        if not sent and allow_empty:
            self._append_message(peer, pr.next - 1, ())
            sent = True
        return sent

    def _append_message(self, peer: str, prev_index: int, entries: tuple[Entry, ...]) -> None:
        node = self.node
        prev_term = self.log.term(prev_index)
        assert prev_term is not None, "prev entry must be in the log or be the compaction point"
        node.send(
            AppendEntries(self.term, self.id, peer, prev_index, prev_term, entries, self.log.commit)
        )

    def start_snapshot(self, peer: str, pr: Progress) -> None:
        snap = self.node.snapshot
        assert snap is not None, "the log was compacted, so a snapshot exists"
        self.node.counters["snapshots_sent"] += 1
        pr.become_snapshot(snap.meta.index)
        self.send_snapshot_chunk(peer, pr)

    def send_snapshot_chunk(self, peer: str, pr: Progress) -> None:
        node = self.node
        snap = node.snapshot
        assert snap is not None
        if snap.meta.index != pr.snapshot_index:
            # We took a newer snapshot meanwhile: start over with it.
            pr.snapshot_index = snap.meta.index
            pr.snapshot_offset = 0
        offset = pr.snapshot_offset
        chunk = snap.data[offset : offset + self.params.snapshot_chunk_bytes]
        node.send(
            InstallSnapshot(
                self.term,
                self.id,
                peer,
                snap.meta,
                offset,
                chunk,
                total_size=len(snap.data),
                done=offset + len(chunk) >= len(snap.data),
            )
        )
        pr.snapshot_sent_at = node.now

    # ----- responses -------------------------------------------------------------------

    def step(self, m: Message) -> None:
        pr = self.progress.get(m.from_id)
        if pr is None:
            return
        pr.last_contact = self.node.now
        if isinstance(m, AppendEntriesResponse):
            self._on_append_response(m, pr)
        elif isinstance(m, HeartbeatResponse):
            self._on_heartbeat_response(m, pr)
        elif isinstance(m, InstallSnapshotResponse):
            self._on_snapshot_response(m, pr)

    def _on_append_response(self, m: AppendEntriesResponse, pr: Progress) -> None:
        node = self.node
        if m.success:
            advanced = pr.maybe_update(m.match_index, node.now)
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            if advanced:
                self.maybe_commit()
                if self.stopped:
                    return
            self._maybe_send_timeout_now(m.from_id, pr)
            self.send_append(m.from_id, pr, allow_empty=False)
            return
        if pr.rejection_is_stale(m.reject_index):
            return
        hint = m.conflict_index
        if m.conflict_term > 0:
            ours = self.log.last_index_of_term(m.conflict_term, m.reject_index)
            if ours is not None:
                hint = ours + 1
        pr.back_off(hint, m.reject_index)
        node.counters["append_backoffs"] += 1
        self.send_append(m.from_id, pr, allow_empty=True)

    def _on_heartbeat_response(self, m: HeartbeatResponse, pr: Progress) -> None:
        node = self.node
        if m.seq > pr.acked_seq:
            pr.acked_seq = m.seq
            self._release_reads()
        if pr.match >= self.log.last_index():
            return
        # The link works but the follower is behind: resume a paused probe, or
        # detect a pipeline whose requests were lost.
        if pr.state is ProgressState.PROBE:
            pr.probe_sent_at = None
            self.send_append(m.from_id, pr, allow_empty=True)
        elif pr.state is ProgressState.REPLICATE:
            if not pr.inflight:
                self.send_append(m.from_id, pr, allow_empty=True)
            elif node.now - pr.progress_at > 2 * self.params.heartbeat_interval:
                node.counters["pipeline_stalls"] += 1
                pr.become_probe()
                self.send_append(m.from_id, pr, allow_empty=True)
        elif node.now - pr.snapshot_sent_at > 2 * self.params.heartbeat_interval:
            self.send_snapshot_chunk(m.from_id, pr)

    def _on_snapshot_response(self, m: InstallSnapshotResponse, pr: Progress) -> None:
        if m.done:
            advanced = pr.maybe_update(m.match_index, self.node.now)
            if pr.state is ProgressState.SNAPSHOT and pr.match >= pr.snapshot_index:
                pr.become_probe()
            if advanced:
                self.maybe_commit()
                if self.stopped:
                    return
            self.send_append(m.from_id, pr, allow_empty=False)
            return
        if pr.state is ProgressState.SNAPSHOT and m.snapshot_index == pr.snapshot_index:
            pr.snapshot_offset = m.next_offset
            self.send_snapshot_chunk(m.from_id, pr)

    # ----- commit ----------------------------------------------------------------------

    def maybe_commit(self) -> None:
        node = self.node
        log = self.log
        voters = node.configuration.voter_ids()
        matches = [
            log.last_index()
            if v == self.id
            else (self.progress[v].match if v in self.progress else 0)
            for v in voters
        ]
        index = quorum_commit_index(matches)
        if index <= log.commit or log.term(index) != self.term:
            return
        old = log.commit
        log.commit_to(index)
        for i in range(max(old + 1, log.first_index()), index + 1):
            entry = log.entry(i)
            if entry.term == self.term:
                self.uncommitted_bytes -= entry_size(entry)
        self.commit_pending = True
        if self.reads_waiting_commit:
            waiting, self.reads_waiting_commit = self.reads_waiting_commit, []
            for ctx in waiting:
                self._start_read(ctx)
        self.on_config_changed()
        if not node.committed_configuration()[1].is_voter(self.id):
            # Our own removal (or demotion) committed: hand over and step down.
            node.counters["leader_removed"] += 1
            best = max(
                (p for p in self.progress if node.configuration.is_voter(p)),
                key=lambda p: self.progress[p].match,
                default=None,
            )
            if best is not None and self.progress[best].match == log.last_index():
                node.send(TimeoutNow(self.term, self.id, best))
            node.become_follower(self.term, None)

    # ----- reads -----------------------------------------------------------------------

    def read_index(self, ctx: bytes) -> Rejected | None:
        node = self.node
        if len(self.reads) + len(self.reads_waiting_commit) >= self.params.max_pending_reads:
            node.counters["reads_rejected_busy"] += 1
            return Rejected("too many pending reads; retry later")
        node.counters["read_index_requests"] += 1
        if self.log.term(self.log.commit) != self.term:
            # Until our no-op commits we do not know the latest commit index.
            self.reads_waiting_commit.append(ctx)
        else:
            self._start_read(ctx)
        return None

    def _start_read(self, ctx: bytes) -> None:
        node = self.node
        if node.configuration.voter_ids() == (self.id,):
            node.read_states.append(ReadState(ctx, self.log.commit))
            return
        self.reads.append(PendingRead(ctx, self.log.commit))
        self.read_round_pending = True

    def _release_reads(self) -> None:
        node = self.node
        voters = node.configuration.voter_ids()
        while self.reads and self.reads[0].seq > 0:
            read = self.reads[0]
            acked = {peer for peer, pr in self.progress.items() if pr.acked_seq >= read.seq}
            acked.add(self.id)
            if not quorum_acked(voters, acked):
                return
            self.reads.popleft()
            node.read_states.append(ReadState(read.ctx, read.index))

    # ----- leadership transfer ---------------------------------------------------------

    def transfer(self, target: str | None) -> Rejected | None:
        node = self.node
        if self.transfer_target is not None:
            return Rejected("leadership transfer already in progress")
        candidates = [v for v in node.configuration.voter_ids() if v != self.id]
        if target is None:
            if not candidates:
                return Rejected("no other voter to transfer leadership to")
            target = max(candidates, key=lambda v: self.progress[v].match)
        elif target not in candidates:
            return Rejected(f"{target} is not another voter in the configuration")
        node.counters["transfers_started"] += 1
        self.transfer_target = target
        self.transfer_deadline = node.now + self.params.election_timeout
        pr = self.progress[target]
        if not self._maybe_send_timeout_now(target, pr):
            self.send_append(target, pr, allow_empty=True)
        return None

    def _maybe_send_timeout_now(self, peer: str, pr: Progress) -> bool:
        node = self.node
        if self.transfer_target != peer or pr.match < self.log.last_index():
            return False
        node.send(TimeoutNow(self.term, self.id, peer))
        return True
