"""The Raft log for servers: drives the pure core (raft/core.py) on asyncio.

Job: own one `RaftNode`, its SQLite storage and the state machine it feeds,
and offer what the rest of a server needs: the `Log` protocol
(`apply(command) -> (index, result)`) for ServerEndpoints, a read barrier for
`?consistent`, leader/term/contact status for `/v1/status/*` and the
`X-Consul-*` headers, leadership transfer, membership changes (and, on the
leader, each follower's progress for autopilot), bootstrap, snapshots and
stats. raft_rpc.py puts it on the RPC port (`Raft.Step`, write
forwarding), raft_transport.py sends its messages, raft_waiters.py keeps
the futures of whoever waits on it.

The Ready loop (DESIGN.md, "Raft"; raft/ready.py has the
contract). One task takes each Ready and, in order:
 1. checks an installed snapshot's bytes, then makes it and the entries and
    hard state durable in ONE storage call on the storage thread;
 2. only then queues the messages (raft_transport.py sends them);
 3. applies committed entries to the FSM and answers the proposals waiting
    on them (success iff the entry at the index carries the proposal's term);
 4. answers read states (the caller then waits for the applied index) and
    fails dropped reads; 5. compacts; 6. advances;
 7. takes a snapshot when one is due (raft_snapshots.py has when and how):
    serializes the store at once and writes it in the background, then
    calls snapshot_done (or snapshot_failed).

Rules:
- The core is only ever entered from the event loop thread and never across
  an await, so inputs (step, propose, read_index, tick, ...) may come from
  any task; only the loop task takes and advances Readies.
- Storage calls run on one dedicated thread, in submission order, so the
  event loop never blocks on fsync and writes never reorder. Nothing is
  acknowledged (no message sent, no proposal answered) before its Ready's
  writes returned, i.e. are durable.
- A Ready whose only hard-state change is the commit index is not written on
  its own (commit is a hint, losing it is safe); the newest such hint rides
  along with the next durable write or with close(). That saves an fsync per
  heartbeat on idle followers.
- `LogSafetyError` (a conflict below the commit index), a storage failure or
  any other error in the loop is fatal: logged, every waiter failed, the node
  stopped, `on_fatal` called. Serving on from a broken log would be worse.
- Bounded: pending proposals (`max_pending`), pending reads (the core's
  bound), per-peer send queues. Every wait has a deadline; the loop itself is
  woken by a timer every tick interval even when nothing else happens.
- peers.json (outage recovery) is applied before the log is loaded.
- The snapshot check runs in the loop task between Readies (after each Ready
  and after each batch of them), the only place the store sits exactly at the
  core's applied index.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from proconsul.raft.core import (
    CONFIGURATION_CHANGE_PENDING,
    TERM_NOT_YET_COMMITTED,
    RaftError,
    RaftNode,
)
from proconsul.raft.messages import (
    Configuration,
    Entry,
    EntryType,
    HardState,
    MessageError,
    Server,
    Snapshot,
)
from proconsul.raft.params import RaftParams, params_from_multiplier
from proconsul.raft.ready import NotLeader, Proposal, Ready, Rejected, Role
from proconsul.raft.storage import SQLiteStorage, apply_peers_json
from proconsul.raft.storage_api import MemoryStorage, RaftStorage, persist_ready
from proconsul.rpc.client import Address, RPCClient, parse_address
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.rpc.tls import PeerInfo
from proconsul.server.raft_errors import (
    LeadershipLostError,
    NotLeaderError,
    RaftRejectedError,
    RaftStoppedError,
)
from proconsul.server.raft_snapshots import SnapshotScheduler
from proconsul.server.raft_support import RaftStatus, last_contact_s, rebuild_state, status_of
from proconsul.server.raft_transport import RaftTransport, decode_batch
from proconsul.server.raft_waiters import ApplyFuture, Waiters
from proconsul.state.fsm import FSM, encode_command
from proconsul.state.snapshot import decode_snapshot
from proconsul.structs.commands import ApplyResult, Command, stamp_leader_time

log = logging.getLogger("proconsul.raft")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class FollowerProgress:
    """The leader's view of one follower's log (autopilot health facts)."""

    last_contact_s: float  # seconds since the leader last heard from it
    match_index: int  # the highest index known to be in its log
    match_term: int  # that entry's term (0 when compacted away here)


DEFAULT_APPLY_TIMEOUT_S = 15.0  # as long as an RPC write may take end to end
DEFAULT_MAX_PENDING = 8192
RECENT_APPLIED = 16  # entries kept for the live view (/v1/agent/live)


class RaftLog:
    def __init__(
        self,
        node_id: str,
        address: str,
        fsm: FSM,
        client: RPCClient,
        *,
        data_dir: str | os.PathLike[str] | None,
        params: RaftParams | None = None,
        rng: random.Random | None = None,
        apply_timeout_s: float = DEFAULT_APPLY_TIMEOUT_S,
        max_pending: int = DEFAULT_MAX_PENDING,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        """`address` is this server's RPC address as its peers dial it ("host:port");
        `client` the agent's `RPCClient` (TLS as configured); `data_dir`
        None keeps the log in memory (tests only: nothing survives a restart)."""
        self.id = node_id
        self.address = address
        self.fsm = fsm
        self.params = params or params_from_multiplier()
        self.rng = rng or random.Random()
        self.apply_timeout_s = apply_timeout_s
        self.max_pending = max_pending
        self.on_fatal = on_fatal
        self.raft_dir = Path(data_dir) / "raft" if data_dir is not None else None
        self.transport = RaftTransport(client, address, send_timeout_s=self.params.election_timeout)
        self.counters: Counter[str] = Counter()
        self.failed: BaseException | None = None
        self.applied_index = 0
        # The last entries applied (index, term, type), for the agent's live view.
        self.recent_applied: deque[tuple[int, int, str]] = deque(maxlen=RECENT_APPLIED)
        self._storage: RaftStorage | None = None
        self._node: RaftNode | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-storage")
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._deferred_hard: HardState | None = None  # newest commit-only hint, unwritten
        self._waiters = Waiters()
        self._read_ids = itertools.count(1)
        self._addresses: dict[str, str] = {}  # learned from Raft.Step senders
        self._leadership_listeners: list[Callable[[bool], None]] = []
        client.lost_listeners.append(self._peer_lost)
        self._leading = False  # as last published to the listeners
        self._snapshots = SnapshotScheduler(
            self.params,
            self.rng,
            fsm,
            self.counters,
            write=self._write_snapshot,
            wake=self._wake.set,
            stopped=lambda: self._closed or self.failed is not None,
            fatal=self._fatal,
        )

    # ----- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage (applying peers.json first), restore the store, start the loop."""
        if self.raft_dir is not None:
            raft_dir = self.raft_dir
            storage = await self._disk(SQLiteStorage, raft_dir)
            recovered = await self._disk(apply_peers_json, raft_dir, storage, rebuild_state)
            if recovered is not None:
                log.warning(
                    "raft: recovered from peers.json; configuration is now %s",
                    ", ".join(f"{s.id}@{s.address}" for s in recovered.servers),
                )
            self._storage = storage
        else:
            self._storage = MemoryStorage()
        state = await self._disk(self._storage.load)
        if state.snapshot is not None:
            self.fsm.restore(state.snapshot.data)
            self.applied_index = state.snapshot.meta.index
        self._node = RaftNode(self.id, state, self.params, self.rng, now=time.monotonic())
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._run(), name=f"raft-ready-{self.id}")
        self._arm_timer()
        self._snapshots.start()
        self._wake.set()  # entries committed before a restart are applied at once
        log.info(
            "raft: started %s at %s (term %d, last index %d, snapshot %d)",
            self.id,
            self.address,
            self._node.term,
            self._node.log.last_index(),
            self._node.snapshot.meta.index if self._node.snapshot else 0,
        )

    def has_state(self) -> bool:
        """True when this server was bootstrapped or has joined a cluster before."""
        node = self._require_node()
        return node.term != 0 or node.log.last_index() != 0 or node.snapshot is not None

    def bootstrap(self, servers: Sequence[Server]) -> bool:
        """Start a new cluster with `servers` (this one included) unless there is Raft
        state already; returns whether it bootstrapped. Every server listed may call
        it with the same list (bootstrap_expect), the logs come out identical."""
        node = self._require_node()
        if self.has_state():
            return False
        try:
            node.bootstrap(Configuration(tuple(servers)))
        except RaftError as exc:
            log.warning("raft: not bootstrapping: %s", exc)
            return False
        log.info("raft: bootstrapping cluster with %d server(s)", len(servers))
        if [s.id for s in servers] == [self.id]:
            node.campaign_now()  # a lone voter has nobody to wait for
        self._wake.set()
        return True

    async def close(self) -> None:
        """Stop at once (what a crash would lose, a restart recovers from disk)."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._snapshots.close()
        task = self._loop_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._waiters.fail_all(RaftStoppedError())
        self._publish_leadership(False)
        await self.transport.close()
        storage, hard = self._storage, self._deferred_hard
        if storage is not None and hard is not None and self.failed is None:
            with contextlib.suppress(Exception):
                await self._disk(storage.save, hard, ())
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        if storage is not None:
            storage.close()

    # ----- the Log protocol and other requests -----------------------------------------

    async def apply(self, command: Command) -> tuple[int, ApplyResult]:
        """Commit `command` through Raft; (index, FSM result) once applied here.

        NotLeaderError when this server does not lead (the caller may forward);
        LeadershipLostError when leadership was lost and another entry took the
        slot (the command did not happen); TimeoutError after apply_timeout_s
        (outcome unknown, as in Consul).

        The command carries this server's wall clock when it is one that
        depends on time (`stamp_leader_time`): only a leader's proposal
        commits, so every replica applies the leader's time, never its own."""
        command = stamp_leader_time(command, int(time.time() * 1000))
        proposal = self._propose(self._require_node().propose, encode_command(command))
        return await self._await_proposal(proposal, self.apply_timeout_s)

    async def add_server(
        self, server_id: str, address: str, voter: bool = True, timeout_s: float | None = None
    ) -> int:
        """Add (or re-address) one server; returns the configuration entry's index."""
        node = self._require_node()
        return await self._change_membership(
            lambda: node.add_server(server_id, address, voter), timeout_s
        )

    async def remove_server(self, server_id: str, timeout_s: float | None = None) -> int:
        node = self._require_node()
        return await self._change_membership(lambda: node.remove_server(server_id), timeout_s)

    async def _change_membership(
        self, change: Callable[[], Proposal | NotLeader | Rejected], timeout_s: float | None
    ) -> int:
        """Propose a one-server configuration change once the configuration is
        stable, and wait for it to commit. A change proposed while another is
        uncommitted (autopilot's cleanup racing an operator's remove-peer), or
        before the leader committed an entry of its term, waits for the log to
        settle and is proposed again, as hashicorp/raft queues such changes,
        rather than failing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_s or self.apply_timeout_s)
        while True:
            try:
                proposal = self._propose(lambda _: change(), b"")
            except RaftRejectedError as exc:
                if exc.message not in (CONFIGURATION_CHANGE_PENDING, TERM_NOT_YET_COMMITTED):
                    raise
                pending = self._require_node().log.last_index()
                await self.wait_applied(pending, max(0.0, deadline - loop.time()))
                continue
            index, _ = await self._await_proposal(proposal, max(0.0, deadline - loop.time()))
            return index

    async def read_barrier(self, timeout_s: float | None = None) -> int:
        """Linearizable read point for `?consistent`: once it returns, this
        (leading) server has applied everything committed before the call, as
        confirmed by a quorum. NotLeaderError on a follower or a leader that
        loses its quorum meanwhile (it steps down within the lease timeout)."""
        node = self._require_node()
        timeout = timeout_s or self.apply_timeout_s
        ctx = next(self._read_ids).to_bytes(8, "big")
        refused = node.read_index(ctx)
        if isinstance(refused, NotLeader):
            raise self._not_leader(refused)
        if isinstance(refused, Rejected):
            raise RaftRejectedError(refused.reason)
        future = self._waiters.add_read(ctx)
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                index = await future
        finally:
            self._waiters.reads.pop(ctx, None)
        await self.wait_applied(index, max(0.0, deadline - loop.time()))
        return index

    async def wait_applied(self, index: int, timeout_s: float) -> None:
        """Return once the FSM has applied `index` (TimeoutError after timeout_s)."""
        if self.applied_index >= index:
            return
        self._check_running()
        future = self._waiters.wait_applied(index)
        async with asyncio.timeout(timeout_s):
            await future

    async def wait_for_leader(self, timeout_s: float, *, other_than: str | None = None) -> str:
        """The leader's id once one (not `other_than`) is known with its address.
        TimeoutError after timeout_s."""

        def leader(node: RaftNode) -> str | None:
            known = node.leader_id not in (None, other_than) and self._address_of(node.leader_id)
            return node.leader_id if known else None

        return await self._wait_state(leader, timeout_s)

    async def wait_leader_gone(self, address: str, timeout_s: float) -> None:
        """Return once the leader is no longer the one at `address`: another was
        elected, or this server lost contact with it for an election timeout
        (a request forwarded there may never be answered). TimeoutError after
        timeout_s."""

        def gone(node: RaftNode) -> bool | None:
            return True if self._address_of(node.leader_id) != address else None

        await self._wait_state(gone, timeout_s)

    async def wait_leader_elsewhere(self, address: str, timeout_s: float) -> str:
        """The leader's address once a leader other than the one at `address` is
        known (a request forwarded there may never be answered). TimeoutError
        after timeout_s."""

        def elsewhere(node: RaftNode) -> str | None:
            found = self._address_of(node.leader_id)
            return found if found not in (None, address) else None

        return await self._wait_state(elsewhere, timeout_s)

    async def transfer_leadership(
        self, target: str | None = None, timeout_s: float | None = None
    ) -> str:
        """Hand leadership to `target` (default: the most caught-up voter), as a
        leaving leader does; returns the new leader's id once it leads."""
        node = self._require_node()
        refused = node.transfer_leadership(target)
        if isinstance(refused, NotLeader):
            raise self._not_leader(refused)
        if isinstance(refused, Rejected):
            raise RaftRejectedError(refused.reason)
        self._wake.set()
        timeout = timeout_s or 2 * self.params.election_timeout
        return await self._wait_state(
            lambda n: n.leader_id if n.leader_id not in (None, self.id) else None, timeout
        )

    # ----- status ----------------------------------------------------------------------

    def is_leader(self) -> bool:
        node = self._node
        return node is not None and self.failed is None and node.role is Role.LEADER

    def leader_address(self) -> str | None:
        node = self._node
        if node is None or self.failed is not None:
            return None
        return self._address_of(node.leader_id)

    def leader_contact(self) -> tuple[bool, float | None]:
        """(a leader is known, seconds since this server heard from it): what every
        read answer carries; 0 on the leader. Cheaper than `status()`."""
        node = self._node
        if node is None or self.failed is not None:
            return False, None
        return node.leader_id is not None, last_contact_s(node)

    def status(self) -> RaftStatus:
        node = self._require_node()
        return status_of(node, self.address, self.applied_index, self.leader_address())

    def configuration(self) -> tuple[int, Configuration]:
        """The latest committed configuration: `/v1/operator/raft/configuration`."""
        return self._require_node().committed_configuration()

    def latest_configuration(self) -> Configuration:
        """The newest configuration in the log, committed or not (the one in force)."""
        return self._require_node().configuration

    def latest_configuration_entry(self) -> tuple[int, Configuration]:
        """(index, configuration) of the newest configuration in the log: what
        `/v1/operator/raft/configuration` shows, as hashicorp/raft's
        GetConfiguration does (a bootstrap is listed before its first commit)."""
        node = self._require_node()
        return node.configuration_index, node.configuration

    def follower_progress(self) -> dict[str, FollowerProgress]:
        """On the leader, what it knows of each other server's log (autopilot's
        health facts); empty on a follower."""
        node = self._node
        leader = node.leader if node is not None and self.failed is None else None
        if node is None or leader is None:
            return {}
        # The core's clock is time.monotonic() as of its last tick.
        now = time.monotonic()
        return {
            peer: FollowerProgress(
                last_contact_s=max(0.0, now - pr.last_contact),
                match_index=pr.match,
                match_term=node.log.term(pr.match) or 0,
            )
            for peer, pr in leader.progress.items()
        }

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        node = self._node
        if node is not None:
            out.update({f"core_{k}": v for k, v in node.stats().items()})
            status = self.status()
            out.update(
                state=status.role,
                term=status.term,
                commit_index=status.commit_index,
                applied_index=status.applied_index,
                last_log_index=status.last_index,
                last_snapshot_index=status.snapshot_index,
                num_peers=max(0, len(status.configuration.voter_ids()) - 1),
            )
        out.update(self.counters)
        out.update({f"transport_{k}": v for k, v in self.transport.stats().items()})
        storage_stats = getattr(self._storage, "stats", None)
        if callable(storage_stats):
            out.update({f"storage_{k}": v for k, v in storage_stats().items()})
        out.update(self._waiters.stats())
        out["fatal"] = repr(self.failed) if self.failed is not None else ""
        return out

    # ----- incoming messages -----------------------------------------------------------

    async def handle_step(self, payload: bytes, peer: PeerInfo) -> bytes:
        """The `Raft.Step` RPC handler (one-way or request; answers b"")."""
        node = self._node
        if node is None or self._closed or self.failed is not None:
            raise RaftStoppedError()
        try:
            from_address, messages, bad = decode_batch(payload)
        except MessageError as exc:
            self.counters["step_bad_payload"] += 1
            raise RPCError(str(exc), ErrorCode.BAD_REQUEST) from None
        self.counters["step_bad_messages"] += bad
        for message in messages:
            if from_address:
                self._addresses[message.from_id] = from_address
            try:
                node.step(message)
            except Exception as exc:
                # LogSafetyError, or a core bug that may have left the node half
                # updated: either way it must not go on voting or appending.
                self._fatal(exc)
                raise RaftStoppedError() from None
        self.counters["messages_received"] += len(messages)
        self._wake.set()
        return b""

    # ----- the Ready loop --------------------------------------------------------------

    async def _run(self) -> None:
        node = self._require_node()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while node.has_ready():
                    await self._process(node.ready())
                self._snapshots.maybe_take(node, self.applied_index, asked=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fatal(exc)

    async def _process(self, rd: Ready) -> None:
        node = self._require_node()
        storage = self._storage
        assert storage is not None
        self.counters["readies"] += 1
        # 1-2. Durable first. An installed snapshot is checked before it replaces
        # anything: a corrupt one must not wipe a good log.
        if rd.snapshot is not None:
            decode_snapshot(rd.snapshot.data)
        if rd.snapshot is not None or rd.entries or rd.must_sync:
            hard = rd.hard_state if rd.hard_state is not None else self._deferred_hard
            self._deferred_hard = None
            await self._disk(persist_ready, storage, dataclasses.replace(rd, hard_state=hard))
            self.counters["durable_writes"] += 1
        elif rd.hard_state is not None:
            self._deferred_hard = rd.hard_state
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.role, rd.soft_state.leader_id, rd.soft_state.term)
        if rd.configuration is not None:
            self._on_configuration(rd.configuration)
        # 3. Only now talk.
        for message in rd.messages:
            self.transport.send(message, self._address_of(message.to_id))
        # 4. Apply.
        for entry in rd.committed_entries:
            self._apply_entry(entry)
        self._waiters.release_applied(self.applied_index)
        # 5. Reads: the caller then waits for the applied index itself.
        for read in rd.read_states:
            self._waiters.read_confirmed(read.ctx, read.index)
        for ctx in rd.dropped_reads:
            self._waiters.read_failed(ctx, self._not_leader(None))
        # 6. Compact what a durable snapshot covers.
        if rd.compact_through:
            await self._disk(storage.compact, rd.compact_through)
        # 7-8.
        node.advance(rd)
        self._snapshots.maybe_take(node, self.applied_index, asked=rd.want_snapshot)

    def _apply_entry(self, entry: Entry) -> None:
        if entry.index <= self.applied_index:
            return  # covered by a snapshot installed meanwhile
        result: ApplyResult = None
        if entry.type is EntryType.COMMAND:
            result = self.fsm.apply_bytes(entry.index, entry.data)
        self.applied_index = entry.index
        self.recent_applied.append((entry.index, entry.term, entry.type.name.lower()))
        self.counters["entries_applied"] += 1
        self._waiters.applied(entry, result)

    def _install(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        self.fsm.restore(snapshot.data)
        self.applied_index = meta.index
        self.counters["snapshots_installed"] += 1
        log.info("raft: installed snapshot at index %d (term %d)", meta.index, meta.term)
        # Whether an entry we proposed at or below the snapshot survived cannot
        # be told from a snapshot: its caller gets an unknown outcome.
        self._waiters.snapshot_installed(meta.index)
        self._waiters.release_applied(self.applied_index)

    # ----- helpers ---------------------------------------------------------------------

    def _propose(
        self, propose: Callable[[bytes], Proposal | NotLeader | Rejected], data: bytes
    ) -> tuple[int, ApplyFuture]:
        self._check_running()
        if len(self._waiters.proposals) >= self.max_pending:
            self.counters["applies_refused_busy"] += 1
            raise RaftRejectedError("too many writes in flight; retry later")
        result = propose(data)
        if isinstance(result, NotLeader):
            raise self._not_leader(result)
        if isinstance(result, Rejected):
            raise RaftRejectedError(result.reason)
        self.counters["proposals"] += 1
        self._wake.set()
        return result.index, self._waiters.add_proposal(result.index, result.term)

    async def _await_proposal(
        self, proposal: tuple[int, ApplyFuture], timeout_s: float
    ) -> tuple[int, ApplyResult]:
        index, future = proposal
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        finally:
            self._waiters.forget_proposal(index, future)

    async def _wait_state(self, pick: Callable[[RaftNode], T | None], timeout_s: float) -> T:
        node = self._require_node()
        async with asyncio.timeout(timeout_s):
            while True:
                self._check_running()
                value = pick(node)
                if value is not None:
                    return value
                await self._waiters.next_change()

    def on_leadership(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(leading)` on every gain and loss of leadership (and at
        once if leading now). Listeners run inside the Ready loop: they must not block."""
        self._leadership_listeners.append(listener)
        if self._leading:
            listener(True)

    def _publish_leadership(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if not leading:
            # A deposed (or cut-off) leader's callers hear it now, not when the
            # partition heals and another entry takes their slot.
            self._waiters.fail_proposals(LeadershipLostError())
        for listener in self._leadership_listeners:
            listener(leading)

    def _on_soft_state(self, role: Role, leader_id: str | None, term: int) -> None:
        if role is Role.LEADER:
            log.info("raft: %s is now the leader (term %d)", self.id, term)
        elif leader_id is not None:
            log.info("raft: following %s (term %d)", leader_id, term)
        self._waiters.changed()
        self._publish_leadership(role is Role.LEADER)

    def _peer_lost(self, addr: Address) -> None:
        """The RPC client lost its connection to `addr`: if that is our leader,
        the core campaigns soon (`RaftNode.leader_unreachable`)."""
        node = self._node
        if node is None or self._closed or self.failed is not None:
            return
        leader = self._address_of(node.leader_id) if node.role is Role.FOLLOWER else None
        if leader is None:
            return
        try:
            if parse_address(leader) != addr:
                return
        except ValueError:
            return
        log.info("raft: lost the connection to the leader at %s; campaigning soon", leader)
        node.leader_unreachable()
        # Tick at the new deadline itself, not at the next periodic tick: the
        # followers' random delays then stay apart and their votes do not split.
        delay = max(0.0, node.election_deadline - time.monotonic())
        asyncio.get_running_loop().call_later(delay, self._tick_now)
        self._wake.set()

    def _tick_now(self) -> bool:
        """Tick the core now; False once Raft is closed or failed."""
        node = self._node
        if node is None or self._closed or self.failed is not None:
            return False
        try:
            node.tick(time.monotonic())
        except Exception as exc:
            self._fatal(exc)
            return False
        self._wake.set()
        return True

    def _on_configuration(self, configuration: Configuration) -> None:
        if configuration.servers:
            described = (
                f"{s.id}@{s.address}{'' if s.voter else ' (non-voter)'}"
                for s in configuration.servers
            )
            log.info("raft: configuration is now %s", ", ".join(described))
        for server in configuration.servers:
            self._addresses.pop(server.id, None)  # the configuration is authoritative
        self.transport.retain(set(configuration.ids()))
        self._waiters.changed()

    def _address_of(self, server_id: str | None) -> str | None:
        if server_id is None or self._node is None:
            return None
        if server_id == self.id:
            return self.address
        return self._node.address_of(server_id) or self._addresses.get(server_id)

    def _not_leader(self, refused: NotLeader | None) -> NotLeaderError:
        node = self._node
        leader_id = refused.leader_id if refused is not None else None
        if leader_id is None and node is not None and node.leader_id != self.id:
            leader_id = node.leader_id
        address = self._address_of(leader_id) if leader_id is not None else None
        return NotLeaderError(leader_id, address)

    def _arm_timer(self) -> None:
        interval = self.params.heartbeat_interval / 2
        self._timer = asyncio.get_running_loop().call_later(interval, self._on_timer)

    def _on_timer(self) -> None:
        if self._tick_now():
            self._arm_timer()

    def _write_snapshot(self, snapshot: Snapshot) -> asyncio.Future[None]:
        storage = self._storage
        assert storage is not None
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, storage.save_snapshot, snapshot)

    async def _disk(self, fn: Callable[..., T], *args: Any) -> T:
        if self.raft_dir is None:
            # In memory (a dev agent): nothing blocks, so no thread hop per Ready.
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _require_node(self) -> RaftNode:
        if self._node is None:
            raise RaftStoppedError("raft is not started")
        return self._node

    def _check_running(self) -> None:
        if self._node is None or self._closed or self.failed is not None:
            raise RaftStoppedError()

    def _fatal(self, exc: BaseException) -> None:
        if self.failed is not None:
            return
        self.failed = exc
        log.critical(
            "raft: stopping this server's Raft: %s: %s", type(exc).__name__, exc, exc_info=exc
        )
        if self._timer is not None:
            self._timer.cancel()
        task = self._loop_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._waiters.fail_all(RaftStoppedError(f"raft stopped: {exc}"))
        self._publish_leadership(False)
        if self.on_fatal is not None:
            self.on_fatal(exc)
