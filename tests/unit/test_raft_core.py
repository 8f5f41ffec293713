"""RaftNode scenarios, scripted: elections, the Ready contract, commit, reads, transfer,
membership, snapshots, restarts, recovery. Each test drives a small in-memory cluster
with a manual clock and instant delivery (the seeded fault simulations live in
tests/sim/raft)."""

from __future__ import annotations

import ast
import random
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

import proconsul.raft
from proconsul.raft.core import RaftError, RaftNode
from proconsul.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    EntryType,
    HardState,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    Server,
    Snapshot,
    encode_configuration,
)
from proconsul.raft.params import RaftParams
from proconsul.raft.ready import (
    NotLeader,
    PersistentState,
    Proposal,
    ReadState,
    Ready,
    Rejected,
    Role,
)
from proconsul.raft.storage_api import MemoryStorage, persist_ready, recover_cluster

P = RaftParams(
    election_timeout=1.0,
    heartbeat_interval=0.1,
    leader_lease_timeout=0.5,
    snapshot_threshold=10_000,
    trailing_logs=5,
)


class Cluster:
    """N RaftNodes on MemoryStorage, a manual clock, and instant, filterable delivery."""

    def __init__(
        self, n: int = 3, params: RaftParams = P, *, bootstrap: bool = True, seed: int = 0
    ) -> None:
        self.ids = [f"n{i}" for i in range(n)]
        self.params = params
        self.rng = random.Random(seed)
        self.now = 0.0
        self.storages = {i: MemoryStorage() for i in self.ids}
        self.nodes: dict[str, RaftNode | None] = {}
        self.applied: dict[str, list[bytes]] = {}
        self.read_states: dict[str, list[ReadState]] = {}
        self.dropped_reads: dict[str, list[bytes]] = {}
        self.readies: dict[str, list[Ready]] = {}
        self.delivered: list[Message] = []
        self.blocked: set[tuple[str, str]] = set()
        for i in self.ids:
            self.start(i)
        if bootstrap:
            config = Configuration(tuple(Server(i, f"addr-{i}") for i in self.ids))
            for i in self.ids:
                self.node(i).bootstrap(config)

    # plumbing

    def add(self, server_id: str) -> None:
        self.ids.append(server_id)
        self.storages[server_id] = MemoryStorage()
        self.start(server_id)

    def start(self, i: str) -> None:
        state = self.storages[i].load()
        self.nodes[i] = RaftNode(
            i, state, self.params, random.Random(self.rng.random()), now=self.now
        )
        snap = state.snapshot
        self.applied[i] = list(msgspec.msgpack.decode(snap.data)) if snap else []
        self.read_states.setdefault(i, [])
        self.dropped_reads.setdefault(i, [])
        self.readies.setdefault(i, [])

    def crash(self, i: str) -> None:
        self.nodes[i] = None

    def node(self, i: str) -> RaftNode:
        node = self.nodes[i]
        assert node is not None, f"{i} is down"
        return node

    def isolate(self, i: str) -> None:
        for other in self.ids:
            if other != i:
                self.blocked |= {(i, other), (other, i)}

    def heal(self) -> None:
        self.blocked.clear()

    def process(self, i: str) -> list[Message]:
        node = self.nodes[i]
        out: list[Message] = []
        while node is not None and node.has_ready():
            ready = node.ready()
            self.readies[i].append(ready)
            persist_ready(self.storages[i], ready)
            if ready.snapshot is not None:
                self.applied[i] = list(msgspec.msgpack.decode(ready.snapshot.data))
            out += ready.messages
            for entry in ready.committed_entries:
                self.applied[i].append(entry.data if entry.type is EntryType.COMMAND else b"")
            self.read_states[i] += ready.read_states
            self.dropped_reads[i] += ready.dropped_reads
            if ready.compact_through:
                self.storages[i].compact(ready.compact_through)
            node.advance(ready)
            if ready.want_snapshot:
                meta = node.prepare_snapshot()
                if meta is not None:
                    assert meta.index == len(self.applied[i])
                    snap = Snapshot(meta, msgspec.msgpack.encode(self.applied[i]))
                    self.storages[i].save_snapshot(snap)
                    node.snapshot_done(snap)
        return out

    def settle(self) -> None:
        for _ in range(10_000):
            queue: list[Message] = []
            for i in self.ids:
                queue += self.process(i)
            if not queue:
                return
            for m in queue:
                target = self.nodes.get(m.to_id)
                if target is None or (m.from_id, m.to_id) in self.blocked:
                    continue
                self.delivered.append(m)
                target.step(m)
        raise AssertionError("cluster did not settle")

    def tick(self, dt: float = 0.05) -> None:
        self.now += dt
        for i in self.ids:
            node = self.nodes[i]
            if node is not None:
                node.tick(self.now)
        self.settle()

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.05)):
            self.tick()

    def leaders(self) -> list[str]:
        return [i for i, n in self.nodes.items() if n is not None and n.role is Role.LEADER]

    def wait_leader(self, limit: float = 10.0) -> str:
        for _ in range(round(limit / 0.05)):
            self.tick()
            leaders = self.leaders()
            if leaders:
                best = max(leaders, key=lambda i: self.node(i).term)
                if self.node(best).log.term(self.node(best).log.commit) == self.node(best).term:
                    return best
        raise AssertionError("no leader elected")

    def propose(self, i: str, data: bytes) -> Proposal:
        result = self.node(i).propose(data)
        assert isinstance(result, Proposal), result
        self.settle()
        return result


