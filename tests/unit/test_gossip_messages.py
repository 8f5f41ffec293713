"""Gossip wire codec: round trips, compounds, bounds, and fuzzing.

The one promise of the decoder: bad bytes raise MessageError and nothing else.
"""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proconsul.gossip import messages as m
from proconsul.gossip.crypto import ENCRYPTION_VERSION

SAMPLES: list[m.Message] = [
    m.Ping(1, "node-a"),
    m.Ping(2**32 - 1, ""),
    m.IndirectPing(7, "node-b", ("10.0.0.2", 8301), True),
    m.Ack(9),
    m.Nack(10),
    m.Suspect(3, "node-c", "node-a"),
    m.Alive(4, "node-d", ("10.0.0.4", 8301), {"role": "consul", "dc": "dc1", "port": "8300"}),
    m.Dead(5, "node-e", "node-e", True),
    m.Dead(6, "node-f", "node-a", False),
    m.UserEvent(11, "deploy", b"\x00\x01payload"),
    m.PushPull(
        "node-a",
        True,
        False,
        [m.NodeState("node-a", ("10.0.0.1", 8301), {"role": "node"}, 2, m.State.ALIVE)],
        12,
        [m.UserEvent(1, "x", b"")],
    ),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda msg: type(msg).__name__)
def test_round_trip(msg: m.Message) -> None:
    data = m.encode(msg)
    assert m.decode(data) == msg
    # Plaintext never starts with the encryption version byte.
    assert data[0] != ENCRYPTION_VERSION
    assert 0x90 <= data[0] <= 0x9F or data[0] == 0xDC


def test_tags_are_append_only_numbers() -> None:
    # Renumbering a tag breaks every older member; this pins them.
    assert {t.name: t.value for t in m.Tag} == {
        "PING": 1,
        "INDIRECT_PING": 2,
        "ACK": 3,
        "NACK": 4,
        "SUSPECT": 5,
        "ALIVE": 6,
        "DEAD": 7,
        "PUSH_PULL": 8,
        "USER_EVENT": 9,
        "COMPOUND": 10,
    }
    # Ack gained a trailing coordinate (nil when absent); a two-element ack
    # from a member without coordinates still decodes.
    assert m.encode(m.Ack(5)) == bytes([0x93, 3, 5, 0xC0])
    assert m.decode(bytes([0x92, 3, 5])) == m.Ack(5)


@pytest.mark.parametrize("count", [2, 3, 15, 16, 17, 200, 255])
def test_compound_matches_msgspec_and_flattens(count: int) -> None:
    msgs = [SAMPLES[i % 10] for i in range(count)]
    assert all(not isinstance(x, m.PushPull) for x in msgs)
    packed = m.compound([m.encode(x) for x in msgs])
    assert packed == msgspec.msgpack.encode(m.Compound(msgs))  # type: ignore[arg-type]
    assert list(m.decode_packet(packed)) == msgs
    assert len(packed) <= sum(len(m.encode(x)) for x in msgs) + m.COMPOUND_OVERHEAD


def test_compound_of_one_is_the_message_itself() -> None:
    one = m.encode(m.Ack(1))
    assert m.compound([one]) == one
    assert list(m.decode_packet(one)) == [m.Ack(1)]


def test_compound_limits() -> None:
    with pytest.raises(ValueError):
        m.compound([])
    with pytest.raises(ValueError):
        m.compound([m.encode(m.Ack(1))] * 256)


def test_nested_compound_and_push_pull_inside_compound_are_rejected() -> None:
    inner = m.compound([m.encode(m.Ack(1)), m.encode(m.Ack(2))])
    with pytest.raises(m.MessageError):
        m.decode(m.compound([inner, m.encode(m.Ack(3))]))
    with pytest.raises(m.MessageError):
        m.decode(m.compound([m.encode(SAMPLES[-1]), m.encode(m.Ack(3))]))


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x01" + b"\x00" * 40,  # sealed-looking
        b"\x92\x63\x01",  # unknown tag 99
        b"\x92\x03",  # truncated ack
        m.encode(m.Ack(1)) + b"\x00",  # trailing garbage
        msgspec.msgpack.encode([1, -1, "a"]),  # negative seq
        msgspec.msgpack.encode([1, 2**33, "a"]),  # seq too large
        msgspec.msgpack.encode([5, 1, "", "a"]),  # empty node name
        msgspec.msgpack.encode([6, 1, "n", ["h", 70000], {}]),  # port out of range
        msgspec.msgpack.encode([6, 1, "n", ["h", 1], {str(i): "v" for i in range(65)}]),
        msgspec.msgpack.encode([9, 1, "e", b"x" * (9 * 1024 + 1)]),  # oversized payload
        msgspec.msgpack.encode([1, 1, "a" * 129]),  # node name too long
        msgspec.msgpack.encode([2, 1, "n", ["h"], True]),  # address missing port
    ],
)
def test_bad_input_raises_message_error(bad: bytes) -> None:
    with pytest.raises(m.MessageError):
        m.decode(bad)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda msg: type(msg).__name__)
def test_every_truncation_and_garbage_suffix_is_refused_or_exact(msg: m.Message) -> None:
    data = m.encode(msg)
    for cut in range(len(data)):
        with pytest.raises(m.MessageError):
            m.decode(data[:cut])
    for junk in (b"\x00", b"\xc1", data):
        with pytest.raises(m.MessageError):
            m.decode(data + junk)


def _only_message_error(data: bytes) -> None:
    with contextlib.suppress(m.MessageError):
        m.decode_packet(data)


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data: bytes) -> None:
    _only_message_error(data)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(
        [m.encode(x) for x in SAMPLES] + [m.compound([m.encode(x) for x in SAMPLES[:10]])]
    ),
    st.lists(st.tuples(st.integers(min_value=0, max_value=4095), st.integers(0, 255)), max_size=8),
)
def test_fuzz_mutated_valid_messages(data: bytes, flips: list[tuple[int, int]]) -> None:
    buf = bytearray(data)
    for pos, value in flips:
        buf[pos % len(buf)] = value
    _only_message_error(bytes(buf))


# Structured junk: well-formed msgpack of the wrong shape exercises validation
# paths rather than the parser.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=-1, max_value=12), st.lists(msgpack_values, max_size=6))
def test_fuzz_well_formed_msgpack_of_wrong_shape(tag: int, fields: list[object]) -> None:
    _only_message_error(msgspec.msgpack.encode([tag, *fields]))


def test_deep_nesting_is_refused_cleanly() -> None:
    deep = b"\x91" * 100_000 + b"\x01"
    _only_message_error(deep)
    _only_message_error(b"\x92\x0a" + b"\x91" * 50_000)
