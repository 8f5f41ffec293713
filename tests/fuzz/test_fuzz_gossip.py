"""Fuzzing gossip: message and control decoders, sealing, the core and the transport.

- `messages.decode` and `control.decode_control` give a message or raise
  `MessageError`; what decodes encodes back to the same message.
- `Keyring.open` / `EncryptionPolicy.open` give plaintext or raise
  `GossipSecurityError`; a sealed packet changed in any byte never opens.
- `user_events.decode` (the envelope inside a user event) gives an event or None.
- `GossipCore` takes any datagram or stream frame, and any well-typed but
  nonsensical message (about itself, unknown members, absurd incarnations),
  without raising; undecodable input is counted as malformed, and whatever
  it sends afterwards still passes its own decoder.
- The transport's receive paths, with every encryption policy, refuse or hand
  on each datagram and frame and never count a core error.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from proconsul.agent import user_events
from proconsul.gossip import control as ctl
from proconsul.gossip import messages as m
from proconsul.gossip.actions import Ready
from proconsul.gossip.crypto import EncryptionPolicy, GossipSecurityError, Keyring
from proconsul.gossip.params import local
from proconsul.gossip.swim import GossipCore
from proconsul.gossip.transport import GossipTransport
from tests.fuzz.wire import DEEP, BadStr, Deep, hostile_bytes, pack, shaped

SELF = "self"
NAMES = [SELF, "peer-1", "peer-2", "peer-3"]
names = st.one_of(st.sampled_from(NAMES), st.text(min_size=1, max_size=12))
hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "10.0.0.2", "::1", "0.0.0.0"]), st.text(min_size=1, max_size=12)
)
addrs = st.tuples(hosts, st.integers(0, 65535))
tags = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)
incarnations = st.one_of(st.integers(0, 3), st.integers(0, 2**63 - 1))
seqs = st.integers(0, 2**32 - 1)
ltimes = st.one_of(st.integers(0, 5), st.integers(0, 2**63 - 1))

simple_messages = st.one_of(
    st.builds(m.Ping, seqs, st.one_of(st.just(""), names)),
    st.builds(m.IndirectPing, seqs, names, addrs, st.booleans()),
    st.builds(m.Ack, seqs),
    st.builds(m.Nack, seqs),
    st.builds(m.Suspect, incarnations, names, names),
    st.builds(m.Alive, incarnations, names, addrs, tags),
    st.builds(m.Dead, incarnations, names, names, st.booleans()),
    st.builds(m.UserEvent, ltimes, names, st.binary(max_size=32)),
)
node_states = st.builds(m.NodeState, names, addrs, tags, incarnations, st.sampled_from(m.State))
push_pulls = st.builds(
    m.PushPull,
    names,
    st.booleans(),
    st.booleans(),
    st.lists(node_states, max_size=4),
    ltimes,
    st.lists(st.builds(m.UserEvent, ltimes, names, st.binary(max_size=8)), max_size=2),
)
compounds = st.lists(simple_messages, min_size=2, max_size=5).map(m.Compound)
messages = st.one_of(simple_messages, push_pulls, compounds)
message_bytes = messages.map(m.encode)
hostile_messages = st.one_of(hostile_bytes(message_bytes), shaped(range(0, 12)))


# ----- decoders -------------------------------------------------------------------


@example(pack([10, [[1, 1, "x"], [3, 1, Deep(DEEP)]]]))
@example(pack([6, 1, BadStr(b"\xff"), ["h", 1], {}]))
@given(hostile_messages)
def test_decode_gives_a_message_or_message_error(data: bytes) -> None:
    try:
        found = m.decode(data)
    except m.MessageError:
        return
    assert m.decode(m.encode(found)) == found
    m.flatten(found)


control_messages = st.one_of(
    st.builds(ctl.KeyringRequest, st.sampled_from(ctl.KEYRING_OPS), st.binary(max_size=40)),
    st.builds(
        ctl.KeyringReply,
        st.booleans(),
        st.text(max_size=20),
        st.lists(st.binary(max_size=32), max_size=3),
        st.binary(max_size=32),
    ),
    st.builds(ctl.Refusal, st.text(max_size=20)),
)


@given(
    st.one_of(
        hostile_bytes(control_messages.map(lambda c: ctl.encode_control(c)[1:])).map(
            lambda body: ctl.CONTROL_MARK + body
        ),
        st.binary(max_size=40),
    )
)
def test_decode_control_gives_a_control_or_message_error(data: bytes) -> None:
    try:
        found = ctl.decode_control(data)
    except m.MessageError:
        return
    assert ctl.decode_control(ctl.encode_control(found)) == found


@given(st.text(max_size=20), st.binary(max_size=64), st.booleans())
def test_keyring_operations_never_raise(op: str, key: bytes, with_keyring: bool) -> None:
    keyring = Keyring(b"k" * 16) if with_keyring else None
    reply = ctl.apply_keyring_op(keyring, op, key)
    assert isinstance(reply, ctl.KeyringReply)
    if keyring is not None:
        assert keyring.primary == b"k" * 16 or op == "use"


@example(pack({"ID": "x", "n": "deploy", "zz_unknown": Deep(DEEP)}))
@example(pack({"ID": BadStr(b"\xff"), "n": "deploy"}))
@example(pack({"ID": "x", "n": "deploy", "nf": "a{99999999999}"}))
@given(
    hostile_bytes(
        st.builds(
            lambda name, payload: user_events.encode(user_events.new_event(name, payload)),
            st.text(min_size=1, max_size=8),
            st.binary(max_size=16),
        )
    )
)
def test_user_event_envelopes_decode_or_are_none(data: bytes) -> None:
    event = user_events.decode(data, 7)
    if event is not None:
        user_events.should_process(event, SELF, [("web", ["v1"])])


# ----- sealing ----------------------------------------------------------------------

keys = st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))


@given(keys, st.lists(keys, max_size=2), st.binary(max_size=64), st.binary(max_size=16), st.data())
def test_sealed_packets_open_and_tampered_ones_never_do(
    primary: bytes, others: list[bytes], plain: bytes, aad: bytes, data: st.DataObject
) -> None:
    keyring = Keyring(primary, others)
    sealed = keyring.seal(plain, bytes(12), aad)
    assert keyring.open(sealed, aad) == plain
    at = data.draw(st.integers(0, len(sealed) - 1))
    tampered = bytearray(sealed)
    tampered[at] ^= data.draw(st.integers(1, 255))
    try:
        keyring.open(bytes(tampered), aad)
    except GossipSecurityError:
        return
    raise AssertionError("a tampered packet opened")


policies = st.builds(
    EncryptionPolicy,
    st.one_of(st.none(), st.just(Keyring(b"k" * 16, [b"o" * 32]))),
    st.booleans(),
    st.booleans(),
)


@given(policies, st.one_of(st.binary(max_size=80), message_bytes))
def test_any_packet_opens_or_is_refused_with_a_reason(
    policy: EncryptionPolicy, data: bytes
) -> None:
    try:
        policy.open(data)
    except GossipSecurityError as exc:
        assert exc.reason in ("malformed", "decrypt_failed", "no_keyring", "plaintext_refused")


# ----- the core ---------------------------------------------------------------------


def new_core() -> GossipCore:
    core = GossipCore(SELF, ("127.0.0.1", 8301), {"role": "node"}, local(), random.Random(3), 0.0)
    core.join([("10.0.0.2", 8301)], 0.0)
    return core


events = st.one_of(
    st.tuples(st.just("udp"), addrs, hostile_messages),
    st.tuples(st.just("msgs"), addrs, st.lists(st.one_of(simple_messages, push_pulls), max_size=4)),
    st.tuples(st.just("stream"), addrs, st.one_of(message_bytes, hostile_messages)),
    st.tuples(st.just("tick"), st.floats(0, 30), st.none()),
)


# Found by this fuzzer (long profile): a suspicion about us at the largest
# incarnation the wire allows made us refute with one more, which no peer
# decodes, so the refutation never spread; a user event at the largest Lamport
# time did the same to every later push-pull (joins included).
@example([("msgs", ("10.0.0.2", 8301), [m.Suspect(2**63 - 1, SELF, "peer-1")])])
@example(
    [
        ("msgs", ("10.0.0.2", 8301), [m.Alive(1, "peer-1", ("10.0.0.2", 8301), {})]),
        ("msgs", ("10.0.0.2", 8301), [m.UserEvent(2**63 - 1, "deploy", b"")]),
        ("tick", 30.0, None),
        ("tick", 30.0, None),
        ("tick", 30.0, None),
    ]
)
@given(st.lists(events, min_size=1, max_size=12))
def test_the_core_takes_any_input_without_raising(script: list[tuple[str, Any, Any]]) -> None:
    core = new_core()
    now = 0.0
    for kind, arg, payload in script:
        before = core.stats()["malformed"]
        if kind == "tick":
            now += arg
            core.tick(now)
        elif kind == "udp":
            core.receive(arg, payload, now)
            bad = _undecodable(payload)
            if bad:
                assert core.stats()["malformed"] == before + 1
        elif kind == "msgs":
            core.receive(arg, payload, now)
        else:
            reply = core.receive_stream(arg, payload, now)
            if reply is not None:
                m.decode(reply)
        sends_what_it_accepts(core.take_actions())
        core.next_deadline()


def sends_what_it_accepts(ready: Ready) -> None:
    """Whatever a peer made us believe, what we send must pass our own decoder:
    otherwise one forged value (an incarnation or Lamport time at its bound)
    would make every peer drop our messages."""
    for _, packet in ready.send_udp:
        m.decode(packet)
    for request in ready.send_tcp:
        m.decode(request.payload)


def _undecodable(data: bytes) -> bool:
    try:
        m.decode(data)
    except m.MessageError:
        return True
    return False


# ----- the transport ----------------------------------------------------------------


class FakeUdp:
    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent += 1

    def close(self) -> None:
        return None


@given(policies, st.lists(st.one_of(hostile_messages, st.binary(max_size=40)), max_size=6))
def test_the_transport_refuses_or_hands_on_every_packet(
    policy: EncryptionPolicy, packets: list[bytes]
) -> None:
    async def scenario() -> None:
        transport = GossipTransport(new_core(), policy, "127.0.0.1", 8301)
        transport._loop = asyncio.get_running_loop()
        transport._udp = FakeUdp()  # type: ignore[assignment]
        # Streams the core asks for would dial real addresses: record nothing, dial nothing.
        transport._start_stream = lambda request: None  # type: ignore[method-assign]
        for packet in packets:
            sealed = policy.seal(packet) if policy.keyring is not None else packet
            for data in (packet, sealed):
                transport._on_datagram(data, ("10.0.0.9", 8301))
                reply = await transport._handle_frame(data, ("10.0.0.9", 40000))
                assert reply is None or isinstance(reply, bytes)
        assert transport.counters["core_errors"] == 0
        await transport.close()

    asyncio.run(scenario())