# ----- elections and the Ready contract ----------------------------------------------


def test_single_server_bootstraps_and_commits() -> None:
    c = Cluster(1)
    leader = c.wait_leader()
    assert leader == "n0"
    c.propose("n0", b"hello")
    assert c.applied["n0"][-1] == b"hello"


def test_three_servers_elect_one_leader_and_replicate() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    for k in range(5):
        c.propose(leader, b"v%d" % k)
    c.run(0.5)
    assert len(c.leaders()) == 1
    assert c.applied["n0"] == c.applied["n1"] == c.applied["n2"]
    assert c.applied["n0"][-5:] == [b"v%d" % k for k in range(5)]
    # Election timeouts are randomized, so the servers did not all campaign at once.
    assert sum(c.node(i).stats().get("elections_started", 0) for i in c.ids) <= 2


def test_replication_is_batched_and_pipelined() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    node = c.node(leader)
    count = 3 * P.max_append_entries + 10
    for k in range(count):
        assert isinstance(node.propose(b"x%d" % k), Proposal)
    out = c.process(leader)
    sent = [m for m in out if isinstance(m, AppendEntries)]
    follower = next(i for i in c.ids if i != leader)
    to_one = [m for m in sent if m.to_id == follower]
    sizes = [len(m.entries) for m in to_one]
    # Batched: up to max_append_entries entries travel in one message, not one each;
    # pipelined: every batch is on its way before the follower has answered any.
    assert max(sizes) == P.max_append_entries, sizes
    assert sum(sizes) >= count and len(to_one) >= 4, sizes
    assert len(to_one) <= P.max_inflight_appends
    for message in out:
        c.node(message.to_id).step(message)
    c.settle()
    c.run(0.2)
    for i in c.ids:
        assert c.applied[i][-1] == b"x%d" % (count - 1), i


def voter_node(node_id: str = "n1", entries: Sequence[Entry] = (), term: int = 1) -> RaftNode:
    config = Configuration(tuple(Server(i, i) for i in ("n0", "n1", "n2")))
    log = [Entry(1, 1, EntryType.CONFIGURATION, encode_configuration(config)), *entries]
    state = PersistentState(HardState(term, "", 0), None, tuple(log))
    return RaftNode(node_id, state, P, random.Random(1))


