"""A pure Raft node: state, elections, membership, Ready assembly, and the public API.

Job: decide. Inputs are messages (`step`), time (`tick(now)`) and requests
(`propose`, `read_index`, `add_server`, `remove_server`,
`transfer_leadership`, `bootstrap`); the output is one `Ready` value at a time
(see ready.py for the contract the adapter follows) confirmed by `advance`.
The leader's side of replication lives in leader.py, the follower's in
follower.py; the quorum rules (quorum.py) and per-follower progress
(progress.py) are leaves below them. The node starts from what storage loaded
(`PersistentState`); the adapter restores its state machine from that
snapshot itself.

Rules:
- No I/O, no clock, no global randomness: `now` comes from `tick`, randomness
  from the `random.Random` passed in, persistence and sending from the adapter.
- Pre-vote (§9.6 of Ongaro's dissertation) and leader stickiness: a server that
  heard from a leader within the minimum election timeout ignores vote
  requests (unless they come from a leadership transfer), so a rejoining or
  removed server cannot depose a healthy leader. Check-quorum: a leader that
  has not heard from a quorum within the lease timeout steps down.
- A server only campaigns when its latest configuration (committed or not,
  §4.1) lists it as a voter; a server that was never bootstrapped never does.
- The latest configuration entry in the log is in force from the moment it is
  appended; a truncation rolls it back.
- Layering: this module imports leader.py and follower.py, never the reverse;
  they see the node through the narrow `LeaderNode` / `FollowerNode`
  protocols, which `RaftNode` satisfies (mypy checks it where it hands itself
  over).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from proconsul.raft import follower
from proconsul.raft import leader as leader_mod
from proconsul.raft.log import RaftLog
from proconsul.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    Server,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    decode_configuration,
    encode_configuration,
    well_formed,
)
from proconsul.raft.params import RaftParams, random_election_timeout
from proconsul.raft.quorum import VoteResult, vote_result
from proconsul.raft.ready import (
    NotLeader,
    PersistentState,
    Proposal,
    ReadState,
    Ready,
    Rejected,
    Role,
    SoftState,
    Status,
)

if TYPE_CHECKING:
    # Only the type: randomness always comes from the caller's seeded instance.
    import random


# Refusals of a configuration change that only mean "not yet": the caller may
# wait for the log to settle and propose again (server/raft_log.py does).
CONFIGURATION_CHANGE_PENDING = "a configuration change is already in progress"
TERM_NOT_YET_COMMITTED = "leader has not yet committed an entry in its term"


class RaftError(RuntimeError):
    """Misuse of the core by its adapter (e.g. bootstrapping twice)."""


class RaftNode:
    """One server's Raft state machine. Not thread-safe: one task owns it."""

    def __init__(
        self,
        node_id: str,
        state: PersistentState,
        params: RaftParams,
        rng: random.Random,
        *,
        now: float = 0.0,
    ) -> None:
        self.id = node_id
        self.params = params
        self.rng = rng
        self.now = now
        self.counters: Counter[str] = Counter()

        snap = state.snapshot
        prev_index, prev_term = (snap.meta.index, snap.meta.term) if snap else (0, 0)
        entries = [e for e in state.entries if e.index > prev_index]
        if snap is not None:
            at_snapshot = [e for e in state.entries if e.index == prev_index]
            if at_snapshot and at_snapshot[0].term != prev_term:
                # The log diverged from the installed snapshot (a crash between
                # writing the snapshot and clearing the log): it is all invalid.
                entries = []
        if entries and entries[0].index != prev_index + 1:
            raise RaftError(
                f"log starts at {entries[0].index} but the snapshot ends at {prev_index}"
            )
        self.log = RaftLog(prev_index, prev_term, entries)
        self.log.commit = max(prev_index, min(state.hard_state.commit, self.log.last_index()))
        self.snapshot = snap

        # A crash may have stored entries of a newer term than the hard state;
        # the term can never be behind the log.
        self.term = max(state.hard_state.term, self.log.last_term())
        self.vote = state.hard_state.vote if self.term == state.hard_state.term else ""

        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self.last_leader_contact: float | None = None
        self.election_deadline = now + random_election_timeout(rng, params.election_timeout)
        self.votes: dict[str, bool] = {}
        self.leader: leader_mod.Leader | None = None
        # (index, configuration) for the snapshot's and every logged configuration.
        self.configs: list[tuple[int, Configuration]] = []
        if snap is not None:
            self.configs.append((snap.meta.configuration_index, snap.meta.configuration))
        self.record_configs(entries)

        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.dropped_reads: list[bytes] = []
        self.pending_install: Snapshot | None = None
        # Incoming snapshot chunks: (leader, term, index, snapshot term) -> bytes so far.
        self.incoming_key: tuple[str, int, int, int] | None = None
        self.incoming = bytearray()
        self._compact_through = 0
        self.snapshot_in_progress = False
        # Applied index when want_snapshot was last raised: ask again only after
        # more was applied, so an adapter that is busy is not spun on.
        self._snapshot_asked_at = -1
        self._in_flight: Ready | None = None
        # What storage holds; anything the lines above adjusted gets written.
        self._prev_hard = state.hard_state
        self._prev_soft = SoftState(self.role, self.leader_id, self.term)
        self._config_reported: Configuration | None = None

    # ----- queries ---------------------------------------------------------------------

    @property
    def configuration(self) -> Configuration:
        return self.configs[-1][1] if self.configs else Configuration()

    @property
    def configuration_index(self) -> int:
        return self.configs[-1][0] if self.configs else 0

    def committed_configuration(self) -> tuple[int, Configuration]:
        for index, config in reversed(self.configs):
            if index <= self.log.commit:
                return index, config
        return 0, Configuration()

    def config_at(self, index: int) -> tuple[int, Configuration]:
        for cfg_index, config in reversed(self.configs):
            if cfg_index <= index:
                return cfg_index, config
        return 0, Configuration()

    def is_voter(self) -> bool:
        return self.configuration.is_voter(self.id)

    def address_of(self, server_id: str | None) -> str | None:
        if server_id is None:
            return None
        server = self.configuration.get(server_id) or self.committed_configuration()[1].get(
            server_id
        )
        return server.address if server else None

    def lease_valid(self) -> bool:
        """This leader heard from a quorum within the lease timeout.

        Like hashicorp/raft's lease it counts replies when they arrive, so it
        suits Consul's default consistency mode ("the leader answers") and the
        check-quorum step-down; `?consistent` reads go through read_index.
        """
        return self.leader is not None and self.leader.quorum_active(
            self.params.leader_lease_timeout
        )

    def status(self) -> Status:
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            vote=self.vote,
            leader_id=self.leader_id,
            commit_index=self.log.commit,
            applied_index=self.log.applied,
            last_index=self.log.last_index(),
            last_term=self.log.last_term(),
            snapshot_index=self.snapshot.meta.index if self.snapshot else 0,
            configuration=self.configuration,
            configuration_index=self.configuration_index,
            committed_configuration=self.committed_configuration()[1],
            last_leader_contact=self.last_leader_contact,
        )

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    # ----- requests --------------------------------------------------------------------

    def bootstrap(self, configuration: Configuration) -> None:
        """Start a brand-new cluster with `configuration` (every listed server may do the same).

        Writes the configuration as entry 1 of term 1, as hashicorp/raft does, so
        servers bootstrapped with the same set of servers have identical logs
        (the list is sorted by id first: the order gossip found them in must not
        matter, or entry 1 would differ between servers).
        """
        if self.term != 0 or self.log.last_index() != 0 or self.snapshot is not None:
            raise RaftError("refusing to bootstrap: this server already has Raft state")
        if not configuration.voter_ids():
            raise RaftError("a bootstrap configuration needs at least one voter")
        ids = configuration.ids()
        if len(set(ids)) != len(ids):
            raise RaftError("a bootstrap configuration lists a server twice")
        canonical = Configuration(tuple(sorted(configuration.servers, key=lambda s: s.id)))
        self.term = 1
        entry = Entry(1, 1, EntryType.CONFIGURATION, encode_configuration(canonical))
        self.log.append([entry])
        self.record_configs([entry])

    def propose(self, data: bytes) -> Proposal | NotLeader | Rejected:
        refused = self._refuse_write()
        if refused is not None:
            return refused
        assert self.leader is not None
        if self.leader.uncommitted_bytes > self.params.max_uncommitted_bytes:
            self.counters["propose_rejected_busy"] += 1
            return Rejected("too many uncommitted entries; retry later")
        self.counters["proposals"] += 1
        return self.append_entry(EntryType.COMMAND, data)

    def add_server(
        self, server_id: str, address: str, voter: bool = True
    ) -> Proposal | NotLeader | Rejected:
        """Add (or change the address or vote of) one server; one change at a time."""
        refused = self._refuse_write()
        if refused is not None:
            return refused
        current = self.configuration
        new = current.with_server(Server(server_id, address, voter))
        if current.get(server_id) == Server(server_id, address, voter):
            return Rejected(f"server {server_id} is already in the configuration")
        return self._change_configuration(new)

    def remove_server(self, server_id: str) -> Proposal | NotLeader | Rejected:
        refused = self._refuse_write()
        if refused is not None:
            return refused
        current = self.configuration
        if current.get(server_id) is None:
            return Rejected(f"server {server_id} is not in the configuration")
        new = current.without(server_id)
        if not new.voter_ids():
            return Rejected("cannot remove the last voter")
        return self._change_configuration(new)

    def read_index(self, ctx: bytes) -> NotLeader | Rejected | None:
        """Start a linearizable read; the answer arrives as a ReadState in a later Ready."""
        if self.leader is None:
            return NotLeader(self.leader_id, self.address_of(self.leader_id))
        return self.leader.read_index(ctx)

    def transfer_leadership(self, target: str | None = None) -> NotLeader | Rejected | None:
        """Hand leadership to `target` (or the most caught-up voter) via TimeoutNow."""
        if self.leader is None:
            return NotLeader(self.leader_id, self.address_of(self.leader_id))
        return self.leader.transfer(target)

    # ----- time ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Advance the clock; fire elections, heartbeats and the leader checks that are due."""
        if now < self.now:
            return  # a clock that went backwards must not re-arm or skip timers
        self.now = now
        if self.leader is not None:
            self.leader.tick()
            return
        if now >= self.election_deadline:
            self.counters["election_timeouts"] += 1
            self.campaign(pre_vote=self.params.pre_vote)

    # ----- messages --------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Handle one message from a peer."""
        if m.to_id != self.id:
            self.counters["msg_misdelivered"] += 1
            return
        if not well_formed(m):
            # Decoded fine but cannot come from a correct peer: drop, never crash.
            self.counters["msg_malformed"] += 1
            return
        self.counters[f"recv_{type(m).__name__}"] += 1
        if m.term > self.term:
            if isinstance(m, RequestVote):
                if not m.transfer and self._in_leader_lease():
                    # Leader stickiness: someone we believe in is alive.
                    self.counters["vote_ignored_lease"] += 1
                    return
                if m.pre_vote:
                    self._on_request_vote(m)
                    return
            elif isinstance(m, RequestVoteResponse) and m.pre_vote and m.granted:
                self._on_vote_response(m)
                return
            leader = (
                m.from_id if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot) else None
            )
            self.become_follower(m.term, leader)
        elif m.term < self.term:
            self._on_stale(m)
            return
        if isinstance(m, AppendEntries):
            follower.on_append(self, m)
        elif isinstance(m, Heartbeat):
            follower.on_heartbeat(self, m)
        elif isinstance(m, InstallSnapshot):
            follower.on_install_snapshot(self, m)
        elif isinstance(m, RequestVote):
            self._on_request_vote(m)
        elif isinstance(m, RequestVoteResponse):
            self._on_vote_response(m)
        elif isinstance(m, TimeoutNow):
            self._on_timeout_now(m)
        elif self.leader is not None:
            self.leader.step(m)

    def send(self, m: Message) -> None:
        self.counters[f"sent_{type(m).__name__}"] += 1
        self.msgs.append(m)

    def _on_stale(self, m: Message) -> None:
        """A message from an older term. Tell a stale leader or candidate our term."""
        self.counters["msg_stale"] += 1
        if isinstance(m, AppendEntries | InstallSnapshot):
            self.send(AppendEntriesResponse(self.term, self.id, m.from_id, False))
        elif isinstance(m, Heartbeat):
            self.send(HeartbeatResponse(self.term, self.id, m.from_id, 0))
        elif isinstance(m, RequestVote):
            self.send(RequestVoteResponse(self.term, self.id, m.from_id, False, m.pre_vote))

    def _in_leader_lease(self) -> bool:
        if self.role is Role.LEADER:
            return True
        return (
            self.leader_id is not None
            and self.last_leader_contact is not None
            and self.now - self.last_leader_contact < self.params.election_timeout
        )

    # ----- elections -------------------------------------------------------------------

    def reset_election_timer(self) -> None:
        self.election_deadline = self.now + random_election_timeout(
            self.rng, self.params.election_timeout
        )

    def leader_unreachable(self) -> None:
        """The transport saw the connection to the leader close (its process died,
        its host reset the connection). Forget it and campaign soon, instead of
        after a whole election timeout without heartbeats.

        Safe by construction: this only moves a timer and drops what the
        follower believes about a leader; votes still decide, and with pre-vote
        a server that still hears a live leader refuses, so a spurious close
        cannot depose anyone. The delay is random within a quarter of the
        election timeout so followers that saw the close together do not split
        their votes."""
        if self.role is not Role.FOLLOWER or self.leader_id is None:
            return
        self.counters["leader_unreachable"] += 1
        self.leader_id = None
        self.last_leader_contact = None
        soon = self.now + self.rng.uniform(0.0, self.params.election_timeout / 4)
        self.election_deadline = min(self.election_deadline, soon)

    def campaign_now(self) -> None:
        """Campaign without waiting for the election timeout (a lone voter just
        bootstrapped: nobody else can lead, so waiting only delays the start)."""
        if self.role is not Role.LEADER:
            self.campaign(pre_vote=False)

    def campaign(self, *, pre_vote: bool, transfer: bool = False) -> None:
        self.reset_election_timer()
        if not self.is_voter():
            return  # not (or no longer) a voter: wait to hear from a leader
        voters = self.configuration.voter_ids()
        self.leader_id = None
        self.votes = {self.id: True}
        if pre_vote:
            self.role = Role.PRE_CANDIDATE
            term = self.term + 1
            self.counters["pre_votes_started"] += 1
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.vote = self.id
            term = self.term
            self.counters["elections_started"] += 1
        if len(voters) == 1:
            self._won(pre_vote)
            return
        for peer in voters:
            if peer != self.id:
                self.send(
                    RequestVote(
                        term,
                        self.id,
                        peer,
                        self.log.last_index(),
                        self.log.last_term(),
                        pre_vote=pre_vote,
                        transfer=transfer,
                    )
                )

    def _won(self, pre_vote: bool) -> None:
        if pre_vote:
            self.campaign(pre_vote=False)
        else:
            self.become_leader()

    def _on_request_vote(self, m: RequestVote) -> None:
        if m.pre_vote:
            can_vote = m.term > self.term or (
                m.term == self.term and self.leader_id is None and self.vote in ("", m.from_id)
            )
        else:
            can_vote = self.vote == m.from_id or (self.vote == "" and self.leader_id is None)
        granted = can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term)
        if granted and not m.pre_vote:
            self.vote = m.from_id
            self.reset_election_timer()
        self.counters["votes_granted" if granted else "votes_refused"] += 1
        term = m.term if (granted and m.pre_vote) else self.term
        self.send(RequestVoteResponse(term, self.id, m.from_id, granted, m.pre_vote))

    def _on_vote_response(self, m: RequestVoteResponse) -> None:
        if m.pre_vote:
            if self.role is not Role.PRE_CANDIDATE or (m.granted and m.term != self.term + 1):
                return
        elif self.role is not Role.CANDIDATE:
            return
        if m.from_id not in self.configuration.voter_ids():
            return
        self.votes.setdefault(m.from_id, m.granted)
        result = vote_result(self.configuration.voter_ids(), self.votes)
        if result is VoteResult.WON:
            self._won(m.pre_vote)
        elif result is VoteResult.LOST:
            self.become_follower(self.term, None)

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if self.role is Role.LEADER:
            return
        self.counters["timeout_now_received"] += 1
        self.campaign(pre_vote=False, transfer=True)

    def become_follower(self, term: int, leader_id: str | None) -> None:
        if term > self.term:
            self.term = term
            self.vote = ""
        if self.leader is not None:
            self.counters["stepped_down"] += 1
            self.leader.stop()
            self.leader = None
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self.votes = {}
        self.reset_election_timer()

    def become_leader(self) -> None:
        self.counters["elections_won"] += 1
        self.role = Role.LEADER
        self.leader_id = self.id
        self.votes = {}
        self.leader = leader_mod.Leader(self)
        # A no-op of our own term lets us commit entries of earlier terms (§5.4.2)
        # and tells us when reads may be served (§6.4).
        self.append_entry(EntryType.NOOP, b"")

    # ----- log changes -----------------------------------------------------------------

    def append_entry(self, kind: EntryType, data: bytes) -> Proposal:
        entry = Entry(self.log.last_index() + 1, self.term, kind, data)
        self.log.append([entry])
        self.record_configs([entry])
        assert self.leader is not None
        self.leader.on_appended(entry)
        return Proposal(entry.index, entry.term)

    def record_configs(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        changed = False
        for entry in entries:
            if entry.type is EntryType.CONFIGURATION:
                self.configs.append((entry.index, decode_configuration(entry.data)))
                changed = True
        if changed:
            self.on_config_changed()

    def rollback_configs(self, first_removed: int) -> None:
        before = len(self.configs)
        self.configs = [(i, c) for i, c in self.configs if i < first_removed]
        if len(self.configs) != before:
            self.on_config_changed()

    def on_config_changed(self) -> None:
        if self.leader is not None:
            self.leader.on_config_changed()
        elif self.role is not Role.FOLLOWER and not self.is_voter():
            self.become_follower(self.term, None)

    def _refuse_write(self) -> NotLeader | Rejected | None:
        if self.leader is None:
            return NotLeader(self.leader_id, self.address_of(self.leader_id))
        if self.leader.transfer_target is not None:
            return Rejected("leadership transfer in progress")
        return None

    def _change_configuration(self, new: Configuration) -> Proposal | NotLeader | Rejected:
        refused = self._refuse_write()
        if refused is not None:
            return refused
        if self.configuration_index > self.log.commit:
            return Rejected(CONFIGURATION_CHANGE_PENDING)
        if self.log.term(self.log.commit) != self.term:
            # Single-server changes are only safe once the leader committed an
            # entry of its own term (the fix to the one-at-a-time change bug).
            return Rejected(TERM_NOT_YET_COMMITTED)
        self.counters["configuration_changes"] += 1
        return self.append_entry(EntryType.CONFIGURATION, encode_configuration(new))

    # ----- snapshots of our own state machine ------------------------------------------

    def prepare_snapshot(self) -> SnapshotMeta | None:
        """Metadata for a snapshot of the state machine as it is now (at the applied index).

        Returns None when there is nothing new to snapshot. Call it between
        `advance` and applying the next Ready, so the state machine reflects
        exactly `meta.index`.
        """
        index = self.log.applied
        if self.snapshot is not None and index <= self.snapshot.meta.index:
            return None
        term = self.log.term(index)
        if index == 0 or term is None:
            return None
        cfg_index, config = self.config_at(index)
        self.snapshot_in_progress = True
        return SnapshotMeta(index, term, config, cfg_index)

    def snapshot_done(self, snap: Snapshot) -> None:
        """The adapter stored `snap` durably; compact the log behind it."""
        self.snapshot_in_progress = False
        if self.snapshot is not None and snap.meta.index <= self.snapshot.meta.index:
            return
        if snap.meta.index > self.log.applied:
            raise RaftError("a snapshot cannot be ahead of the applied index")
        self.counters["snapshots_taken"] += 1
        self.snapshot = snap
        through = min(snap.meta.index - self.params.trailing_logs, self.log.applied)
        if through > self.log.prev_index:
            self.log.compact(through)
            self._compact_through = through
            keep = [c for c in self.configs if c[0] > through]
            older = [c for c in self.configs if c[0] <= through]
            self.configs = older[-1:] + keep

    def snapshot_failed(self) -> None:
        self.snapshot_in_progress = False
        self.counters["snapshots_failed"] += 1

    # ----- Ready -----------------------------------------------------------------------

    def has_ready(self) -> bool:
        if self._in_flight is not None:
            return False
        if self.leader is not None and self.leader.has_pending_sends():
            return True
        return (
            bool(self.msgs or self.read_states or self.dropped_reads)
            or self.pending_install is not None
            or self.log.stable_index < self.log.last_index()
            or self.log.applied < self.log.commit
            or HardState(self.term, self.vote, self.log.commit) != self._prev_hard
            or SoftState(self.role, self.leader_id, self.term) != self._prev_soft
            or self.configuration != self._config_reported
            or self._compact_through != 0
            or self._wants_snapshot()
        )

    def _wants_snapshot(self) -> bool:
        if self.snapshot_in_progress or self.log.applied <= self._snapshot_asked_at:
            return False
        base = self.snapshot.meta.index if self.snapshot else 0
        return self.log.applied - base >= self.params.snapshot_threshold

    def ready(self) -> Ready:
        """Collect the work to do. Call `advance` with it before asking again."""
        if self._in_flight is not None:
            raise RaftError("the previous Ready was not advanced")
        if self.leader is not None:
            self.leader.flush()
        hard = HardState(self.term, self.vote, self.log.commit)
        soft = SoftState(self.role, self.leader_id, self.term)
        entries = self.log.unstable()
        prev = self._prev_hard
        config = self.configuration
        ready = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != prev else None,
            snapshot=self.pending_install,
            entries=entries,
            must_sync=bool(entries) or hard.term != prev.term or hard.vote != prev.vote,
            messages=tuple(self.msgs),
            committed_entries=self.log.committed_after(
                self.log.applied, self.params.max_committed_bytes_per_ready
            ),
            read_states=tuple(self.read_states),
            dropped_reads=tuple(self.dropped_reads),
            configuration=config if config != self._config_reported else None,
            compact_through=self._compact_through,
            want_snapshot=self._wants_snapshot(),
        )
        if ready.want_snapshot:
            self._snapshot_asked_at = self.log.applied
        self._prev_hard, self._prev_soft, self._config_reported = hard, soft, config
        self.msgs, self.read_states, self.dropped_reads = [], [], []
        self.pending_install = None
        self._compact_through = 0
        self._in_flight = ready
        return ready

    def advance(self, ready: Ready) -> None:
        """The adapter finished `ready` (persisted, sent, applied)."""
        if ready is not self._in_flight:
            raise RaftError("advance() must be given the outstanding Ready")
        self._in_flight = None
        if ready.entries:
            last = ready.entries[-1]
            self.log.stable_to(last.index, last.term)
        if ready.committed_entries:
            # max(): a snapshot installed meanwhile may already be further along.
            self.log.applied = max(self.log.applied, ready.committed_entries[-1].index)
