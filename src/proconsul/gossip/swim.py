"""GossipCore: SWIM membership with Lifeguard, as a sans-I/O state machine.

Job: decide who is in the pool and in what state, spread that news, and carry
user events, given only packets, stream frames and `now`. The adapter feeds
events in (`receive`, `receive_stream`, `tick`, `join`, `leave`, ...) and
executes what `take_actions()` returns (see `actions.Ready` for the rules).

Protocol, in brief:
- Failure detection: one member probed per (awareness-scaled) probe interval,
  round-robin over a shuffled list. No ack within the probe timeout: ask
  `indirect_checks` others to probe it (they answer Nack if it stays silent)
  and try a stream ping. No ack by the end of the interval: suspect it.
- Suspicion: carries the member's incarnation; the member refutes with a higher
  one. The timeout starts at its maximum and shrinks with each independent
  confirmation (`lifeguard.Suspicion`). A suspected member is also told directly
  on its next probe (the buddy system).
- Dissemination: every datagram carries as many queued broadcasts as fit; a
  gossip timer sends them to `gossip_nodes` random members too. Push-pull syncs
  full state over a stream at an interval that scales with the pool size.
- Bookkeeping: dead members are retried (reconnect) so partitions re-merge, and
  dead and left members are reaped after their timeouts.

Rules:
- No asyncio, socket, ssl, time or global random: time comes in as `now`,
  randomness from the `random.Random` passed in. A unit test checks imports.
- Every queue and table is bounded (broadcast queue, ack handlers, events).
- Malformed input is dropped and counted in `stats()`; it never raises.
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from proconsul.structs.coordinate import Coordinate

from . import messages as m
from .actions import (
    EMPTY_READY,
    MemberEventKind,
    Ready,
    StreamPurpose,
    StreamRequest,
    UserEventRecord,
)
from .broadcast import Broadcast
from .coordinate import CoordinateClient
from .membership import (
    T_GOSSIP,
    T_PROBE,
    T_PROBE_TIMEOUT,
    T_PUSH_PULL,
    T_REAP,
    T_RECONNECT,
    T_RELAY_EXPIRE,
    T_SUSPICION,
    MembershipState,
    check_tags,
)
from .params import GossipParams, push_pull_interval, scale_by_awareness
from .state import Member, MemberRecord

if TYPE_CHECKING:
    # Only the type: randomness always comes from the caller's seeded Random.
    import random

Address = m.Address
State = m.State

_SEQ_MASK = 2**32 - 1


class _Probe:
    __slots__ = ("acked", "expected_nacks", "nacks", "seq", "start", "target")

    def __init__(self, seq: int, target: MemberRecord, start: float) -> None:
        self.seq = seq
        self.target = target
        self.start = start
        self.acked = False
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    """An indirect ping we are performing for `requester`."""

    __slots__ = ("nack", "requester", "seq")

    def __init__(self, seq: int, requester: Address, nack: bool) -> None:
        self.seq = seq
        self.requester = requester
        self.nack = nack


class GossipCore(MembershipState):
    """One member's view of the pool. See the module docstring."""

    def __init__(
        self,
        name: str,
        addr: Address,
        tags: Mapping[str, str],
        params: GossipParams,
        rng: random.Random,
        now: float = 0.0,
    ) -> None:
        super().__init__(name, addr, tags, params, rng, now)
        # Vivaldi's own randomness, seeded from the name so the pool's draws
        # (probe order, timers) stay what they were without coordinates.
        self.coordinates = CoordinateClient(type(rng)(zlib.crc32(name.encode())))
        self._seq = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._stream_ident = 0
        self._leave_broadcast: Broadcast | None = None
        self._dispatch: dict[type, Callable[[Any, Address], None]] = {
            m.Ping: self._on_ping,
            m.IndirectPing: self._on_indirect_ping,
            m.Ack: self._on_ack,
            m.Nack: self._on_nack,
            m.Suspect: self._on_suspect_msg,
            m.Alive: self._on_alive,
            m.Dead: self._on_dead,
            m.UserEvent: self._on_user_event,
        }
        # Stagger periodic work so members started together do not act in lockstep.
        self._schedule(now + rng.uniform(0, params.probe_interval), T_PROBE)
        self._push_pull_gen = 0
        self._schedule(now + rng.uniform(0, params.push_pull_interval), T_PUSH_PULL, 0)
        self._schedule(now + params.reconnect_interval, T_RECONNECT)
        self._schedule(now + params.reap_interval, T_REAP)
        self._broadcast_alive(self._local)

    # ------------------------------------------------------------------ API

    def join(self, addresses: Sequence[Address], now: float) -> list[int]:
        """Push-pull with each address; returns the stream request idents.

        A reply arriving through `receive_stream` for one of them means the
        join worked; `stream_failed` means that address could not be reached.
        """
        self._now = now
        payload = m.encode(self._local_state(join=True, reply=False))
        return [self._stream(addr, payload, StreamPurpose.JOIN, True) for addr in addresses]

    def leave(self, now: float) -> None:
        """Leave gracefully: announce it; others will see us as left, not failed.

        Keep driving the core (ticks, receives) until `leave_propagated()` or
        `params.leave_propagate_delay` passes, then stop.
        """
        self._now = now
        if self._leaving:
            return
        self._leaving = True
        local = self._local
        local.state = State.LEFT
        local.state_change = now
        msg = m.Dead(local.incarnation, local.name, local.name, True)
        self._leave_broadcast = self._queue_broadcast(local.name, m.encode(msg))
        self._emit(MemberEventKind.LEAVE, local)

    def leave_propagated(self) -> bool:
        """True once the leave has been gossiped fully, or nobody is left to tell."""
        if not self._leaving:
            return False
        if self._leave_broadcast is None or self._leave_broadcast.done:
            return True
        return not any(rec.state <= State.SUSPECT for rec in self._table if rec is not self._local)

    def update_meta(self, tags: Mapping[str, str], now: float) -> None:
        """Change our tags; the change travels as an alive with a higher incarnation."""
        self._now = now
        check_tags(tags, self.params)
        local = self._local
        local.tags = dict(tags)
        local.incarnation = m.saturated(local.incarnation + 1)
        self._broadcast_alive(local)
        self._emit(MemberEventKind.UPDATE, local)

    def fire_event(self, name: str, payload: bytes, now: float) -> int:
        """Send a user event to the whole pool; returns its Lamport time."""
        self._now = now
        size = len(name.encode()) + len(payload)
        if size > self.params.user_event_size_limit:
            raise ValueError(
                f"user event exceeds configured limit of {self.params.user_event_size_limit} bytes"
            )
        ltime = self._clock.time
        self._clock.increment()
        event = m.UserEvent(ltime, name, payload)
        self._events.add(event, self._clock.time)
        self._out_user.append(UserEventRecord(ltime, name, payload))
        self._queue_broadcast(None, m.encode(event))
        return ltime

    def restore(self, members: Iterable[Member], now: float) -> int:
        """Warm start: add members remembered from a previous run, without announcing them.

        Only alive members unknown to us are added (each reported as a join);
        they are probed like any other, so stale entries fail out normally.
        Returns how many were added. Unlike `join`, this sends nothing: the
        pool already knows these members, so re-broadcasting them would only
        cost bandwidth. Use it before `join`, never instead of it.
        """
        self._now = now
        added = 0
        for member in members:
            if member.state != State.ALIVE or self._table.get(member.name) is not None:
                continue
            rec = MemberRecord(member.name, member.addr, member.tags, member.incarnation, now)
            self._table.add(rec)
            self._emit(MemberEventKind.JOIN, rec)
            added += 1
        if added:
            # Now that the pool size is known, spread the first full-state sync
            # over the interval for that size, as a long-running member would.
            self._push_pull_gen += 1
            interval = push_pull_interval(self.params.push_pull_interval, self._table.listed)
            self._schedule(now + self._rng.uniform(0, interval), T_PUSH_PULL, self._push_pull_gen)
        return added

    def force_leave(self, name: str, now: float) -> bool:
        """Mark a failed member as left (Consul's force-leave); False if not failed."""
        self._now = now
        rec = self._table.get(name)
        if rec is None or rec is self._local or rec.state != State.DEAD:
            return False
        self._on_dead(m.Dead(rec.incarnation, rec.name, self._local.name, True), None, True)
        return True

    def receive(
        self, from_addr: Address, data: bytes | Sequence[m.Simple | m.PushPull], now: float
    ) -> None:
        """A datagram (already opened by the encryption policy), or its decoded messages."""
        self._now = now
        stats = self._stats
        stats["udp_received"] += 1
        if isinstance(data, bytes):
            stats["udp_bytes_received"] += len(data)
            try:
                msgs = m.decode_packet(data)
            except m.MessageError:
                stats["malformed"] += 1
                return
        else:
            msgs = data
        dispatch = self._dispatch
        for msg in msgs:
            handler = dispatch.get(type(msg))
            if handler is None:
                # Push-pull state is only accepted over a stream.
                stats["malformed"] += 1
                continue
            handler(msg, from_addr)

    def receive_stream(
        self, from_addr: Address, data: bytes, now: float, request: StreamRequest | None = None
    ) -> bytes | None:
        """A stream frame: a request from a peer (returns the reply frame, if any),
        or the reply to our `request`."""
        self._now = now
        self._stats["tcp_received"] += 1
        try:
            msgs = m.decode_packet(data)
        except m.MessageError:
            self._stats["malformed"] += 1
            return None
        reply: bytes | None = None
        for msg in msgs:
            if isinstance(msg, m.PushPull):
                if not msg.reply:
                    # Reply with our state as it was before merging theirs, so we
                    # do not echo their news back to them.
                    reply = m.encode(self._local_state(join=False, reply=True))
                purpose = request.purpose if request is not None else None
                self._merge(msg, ignore_old_events=purpose is StreamPurpose.JOIN)
            elif isinstance(msg, m.Ping):
                if msg.node in ("", self._local.name):
                    reply = m.encode(m.Ack(msg.seq))
                else:
                    self._stats["misdirected"] += 1
            else:
                handler = self._dispatch.get(type(msg))
                if handler is not None:
                    handler(msg, from_addr)
        return reply

    def stream_failed(self, request: StreamRequest, now: float) -> None:
        """The adapter could not complete `request` (refused, timed out, reset)."""
        self._now = now
        self._stats["tcp_failed"] += 1

    def tick(self, now: float) -> None:
        """Run every timer due at or before `now`."""
        self._now = now
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, kind, arg = heapq.heappop(timers)
            if kind == T_PROBE:
                self._probe_tick(when)
            elif kind == T_PROBE_TIMEOUT:
                self._probe_timeout(arg)
            elif kind == T_GOSSIP:
                self._gossip_tick(when)
            elif kind == T_SUSPICION:
                self._suspicion_fired(arg)
            elif kind == T_RELAY_EXPIRE:
                self._relay_expired(arg)
            elif kind == T_PUSH_PULL:
                if arg == self._push_pull_gen:
                    self._push_pull_tick()
            elif kind == T_RECONNECT:
                self._reconnect_tick()
            elif kind == T_REAP:
                self._reap_tick()
                self.coordinates.keep_only(self._table.by_name)

    def stats(self) -> dict[str, int]:
        out = super().stats()
        out["pending_relays"] = len(self._relays)
        return out

    def coordinate(self) -> Coordinate:
        """This member's network coordinate now (gossip/coordinate.py)."""
        return self.coordinates.coord

    def next_deadline(self) -> float | None:
        """When `tick` next has work; the adapter sleeps until then or a packet."""
        timers = self._timers
        # Drop timers that can no longer do anything (an acked probe's timeout,
        # an answered relay) so the adapter is not woken for nothing.
        while timers and self._stale(timers[0][2], timers[0][3]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def _stale(self, kind: int, arg: Any) -> bool:
        if kind == T_PROBE_TIMEOUT:
            probe = self._probe
            return probe is None or probe.seq != arg or probe.acked
        if kind == T_RELAY_EXPIRE:
            return arg not in self._relays
        if kind == T_SUSPICION:
            return self._suspicions.get(arg[0]) is not arg[1]
        if kind == T_PUSH_PULL:
            return bool(arg != self._push_pull_gen)
        return False

    def ready(self) -> bool:
        return bool(self._out_udp or self._out_tcp or self._out_members or self._out_user)

    def take_actions(self) -> Ready:
        """Everything to do since the last call, as one frozen value."""
        if not self.ready():
            return EMPTY_READY
        ready = Ready(
            tuple(self._out_udp),
            tuple(self._out_tcp),
            tuple(self._out_members),
            tuple(self._out_user),
        )
        self._out_udp.clear()
        self._out_tcp.clear()
        self._out_members.clear()
        self._out_user.clear()
        return ready

    # ------------------------------------------------------------- plumbing

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & _SEQ_MASK
        return self._seq

    def _send(self, addr: Address, parts: list[bytes]) -> None:
        """Send `parts` in one datagram, topped up with queued broadcasts."""
        used = sum(len(p) for p in parts)
        room = self._room - used - m.COMPOUND_OVERHEAD
        if room > 0 and len(self._queue):
            parts = parts + self._queue.get(room, self._limit(), m.MAX_COMPOUND_PARTS - len(parts))
        packet = m.compound(parts)
        if len(packet) > self._room:
            # Too big for a datagram: only possible for a single large message.
            self._stream(addr, packet, StreamPurpose.MESSAGE, False)
            return
        self._out_udp.append((addr, packet))
        self._stats["udp_sent"] += 1
        self._stats["udp_bytes_sent"] += len(packet)

    def _stream(self, addr: Address, payload: bytes, purpose: StreamPurpose, reply: bool) -> int:
        self._stream_ident += 1
        self._out_tcp.append(StreamRequest(addr, payload, purpose, reply, self._stream_ident))
        self._stats["tcp_sent"] += 1
        self._stats["tcp_bytes_sent"] += len(payload)
        return self._stream_ident

    # --------------------------------------------------------------- probing

    def _probe_tick(self, when: float) -> None:
        self._finish_probe()
        interval = scale_by_awareness(self.params.probe_interval, self._awareness.score)
        # Keep the cadence; after a stall start afresh rather than at `now`,
        # which would end the probe about to be sent before any ack could come.
        nxt = when + interval
        if nxt <= self._now:
            nxt = self._now + interval
        self._schedule(nxt, T_PROBE)
        if self._leaving:
            return
        target = self._next_target()
        if target is None:
            return
        seq = self._next_seq()
        self._probe = _Probe(seq, target, self._now)
        self._stats["probes"] += 1
        parts = [m.encode(m.Ping(seq, target.name))]
        if target.state == State.SUSPECT:
            # Buddy system: tell the suspect directly so it can refute at once.
            parts.append(m.encode(m.Suspect(target.incarnation, target.name, self._local.name)))
        self._send(target.addr, parts)
        timeout = scale_by_awareness(self.params.probe_timeout, self._awareness.score)
        self._schedule(self._now + timeout, T_PROBE_TIMEOUT, seq)

    def _next_target(self) -> MemberRecord | None:
        while self._urgent:
            rec = self._urgent.pop(0)
            if rec.state == State.SUSPECT and self._table.get(rec.name) is rec:
                return rec
        return self._table.next_probe_target(self._now, self.params.gossip_to_the_dead_time)

    def _probe_timeout(self, seq: int) -> None:
        probe = self._probe
        if probe is None or probe.seq != seq or probe.acked:
            return
        target = self._local_target(probe)
        if target is None:
            return
        relays = self._table.random_members(
            self.params.indirect_checks, lambda r: r.state == State.ALIVE, exclude=target
        )
        if relays:
            req = m.encode(m.IndirectPing(seq, target.name, target.addr, True))
            for relay in relays:
                self._send(relay.addr, [req])
            probe.expected_nacks = len(relays)
        # Fallback over a stream: a lossy network that eats datagrams usually
        # still carries TCP, which retransmits.
        self._stream(target.addr, m.encode(m.Ping(seq, target.name)), StreamPurpose.PING, True)
        self._stats["indirect_probes"] += 1

    def _local_target(self, probe: _Probe) -> MemberRecord | None:
        target = probe.target
        if self._table.get(target.name) is not target or target.state > State.SUSPECT:
            return None
        return target

    def _finish_probe(self) -> None:
        probe = self._probe
        if probe is None:
            return
        self._probe = None
        if probe.acked:
            answered = probe.target
            if answered.state == State.SUSPECT and answered not in self._urgent:
                # It answers but we still hold the old accusation: its alive
                # reply to our buddy message was lost. Ask again next interval
                # rather than let a live member time out in our view.
                self._urgent.append(answered)
            return
        self._stats["probe_failures"] += 1
        # Lifeguard: missing nacks mean our own links or processing are at
        # fault, so grow more patient; with nobody to ask, any failure counts.
        if probe.expected_nacks > 0:
            self._awareness.apply(max(0, probe.expected_nacks - probe.nacks))
        else:
            self._awareness.apply(1)
        target = self._local_target(probe)
        if target is not None:
            self._on_suspect(m.Suspect(target.incarnation, target.name, self._local.name))

    def _on_ping(self, msg: m.Ping, from_addr: Address) -> None:
        if msg.node and msg.node != self._local.name:
            self._stats["misdirected"] += 1
            return
        self._send(from_addr, [m.encode(m.Ack(msg.seq, self.coordinates.coord))])

    def _on_indirect_ping(self, msg: m.IndirectPing, from_addr: Address) -> None:
        if msg.node == self._local.name:
            self._send(from_addr, [m.encode(m.Ack(msg.seq, self.coordinates.coord))])
            return
        if len(self._relays) >= self.params.max_pending_acks:
            self._stats["relays_refused"] += 1
            return
        seq = self._next_seq()
        self._relays[seq] = _Relay(msg.seq, from_addr, msg.nack)
        self._send(msg.addr, [m.encode(m.Ping(seq, msg.node))])
        self._schedule(self._now + self.params.probe_timeout, T_RELAY_EXPIRE, seq)

    def _relay_expired(self, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and relay.nack:
            self._send(relay.requester, [m.encode(m.Nack(relay.seq))])

    def _on_ack(self, msg: m.Ack, from_addr: Address) -> None:
        probe = self._probe
        if probe is not None and probe.seq == msg.seq:
            if not probe.acked:
                probe.acked = True
                self._awareness.apply(-1)
                self._stats["acks"] += 1
                rtt_s = self._now - probe.start
                self._stats["probe_rtt_us"] = int(rtt_s * 1e6)
                if msg.coord is not None and from_addr == probe.target.addr:
                    # Only a direct answer times the path to the target (Serf's rule).
                    self.coordinates.update(probe.target.name, msg.coord, rtt_s)
                suspicion = self._suspicions.get(probe.target.name)
                if suspicion is not None:
                    suspicion.answered = True
            return
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            self._send(relay.requester, [m.encode(m.Ack(relay.seq))])
            return
        # Late, duplicated or replayed.
        self._stats["stale"] += 1

    def _on_nack(self, msg: m.Nack, from_addr: Address) -> None:
        probe = self._probe
        if probe is not None and probe.seq == msg.seq:
            probe.nacks += 1
        else:
            self._stats["stale"] += 1

    # ------------------------------------------------------------ membership

    def _on_suspect_msg(self, msg: m.Suspect, from_addr: Address) -> None:
        local = self._local
        if msg.node == local.name and msg.incarnation < local.incarnation and not self._leaving:
            # A stale accusation reached us directly: the sender missed our
            # refutation (gossip reaches almost everyone, not everyone). Answer
            # it with our current alive so the buddy system also heals stale
            # suspicions; memberlist would stay silent here.
            self._stats["stale_accusations"] += 1
            self._send(
                from_addr,
                [m.encode(m.Alive(local.incarnation, local.name, local.addr, local.tags))],
            )
            return
        self._on_suspect(msg)

    # -------------------------------------------------------- periodic work

    def _gossip_tick(self, when: float) -> None:
        self._gossip_armed = False
        if not len(self._queue):
            return
        now = self._now
        dead_window = self.params.gossip_to_the_dead_time

        def gossip_to(rec: MemberRecord) -> bool:
            if rec.state <= State.SUSPECT:
                return True
            return rec.state == State.DEAD and now - rec.state_change <= dead_window

        targets = self._table.random_members(self.params.gossip_nodes, gossip_to)
        room = self._room - m.COMPOUND_OVERHEAD
        for target in targets:
            parts = self._queue.get(room, self._limit(), m.MAX_COMPOUND_PARTS)
            if parts:
                packet = m.compound(parts)
                self._out_udp.append((target.addr, packet))
                self._stats["udp_sent"] += 1
                self._stats["udp_bytes_sent"] += len(packet)
            for big in self._queue.take_oversized(self._limit()):
                self._stream(target.addr, big, StreamPurpose.MESSAGE, False)
            if not len(self._queue):
                break
        if len(self._queue) and targets:
            p = self.params.gossip_interval
            nxt = when + p
            if nxt <= now:
                nxt = self._gossip_origin + (math.floor((now - self._gossip_origin) / p) + 1) * p
            self._schedule(nxt, T_GOSSIP)
            self._gossip_armed = True

    def _push_pull_tick(self) -> None:
        p = self.params
        interval = push_pull_interval(p.push_pull_interval, self._table.listed)
        self._schedule(self._now + interval, T_PUSH_PULL, self._push_pull_gen)
        if self._leaving:
            return
        peers = self._table.random_members(1, lambda r: r.state == State.ALIVE)
        if peers:
            payload = m.encode(self._local_state(join=False, reply=False))
            self._stream(peers[0].addr, payload, StreamPurpose.PUSH_PULL, True)

    def _reconnect_tick(self) -> None:
        self._schedule(self._now + self.params.reconnect_interval, T_RECONNECT)
        if self._leaving:
            return
        failed = [rec for rec in self._table if rec.state == State.DEAD]
        if not failed:
            return
        alive = max(1, self._table.alive_count())
        # serf's rule: the more of the pool looks failed, the likelier a retry,
        # so a pool split in half retries every interval and a big healthy pool
        # with one dead member does not hammer it.
        if self._rng.random() > len(failed) / alive:
            return
        target = failed[self._rng.randrange(len(failed))]
        payload = m.encode(self._local_state(join=True, reply=False))
        self._stream(target.addr, payload, StreamPurpose.RECONNECT, True)
        self._stats["reconnects"] += 1