def test_vote_is_persisted_in_the_same_ready_as_the_reply() -> None:
    node = voter_node()
    node.step(RequestVote(2, "n0", "n1", 1, 1))
    ready = node.ready()
    assert ready.hard_state == HardState(2, "n0", 0)
    assert ready.must_sync
    assert ready.messages == (RequestVoteResponse(2, "n1", "n0", True),)
    node.advance(ready)
    # A second candidate in the same term is refused: one vote per term.
    node.step(RequestVote(2, "n2", "n1", 5, 1))
    ready = node.ready()
    assert ready.messages == (RequestVoteResponse(2, "n1", "n2", False),)


def test_vote_needs_an_up_to_date_log() -> None:
    node = voter_node(entries=[Entry(2, 2, EntryType.COMMAND, b"")], term=2)
    node.step(RequestVote(3, "n0", "n1", 5, 1))  # longer log, older last term
    assert node.ready().messages == (RequestVoteResponse(3, "n1", "n0", False),)


def test_follower_acknowledges_only_what_the_request_proves() -> None:
    # n1 holds 2..4 from term 2; the leader of term 3 only proves index 3.
    stale = [Entry(i, 2, EntryType.COMMAND, b"old") for i in (2, 3, 4)]
    node = voter_node(entries=stale, term=3)
    node.step(AppendEntries(3, "n0", "n1", 2, 2, (Entry(3, 2, EntryType.COMMAND, b"old"),), 0))
    (reply,) = node.ready().messages
    assert isinstance(reply, AppendEntriesResponse)
    assert reply.success and reply.match_index == 3


def test_rejection_carries_a_conflict_hint() -> None:
    node = voter_node(entries=[Entry(i, 2, EntryType.COMMAND, b"") for i in (2, 3, 4)], term=3)
    node.step(AppendEntries(3, "n0", "n1", 4, 3, (), 0))
    (reply,) = node.ready().messages
    assert isinstance(reply, AppendEntriesResponse)
    assert not reply.success
    assert (reply.reject_index, reply.conflict_index, reply.conflict_term) == (4, 2, 2)


def test_leader_never_commits_an_old_term_entry_by_counting() -> None:
    # Raft §5.4.2 (the paper's Figure 8): the leader of term 4 holds an entry of
    # term 2 at index 2; a majority storing it is not enough to commit it.
    params = RaftParams(
        election_timeout=1.0, heartbeat_interval=0.1, leader_lease_timeout=0.5, pre_vote=False
    )
    config = Configuration(tuple(Server(i, i) for i in ("n0", "n1", "n2")))
    log = (
        Entry(1, 1, EntryType.CONFIGURATION, encode_configuration(config)),
        Entry(2, 2, EntryType.COMMAND, b"old"),
    )
    node = RaftNode("n0", PersistentState(HardState(3, "", 1), None, log), params, random.Random(0))
    node.tick(5.0)
    assert node.role is Role.CANDIDATE and node.term == 4
    node.step(RequestVoteResponse(4, "n1", "n0", True))
    assert node.status().role is Role.LEADER
    assert node.log.last_index() == 3  # its no-op
    node.step(AppendEntriesResponse(4, "n1", "n0", True, match_index=2))
    assert node.log.commit == 1, "an entry of term 2 committed by counting replicas"
    node.step(AppendEntriesResponse(4, "n1", "n0", True, match_index=3))
    assert node.log.commit == 3  # committing the no-op commits index 2 with it


def test_bootstrap_only_once() -> None:
    c = Cluster(1)
    c.wait_leader()
    with pytest.raises(RaftError):
        c.node("n0").bootstrap(Configuration((Server("n0", "x"),)))
    c.crash("n0")
    c.start("n0")
    # The configuration is in durable storage: a restart must never bootstrap again.
    assert not c.storages["n0"].load().is_empty()
    with pytest.raises(RaftError):
        c.node("n0").bootstrap(Configuration((Server("n0", "x"),)))


def test_bootstrap_entry_does_not_depend_on_discovery_order() -> None:
    a, b, c = Server("a", "1"), Server("b", "2"), Server("c", "3")
    first = RaftNode("a", PersistentState(), P, random.Random(0))
    second = RaftNode("b", PersistentState(), P, random.Random(0))
    first.bootstrap(Configuration((c, a, b)))
    second.bootstrap(Configuration((b, c, a)))
    assert first.ready().entries == second.ready().entries
    with pytest.raises(RaftError):
        RaftNode("a", PersistentState(), P, random.Random(0)).bootstrap(Configuration((a, a)))


