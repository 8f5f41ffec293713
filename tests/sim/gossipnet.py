"""A deterministic simulator for GossipCore: virtual clock, seeded faulty network.

Job: run N gossip cores against each other on a virtual clock over a network
that loses, delays, duplicates and reorders datagrams, partitions (also one
way), stalls a member's processing, and crashes and restarts members; record
what every member learns and check invariants after every step.

Rules:
- Everything random comes from one `random.Random(seed)`: the same seed gives
  the same run, event for event. Nothing iterates a set or reads a real clock.
- The network carries real bytes (encoded, optionally sealed), so byte counts
  and decoding are what production would see.
- Invariants that are cheap run after every step; bounds on queues run once
  per simulated second. A violation raises `InvariantError` at once.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from proconsul.gossip import GossipCore, GossipParams, State
from proconsul.gossip.actions import MemberEvent, MemberEventKind, StreamRequest
from proconsul.gossip.crypto import EncryptionPolicy, GossipSecurityError

Address = tuple[str, int]

_UDP = 0
_TICK = 1
_TCP_REQ = 2
_TCP_REPLY = 3
_TCP_FAIL = 4
_CALL = 5
_WAKE = 6

# Queue-bound and health checks run at this virtual interval.
_SLOW_CHECK_INTERVAL = 1.0


class InvariantError(AssertionError):
    pass


@dataclass
class NetConfig:
    """How the virtual network misbehaves."""

    loss: float = 0.0
    # Uniform one-way delay; its spread is what reorders packets.
    delay_min: float = 0.0005
    delay_max: float = 0.003
    duplicate: float = 0.0
    tcp_delay: float = 0.002
    # Fraction of streams that fail (connect timeout or reset) on a bad network.
    tcp_failure: float = 0.0
    # One-way delay between two members by name (a modelled topology); when
    # set it replaces delay_min..delay_max, with up to `jitter` of it added.
    latency: Callable[[str, str], float] | None = None
    jitter: float = 0.05


@dataclass
class SimNode:
    name: str
    addr: Address
    tags: dict[str, str]
    core: GossipCore
    gen: int = 0
    up: bool = True
    stall_until: float = 0.0
    # Lag mode: until lag_until, every input is handled lag_min..lag_max late,
    # in arrival order (a CPU-starved process).
    lag_until: float = 0.0
    lag_min: float = 0.0
    lag_max: float = 0.0
    lag_clock: float = 0.0
    backlog: list[Callable[[], None]] = field(default_factory=list)
    tick_at: float | None = None
    policy: EncryptionPolicy | None = None
    user_events: list[tuple[int, str, bytes]] = field(default_factory=list)
    refused: int = 0


@dataclass
class Observed:
    """A member event as seen by `viewer` at virtual time `time`."""

    time: float
    viewer: str
    kind: MemberEventKind
    subject: str
    incarnation: int


class Simulation:
    def __init__(
        self,
        seed: int,
        params: GossipParams,
        net: NetConfig | None = None,
        record_events: bool = True,
        track_views: bool = True,
        timers_first_on_wake: bool = False,
    ) -> None:
        self.seed = seed
        self.params = params
        self.net = net or NetConfig()
        self.rng = random.Random(seed)
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self._by_addr: dict[Address, SimNode] = {}
        self._heap: list[tuple[float, int, int, object, object, object]] = []
        self._seq = 0
        self._blocked: set[tuple[str, str]] = set()
        self._next_slow_check = _SLOW_CHECK_INTERVAL
        self.record_events = record_events
        # Per-viewer views cost N*N memory; large benchmarks turn them off
        # (and with them the incarnation-order invariant).
        self.track_views = track_views
        # After a stall, run overdue timers before the input that queued: the
        # harsh order, in which a stalled member's probes all look failed.
        self.timers_first_on_wake = timers_first_on_wake
        self.events: list[Observed] = []
        self.listeners: list[Callable[[float, str, MemberEvent], None]] = []
        # viewer -> subject -> (state, incarnation) as learnt from member events.
        self.views: dict[str, dict[str, tuple[State, int]]] = {}
        self.steps = 0
        self.udp_packets = 0
        self.udp_bytes = 0
        self.tcp_streams = 0
        self.tcp_bytes = 0

    # ------------------------------------------------------------ topology

    def add_node(
        self,
        name: str,
        tags: dict[str, str] | None = None,
        join: Sequence[str] = (),
        policy: EncryptionPolicy | None = None,
        params: GossipParams | None = None,
    ) -> SimNode:
        index = len(self._by_addr) + 1
        addr = (f"10.{index // 65536}.{(index // 256) % 256}.{index % 256}", 8301)
        old = self.nodes.get(name)
        if old is not None:
            addr = old.addr
        node_tags = dict(tags if tags is not None else {"role": "node", "dc": "dc1"})
        core = GossipCore(
            name,
            addr,
            node_tags,
            params or self.params,
            random.Random(self.rng.getrandbits(64)),
            self.now,
        )
        node = SimNode(name, addr, node_tags, core, policy=policy)
        if old is not None:
            node.gen = old.gen + 1
        self.nodes[name] = node
        self._by_addr[addr] = node
        self.views[name] = {}
        if join:
            core.join([self.nodes[j].addr for j in join], self.now)
        self._after(node)
        return node

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        node.up = False
        node.backlog.clear()
        node.gen += 1

    def restart(self, name: str, join: Sequence[str]) -> SimNode:
        """A crashed member comes back with fresh state (incarnation 0)."""
        old = self.nodes[name]
        assert not old.up, "restart a crashed member only"
        return self.add_node(name, old.tags, join=join, policy=old.policy)

    def stall(self, name: str, duration: float) -> None:
        """The member stops processing for `duration`; input waits in its backlog."""
        node = self.nodes[name]
        node.stall_until = max(node.stall_until, self.now + duration)
        self._push(node.stall_until, _WAKE, name, node.gen, None)

    def lag(self, name: str, duration: float, lag_min: float, lag_max: float) -> None:
        """For `duration`, the member handles everything late but in order."""
        node = self.nodes[name]
        node.lag_until = self.now + duration
        node.lag_min, node.lag_max = lag_min, lag_max

    def partition(self, *groups: Iterable[str]) -> None:
        """Members in different groups cannot reach each other (both ways)."""
        sets = [list(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                for x in a:
                    for y in b:
                        self._blocked.add((x, y))
                        self._blocked.add((y, x))

    def block(self, src: str, dst: str) -> None:
        """One-way loss: nothing from src reaches dst."""
        self._blocked.add((src, dst))

    def heal(self) -> None:
        self._blocked.clear()

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._push(when, _CALL, fn, None, None)

    # ----------------------------------------------------------- running

    def run_until(self, t: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t:
            self._step(heapq.heappop(heap))
        self.now = max(self.now, t)

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(self, pred: Callable[[], bool], timeout: float, poll: float = 0.1) -> float:
        """Run until `pred()` holds; returns the virtual time it took. Fails on timeout."""
        start = self.now
        while not pred():
            if self.now - start > timeout:
                raise AssertionError(f"condition not met within {timeout}s of virtual time")
            self.run_for(poll)
        return self.now - start

    # ------------------------------------------------------------ queries

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up]

    def state_in(self, viewer: str, subject: str) -> State | None:
        return self.nodes[viewer].core.state_of(subject)

    def alive_set(self, viewer: str) -> list[str]:
        core = self.nodes[viewer].core
        return sorted(m.name for m in core.members() if m.state <= State.SUSPECT)

    def fails_about(self, subject: str, since: float = 0.0) -> list[Observed]:
        return [
            e
            for e in self.events
            if e.subject == subject and e.kind is MemberEventKind.FAIL and e.time >= since
        ]

    # ----------------------------------------------------------- internals

    def _push(self, when: float, kind: int, a: object, b: object, c: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, a, b, c))

    def _step(self, item: tuple[float, int, int, object, object, object]) -> None:
        when, _, kind, a, b, c = item
        self.now = when
        self.steps += 1
        if kind == _UDP:
            self._on_udp(a, b, c)  # type: ignore[arg-type]
        elif kind == _TICK:
            node = self.nodes[a]  # type: ignore[index]
            if node.up and node.gen == b and node.tick_at == when:
                node.tick_at = None
                self._deliver(node, lambda: node.core.tick(self.now))
        elif kind == _TCP_REQ:
            self._on_tcp_request(a, b, c)  # type: ignore[arg-type]
        elif kind == _TCP_REPLY:
            self._on_tcp_reply(a, b, c)  # type: ignore[arg-type]
        elif kind == _TCP_FAIL:
            src, gen, req = a, b, c
            assert isinstance(src, SimNode) and isinstance(req, StreamRequest)
            if src.up and src.gen == gen:
                self._deliver(src, lambda: src.core.stream_failed(req, self.now))
        elif kind == _CALL:
            a()  # type: ignore[operator]
        elif kind == _WAKE:
            self._on_wake(a, b)  # type: ignore[arg-type]
        if self.now >= self._next_slow_check:
            self._next_slow_check = self.now + _SLOW_CHECK_INTERVAL
            self._check_bounds()

    def _deliver(self, node: SimNode, fn: Callable[[], None], lagged: bool = False) -> None:
        if node.stall_until > self.now:
            node.backlog.append(fn)
            return
        if not lagged and node.lag_until > self.now:
            lag = node.lag_min + (node.lag_max - node.lag_min) * self.rng.random()
            node.lag_clock = max(node.lag_clock, self.now + lag)
            gen = node.gen
            self.at(node.lag_clock, lambda: self._lagged(node, gen, fn))
            return
        fn()
        self._after(node)

    def _lagged(self, node: SimNode, gen: int, fn: Callable[[], None]) -> None:
        if node.up and node.gen == gen:
            self._deliver(node, fn, lagged=True)

    def _on_wake(self, name: str, gen: int) -> None:
        node = self.nodes[name]
        if not node.up or node.gen != gen or node.stall_until > self.now:
            return
        backlog, node.backlog = node.backlog, []
        # By default input that queued during the stall runs first, then the
        # overdue timers, as an asyncio loop does after a pause.
        if self.timers_first_on_wake:
            node.core.tick(self.now)
        for fn in backlog:
            fn()
        node.core.tick(self.now)
        node.tick_at = None
        self._after(node)

    def _after(self, node: SimNode) -> None:
        core = node.core
        if core.ready():
            ready = core.take_actions()
            for addr, packet in ready.send_udp:
                self._send_udp(node, addr, packet)
            for req in ready.send_tcp:
                self._send_tcp(node, req)
            for event in ready.member_events:
                self._observe(node.name, event)
            for ue in ready.user_events:
                node.user_events.append((ue.ltime, ue.name, ue.payload))
        self._check_node(node)
        deadline = core.next_deadline()
        if deadline is not None and (node.tick_at is None or deadline < node.tick_at):
            node.tick_at = deadline
            self._push(deadline, _TICK, node.name, node.gen, None)

    def _reachable(self, src: str, dst: str) -> bool:
        return not self._blocked or (src, dst) not in self._blocked

    def _send_udp(self, src: SimNode, addr: Address, packet: bytes) -> None:
        if src.policy is not None:
            packet = src.policy.seal(packet, random_bytes=self.rng.randbytes)
        self.udp_packets += 1
        self.udp_bytes += len(packet)
        dst = self._by_addr.get(addr)
        if dst is None or not self._reachable(src.name, dst.name):
            return
        net = self.net
        rng = self.rng
        if net.loss and rng.random() < net.loss:
            return
        copies = 2 if net.duplicate and rng.random() < net.duplicate else 1
        for _ in range(copies):
            if net.latency is not None:
                delay = net.latency(src.name, dst.name) * (1.0 + net.jitter * rng.random())
            else:
                delay = net.delay_min + (net.delay_max - net.delay_min) * rng.random()
            self._push(self.now + delay, _UDP, dst.name, src.addr, packet)

    def _on_udp(self, dst_name: str, src_addr: Address, packet: bytes) -> None:
        node = self.nodes[dst_name]
        if not node.up:
            return

        def handle() -> None:
            data = packet
            if node.policy is not None:
                try:
                    data = node.policy.open(packet)
                except GossipSecurityError:
                    node.refused += 1
                    return
            node.core.receive(src_addr, data, self.now)

        self._deliver(node, handle)

    def _send_tcp(self, src: SimNode, req: StreamRequest) -> None:
        self.tcp_streams += 1
        self.tcp_bytes += len(req.payload)
        dst = self._by_addr.get(req.addr)
        if dst is None or not dst.up:
            # Connection refused: fails fast.
            self._push(self.now + self.net.tcp_delay, _TCP_FAIL, src, src.gen, req)
            return
        if not self._reachable(src.name, dst.name) or not self._reachable(dst.name, src.name):
            # A partition: the connect times out.
            self._push(self.now + self.params.tcp_timeout, _TCP_FAIL, src, src.gen, req)
            return
        if self.net.tcp_failure and self.rng.random() < self.net.tcp_failure:
            self._push(self.now + self.params.tcp_timeout, _TCP_FAIL, src, src.gen, req)
            return
        self._push(self.now + self.net.tcp_delay, _TCP_REQ, src, src.gen, req)

    def _on_tcp_request(self, src: SimNode, src_gen: int, req: StreamRequest) -> None:
        dst = self._by_addr.get(req.addr)
        if dst is None or not dst.up:
            self._push(self.now, _TCP_FAIL, src, src_gen, req)
            return

        def handle() -> None:
            payload = req.payload
            if src.policy is not None:
                payload = src.policy.seal(payload, random_bytes=self.rng.randbytes)
            if dst.policy is not None:
                try:
                    payload = dst.policy.open(payload)
                except GossipSecurityError:
                    dst.refused += 1
                    self._push(self.now, _TCP_FAIL, src, src_gen, req)
                    return
            reply = dst.core.receive_stream(src.addr, payload, self.now)
            if not req.expects_reply:
                return
            if reply is None:
                self._push(self.now, _TCP_FAIL, src, src_gen, req)
                return
            if dst.policy is not None:
                reply = dst.policy.seal(reply, random_bytes=self.rng.randbytes)
            self.tcp_bytes += len(reply)
            self._push(self.now + self.net.tcp_delay, _TCP_REPLY, src, src_gen, (req, reply))

        self._deliver(dst, handle)

    def _on_tcp_reply(self, src: SimNode, gen: int, arg: tuple[StreamRequest, bytes]) -> None:
        if not src.up or src.gen != gen:
            return
        req, reply = arg

        def handle() -> None:
            data = reply
            if src.policy is not None:
                try:
                    data = src.policy.open(reply)
                except GossipSecurityError:
                    src.refused += 1
                    src.core.stream_failed(req, self.now)
                    return
            src.core.receive_stream(req.addr, data, self.now, req)

        self._deliver(src, handle)

    # ---------------------------------------------------------- invariants

    def _observe(self, viewer: str, event: MemberEvent) -> None:
        member = event.member
        if not self.track_views:
            for listener in self.listeners:
                listener(self.now, viewer, event)
            return
        view = self.views[viewer]
        prev = view.get(member.name)
        kind = event.kind
        if kind is MemberEventKind.REAP:
            if prev is not None and prev[0] <= State.SUSPECT:
                self._violation(f"{viewer} reaped {member.name} while it was alive")
            view.pop(member.name, None)
        else:
            if prev is not None and member.name != viewer:
                rejoin = kind is MemberEventKind.JOIN and prev[0] >= State.DEAD
                if not rejoin and member.incarnation < prev[1]:
                    self._violation(
                        f"{viewer}: incarnation of {member.name} went back "
                        f"{prev[1]} -> {member.incarnation} on {kind}"
                    )
                if kind is MemberEventKind.JOIN and prev[0] <= State.SUSPECT:
                    self._violation(f"{viewer}: join for {member.name}, already alive")
            view[member.name] = (member.state, member.incarnation)
        if self.record_events:
            self.events.append(Observed(self.now, viewer, kind, member.name, member.incarnation))
        for listener in self.listeners:
            listener(self.now, viewer, event)

    def _check_node(self, node: SimNode) -> None:
        core = node.core
        own = core.state_of(node.name)
        if own != State.ALIVE and not core.leaving:
            self._violation(f"{node.name} believes itself {own!r}")
        if not 0 <= core.awareness < self.params.awareness_max_multiplier:
            self._violation(f"{node.name} awareness {core.awareness} out of range")

    def _check_bounds(self) -> None:
        for node in self.nodes.values():
            if not node.up:
                continue
            stats = node.core.stats()
            n = stats["members_alive"] + stats["members_suspect"] + stats["members_failed"]
            bound = max(node.core.params.min_queue_depth, 2 * (n + stats["members_left"]))
            if stats["broadcast_queue"] > bound:
                self._violation(f"{node.name} broadcast queue {stats['broadcast_queue']} > {bound}")
            if stats["pending_relays"] > node.core.params.max_pending_acks:
                self._violation(f"{node.name} has {stats['pending_relays']} pending relays")

    def _violation(self, text: str) -> None:
        raise InvariantError(f"t={self.now:.3f}s seed={self.seed}: {text}")


def start_pool(
    sim: Simulation,
    n: int,
    prefix: str = "node",
    stagger: float = 0.05,
    seeds: int = 3,
) -> list[str]:
    """Start n members; each joins through up to `seeds` of the first members."""
    names = [f"{prefix}-{i:04d}" for i in range(n)]
    sim.add_node(names[0])
    for i, name in enumerate(names[1:], start=1):
        sim.at(sim.now + i * stagger, _joiner(sim, name, names[: min(i, seeds)]))
    return names


def _joiner(sim: Simulation, name: str, join: list[str]) -> Callable[[], None]:
    def start() -> None:
        sim.add_node(name, join=join)

    return start


def converged(sim: Simulation, expected_alive: Iterable[str]) -> bool:
    """Every live member sees exactly `expected_alive` as alive (or suspect)."""
    want = sorted(expected_alive)
    want_set = dict.fromkeys(want)
    for node in sim.live():
        core = node.core
        if node.name not in want_set:
            continue
        count = 0
        for name in want:
            state = core.state_of(name)
            if state is None or state > State.SUSPECT:
                return False
            count += 1
        if core.num_alive() != count:
            return False
    return True
