"""The member table's rules of change: alive, suspect, dead, left, and merging.

Job: `MembershipState` holds one member's view of the pool (the member table,
suspicions, the broadcast queue, user events, counters, timers) and applies the
SWIM/Lifeguard rules for changing it. `swim.GossipCore` builds on it with the
parts that talk to the network: probing, gossip, streams and the public API.

Rules:
- Incarnation numbers order news about a member: older news is ignored, and
  news about ourselves that we disagree with is refuted with a higher number.
- Every accepted change is re-broadcast (newer news about a member replaces the
  older in the queue) and reported as a serf member event.
- A remote "dead" seen in push-pull is treated as a suspicion: the member gets
  the chance to refute it.
- Pure: `now` is stored by the public entry points before these rules run.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from . import messages as m
from .actions import MemberEvent, MemberEventKind, StreamRequest, UserEventRecord
from .broadcast import Broadcast, BroadcastQueue
from .crypto import SEAL_OVERHEAD
from .events import EventBuffer, LamportClock
from .lifeguard import Awareness, Suspicion
from .params import (
    GossipParams,
    retransmit_limit,
    suspicion_expected_confirmations,
    suspicion_max_timeout,
    suspicion_min_timeout,
)
from .state import Member, MemberRecord, MemberTable

if TYPE_CHECKING:
    # Only the type: randomness always comes from the caller's seeded Random.
    import random

Address = m.Address
State = m.State

# Suspects waiting to be probed out of turn; more than this at once means
# something larger is wrong and the normal rotation will get to them.
_MAX_URGENT = 8

# Timer kinds, shared with swim.py.
T_PROBE = 0  # finish the current probe, start the next
T_PROBE_TIMEOUT = 1  # no direct ack yet: go indirect
T_GOSSIP = 2
T_PUSH_PULL = 3
T_RECONNECT = 4
T_REAP = 5
T_SUSPICION = 6
T_RELAY_EXPIRE = 7


def tags_size(tags: Mapping[str, str]) -> int:
    """Encoded size of a tag map, as checked against `meta_max_size`."""
    return len(msgspec.msgpack.encode(dict(tags)))


def check_tags(tags: Mapping[str, str], params: GossipParams) -> None:
    if tags_size(tags) > params.meta_max_size:
        raise ValueError(f"Encoded length of tags exceeds limit of {params.meta_max_size} bytes")


class MembershipState:
    """One member's view of the pool and the rules for changing it."""

    def __init__(
        self,
        name: str,
        addr: Address,
        tags: Mapping[str, str],
        params: GossipParams,
        rng: random.Random,
        now: float,
    ) -> None:
        params.validate()
        check_tags(tags, params)
        self.params = params
        self._rng = rng
        self._now = now
        self._local = MemberRecord(name, addr, dict(tags), 0, now)
        self._table = MemberTable(self._local, rng)
        # Room for messages in one datagram, after sealing adds its overhead.
        self._room = params.udp_buffer_size - SEAL_OVERHEAD
        self._queue = BroadcastQueue(self._room - m.COMPOUND_OVERHEAD)
        self._awareness = Awareness(params.awareness_max_multiplier)
        self._suspicions: dict[str, Suspicion] = {}
        # Suspects to probe ahead of the round-robin order (bounded).
        self._urgent: list[MemberRecord] = []
        self._clock = LamportClock()
        self._events = EventBuffer(params.event_buffer)
        self._timers: list[tuple[float, int, int, Any]] = []
        self._timer_seq = 0
        self._leaving = False
        self._limit_n = -1
        self._limit_v = 0
        self._gossip_origin = now + rng.uniform(0, params.gossip_interval)
        self._gossip_armed = False
        self._out_udp: list[tuple[Address, bytes]] = []
        self._out_tcp: list[StreamRequest] = []
        self._out_members: list[MemberEvent] = []
        self._out_user: list[UserEventRecord] = []
        self._stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)

    # ------------------------------------------------------------- queries

    @property
    def name(self) -> str:
        return self._local.name

    @property
    def incarnation(self) -> int:
        return self._local.incarnation

    @property
    def awareness(self) -> int:
        return self._awareness.score

    @property
    def leaving(self) -> bool:
        return self._leaving

    def members(self) -> list[Member]:
        return [rec.snapshot() for rec in self._table]

    def member(self, name: str) -> Member | None:
        rec = self._table.get(name)
        return rec.snapshot() if rec is not None else None

    def state_of(self, name: str) -> State | None:
        """A member's state without building a snapshot (cheap; for hot checks)."""
        rec = self._table.get(name)
        return rec.state if rec is not None else None

    def num_alive(self) -> int:
        return self._table.alive_count()

    def stats(self) -> dict[str, int]:
        out = dict(self._stats)
        by_state = [0, 0, 0, 0]
        for rec in self._table:
            by_state[rec.state] += 1
        out["members_alive"], out["members_suspect"], out["members_failed"], out["members_left"] = (
            by_state
        )
        out["awareness"] = self._awareness.score
        out["broadcast_queue"] = len(self._queue)
        out["events_buffered"] = len(self._events)
        out["incarnation"] = self._local.incarnation
        out["event_ltime"] = self._clock.time
        return out

    # ------------------------------------------------------------ plumbing

    def _send(self, addr: Address, parts: list[bytes]) -> None:
        """Send one datagram; the network side (swim.GossipCore) provides it."""
        raise NotImplementedError

    def _schedule(self, when: float, kind: int, arg: Any = None) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, arg))

    def _limit(self) -> int:
        n = self._table.listed
        if n != self._limit_n:
            self._limit_n = n
            self._limit_v = retransmit_limit(self.params.retransmit_mult, n)
        return self._limit_v

    def _queue_broadcast(self, key: str | None, payload: bytes) -> Broadcast:
        item = self._queue.queue(key, payload)
        bound = max(self.params.min_queue_depth, 2 * self._table.listed)
        if len(self._queue) > bound:
            self._stats["broadcasts_dropped"] += self._queue.prune(bound)
        if not self._gossip_armed:
            # Gossip runs on a fixed phase but only while there is something to
            # say, so an idle member wakes once per probe, not per gossip tick.
            p = self.params.gossip_interval
            steps = math.floor((self._now - self._gossip_origin) / p) + 1
            self._schedule(self._gossip_origin + max(steps, 0) * p, T_GOSSIP)
            self._gossip_armed = True
        return item

    def _broadcast_alive(self, rec: MemberRecord) -> None:
        msg = m.Alive(rec.incarnation, rec.name, rec.addr, rec.tags)
        self._queue_broadcast(rec.name, m.encode(msg))

    def _emit(self, kind: MemberEventKind, rec: MemberRecord) -> None:
        self._out_members.append(MemberEvent(kind, rec.snapshot()))

    def _local_state(self, join: bool, reply: bool) -> m.PushPull:
        nodes = [
            m.NodeState(rec.name, rec.addr, rec.tags, rec.incarnation, rec.state)
            for rec in self._table
            if not rec.forgotten
        ]
        events = self._events.recent(self.params.push_pull_max_events)
        return m.PushPull(self._local.name, join, reply, nodes, self._clock.time, events)

    # ---------------------------------------------------------------- rules

    def _refute(self, accused: int) -> None:
        """Someone thinks we are suspect, dead or stale: out-shout them."""
        local = self._local
        inc = local.incarnation + 1
        if accused >= inc:
            inc = accused + 1
        # At the bound a refutation can only tie; past it no peer would decode it.
        local.incarnation = m.saturated(inc)
        self._broadcast_alive(local)
        # Being accused is evidence we have been slow (Lifeguard).
        self._awareness.apply(1)
        self._stats["refutes"] += 1

    def _on_alive(self, msg: m.Alive, from_addr: Address | None = None) -> None:
        rec = self._table.by_name.get(msg.node)
        # Fast path: news we already have, the bulk of what gossip delivers.
        if (
            rec is not None
            and msg.incarnation <= rec.incarnation
            and not rec.forgotten
            and rec.addr == msg.addr
            and rec is not self._local
        ):
            return
        local = self._local
        if msg.node == local.name:
            if self._leaving or msg.incarnation < local.incarnation:
                return
            if (
                msg.incarnation == local.incarnation
                and msg.tags == local.tags
                and msg.addr == local.addr
            ):
                return
            self._refute(msg.incarnation)
            return
        now = self._now
        reclaim = False
        if rec is not None and rec.addr != msg.addr:
            # Same name, new address: only once the old owner is gone for good.
            p = self.params
            reclaim = rec.state == State.LEFT or (
                rec.state == State.DEAD
                and p.dead_node_reclaim_time > 0
                and now - rec.state_change > p.dead_node_reclaim_time
            )
            if not reclaim:
                self._stats["conflicts"] += 1
                return
        if rec is None:
            rec = MemberRecord(msg.node, msg.addr, msg.tags, msg.incarnation, now)
            self._table.add(rec)
            self._emit(MemberEventKind.JOIN, rec)
            self._queue_broadcast(rec.name, m.encode(msg))
            return
        if not (rec.forgotten or reclaim) and msg.incarnation <= rec.incarnation:
            return
        was = rec.state
        changed = rec.tags != msg.tags or rec.addr != msg.addr
        rec.incarnation = msg.incarnation
        rec.addr = msg.addr
        rec.tags = msg.tags
        self._suspicions.pop(rec.name, None)
        if was != State.ALIVE:
            rec.state = State.ALIVE
            rec.state_change = now
        if was >= State.DEAD:
            self._table.enlist(rec)
            self._emit(MemberEventKind.JOIN, rec)
        elif changed:
            self._emit(MemberEventKind.UPDATE, rec)
        self._queue_broadcast(rec.name, m.encode(msg))

    def _on_suspect(
        self, msg: m.Suspect, from_addr: Address | None = None, relayed: bool = False
    ) -> None:
        """A suspicion; `relayed` when heard second hand (push-pull), not from an accuser."""
        rec = self._table.get(msg.node)
        if rec is None or rec.forgotten or msg.incarnation < rec.incarnation:
            return
        if rec is self._local:
            if not self._leaving:
                self._refute(msg.incarnation)
            return
        suspicion = self._suspicions.get(rec.name)
        if suspicion is not None:
            if not relayed and suspicion.confirm(msg.from_node):
                # A new independent accuser: pass it on so others shorten too.
                self._schedule(suspicion.deadline, T_SUSPICION, (rec.name, suspicion))
                self._queue_broadcast(rec.name, m.encode(msg))
            return
        if rec.state != State.ALIVE:
            return
        now = self._now
        rec.incarnation = msg.incarnation
        rec.state = State.SUSPECT
        rec.state_change = now
        p = self.params
        n = self._table.listed
        k = suspicion_expected_confirmations(p.suspicion_mult, n)
        lo = suspicion_min_timeout(p.suspicion_mult, n, p.probe_interval)
        hi = suspicion_max_timeout(p.suspicion_max_timeout_mult, lo)
        suspicion = Suspicion(None if relayed else msg.from_node, msg.incarnation, k, lo, hi, now)
        self._suspicions[rec.name] = suspicion
        self._schedule(suspicion.deadline, T_SUSPICION, (rec.name, suspicion))
        self._stats["suspects"] += 1
        if len(self._urgent) < _MAX_URGENT:
            # Probe it next, carrying the suspicion (buddy system), even if our
            # own probe just failed. Gossip reaches almost every member, not
            # every one: a member that misses the suspect's refutation would
            # otherwise wait up to a full probe round, longer than the suspicion
            # lasts. A dead member just fails one more probe.
            self._urgent.append(rec)
        if relayed:
            # Second hand: a peer's full state says so, but whoever accused the
            # member is unknown. Spreading it would make the relaying peer look
            # like one more independent accuser and shorten everyone's timeout
            # (Lifeguard counts accusers); instead tell the member itself so a
            # live one refutes at once.
            self._send(rec.addr, [m.encode(m.Suspect(msg.incarnation, rec.name, self._local.name))])
            return
        self._queue_broadcast(rec.name, m.encode(msg))

    def _suspicion_fired(self, arg: tuple[str, Suspicion]) -> None:
        name, suspicion = arg
        if self._suspicions.get(name) is not suspicion or suspicion.deadline > self._now:
            return
        rec = self._table.get(name)
        if rec is None or rec.state != State.SUSPECT:
            return
        if suspicion.answered:
            # The suspect acked one of our own probes since: it is alive, we
            # just missed its refutation. Do not pronounce it dead on hearsay;
            # look again for one more minimum timeout, probing it directly so it
            # can send us its alive. A dead member never acks, so real failures
            # are not delayed by this.
            suspicion.answered = False
            suspicion.deadline = self._now + suspicion.min_timeout
            self._schedule(suspicion.deadline, T_SUSPICION, (name, suspicion))
            if rec not in self._urgent:
                self._urgent.append(rec)
            self._stats["suspicions_deferred"] += 1
            return
        self._on_dead(m.Dead(suspicion.incarnation, name, self._local.name, False))

    def _on_dead(self, msg: m.Dead, from_addr: Address | None = None, force: bool = False) -> None:
        rec = self._table.get(msg.node)
        if rec is None or (rec.forgotten and not force) or msg.incarnation < rec.incarnation:
            return
        if rec is self._local:
            if not self._leaving:
                self._refute(msg.incarnation)
            return
        left = msg.left
        if rec.state == State.LEFT or (rec.state == State.DEAD and not left):
            return
        self._suspicions.pop(rec.name, None)
        rec.incarnation = msg.incarnation
        rec.state = State.LEFT if left else State.DEAD
        rec.state_change = self._now
        self._emit(MemberEventKind.LEAVE if left else MemberEventKind.FAIL, rec)
        self._queue_broadcast(rec.name, m.encode(msg))

    def _merge(self, state: m.PushPull, ignore_old_events: bool) -> None:
        self._stats["push_pull_merged"] += 1
        for node in state.nodes:
            if node.state == State.ALIVE:
                self._on_alive(m.Alive(node.incarnation, node.name, node.addr, node.tags))
            elif node.state == State.LEFT:
                self._on_dead(m.Dead(node.incarnation, node.name, node.name, True))
            else:
                # A remote "dead" is only a suspicion here: let the member refute
                # it rather than trusting one peer's stale view.
                self._on_suspect(
                    m.Suspect(node.incarnation, node.name, state.from_node), None, True
                )
        self._clock.witness(state.event_ltime)
        if ignore_old_events:
            # Consul joins without replaying old events: remember the ones the
            # pool already has as seen. (serf instead drops everything below
            # the remote clock, which also drops new events from a member whose
            # clock lags; push-pull witnessing makes clocks drift apart.)
            for event in state.events:
                self._events.add(event, self._clock.time)
            return
        for event in reversed(state.events):
            self._on_user_event(event)

    def _on_user_event(self, event: m.UserEvent, from_addr: Address | None = None) -> None:
        self._clock.witness(event.ltime)
        if not self._events.add(event, self._clock.time):
            self._stats["events_duplicate"] += 1
            return
        self._out_user.append(UserEventRecord(event.ltime, event.name, event.payload))
        self._queue_broadcast(None, m.encode(event))

    def _reap_tick(self) -> None:
        p = self.params
        self._schedule(self._now + p.reap_interval, T_REAP)
        now = self._now
        for rec in list(self._table):
            if rec.state == State.DEAD:
                timeout = p.reconnect_timeout
            elif rec.state == State.LEFT and rec is not self._local:
                timeout = p.tombstone_timeout
            else:
                continue
            if now - rec.state_change > timeout:
                self._table.remove(rec)
                self._queue.invalidate(rec.name)
                self._emit(MemberEventKind.REAP, rec)


STAT_NAMES = (
    "udp_sent",
    "udp_bytes_sent",
    "udp_received",
    "udp_bytes_received",
    "tcp_sent",
    "tcp_bytes_sent",
    "tcp_received",
    "tcp_failed",
    "malformed",
    "misdirected",
    "stale",
    "conflicts",
    "probes",
    "acks",
    "probe_failures",
    "probe_rtt_us",
    "indirect_probes",
    "relays_refused",
    "suspects",
    "refutes",
    "reconnects",
    "push_pull_merged",
    "broadcasts_dropped",
    "events_duplicate",
    "stale_accusations",
    "suspicions_deferred",
)