def test_unbootstrapped_server_never_campaigns() -> None:
    c = Cluster(1, bootstrap=False)
    c.run(10)
    node = c.node("n0")
    assert node.role is Role.FOLLOWER and node.term == 0
    assert isinstance(node.propose(b"x"), NotLeader)


def test_ready_reports_leadership_and_configuration() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    softs = [r.soft_state for r in c.readies[leader] if r.soft_state is not None]
    assert softs[-1].role is Role.LEADER and softs[-1].leader_id == leader
    configs = [r.configuration for r in c.readies["n1"] if r.configuration is not None]
    assert configs and configs[-1].ids() == ("n0", "n1", "n2")


# ----- stability: pre-vote, leader stickiness, check-quorum --------------------------


def test_rejoining_server_does_not_disrupt_a_healthy_leader() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    term = c.node(leader).term
    outsider = next(i for i in c.ids if i != leader)
    c.isolate(outsider)
    c.run(6)  # it times out again and again on its own
    assert c.node(outsider).term == term, "pre-vote must not bump the term"
    c.heal()
    c.run(2)
    assert c.leaders() == [leader] and c.node(leader).term == term


def test_minority_leader_steps_down_and_its_writes_never_commit() -> None:
    c = Cluster(3)
    old = c.wait_leader()
    c.isolate(old)
    lost = c.node(old).propose(b"lost")
    assert isinstance(lost, Proposal)
    c.run(0.6)  # past the lease timeout without hearing from a quorum
    assert c.node(old).role is Role.FOLLOWER
    assert c.node(old).stats()["leader_lost_quorum"] == 1
    assert isinstance(c.node(old).propose(b"later"), NotLeader)
    new = c.wait_leader()
    assert new != old
    c.propose(new, b"kept")
    c.heal()
    c.run(2)
    assert b"lost" not in c.applied[old] and c.applied[old] == c.applied[new]
    assert c.node(old).log.term(lost.index) != lost.term


# ----- reads -------------------------------------------------------------------------


def test_read_index_needs_a_quorum_round() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    c.propose(leader, b"a")
    node = c.node(leader)
    assert node.read_index(b"r1") is None
    assert c.read_states[leader] == []  # not before the heartbeat round
    c.settle()
    assert c.read_states[leader] == [ReadState(b"r1", node.log.commit)]


def test_isolated_leader_never_confirms_a_read() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    c.isolate(leader)
    assert c.node(leader).read_index(b"stale?") is None
    c.run(1)
    assert c.read_states[leader] == []
    assert c.dropped_reads[leader] == [b"stale?"]  # failed when it stepped down


def test_single_server_read_is_immediate() -> None:
    c = Cluster(1)
    c.wait_leader()
    assert c.node("n0").read_index(b"x") is None
    c.settle()
    assert [r.ctx for r in c.read_states["n0"]] == [b"x"]


def test_read_waits_for_the_leaders_first_commit() -> None:
    # A new leader does not know the latest commit index until its no-op commits.
    params = RaftParams(
        election_timeout=1.0, heartbeat_interval=0.1, leader_lease_timeout=0.5, pre_vote=False
    )
    config = Configuration(tuple(Server(i, i) for i in ("n0", "n1", "n2")))
    log = (
        Entry(1, 1, EntryType.CONFIGURATION, encode_configuration(config)),
        Entry(2, 1, EntryType.COMMAND, b"x"),
    )
    node = RaftNode("n0", PersistentState(HardState(1, "", 1), None, log), params, random.Random(0))
    node.tick(5.0)
    node.step(RequestVoteResponse(2, "n1", "n0", True))
    assert node.role is Role.LEADER
    assert node.read_index(b"r") is None
    assert node.leader is not None
    ready = node.ready()
    node.advance(ready)
    node.step(HeartbeatResponse(2, "n1", "n0", node.leader.seq))  # a quorum, but no commit
    ready = node.ready()
    assert ready.read_states == ()
    node.advance(ready)
    node.step(AppendEntriesResponse(2, "n1", "n0", True, match_index=3))  # the no-op commits
    ready = node.ready()  # ... which starts the read's own heartbeat round
    assert ready.read_states == ()
    node.advance(ready)
    node.step(HeartbeatResponse(2, "n1", "n0", node.leader.seq))
    (state,) = node.ready().read_states
    assert state == ReadState(b"r", 3)


