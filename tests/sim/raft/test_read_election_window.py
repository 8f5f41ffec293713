"""A `?consistent` read that waits out an election must pass a read barrier.

Scripted on the pure Raft core, step by step, so the window is hit every time:
the old leader commits `new` and dies before its followers learn the commit
index; consistent reads reach both followers while no leader is known; one of
them wins the election. At that moment the winner has not applied `new` yet
(a local read there would answer the value from before the write); routed by
`route_read`, the reads pass the barrier and see `new`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from proconsul.raft.core import RaftNode
from proconsul.raft.messages import Configuration, EntryType, Message, Server
from proconsul.raft.params import RaftParams
from proconsul.raft.ready import Proposal, Role
from proconsul.raft.storage_api import MemoryStorage, persist_ready
from proconsul.server.read_route import ReadStep, route_read

PARAMS = RaftParams(election_timeout=1.0, heartbeat_interval=0.1, leader_lease_timeout=0.5)
STEP_S = 0.05


class Cluster:
    """Three cores, a manual clock, delivery one round at a time."""

    def __init__(self, seed: int) -> None:
        self.ids = ["n0", "n1", "n2"]
        self.rng = random.Random(seed)
        self.now = 0.0
        self.storages = {i: MemoryStorage() for i in self.ids}
        self.nodes: dict[str, RaftNode | None] = {
            i: RaftNode(i, self.storages[i].load(), PARAMS, random.Random(self.rng.random()))
            for i in self.ids
        }
        self.applied: dict[str, list[bytes]] = {i: [] for i in self.ids}
        self.read_states: dict[str, dict[bytes, int]] = {i: {} for i in self.ids}
        config = Configuration(tuple(Server(i, i) for i in self.ids))
        for i in self.ids:
            self.node(i).bootstrap(config)

    def node(self, i: str) -> RaftNode:
        node = self.nodes[i]
        assert node is not None, f"{i} is down"
        return node

    def process(self, i: str) -> list[Message]:
        node = self.nodes[i]
        out: list[Message] = []
        while node is not None and node.has_ready():
            ready = node.ready()
            persist_ready(self.storages[i], ready)
            out += ready.messages
            for entry in ready.committed_entries:
                self.applied[i].append(entry.data if entry.type is EntryType.COMMAND else b"")
            for state in ready.read_states:
                self.read_states[i][state.ctx] = state.index
            node.advance(ready)
        return out

    def deliver(self, messages: list[Message]) -> None:
        for m in messages:
            target = self.nodes.get(m.to_id)
            if target is not None:
                target.step(m)

    def round(self) -> bool:
        """Every node's Ready once, its messages delivered; False when all is quiet."""
        out = [m for i in self.ids for m in self.process(i)]
        self.deliver(out)
        return bool(out)

    def tick(self) -> None:
        self.now += STEP_S
        for node in self.nodes.values():
            if node is not None:
                node.tick(self.now)

    def leader(self) -> str | None:
        leaders = [i for i, n in self.nodes.items() if n is not None and n.role is Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    def value(self, i: str, through: int | None = None) -> bytes | None:
        """The latest written value in what `i` applied (through an index)."""
        rows = self.applied[i] if through is None else self.applied[i][:through]
        written = [row for row in rows if row]
        return written[-1] if written else None


@dataclass
class Read:
    arrived_at: str
    ctx: bytes
    server: str | None = None  # where it passed (or passes) the barrier
    result: bytes | None = None
    waited: bool = False


def advance(c: Cluster, read: Read, barriers: list[tuple[str, bytes | None]]) -> None:
    """One routing step of `read`, as the server adapter takes it."""
    if read.server is not None:
        index = c.read_states[read.server].get(read.ctx)
        if index is not None and len(c.applied[read.server]) >= index:
            read.result = c.value(read.server, index)
        return
    at = read.arrived_at
    node = c.node(at)
    route = route_read(
        allow_stale=False,
        require_consistent=True,
        leading=node.role is Role.LEADER,
        leader_address=node.leader_id,
    )
    if route.step is ReadStep.WAIT:
        read.waited = True
        return
    if route.step is ReadStep.FORWARD:
        assert route.address is not None
        target = c.nodes[route.address]
        if target is None or target.role is not Role.LEADER:
            return  # the hop failed; the caller tries again
        at, node = route.address, target
    # The server that serves it leads: the route must be the barrier.
    assert (
        route_read(allow_stale=False, require_consistent=True, leading=True, leader_address=at).step
        is ReadStep.BARRIER
    )
    barriers.append((at, c.value(at)))
    assert node.read_index(read.ctx) is None
    read.server = at


def test_a_read_that_waits_out_an_election_sees_the_committed_write() -> None:
    for seed in range(20):
        c = Cluster(seed)
        for _ in range(400):
            c.tick()
            while c.round():
                pass
            if c.leader() is not None:
                break
        old = c.leader()
        assert old is not None
        # The old leader commits `new`; its followers store it but never learn
        # it committed: the leader dies before its next message.
        proposal = c.node(old).propose(b"new")
        assert isinstance(proposal, Proposal)
        c.deliver(c.process(old))
        followers = [i for i in c.ids if i != old]
        c.deliver([m for i in followers for m in c.process(i)])
        c.process(old)  # applies `new`; what it would send now is lost
        assert c.value(old) == b"new"
        c.nodes[old] = None
        assert all(c.value(i) != b"new" for i in followers)

        reads = [Read(i, f"read-{i}".encode()) for i in followers]
        barriers: list[tuple[str, bytes | None]] = []
        for _ in range(400):
            c.tick()
            for read in reads:
                advance(c, read, barriers)
            while c.round():
                for read in reads:
                    advance(c, read, barriers)
            if all(read.result is not None for read in reads):
                break
        assert [read.result for read in reads] == [b"new", b"new"], seed
        assert any(read.waited for read in reads), seed
        # The window was real: where the barrier began, a plain local read
        # would have answered the value from before the write.
        assert any(before != b"new" for _, before in barriers), (seed, barriers)


def test_route_read_table() -> None:
    def step(stale: bool, consistent: bool, leading: bool, leader: str | None) -> ReadStep:
        return route_read(
            allow_stale=stale, require_consistent=consistent, leading=leading, leader_address=leader
        ).step

    assert step(True, False, False, None) is ReadStep.LOCAL
    assert step(True, True, False, "a") is ReadStep.LOCAL
    assert step(False, False, True, "me") is ReadStep.LOCAL
    assert step(False, True, True, "me") is ReadStep.BARRIER
    assert step(False, True, False, None) is ReadStep.WAIT
    assert step(False, False, False, None) is ReadStep.WAIT
    assert step(False, True, False, "a") is ReadStep.FORWARD
    assert (
        route_read(
            allow_stale=False, require_consistent=False, leading=False, leader_address="a"
        ).address
        == "a"
    )
