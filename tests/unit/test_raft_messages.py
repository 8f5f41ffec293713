"""Raft wire messages: round trips, fixed tags, and bad bytes fed whole, cut short and padded."""

from __future__ import annotations

import msgspec
import pytest

from proconsul.raft import messages as m
from proconsul.raft.messages import (
    Configuration,
    Entry,
    EntryType,
    MessageError,
    Server,
    SnapshotMeta,
    decode_configuration,
    decode_message,
    encode,
    encode_configuration,
)

CONFIG = Configuration((Server("a", "10.0.0.1:8300"), Server("b", "10.0.0.2:8300", voter=False)))
META = SnapshotMeta(40, 3, CONFIG, 12)
ENTRIES = (
    Entry(5, 2, EntryType.COMMAND, b"\x93\x01\x02\x03"),
    Entry(6, 2, EntryType.NOOP),
    Entry(7, 3, EntryType.CONFIGURATION, encode_configuration(CONFIG)),
)

SAMPLES: list[m.Message] = [
    m.RequestVote(4, "a", "b", 10, 3, pre_vote=True),
    m.RequestVote(4, "a", "b", 10, 3, transfer=True),
    m.RequestVoteResponse(4, "b", "a", True, pre_vote=True),
    m.AppendEntries(3, "a", "b", 4, 2, ENTRIES, 6),
    m.AppendEntries(3, "a", "b", 0, 0, (), 0),
    m.AppendEntriesResponse(3, "b", "a", True, match_index=7),
    m.AppendEntriesResponse(3, "b", "a", False, reject_index=9, conflict_index=5, conflict_term=2),
    m.Heartbeat(3, "a", "b", 6, 42),
    m.HeartbeatResponse(3, "b", "a", 42),
    m.InstallSnapshot(3, "a", "b", META, 0, b"chunk", total_size=10, done=False),
    m.InstallSnapshotResponse(3, "b", "a", 40, 5),
    m.InstallSnapshotResponse(3, "b", "a", 40, 10, done=True, match_index=40),
    m.TimeoutNow(3, "a", "b"),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda x: type(x).__name__)
def test_round_trip(message: m.Message) -> None:
    assert decode_message(encode(message)) == message


def test_tags_are_fixed() -> None:
    # Append-only: these numbers are on the wire between servers of different versions.
    tags = {
        cls.__name__: cls.__struct_config__.tag
        for cls in (
            m.RequestVote,
            m.RequestVoteResponse,
            m.AppendEntries,
            m.AppendEntriesResponse,
            m.Heartbeat,
            m.HeartbeatResponse,
            m.InstallSnapshot,
            m.InstallSnapshotResponse,
            m.TimeoutNow,
        )
    }
    assert tags == {
        "RequestVote": 1,
        "RequestVoteResponse": 2,
        "AppendEntries": 3,
        "AppendEntriesResponse": 4,
        "Heartbeat": 5,
        "HeartbeatResponse": 6,
        "InstallSnapshot": 7,
        "InstallSnapshotResponse": 8,
        "TimeoutNow": 9,
    }
    assert [int(t) for t in EntryType] == [0, 1, 2]


def test_older_peer_fields_default() -> None:
    # A RequestVote from a server that predates pre_vote/transfer still decodes.
    old = msgspec.msgpack.encode([1, 4, "a", "b", 10, 3])
    assert decode_message(old) == m.RequestVote(4, "a", "b", 10, 3)


def test_newer_peer_extra_fields_are_ignored() -> None:
    new = msgspec.msgpack.encode([9, 3, "a", "b", "some-future-field"])
    assert decode_message(new) == m.TimeoutNow(3, "a", "b")


@pytest.mark.parametrize("message", SAMPLES, ids=lambda x: type(x).__name__)
def test_every_truncation_is_a_clean_error(message: m.Message) -> None:
    wire = encode(message)
    for cut in range(len(wire)):
        with pytest.raises(MessageError):
            decode_message(wire[:cut])


@pytest.mark.parametrize("message", SAMPLES[:4], ids=lambda x: type(x).__name__)
def test_trailing_garbage_is_refused(message: m.Message) -> None:
    with pytest.raises(MessageError):
        decode_message(encode(message) + b"\x00garbage")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode([99, 1, "a", "b"]),  # unknown tag
        msgspec.msgpack.encode([1, "one", "a", "b", 1, 1]),  # wrong type
        msgspec.msgpack.encode({"term": 1}),
        msgspec.msgpack.encode([3, 1, "a", "b", 0, 0, [[1, 1, 7, b""]], 0]),  # bad entry type
    ],
)
def test_garbage_is_a_clean_error(raw: bytes) -> None:
    with pytest.raises(MessageError):
        decode_message(raw)


def test_configuration_helpers_and_codec() -> None:
    assert decode_configuration(encode_configuration(CONFIG)) == CONFIG
    assert CONFIG.voter_ids() == ("a",)
    assert CONFIG.is_voter("a") and not CONFIG.is_voter("b") and not CONFIG.is_voter("c")
    grown = CONFIG.with_server(Server("c", "10.0.0.3:8300"))
    assert grown.ids() == ("a", "b", "c")
    promoted = grown.with_server(Server("b", "10.0.0.2:8300"))
    assert promoted.is_voter("b") and len(promoted.servers) == 3
    assert promoted.without("a").ids() == ("c", "b")
    with pytest.raises(MessageError):
        decode_configuration(b"\x01")