def test_minority_with_the_old_leader_cannot_confirm_reads() -> None:
    c = Cluster(5)
    leader = c.wait_leader()
    buddy = next(i for i in c.ids if i != leader)
    for a in (leader, buddy):
        for b in c.ids:
            if b not in (leader, buddy):
                c.blocked |= {(a, b), (b, a)}
    assert c.node(leader).read_index(b"r") is None
    c.run(1)
    assert c.read_states[leader] == []  # one follower's ack is not a quorum of five


def test_follower_read_points_to_the_leader() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    follower = next(i for i in c.ids if i != leader)
    assert c.node(follower).read_index(b"x") == NotLeader(leader, f"addr-{leader}")
    assert c.node(follower).propose(b"x") == NotLeader(leader, f"addr-{leader}")


def test_pending_reads_are_bounded() -> None:
    params = RaftParams(
        election_timeout=1.0, heartbeat_interval=0.1, leader_lease_timeout=0.5, max_pending_reads=2
    )
    c = Cluster(3, params)
    leader = c.wait_leader()
    node = c.node(leader)
    assert node.read_index(b"1") is None and node.read_index(b"2") is None
    assert isinstance(node.read_index(b"3"), Rejected)


def test_uncommitted_bytes_are_bounded() -> None:
    params = RaftParams(
        election_timeout=1.0,
        heartbeat_interval=0.1,
        leader_lease_timeout=0.5,
        max_uncommitted_bytes=1000,
    )
    c = Cluster(3, params)
    leader = c.wait_leader()
    c.isolate(leader)  # nothing commits
    results = [c.node(leader).propose(b"x" * 300) for _ in range(5)]
    assert isinstance(results[-1], Rejected)


# ----- leadership transfer -----------------------------------------------------------


def test_leadership_transfer() -> None:
    c = Cluster(3)
    old = c.wait_leader()
    target = next(i for i in c.ids if i != old)
    term = c.node(old).term
    assert c.node(old).transfer_leadership(target) is None
    assert c.node(old).propose(b"x") == Rejected("leadership transfer in progress")
    c.settle()
    assert c.leaders() == [target] and c.node(target).term == term + 1
    c.propose(target, b"after")
    c.run(0.3)
    assert c.applied[old][-1] == b"after"


def test_transfer_to_an_unreachable_server_times_out() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    target = next(i for i in c.ids if i != leader)
    c.blocked |= {(leader, target)}
    assert c.node(leader).transfer_leadership(target) is None
    c.run(1.2)
    assert c.leaders() == [leader]
    assert c.node(leader).stats()["transfer_timed_out"] == 1
    assert isinstance(c.node(leader).propose(b"ok"), Proposal)


def test_transfer_refusals() -> None:
    c = Cluster(1)
    c.wait_leader()
    assert isinstance(c.node("n0").transfer_leadership(), Rejected)
    assert isinstance(c.node("n0").transfer_leadership("nobody"), Rejected)


# ----- membership --------------------------------------------------------------------


