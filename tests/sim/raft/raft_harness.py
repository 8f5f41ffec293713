"""A deterministic simulator for the pure Raft core.

Job: run N `RaftNode`s on a virtual clock over a hostile network and hostile
disks, drive them with KV clients, and check Raft's safety properties after
every event. Everything random comes from one seeded `random.Random`, so a
seed replays exactly.

What is simulated:
- Network: per-message loss, duplication and random delay (hence reordering);
  partitions that block chosen directed links (so asymmetric ones too).
  Every message goes through msgpack and back, as on the wire.
- Disk: a Ready's writes become durable only when its simulated fsync
  completes; messages are sent only then (the Ready contract). A crash before
  that loses the writes; the restarted server loads what `MemoryStorage` kept.
- Clocks: every server's clock has its own offset and runs 20% fast or slow;
  messages are handled without ticking first (a real event loop may do that).
- Faults: crashes and restarts (also right after a Ready was sent, and while
  its fsync is pending; a crashed leader's followers mostly hear of it at
  once, as a closed connection would tell them: `leader_unreachable`),
  stalls (a frozen server whose queued work then runs in random order),
  leadership transfers, membership changes (remove a server, wipe its disk
  once its removal committed, add it back, sometimes two changes at once),
  all scheduled from the seed. Batch sizes, pipeline
  window, snapshot threshold and chunk size and pre-vote are drawn from the
  seed too.

Invariants checked as the run goes (a violation raises SimViolation):
- election safety: at most one leader per term;
- log matching: an (index, term) pair always names the same entry with the
  same predecessor term, on every server (which by induction is the Log
  Matching property);
- state-machine safety: every server applies the same entry at each index,
  and state machines have the same digest at equal applied indexes;
- durability: when a leader applies an entry, a quorum of its voters holds it
  (or a snapshot covering it) in durable storage;
- leader completeness: a new leader's log holds every entry ever applied.
At the end, after healing: one leader, every member caught up, and the client
history is linearizable (tests/lincheck.py).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proconsul.raft.core import RaftNode
from proconsul.raft.messages import (
    Configuration,
    Message,
    Server,
    Snapshot,
    decode_message,
    encode,
)
from proconsul.raft.params import RaftParams, quorum_size
from proconsul.raft.ready import NotLeader, Proposal, Ready, Rejected, Role
from proconsul.raft.storage_api import MemoryStorage, persist_ready
from proconsul.server.read_route import ReadStep, route_read
from tests.lincheck import UNKNOWN, Op
from tests.sim.raft.raft_kv import KV, cas_command, mput_command, put_command

LOCK_KEY = "lock"


class SimViolation(AssertionError):
    """A safety or liveness property failed."""


@dataclass
class SimConfig:
    servers: int = 3
    duration: float = 30.0  # virtual seconds of faults and load
    settle: float = 15.0  # fault-free time at the end
    grace: float = 30.0  # extra seconds allowed for convergence after that
    clients: int = 3
    drop: float = 0.02
    duplicate: float = 0.02
    delay: tuple[float, float] = (0.001, 0.015)
    slow_fraction: float = 0.05  # messages delayed much longer (reordering)
    slow_delay: float = 0.3
    disk_latency: tuple[float, float] = (0.0005, 0.004)
    partitions: bool = True
    crashes: bool = True
    membership: bool = False
    transfers: bool = True
    wipe_removed: bool = True
    snapshot_threshold: int = 40
    trailing_logs: int = 10
    snapshot_chunk_bytes: int = 48
    keys: tuple[str, ...] = ("x", "y")
    client_timeout: float = 2.5
    max_inflight_appends: int = 4
    max_append_entries: int = 5
    pre_vote: bool = True
    # Draw batching, window, snapshot and pre-vote settings from the seed.
    randomize: bool = True
    nemesis_interval: tuple[float, float] = (1.0, 4.0)  # time between faults
    crash_leader_bias: float = 0.5  # chance a crash hits the current leader
    restart_range: tuple[float, float] = (0.2, 3.0)
    stalls: bool = True  # a server freezes (GC pause, full disk) and resumes
    stall_range: tuple[float, float] = (0.3, 3.0)
    stall_leader_bias: float = 0.5  # chance a stall hits the current leader
    read_fraction: float = 0.3
    clock_drift: float = 0.2  # each server's clock runs at 1 +- this rate
    crash_after_ready: float = 0.002  # crash right after a Ready was sent out
    crash_before_sync: float = 0.002  # crash while a Ready's fsync is pending
    # Transactions: clients only write every key at once ("mput", one entry) and
    # read them all at once ("mget", one read index); every mget must see one
    # value on all keys, and each key's history must still be linearizable.
    multi_key: bool = False
    # Clients that take and give back a lock on LOCK_KEY as Consul's KV locks
    # do (acquire: CAS absent -> a fresh holder value; release: CAS holder ->
    # absent); `lock_safety` then checks no two acknowledged holds overlap.
    lock_clients: int = 0

    def params(self, rng: random.Random) -> RaftParams:
        # raft_multiplier 1 timings, and small batches, windows, snapshot
        # thresholds and chunks so every code path runs in a short simulation.
        if not self.randomize:
            return RaftParams(
                election_timeout=1.0,
                heartbeat_interval=0.1,
                leader_lease_timeout=0.5,
                snapshot_threshold=self.snapshot_threshold,
                trailing_logs=self.trailing_logs,
                snapshot_chunk_bytes=self.snapshot_chunk_bytes,
                max_inflight_appends=self.max_inflight_appends,
                max_append_entries=self.max_append_entries,
                max_append_bytes=400,
                pre_vote=self.pre_vote,
            )
        return RaftParams(
            election_timeout=1.0,
            heartbeat_interval=0.1,
            leader_lease_timeout=0.5,
            snapshot_threshold=rng.randint(8, 80),
            trailing_logs=rng.randint(0, 12),
            snapshot_chunk_bytes=rng.choice([16, 48, 200, 4096]),
            max_inflight_appends=rng.randint(1, 8),
            max_append_entries=rng.randint(1, 8),
            max_append_bytes=rng.choice([60, 400, 1 << 20]),
            pre_vote=rng.random() < 0.8,
        )


@dataclass
class PendingOp:
    op_id: int
    client: int
    kind: str
    key: str
    input: Any
    call: float
    done: bool = False


@dataclass
class SimServer:
    id: str
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    node: RaftNode | None = None
    kv: KV = field(default_factory=KV)
    epoch: int = 0
    busy: Ready | None = None
    rate: float = 1.0  # clock speed relative to real time
    offset: float = 0.0
    stalled_until: float = 0.0
    writes: dict[int, tuple[int, PendingOp]] = field(default_factory=dict)
    reads: dict[bytes, PendingOp] = field(default_factory=dict)
    confirmed_reads: list[tuple[int, PendingOp]] = field(default_factory=list)
    # Reads that found no leader known here: they wait for one, then route again.
    parked_reads: list[tuple[PendingOp, float]] = field(default_factory=list)


class Simulation:
    def __init__(self, seed: int, config: SimConfig) -> None:
        self.seed = seed
        self.cfg = config
        self.rng = random.Random(seed)
        self.params = config.params(self.rng)
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.ids = [f"s{i}" for i in range(config.servers)]
        self.servers = {
            sid: SimServer(
                sid,
                rate=1 + self.rng.uniform(-config.clock_drift, config.clock_drift),
                offset=self.rng.uniform(0, 100),
            )
            for sid in self.ids
        }
        self.blocked: set[tuple[str, str]] = set()
        self.trace: deque[str] = deque(maxlen=300)
        # invariant state
        self.leaders: dict[int, str] = {}
        self.entry_registry: dict[tuple[int, int], tuple[int, bytes, int | None]] = {}
        self.applied_log: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, type, data)
        # index -> highest term any server had when the entry was first applied:
        # the entry was committed in that term or earlier.
        self.commit_term: dict[int, int] = {}
        self.digests: dict[int, bytes] = {}
        # clients
        self.history: list[Op] = []
        # lock clients: client -> the holder value it must release (acquired, or
        # an acquire whose outcome is unknown), absent while it holds nothing
        self.lock_owed: dict[int, int] = {}
        self._op_ids = 0
        self._values = 0
        self.faults_over = False
        self.counters: dict[str, int] = {}

    # ----- event loop ------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, action))

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def log(self, text: str) -> None:
        self.trace.append(f"{self.now:9.4f} {text}")

    def fail(self, text: str) -> None:
        raise SimViolation(text)

    def run(self) -> None:
        cfg = self.cfg
        configuration = Configuration(tuple(Server(s, f"addr-{s}") for s in self.ids))
        for sid in self.ids:
            self.start(sid)
            node = self.servers[sid].node
            assert node is not None
            node.bootstrap(configuration)
            self.pump(sid)
        for sid in self.ids:
            self.schedule_tick(sid, self.servers[sid].epoch)
        for client in range(cfg.clients + cfg.lock_clients):
            self.at(self.rng.uniform(0, 0.5), self._client_starter(client))
        self.schedule_nemesis()
        end = cfg.duration + cfg.settle
        self.at(cfg.duration, self.end_faults)
        self.run_until(end)
        # Liveness: once healed, the cluster must converge. Under heavy loss a
        # leader may still step down late, so allow a bounded grace period.
        for _ in range(int(cfg.grace)):
            if self.converged() is None:
                break
            self.run_until(self.now + 1.0)
        problem = self.converged()
        if problem is not None:
            self.fail(problem)

    def run_until(self, end: float) -> None:
        while self._queue and self._queue[0][0] <= end:
            when, _, action = heapq.heappop(self._queue)
            self.now = when
            action()
        self.now = end

    # ----- servers ---------------------------------------------------------------------

    def clock(self, sid: str) -> float:
        server = self.servers[sid]
        return server.offset + self.now * server.rate

    def deferred(self, sid: str, action: Callable[[], None]) -> bool:
        """If the server is frozen, run `action` when it thaws."""
        until = self.servers[sid].stalled_until
        if self.now < until:
            # Thawed work runs in a random order (timers need not fire before
            # queued requests), which is what exposes lease-style shortcuts.
            self.at(until + self.rng.uniform(0, 0.003), action)
            return True
        return False

    def start(self, sid: str) -> None:
        server = self.servers[sid]
        server.epoch += 1
        state = server.storage.load()
        server.node = RaftNode(
            sid, state, self.params, random.Random(self.rng.random()), now=self.clock(sid)
        )
        server.kv = KV.restore(state.snapshot)
        if state.snapshot is not None:
            self.check_digest(sid, state.snapshot.meta.index, server.kv.digest())
        server.busy = None
        server.writes.clear()
        server.reads.clear()
        server.confirmed_reads.clear()
        server.parked_reads.clear()
        self.log(f"{sid} start epoch={server.epoch} term={server.node.term}")

    def crash(self, sid: str) -> None:
        server = self.servers[sid]
        if server.node is None:
            return
        self.log(f"{sid} CRASH (in-flight ready lost: {server.busy is not None})")
        self.count("crashes")
        if server.node.role is Role.LEADER:
            # A dead process's connections close: most followers notice at once.
            for other in self.ids:
                if other != sid and self.rng.random() < 0.7:
                    delay = self.rng.uniform(*self.cfg.delay)
                    self.at(self.now + delay, self._leader_unreachable(other))
        server.node = None
        server.busy = None
        server.epoch += 1

    def _leader_unreachable(self, sid: str) -> Callable[[], None]:
        def notice() -> None:
            node = self.servers[sid].node
            if node is None or self.deferred(sid, notice):
                return
            node.leader_unreachable()
            self.count("leader_unreachable")
            self.after_input(sid)

        return notice

    def schedule_tick(self, sid: str, epoch: int) -> None:
        def tick() -> None:
            server = self.servers[sid]
            if server.epoch != epoch or server.node is None or self.deferred(sid, tick):
                return
            server.node.tick(self.clock(sid))
            self.after_input(sid)
            self.schedule_tick(sid, epoch)

        self.at(self.now + 0.05, tick)

    def after_input(self, sid: str) -> None:
        self.check_leader(sid)
        self.unpark_reads(sid)
        self.pump(sid)

    def unpark_reads(self, sid: str) -> None:
        """Reads waiting on `sid` for a leader route again once one is known."""
        server = self.servers[sid]
        node = server.node
        if not server.parked_reads or node is None or node.leader_id is None:
            return
        parked, server.parked_reads = server.parked_reads, []
        for op, deadline in parked:
            if not op.done:
                self.count("reads_unparked")
                self.client_attempt(op, sid, deadline)

    def pump(self, sid: str) -> None:
        """Take the next Ready if the server is idle and has one."""
        server = self.servers[sid]
        node = server.node
        if node is None or server.busy is not None or not node.has_ready():
            return
        ready = node.ready()
        server.busy = ready
        self.check_new_entries(sid, ready)
        epoch = server.epoch
        needs_disk = (
            ready.snapshot is not None or bool(ready.entries) or ready.hard_state is not None
        )
        latency = self.rng.uniform(*self.cfg.disk_latency) if needs_disk else 0.0
        self.at(self.now + latency, lambda: self.finish_ready(sid, epoch, ready))

    def finish_ready(self, sid: str, epoch: int, ready: Ready) -> None:
        server = self.servers[sid]
        if server.epoch != epoch or server.node is None:
            return
        if self.deferred(sid, lambda: self.finish_ready(sid, epoch, ready)):
            return
        node = server.node
        # 1-2: durable now (the fsync completed).
        persist_ready(server.storage, ready)
        if ready.snapshot is not None:
            server.kv = KV.restore(ready.snapshot)
            self.check_digest(sid, ready.snapshot.meta.index, server.kv.digest())
            self.log(f"{sid} installed snapshot @{ready.snapshot.meta.index}")
        # 3: only now may messages leave.
        for m in ready.messages:
            self.send(m)
        # 4: apply.
        for entry in ready.committed_entries:
            result = server.kv.apply(entry)
            self.check_applied(sid, entry.index, entry.term, int(entry.type), entry.data)
            self.check_digest(sid, entry.index, server.kv.digest())
            pending = server.writes.pop(entry.index, None)
            if pending is not None:
                term, op = pending
                if term == entry.term:
                    if node.role is Role.LEADER:
                        self.check_durable(sid, entry.index, entry.term)
                    self.complete(op, None if op.kind in ("put", "mput") else result)
                else:
                    self.abandon(op)  # another entry took its slot: it never happened
        # 5: reads.
        for rs in ready.read_states:
            confirmed = server.reads.pop(rs.ctx, None)
            if confirmed is not None:
                server.confirmed_reads.append((rs.index, confirmed))
        for ctx in ready.dropped_reads:
            dropped = server.reads.pop(ctx, None)
            if dropped is not None:
                self.abandon(dropped)
        still = []
        for index, op in server.confirmed_reads:
            if server.kv.applied >= index:
                if op.kind == "mget":
                    seen = tuple(server.kv.data.get(k) for k in op.key.split(","))
                    if len(set(seen)) > 1:
                        self.fail(f"{sid}: a read saw part of a transaction: {seen}")
                    self.complete(op, seen)
                else:
                    self.complete(op, server.kv.data.get(op.key))
            else:
                still.append((index, op))
        server.confirmed_reads = still
        # 6: compaction.
        if ready.compact_through:
            server.storage.compact(ready.compact_through)
        node.advance(ready)
        server.busy = None
        # 7: snapshot when asked.
        if ready.want_snapshot:
            meta = node.prepare_snapshot()
            if meta is not None:
                if meta.index != server.kv.applied:
                    self.fail(f"{sid} snapshot meta {meta.index} != applied {server.kv.applied}")
                snap = Snapshot(meta, server.kv.snapshot_data())
                server.storage.save_snapshot(snap)
                node.snapshot_done(snap)
                self.count("snapshots")
        self.after_input(sid)
        if self.rng.random() < self.cfg.crash_after_ready and not self.faults_over:
            # Crash just after acknowledging: whatever was acked must survive.
            self.crash(sid)
            self.at(self.now + self.rng.uniform(0.01, 0.5), lambda: self.restart(sid))

    # ----- network ---------------------------------------------------------------------

    def send(self, m: Message) -> None:
        cfg = self.cfg
        if (m.from_id, m.to_id) in self.blocked:
            return
        if self.rng.random() < cfg.drop:
            self.count("dropped")
            return
        wire = encode(m)
        copies = 2 if self.rng.random() < cfg.duplicate else 1
        for _ in range(copies):
            delay = self.rng.uniform(*cfg.delay)
            if self.rng.random() < cfg.slow_fraction:
                delay += self.rng.uniform(0, cfg.slow_delay)
            self.at(self.now + delay, lambda: self.deliver(decode_message(wire)))

    def deliver(self, m: Message) -> None:
        server = self.servers.get(m.to_id)
        if server is None or server.node is None or self.deferred(m.to_id, lambda: self.deliver(m)):
            return
        # No tick first: a real adapter may handle a message before its timer
        # fires, so the core must be safe with a stale `now`.
        server.node.step(m)
        self.after_input(m.to_id)

    # ----- invariants ------------------------------------------------------------------

    def check_leader(self, sid: str) -> None:
        node = self.servers[sid].node
        if node is None or node.role is not Role.LEADER:
            return
        holder = self.leaders.get(node.term)
        if holder is None:
            self.leaders[node.term] = sid
            self.log(f"{sid} LEADER term={node.term} last={node.log.last_index()}")
            self.check_leader_completeness(sid)
        elif holder != sid:
            self.fail(f"two leaders in term {node.term}: {holder} and {sid}")

    def check_leader_completeness(self, sid: str) -> None:
        """A leader of a term after an entry committed holds that entry (Raft §5.4)."""
        node = self.servers[sid].node
        assert node is not None
        log = node.log
        for index, (term, _, _) in self.applied_log.items():
            if index <= log.prev_index:
                continue  # inside its snapshot, whose digest was checked
            if node.term <= self.commit_term[index]:
                # Leader completeness covers leaders of later terms only; a
                # candidate of an older term can still win on delayed votes.
                continue
            if log.term(index) != term:
                self.fail(
                    f"leader {sid} (term {node.term}) lacks committed entry {index}/{term}: "
                    f"has term {log.term(index)}"
                )

    def check_new_entries(self, sid: str, ready: Ready) -> None:
        node = self.servers[sid].node
        assert node is not None
        for entry in ready.entries:
            prev = node.log.term(entry.index - 1)
            key = (entry.index, entry.term)
            value = (int(entry.type), entry.data, prev)
            known = self.entry_registry.get(key)
            if known is None:
                self.entry_registry[key] = value
            elif known[:2] != value[:2] or (
                known[2] is not None and prev is not None and known[2] != prev
            ):
                self.fail(f"log matching violated at {key} on {sid}: {known} vs {value}")

    def check_applied(self, sid: str, index: int, term: int, kind: int, data: bytes) -> None:
        known = self.applied_log.get(index)
        if known is None:
            self.applied_log[index] = (term, kind, data)
            self.commit_term[index] = max(
                max(s.node.term if s.node else 0, s.storage.hard_state.term)
                for s in self.servers.values()
            )
        elif known != (term, kind, data):
            self.fail(f"{sid} applied a different entry at {index}: {known} vs {(term, kind)}")

    def check_digest(self, sid: str, index: int, digest: bytes) -> None:
        known = self.digests.setdefault(index, digest)
        if known != digest:
            self.fail(f"{sid} state machine differs at applied index {index}")

    def check_durable(self, sid: str, index: int, term: int) -> None:
        """A quorum of the latest or of the committed configuration holds the entry durably.

        (Raft counts the latest configuration; the committed one is accepted too
        because a configuration entry appended after the commit may have
        changed the latest one by the time the entry is applied.)
        """
        node = self.servers[sid].node
        assert node is not None
        configs = (node.configuration, node.committed_configuration()[1])
        for config in configs:
            voters = config.voter_ids()
            holding = sum(1 for v in voters if self.holds(v, index, term))
            if holding >= quorum_size(len(voters)):
                return
        self.fail(f"entry {index}/{term} applied by leader {sid} is not durable on a quorum")

    def holds(self, sid: str, index: int, term: int) -> bool:
        storage = self.servers[sid].storage
        snap = storage.snapshot
        if snap is not None and snap.meta.index >= index:
            return True
        entries = storage.entries
        if entries and entries[0].index <= index <= entries[-1].index:
            return entries[index - entries[0].index].term == term
        return False

    # ----- clients ---------------------------------------------------------------------

    def _client_starter(self, client: int) -> Callable[[], None]:
        return lambda: self.client_next(client)

    def client_next(self, client: int) -> None:
        if self.faults_over and self.now > self.cfg.duration + self.cfg.settle * 0.4:
            return  # let the cluster go quiet before the final checks
        rng = self.rng
        self._op_ids += 1
        if client >= self.cfg.clients:
            self.lock_client_next(client)
            return
        key = rng.choice(self.cfg.keys)
        roll = rng.random()
        reads = self.cfg.read_fraction
        if self.cfg.multi_key:
            every = ",".join(self.cfg.keys)
            if roll < reads:
                op = PendingOp(self._op_ids, client, "mget", every, None, self.now)
            else:
                self._values += 1
                op = PendingOp(self._op_ids, client, "mput", every, self._values, self.now)
            self.client_attempt(op, rng.choice(self.ids), self.now + self.cfg.client_timeout)
            return
        if roll < (1 - reads) * 0.57:
            self._values += 1
            op = PendingOp(self._op_ids, client, "put", key, self._values, self.now)
        elif roll < (1 - reads) * 0.57 + reads:
            op = PendingOp(self._op_ids, client, "get", key, None, self.now)
        else:
            self._values += 1
            expected = rng.choice([None, *range(max(1, self._values - 6), self._values)])
            op = PendingOp(self._op_ids, client, "cas", key, (expected, self._values), self.now)
        self.client_attempt(op, self.rng.choice(self.ids), self.now + self.cfg.client_timeout)

    def lock_client_next(self, client: int) -> None:
        """Acquire when holding nothing, else release what is owed."""
        owed = self.lock_owed.get(client)
        if owed is None:
            self._values += 1
            op = PendingOp(self._op_ids, client, "cas", LOCK_KEY, (None, self._values), self.now)
        else:
            op = PendingOp(self._op_ids, client, "cas", LOCK_KEY, (owed, None), self.now)
        self.client_attempt(op, self.rng.choice(self.ids), self.now + self.cfg.client_timeout)

    def lock_outcome(self, op: PendingOp, output: Any) -> None:
        """A lock client's view after an operation: it owes a release for an
        acquire that succeeded or may have, until a release is acknowledged."""
        if op.key != LOCK_KEY or op.client < self.cfg.clients:
            return
        expected, new = op.input
        if expected is None:  # an acquire
            if output is True or output is UNKNOWN:
                self.lock_owed[op.client] = new
        elif output is not UNKNOWN:  # a release that answered (false: not ours any more)
            self.lock_owed.pop(op.client, None)

    def client_attempt(self, op: PendingOp, target: str, deadline: float) -> None:
        if self.now >= deadline:
            self.client_done(op.client)
            return
        server = self.servers[target]
        node = server.node
        if node is None:
            self.retry(op, None, deadline)
            return
        if self.deferred(target, lambda: self.client_attempt(op, target, deadline)):
            return
        op.call = self.now
        if op.kind in ("get", "mget"):
            # Routed as the server adapter routes a ?consistent read.
            route = route_read(
                allow_stale=False,
                require_consistent=True,
                leading=node.role is Role.LEADER,
                leader_address=node.leader_id,
            )
            if route.step is ReadStep.WAIT:
                server.parked_reads.append((op, deadline))
                self.at(deadline, lambda: self.timeout(op))
                return
            if route.step is ReadStep.FORWARD:
                self.retry(op, route.address, deadline)
                return
            if route.step is not ReadStep.BARRIER:
                self.fail(f"a consistent read on {target} was routed to {route.step}")
            ctx = op.op_id.to_bytes(8, "big")
            result = node.read_index(ctx)
            if result is None:
                server.reads[ctx] = op
                self.at(deadline, lambda: self.timeout(op))
                self.after_input(target)
                return
        else:
            if op.kind == "mput":
                data = mput_command(op.key.split(","), op.input)
            elif op.kind == "put":
                data = put_command(op.key, op.input)
            else:
                data = cas_command(op.key, op.input[0], op.input[1])
            proposal = node.propose(data)
            if isinstance(proposal, Proposal):
                server.writes[proposal.index] = (proposal.term, op)
                self.at(deadline, lambda: self.timeout(op))
                self.after_input(target)
                return
            result = proposal
        hint = result.leader_id if isinstance(result, NotLeader) else None
        assert isinstance(result, NotLeader | Rejected)
        self.retry(op, hint, deadline)

    def retry(self, op: PendingOp, hint: str | None, deadline: float) -> None:
        target = hint or self.rng.choice(self.ids)
        self.at(self.now + 0.05, lambda: self.client_attempt(op, target, deadline))

    def complete(self, op: PendingOp, output: Any) -> None:
        if op.done:
            return
        op.done = True
        if op.kind in ("mput", "mget"):
            # One operation per key for the checker (P-compositionality); the
            # all-keys-equal check of each mget covers the atomicity across keys.
            kind = "put" if op.kind == "mput" else "get"
            for i, key in enumerate(op.key.split(",")):
                out = None if op.kind == "mput" else output[i]
                self.history.append(Op(op.client, kind, key, op.input, out, op.call, self.now))
        else:
            self.history.append(Op(op.client, op.kind, op.key, op.input, output, op.call, self.now))
        self.count(f"ok_{op.kind}")
        self.lock_outcome(op, output)
        self.client_done(op.client)

    def abandon(self, op: PendingOp) -> None:
        """The operation certainly did not take effect (or is a read): leave it out."""
        if op.done:
            return
        op.done = True
        self.count("abandoned")
        self.client_done(op.client)

    def timeout(self, op: PendingOp) -> None:
        if op.done:
            return
        op.done = True
        self.count("timeouts")
        if op.kind == "mput":
            for key in op.key.split(","):
                self.history.append(Op(op.client, "put", key, op.input, UNKNOWN, op.call))
        elif op.kind not in ("get", "mget"):
            # It may still commit later: its effect is unknown.
            self.history.append(Op(op.client, op.kind, op.key, op.input, UNKNOWN, op.call))
            self.lock_outcome(op, UNKNOWN)
        self.client_done(op.client)

    def client_done(self, client: int) -> None:
        self.at(self.now + self.rng.uniform(0.001, 0.05), lambda: self.client_next(client))

    # ----- faults ----------------------------------------------------------------------

    def schedule_nemesis(self) -> None:
        cfg = self.cfg
        t = 1.0
        while True:
            t += self.rng.uniform(*cfg.nemesis_interval)
            if t >= cfg.duration:
                break
            choices = []
            if cfg.partitions:
                choices += ["partition", "partition", "asymmetric"]
            if cfg.crashes:
                choices += ["crash", "crash"]
            if cfg.transfers:
                choices += ["transfer"]
            if cfg.membership:
                choices += ["membership", "membership"]
            if cfg.stalls:
                choices += ["stall"]
            if not choices:
                break
            kind = self.rng.choice(choices)
            self.at(t, self._nemesis_event(kind))

    def _nemesis_event(self, kind: str) -> Callable[[], None]:
        return lambda: self.nemesis(kind)

    def nemesis(self, kind: str) -> None:
        if self.faults_over:
            return
        rng = self.rng
        if kind == "partition":
            self.heal()
            shuffled = rng.sample(self.ids, len(self.ids))
            cut = rng.randint(1, len(self.ids) // 2)
            minority, majority = shuffled[:cut], shuffled[cut:]
            for a in minority:
                for b in majority:
                    self.blocked |= {(a, b), (b, a)}
            self.log(f"PARTITION {minority} | {majority}")
            self.at(self.now + rng.uniform(0.5, 4.0), self.heal)
        elif kind == "asymmetric":
            self.heal()
            victim = rng.choice(self.ids)
            others = [s for s in self.ids if s != victim]
            outbound = rng.random() < 0.5
            for other in others:
                self.blocked.add((victim, other) if outbound else (other, victim))
            self.log(f"ASYMMETRIC {victim} {'cannot send' if outbound else 'cannot hear'}")
            self.at(self.now + rng.uniform(0.5, 4.0), self.heal)
        elif kind == "crash":
            victim = rng.choice(self.ids)
            leader = self.current_leader()
            if leader is not None and rng.random() < self.cfg.crash_leader_bias:
                victim = leader
            self.crash(victim)
            self.at(self.now + rng.uniform(*self.cfg.restart_range), lambda: self.restart(victim))
        elif kind == "transfer":
            leader = self.current_leader()
            if leader is not None:
                node = self.servers[leader].node
                assert node is not None
                self.log(f"{leader} transfer -> {node.transfer_leadership()}")
                self.after_input(leader)
        elif kind == "membership":
            self.membership_change()
            if rng.random() < 0.3:
                self.membership_change()  # a second change right away must wait its turn
        elif kind == "stall":
            victim = rng.choice(self.ids)
            leader = self.current_leader()
            if leader is not None and rng.random() < self.cfg.stall_leader_bias:
                victim = leader
            self.servers[victim].stalled_until = self.now + rng.uniform(*self.cfg.stall_range)
            self.log(f"{victim} STALL until {self.servers[victim].stalled_until:.3f}")

    def heal(self) -> None:
        if self.blocked:
            self.log("HEAL")
        self.blocked.clear()

    def restart(self, sid: str) -> None:
        server = self.servers[sid]
        if server.node is not None:
            return
        self.start(sid)
        self.schedule_tick(sid, server.epoch)
        self.pump(sid)

    def current_leader(self) -> str | None:
        best: tuple[int, str] | None = None
        for sid, server in self.servers.items():
            node = server.node
            if (
                node is not None
                and node.role is Role.LEADER
                and (best is None or node.term > best[0])
            ):
                best = (node.term, sid)
        return best[1] if best else None

    def membership_change(self) -> None:
        leader = self.current_leader()
        if leader is None:
            return
        node = self.servers[leader].node
        assert node is not None
        config = node.configuration
        missing = [s for s in self.ids if config.get(s) is None]
        if missing:
            sid = missing[0]
            if self.cfg.wipe_removed and self.removal_committed_everywhere(sid):
                # A brand-new server reusing the id: empty disk, never bootstrapped.
                self.crash(sid)
                self.servers[sid].storage = MemoryStorage()
                self.restart(sid)
                self.count("wiped")
            result = node.add_server(sid, f"addr-{sid}")
            self.log(f"{leader} add {sid} -> {result}")
        else:
            voters = [s for s in config.voter_ids()]
            if len(voters) <= 2:
                return
            sid = self.rng.choice(voters)
            result = node.remove_server(sid)
            self.log(f"{leader} remove {sid} -> {result}")
        self.after_input(leader)

    def removal_committed_everywhere(self, sid: str) -> bool:
        """Only a server whose removal committed may lose its disk (Raft assumes stable storage)."""
        leader = self.current_leader()
        if leader is None:
            return False
        node = self.servers[leader].node
        assert node is not None
        return (
            node.committed_configuration()[1].get(sid) is None
            and node.configuration.get(sid) is None
        )

    def end_faults(self) -> None:
        self.faults_over = True
        self.heal()
        for server in self.servers.values():
            server.stalled_until = 0.0
        for sid in self.ids:
            self.restart(sid)
        self.log("FAULTS OVER")

    # ----- the end ---------------------------------------------------------------------

    def converged(self) -> str | None:
        """None when one leader leads and every member has applied its commit index."""
        leader = self.current_leader()
        if leader is None:
            return "no leader after the cluster healed"
        node = self.servers[leader].node
        assert node is not None
        for sid in node.configuration.ids():
            other = self.servers[sid].node
            if other is None:
                return f"{sid} is down after the cluster healed"
            applied = self.servers[sid].kv.applied
            if other.log.commit != node.log.commit or applied != node.log.commit:
                return (
                    f"{sid} did not catch up: commit {other.log.commit} applied {applied}, "
                    f"leader {leader} commit {node.log.commit}"
                )
        return None

    def describe(self) -> str:
        return "\n".join(self.trace)
