"""GossipCore driven by hand: scenario scripts with expected traces, and purity.

`Wire` delivers what cores ask to send, instantly and in order, except what a
test chooses to drop, so each scenario reads as a protocol trace.
"""

from __future__ import annotations

import ast
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest

import proconsul.gossip
from proconsul.gossip import GossipCore, State, local
from proconsul.gossip import messages as m
from proconsul.gossip.actions import MemberEventKind, StreamPurpose
from proconsul.gossip.crypto import SEAL_OVERHEAD
from proconsul.gossip.events import EventBuffer, LamportClock
from proconsul.gossip.params import GossipParams

Address = tuple[str, int]
Msgs = list[m.Simple | m.PushPull]
J, L, F, U, R = (
    MemberEventKind.JOIN,
    MemberEventKind.LEAVE,
    MemberEventKind.FAIL,
    MemberEventKind.UPDATE,
    MemberEventKind.REAP,
)


class Wire:
    """Routes Ready actions between cores at one shared virtual time."""

    def __init__(self, params: GossipParams | None = None) -> None:
        self.params = params or local()
        self.now = 0.0
        self.cores: dict[Address, GossipCore] = {}
        self.names: dict[str, Address] = {}
        self.drop: Callable[[str, str, Msgs], bool] = lambda src, dst, msgs: False
        self.trace: list[tuple[str, MemberEventKind, str]] = []
        self.sent: list[tuple[str, str, Msgs]] = []
        self.udp_sizes: list[int] = []
        self.streams: list[tuple[str, StreamPurpose, int]] = []
        self.user_events: dict[str, list[tuple[int, str, bytes]]] = {}
        self.down: set[str] = set()
        self.no_streams: set[str] = set()

    def add(self, name: str, tags: dict[str, str] | None = None) -> GossipCore:
        addr = (f"10.0.0.{len(self.cores) + 1}", 8301)
        core = GossipCore(
            name, addr, tags or {"role": "node"}, self.params, random.Random(name), self.now
        )
        self.cores[addr] = core
        self.names[name] = addr
        self.user_events[name] = []
        return core

    def core(self, name: str) -> GossipCore:
        return self.cores[self.names[name]]

    def flush(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            busy = False
            for addr, core in list(self.cores.items()):
                if core.name in self.down or not core.ready():
                    continue
                busy = True
                ready = core.take_actions()
                for event in ready.member_events:
                    self.trace.append((core.name, event.kind, event.member.name))
                for ue in ready.user_events:
                    self.user_events[core.name].append((ue.ltime, ue.name, ue.payload))
                for dst, packet in ready.send_udp:
                    self.udp_sizes.append(len(packet))
                    target = self.cores.get(dst)
                    msgs = list(m.decode_packet(packet))
                    self.sent.append((core.name, target.name if target else "?", msgs))
                    if (
                        target is None
                        or target.name in self.down
                        or self.drop(core.name, target.name, msgs)
                    ):
                        continue
                    target.receive(addr, packet, self.now)
                for req in ready.send_tcp:
                    self.streams.append((core.name, req.purpose, req.ident))
                    target = self.cores.get(req.addr)
                    blocked = core.name in self.no_streams or (
                        target is not None and target.name in self.no_streams
                    )
                    if target is None or target.name in self.down or blocked:
                        core.stream_failed(req, self.now)
                        continue
                    reply = target.receive_stream(addr, req.payload, self.now)
                    if req.expects_reply and reply is not None:
                        core.receive_stream(req.addr, reply, self.now, req)
            if not busy:
                return

    def advance(self, dt: float, step: float = 0.05) -> None:
        end = self.now + dt
        while self.now < end:
            self.now = min(end, self.now + step)
            for core in self.cores.values():
                if core.name not in self.down:
                    core.tick(self.now)
            self.flush()

    def events_of(self, viewer: str) -> list[tuple[MemberEventKind, str]]:
        return [(k, s) for v, k, s in self.trace if v == viewer]


def pool(names: list[str], params: GossipParams | None = None) -> Wire:
    wire = Wire(params)
    for name in names:
        wire.add(name)
    first = wire.names[names[0]]
    for name in names[1:]:
        wire.core(name).join([first], wire.now)
        wire.flush()
    wire.advance(2.0)
    for name in names:
        assert sorted(x.name for x in wire.core(name).members()) == sorted(names)
    wire.trace.clear()
    wire.sent.clear()
    return wire


# ----------------------------------------------------------------- purity

FORBIDDEN = {"asyncio", "socket", "ssl", "time", "random", "selectors", "threading"}
# The asyncio transport adapter, when it lands in this package, may do I/O.
ADAPTER_MODULES = {"transport", "adapter", "udp", "net"}


def _runtime_imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue  # annotations only
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found.update(alias.name.split(".")[0] for alias in sub.names)
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                found.add(sub.module.split(".")[0])
    return found


def test_core_modules_do_no_io_and_use_no_global_random() -> None:
    package = Path(proconsul.gossip.__file__).parent
    modules = sorted(p for p in package.glob("*.py") if p.stem not in ADAPTER_MODULES)
    assert len(modules) >= 10
    for path in modules:
        imported = _runtime_imports(ast.parse(path.read_text()))
        assert not imported & FORBIDDEN, f"{path.name} imports {sorted(imported & FORBIDDEN)}"


# -------------------------------------------------------------- probing


def test_ping_is_acked_and_health_stays_good() -> None:
    wire = pool(["a", "b"])
    wire.advance(5.0)
    a = wire.core("a")
    stats = a.stats()
    assert stats["probes"] >= 5
    assert stats["acks"] == stats["probes"]
    assert a.awareness == 0
    assert wire.trace == []


def test_silent_member_goes_indirect_then_suspect_then_dead() -> None:
    wire = pool(["a", "b", "c", "d", "e"])
    wire.down.add("e")
    wire.advance(30.0)
    kinds = {type(msg) for src, _, msgs in wire.sent for msg in msgs}
    assert {m.IndirectPing, m.Nack, m.Suspect, m.Dead} <= kinds
    # Every survivor reports the failure exactly once, and nothing else.
    for name in "abcd":
        assert wire.events_of(name) == [(F, "e")]
        assert wire.core(name).state_of("e") == State.DEAD
    # Relays answered with nacks, so the prober did not blame itself.
    assert all(wire.core(x).awareness == 0 for x in "abcd")


def test_unreachable_prober_blames_itself_via_missing_nacks() -> None:
    wire = pool(["a", "b", "c", "d"])
    # a's datagrams vanish: no acks, no nacks come back to it.
    wire.drop = lambda src, dst, msgs: src == "a"
    wire.no_streams.add("a")
    wire.advance(6.0)
    a = wire.core("a")
    assert a.stats()["probe_failures"] >= 2
    assert a.awareness >= 2


def test_misdirected_ping_is_not_acked() -> None:
    wire = pool(["a", "b"])
    b = wire.core("b")
    b.receive(wire.names["a"], m.encode(m.Ping(99, "someone-else")), wire.now)
    assert b.stats()["misdirected"] == 1
    assert not b.take_actions().send_udp


# ------------------------------------------------- suspicion and refutation


def test_suspected_member_refutes_with_higher_incarnation() -> None:
    wire = pool(["a", "b", "c"])
    b = wire.core("b")
    b.receive(wire.names["a"], m.encode(m.Suspect(0, "b", "a")), wire.now)
    assert b.incarnation == 1
    assert b.awareness == 1  # being accused counts against our own health
    wire.flush()
    wire.advance(2.0)
    for name in "ac":
        member = wire.core(name).member("b")
        assert member is not None and member.state == State.ALIVE and member.incarnation == 1
    assert wire.trace == []


def test_stale_accusation_is_answered_directly() -> None:
    wire = pool(["a", "b"])
    b = wire.core("b")
    b.update_meta({"role": "node", "v": "2"}, wire.now)  # incarnation 1
    wire.flush()
    b.receive(wire.names["a"], m.encode(m.Suspect(0, "b", "a")), wire.now)
    ready = b.take_actions()
    replies = [msg for _, packet in ready.send_udp for msg in m.decode_packet(packet)]
    assert m.Alive(1, "b", b.member("b").addr, {"role": "node", "v": "2"}) in replies  # type: ignore[union-attr]
    assert b.incarnation == 1


def test_dead_about_self_is_refuted_unless_leaving() -> None:
    wire = pool(["a", "b"])
    b = wire.core("b")
    b.receive(wire.names["a"], m.encode(m.Dead(0, "b", "a", False)), wire.now)
    assert b.incarnation == 1
    assert b.state_of("b") == State.ALIVE


def test_stale_news_is_ignored() -> None:
    wire = pool(["a", "b"])
    a = wire.core("a")
    b_addr = wire.names["b"]
    a.receive(b_addr, m.encode(m.Alive(5, "b", b_addr, {"role": "node"})), wire.now)
    for stale in (m.Suspect(4, "b", "x"), m.Dead(4, "b", "x", False), m.Alive(4, "b", b_addr, {})):
        a.receive(b_addr, m.encode(stale), wire.now)
        assert a.state_of("b") == State.ALIVE
    member = a.member("b")
    assert member is not None and member.incarnation == 5 and member.tags == {"role": "node"}


def test_confirmations_shorten_suspicion() -> None:
    wire = pool(["a", "b"] + [f"p{i}" for i in range(6)])
    a = wire.core("a")
    deadlines = []
    for who in ("x", "x", "y", "z", "w"):
        a.receive(wire.names["p0"], m.encode(m.Suspect(0, "b", who)), wire.now)
        deadlines.append(a._suspicions["b"].deadline)
    p, n = a.params, 8
    lo = p.suspicion_mult * max(1.0, math.log10(n)) * p.probe_interval
    hi = p.suspicion_max_timeout_mult * lo
    start = wire.now
    assert deadlines[0] == pytest.approx(start + hi)  # one accuser: the maximum
    assert deadlines[1] == deadlines[0]  # the same accuser again changes nothing
    assert start + lo < deadlines[2] < deadlines[1]  # an independent confirmation
    assert deadlines[3] == pytest.approx(start + lo)  # k = mult - 2 = 2 reached
    assert deadlines[4] == deadlines[3]


def test_new_suspect_is_probed_next_with_the_accusation() -> None:
    wire = pool(["a", "b", "c", "d", "e", "f"])
    a = wire.core("a")
    a.receive(wire.names["c"], m.encode(m.Suspect(0, "b", "c")), wire.now)
    wire.flush()
    wire.sent.clear()
    wire.advance(a.params.probe_interval * 1.01)
    pings = [
        (dst, msgs) for src, dst, msgs in wire.sent if src == "a" and isinstance(msgs[0], m.Ping)
    ]
    assert pings and pings[0][0] == "b"
    assert m.Suspect(0, "b", "a") in pings[0][1]  # the buddy system


def test_a_suspect_that_answers_our_probes_is_not_pronounced_dead() -> None:
    wire = pool(["a", "b", "c", "d"])
    a = wire.core("a")

    def hide_refutation(src: str, dst: str, msgs: Msgs) -> bool:
        # a never hears b's alive, from anyone; b's acks still reach it.
        return dst == "a" and any(isinstance(x, m.Alive) and x.node == "b" for x in msgs)

    wire.drop = hide_refutation
    wire.no_streams.add("a")  # nor through push-pull
    a.receive(wire.names["c"], m.encode(m.Suspect(0, "b", "c")), wire.now)
    wire.flush()
    wire.advance(60.0)
    assert a.state_of("b") == State.SUSPECT
    assert a.stats()["suspicions_deferred"] >= 1
    # Once b really stops answering, the verdict comes.
    wire.down.add("b")
    wire.advance(30.0)
    assert a.state_of("b") == State.DEAD


def test_push_pull_dead_is_only_a_suspicion_and_told_to_the_member() -> None:
    wire = pool(["a", "b", "c"])
    a = wire.core("a")
    c_state = m.PushPull(
        "c", False, False, [m.NodeState("b", wire.names["b"], {}, 0, m.State.DEAD)], 0, []
    )
    a.receive_stream(wire.names["c"], m.encode(c_state), wire.now)
    assert a.state_of("b") == State.SUSPECT
    ready = a.take_actions()
    told = [(dst, msg) for dst, packet in ready.send_udp for msg in m.decode_packet(packet)]
    assert (wire.names["b"], m.Suspect(0, "b", "a")) in told


# ----------------------------------------------------- leave, meta, events


def test_leave_is_seen_as_left_not_failed() -> None:
    wire = pool(["a", "b", "c"])
    a = wire.core("a")
    a.leave(wire.now)
    assert a.leaving and not a.leave_propagated()
    wire.advance(2.0)
    assert a.leave_propagated()
    wire.down.add("a")
    wire.advance(20.0)
    for name in "bc":
        assert wire.core(name).state_of("a") == State.LEFT
        assert wire.events_of(name) == [(L, "a")]


def test_metadata_update_travels_with_higher_incarnation() -> None:
    wire = pool(["a", "b", "c"])
    a = wire.core("a")
    a.update_meta({"role": "consul", "port": "8300"}, wire.now)
    assert a.incarnation == 1
    wire.advance(1.0)
    for name in "bc":
        member = wire.core(name).member("a")
        assert member is not None and member.tags == {"role": "consul", "port": "8300"}
        assert wire.events_of(name) == [(U, "a")]
    with pytest.raises(ValueError, match="exceeds limit of 512 bytes"):
        a.update_meta({"big": "x" * 600}, wire.now)


def test_user_event_reaches_everyone_once_with_lamport_order() -> None:
    wire = pool(["a", "b", "c"])
    t1 = wire.core("a").fire_event("deploy", b"1", wire.now)
    wire.advance(0.5)
    t2 = wire.core("b").fire_event("deploy", b"2", wire.now)
    wire.advance(1.0)
    assert t2 > t1
    for name in "abc":
        assert wire.user_events[name] == [(t1, "deploy", b"1"), (t2, "deploy", b"2")]
    # A replayed copy is a duplicate, not a new event.
    wire.core("c").receive(wire.names["a"], m.encode(m.UserEvent(t1, "deploy", b"1")), wire.now)
    wire.flush()
    assert len(wire.user_events["c"]) == 2
    with pytest.raises(ValueError, match="exceeds configured limit"):
        wire.core("a").fire_event("x", b"y" * 600, wire.now)


def test_join_does_not_replay_old_events_but_reconnect_does() -> None:
    wire = pool(["a", "b"])
    wire.core("a").fire_event("old", b"", wire.now)
    wire.advance(1.0)
    late = wire.add("late")
    late.join([wire.names["a"]], wire.now)
    wire.advance(1.0)
    assert wire.user_events["late"] == []
    state = m.PushPull("x", False, False, [], 50, [m.UserEvent(40, "missed", b"")])
    late.receive_stream(wire.names["a"], m.encode(state), wire.now)
    wire.flush()
    assert [e[1] for e in wire.user_events["late"]] == ["missed"]


def test_event_buffer_is_bounded() -> None:
    buf = EventBuffer(4)
    clock = LamportClock()
    for t in range(10):
        clock.witness(t)
        assert buf.add(m.UserEvent(t, "e", b""), clock.time)
    assert not buf.add(m.UserEvent(1, "e", b"late"), clock.time)  # too old
    assert len(buf) == 4
    for i in range(100):
        buf.add(m.UserEvent(9, "same-time", str(i).encode()), clock.time)
    assert len(buf) <= 4 + 64


# ------------------------------------------------------------ membership


def test_join_trace() -> None:
    wire = Wire()
    a, b, c = wire.add("a"), wire.add("b"), wire.add("c")
    b.join([wire.names["a"]], wire.now)
    wire.flush()
    c.join([wire.names["b"]], wire.now)
    wire.flush()
    wire.advance(2.0)
    assert wire.events_of("a") == [(J, "b"), (J, "c")]
    assert wire.events_of("c") == [(J, "a"), (J, "b")] or wire.events_of("c") == [
        (J, "b"),
        (J, "a"),
    ]
    assert a.num_alive() == b.num_alive() == c.num_alive() == 3
    assert ("b", StreamPurpose.JOIN, 1) in wire.streams


def test_failed_join_is_reported() -> None:
    wire = Wire()
    a = wire.add("a")
    ident = a.join([("10.9.9.9", 8301)], wire.now)
    wire.flush()
    assert ident == [1]
    assert a.stats()["tcp_failed"] == 1


def test_address_conflict_refused_until_reclaim_time() -> None:
    wire = pool(["a", "b"])
    a = wire.core("a")
    thief = ("10.66.0.1", 8301)
    a.receive(thief, m.encode(m.Alive(9, "b", thief, {})), wire.now)
    assert a.member("b").addr == wire.names["b"]  # type: ignore[union-attr]
    assert a.stats()["conflicts"] == 1
    a.receive(thief, m.encode(m.Dead(0, "b", "x", False)), wire.now)
    a.tick(wire.now + a.params.dead_node_reclaim_time + 1)
    a.receive(
        thief, m.encode(m.Alive(0, "b", thief, {})), wire.now + a.params.dead_node_reclaim_time + 1
    )
    assert a.member("b").addr == thief  # type: ignore[union-attr]


def test_failed_member_is_reaped_and_force_leave() -> None:
    params = local().replace(reconnect_timeout=10.0, tombstone_timeout=10.0, reap_interval=1.0)
    wire = pool(["a", "b", "c", "d"], params)
    wire.down.add("c")
    wire.advance(8.0)
    a = wire.core("a")
    assert a.state_of("c") == State.DEAD
    assert a.force_leave("c", wire.now)
    assert not a.force_leave("b", wire.now)  # alive: refused
    assert a.state_of("c") == State.LEFT
    wire.advance(15.0)
    assert a.state_of("c") is None
    assert (R, "c") in wire.events_of("a")


def test_restore_adds_members_quietly() -> None:
    wire = pool(["a", "b"])
    fresh = wire.add("fresh")
    added = fresh.restore(wire.core("a").members(), wire.now)
    assert added == 2
    ready = fresh.take_actions()
    assert not ready.send_udp and not ready.send_tcp
    assert sorted(e.member.name for e in ready.member_events) == ["a", "b"]


# ------------------------------------------------------------ dissemination


def test_datagrams_never_exceed_the_budget() -> None:
    wire = pool([f"n{i}" for i in range(30)])
    for i in range(30):
        wire.core(f"n{i}").update_meta({"role": "node", "pad": "p" * 300}, wire.now)
    wire.advance(5.0)
    budget = wire.params.udp_buffer_size - SEAL_OVERHEAD
    assert max(wire.udp_sizes) <= budget
    assert max(wire.udp_sizes) > budget // 2  # and they do get packed


def test_message_too_big_for_a_datagram_goes_over_a_stream() -> None:
    params = local().replace(user_event_size_limit=5000)
    wire = pool(["a", "b", "c"], params)
    wire.core("a").fire_event("big", b"x" * 4000, wire.now)
    wire.advance(1.0)
    assert any(purpose is StreamPurpose.MESSAGE for _, purpose, _ in wire.streams)
    assert all(any(e[1] == "big" for e in wire.user_events[x]) for x in "abc")


def test_malformed_input_is_counted_and_dropped() -> None:
    wire = pool(["a", "b"])
    a = wire.core("a")
    a.receive(wire.names["b"], b"\xff\x00garbage", wire.now)
    assert a.receive_stream(wire.names["b"], b"\x00", wire.now) is None
    # Push-pull is not accepted in a datagram.
    a.receive(wire.names["b"], m.encode(m.PushPull("b", False, False, [], 0, [])), wire.now)
    assert a.stats()["malformed"] == 3
    a.receive(wire.names["b"], m.encode(m.Ack(12345)), wire.now)
    assert a.stats()["stale"] == 1


def test_next_deadline_skips_dead_timers() -> None:
    wire = pool(["a", "b"])
    a = wire.core("a")
    deadline = a.next_deadline()
    assert deadline is not None and deadline > wire.now