def test_add_and_remove_servers_one_at_a_time() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    for k in range(5):
        c.propose(leader, b"v%d" % k)
    c.add("n3")  # a fresh server: never bootstrapped, waits for the leader
    result = c.node(leader).add_server("n3", "addr-n3")
    assert isinstance(result, Proposal)
    # A second change must wait for the first to commit.
    assert c.node(leader).add_server("n4", "addr-n4") == Rejected(
        "a configuration change is already in progress"
    )
    c.run(1)
    assert c.node("n3").configuration.voter_ids() == ("n0", "n1", "n2", "n3")
    assert c.applied["n3"] == c.applied[leader]
    victim = next(i for i in ("n0", "n1", "n2") if i != leader)
    assert isinstance(c.node(leader).remove_server(victim), Proposal)
    c.run(1)
    assert c.node(leader).configuration.ids() == tuple(i for i in c.ids if i != victim)
    # The removed server learned of its removal and stays quiet.
    assert c.node(victim).configuration.get(victim) is None
    term = c.node(victim).term
    c.run(5)
    assert c.node(victim).term == term and c.node(victim).role is Role.FOLLOWER


def test_removing_the_leader_hands_over() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    assert isinstance(c.node(leader).remove_server(leader), Proposal)
    c.run(3)
    new = c.leaders()
    assert len(new) == 1 and new[0] != leader
    assert c.node(new[0]).configuration.ids() == tuple(i for i in c.ids if i != leader)
    assert c.node(leader).stats()["leader_removed"] == 1


def test_non_voter_receives_the_log_but_does_not_vote_or_campaign() -> None:
    c = Cluster(1)
    c.wait_leader()
    c.add("n1")
    assert isinstance(c.node("n0").add_server("n1", "addr-n1", voter=False), Proposal)
    c.run(0.5)
    c.propose("n0", b"x")
    c.run(0.5)
    assert c.applied["n1"] == c.applied["n0"]
    c.crash("n0")
    c.run(5)
    assert c.node("n1").role is Role.FOLLOWER  # a non-voter never campaigns


def test_configuration_change_refusals() -> None:
    c = Cluster(1)
    c.wait_leader()
    assert isinstance(c.node("n0").remove_server("n0"), Rejected)  # last voter
    assert isinstance(c.node("n0").remove_server("zz"), Rejected)
    assert isinstance(c.node("n0").add_server("n0", "addr-n0"), Rejected)  # no change


# ----- snapshots and restarts --------------------------------------------------------


def test_snapshot_compaction_and_install_on_a_lagging_follower() -> None:
    params = RaftParams(
        election_timeout=1.0,
        heartbeat_interval=0.1,
        leader_lease_timeout=0.5,
        snapshot_threshold=10,
        trailing_logs=2,
        snapshot_chunk_bytes=16,
    )
    c = Cluster(3, params)
    leader = c.wait_leader()
    lagging = next(i for i in c.ids if i != leader)
    c.crash(lagging)
    for k in range(30):
        c.propose(leader, b"value-%d" % k)
    node = c.node(leader)
    assert node.snapshot is not None and node.log.prev_index > 0
    assert c.storages[leader].entries[0].index == node.log.first_index()
    c.start(lagging)
    c.run(2)
    assert c.applied[lagging] == c.applied[leader]
    assert node.stats()["snapshots_sent"] >= 1
    chunks = [m for m in c.delivered if isinstance(m, InstallSnapshot) and m.to_id == lagging]
    assert len(chunks) > 1  # sent in 16-byte chunks
    assert c.node(lagging).stats()["snapshots_installed"] == 1
    # After installing, new entries still replicate.
    c.propose(leader, b"tail")
    c.run(0.3)
    assert c.applied[lagging][-1] == b"tail"


def test_restart_recovers_from_snapshot_and_log() -> None:
    params = RaftParams(
        election_timeout=1.0,
        heartbeat_interval=0.1,
        leader_lease_timeout=0.5,
        snapshot_threshold=8,
        trailing_logs=3,
    )
    c = Cluster(3, params)
    leader = c.wait_leader()
    for k in range(20):
        c.propose(leader, b"%d" % k)
    c.run(0.3)
    before = dict(c.applied)
    for i in list(c.ids):
        c.crash(i)
    for i in list(c.ids):
        c.start(i)
    c.wait_leader()
    c.run(0.5)
    for i in c.ids:
        assert c.applied[i][: len(before[i])] == before[i]
        assert c.storages[i].snapshot is not None


def test_peers_json_style_recovery_of_a_lone_survivor() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    for k in range(4):
        c.propose(leader, b"%d" % k)
    c.run(0.3)
    survivor = next(i for i in c.ids if i != leader)
    for i in list(c.ids):
        c.crash(i)

    def rebuild(snapshot: Snapshot | None, entries: Sequence[Entry]) -> bytes:
        applied = list(msgspec.msgpack.decode(snapshot.data)) if snapshot else []
        applied += [e.data if e.type is EntryType.COMMAND else b"" for e in entries]
        return msgspec.msgpack.encode(applied)

    # The other two are gone for good: force a one-server configuration.
    recover_cluster(c.storages[survivor], Configuration((Server(survivor, "new-addr"),)), rebuild)
    c.ids = [survivor]
    c.start(survivor)
    assert c.wait_leader() == survivor
    assert [v for v in c.applied[survivor] if v] == [b"0", b"1", b"2", b"3"]
    c.propose(survivor, b"after")
    assert c.applied[survivor][-1] == b"after"


# ----- purity ------------------------------------------------------------------------

# The adapter modules may do I/O; everything else in raft/ is the pure core.
ADAPTER_MODULES = {"storage.py"}
FORBIDDEN = {"asyncio", "socket", "ssl", "time", "random", "sqlite3", "threading", "os"}


def _runtime_imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue  # type-only imports
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                names |= {a.name.split(".")[0] for a in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                names.add(sub.module.split(".")[0])
    return names


def test_core_modules_import_no_io_clock_or_global_randomness() -> None:
    package = Path(proconsul.raft.__file__).parent
    checked = 0
    for path in sorted(package.glob("*.py")):
        if path.name in ADAPTER_MODULES:
            continue
        imports = _runtime_imports(ast.parse(path.read_text()))
        assert not imports & FORBIDDEN, f"{path.name} imports {sorted(imports & FORBIDDEN)}"
        checked += 1
    assert checked >= 7


@pytest.mark.parametrize(
    "message",
    [
        AppendEntries(2, "n0", "n1", 1, 1, (Entry(3, 2, EntryType.COMMAND, b""),), 0),  # gap
        AppendEntries(
            2, "n0", "n1", 1, 1, (Entry(2, 5, EntryType.COMMAND, b""),), 0
        ),  # future term
        AppendEntries(2, "n0", "n1", -1, 0, (), 0),
        AppendEntries(3, "n0", "n1", 1, 2, (Entry(2, 1, EntryType.COMMAND, b""),), 0),  # term drops
    ],
)
def test_malformed_messages_are_dropped_not_fatal(message: Message) -> None:
    node = voter_node()
    node.step(message)
    assert node.stats()["msg_malformed"] == 1
    assert node.log.last_index() == 1 and node.term == 1


# ----- a dead leader's closed connection -----------------------------------------------


def test_followers_that_see_the_leaders_connection_close_elect_within_a_timeout() -> None:
    c = Cluster(3)
    old = c.wait_leader()
    started = c.now
    c.crash(old)
    for i in c.ids:
        if i != old:
            c.node(i).leader_unreachable()
    new = None
    while c.now - started < 2 * P.election_timeout:
        c.tick(0.005)  # the server adapter ticks at the deadline itself, not every 50 ms
        found = [i for i in c.leaders() if i != old]
        if found:
            new = found[0]
            break
    # Without the hint the followers wait a whole (randomized) election timeout first.
    assert new is not None and c.now - started < P.election_timeout, (new, c.now - started)


def test_a_spurious_close_does_not_depose_a_live_leader() -> None:
    c = Cluster(3)
    leader = c.wait_leader()
    term = c.node(leader).term
    follower = next(i for i in c.ids if i != leader)
    c.node(follower).leader_unreachable()
    c.run(2 * P.election_timeout)
    assert c.leaders() == [leader] and c.node(leader).term == term
    assert c.node(follower).leader_id == leader  # heard from it again
