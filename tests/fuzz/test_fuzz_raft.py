"""Fuzzing Raft's wire decoders: a bad message is a `MessageError`, never anything else.

Snapshots ride in InstallSnapshot chunks, so their decoder is fuzzed here too:
anything but an intact snapshot is a `SnapshotError`.

Raft messages arrive from other servers inside `Raft.Step` batches; a forged or
corrupted one must be refused cleanly (the batch decoder counts it), and what
does decode must be safe to hand to `well_formed` and to encode again.
"""

from __future__ import annotations

import contextlib
import hashlib

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from proconsul.raft import messages as rm
from proconsul.server.raft_transport import decode_batch
from proconsul.state.snapshot import (
    MAGIC,
    VERSION,
    SnapshotBody,
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
)
from tests.fuzz.wire import DEEP, BadStr, Deep, hostile_bytes, pack, shaped, with_extra

TAGS = range(0, 12)  # 1..9 are messages; 0, 10, 11 are not

ints = st.integers(-(2**63), 2**63 - 1)
names = st.text(max_size=12)
configurations = st.builds(
    rm.Configuration,
    st.lists(st.builds(rm.Server, names, names, st.booleans()), max_size=3).map(tuple),
)
metas = st.builds(rm.SnapshotMeta, ints, ints, configurations, ints)
entries = st.builds(
    rm.Entry, ints, ints, st.sampled_from(list(rm.EntryType)), st.binary(max_size=16)
)
valid_messages = st.one_of(
    st.builds(rm.RequestVote, ints, names, names, ints, ints, st.booleans(), st.booleans()),
    st.builds(rm.RequestVoteResponse, ints, names, names, st.booleans(), st.booleans()),
    st.builds(
        rm.AppendEntries,
        ints,
        names,
        names,
        ints,
        ints,
        st.lists(entries, max_size=3).map(tuple),
        ints,
    ),
    st.builds(rm.AppendEntriesResponse, ints, names, names, st.booleans(), ints, ints, ints, ints),
    st.builds(rm.Heartbeat, ints, names, names, ints, ints),
    st.builds(rm.HeartbeatResponse, ints, names, names, ints),
    st.builds(
        rm.InstallSnapshot,
        ints,
        names,
        names,
        metas,
        ints,
        st.binary(max_size=16),
        ints,
        st.booleans(),
    ),
    st.builds(rm.InstallSnapshotResponse, ints, names, names, ints, ints, st.booleans(), ints),
    st.builds(rm.TimeoutNow, ints, names, names),
)
valid_bytes = valid_messages.map(rm.encode)


def check_message(data: bytes) -> None:
    try:
        message = rm.decode_message(data)
    except rm.MessageError:
        return
    rm.well_formed(message)  # must not raise, whatever the values
    assert rm.decode_message(rm.encode(message)) == message


@given(valid_messages)
def test_valid_messages_round_trip(message: rm.Message) -> None:
    assert rm.decode_message(rm.encode(message)) == message


# Found by this fuzzer: a trailing field nested past the recursion limit raised
# RecursionError, and a from_id that is not UTF-8 raised UnicodeDecodeError.
@example(pack([5, 1, "a", "b", 0, 0, Deep(DEEP)]))
@example(pack([5, 1, BadStr(b"\xff"), "b", 0, 0]))
@given(st.one_of(hostile_bytes(valid_bytes), shaped(TAGS)))
def test_decode_message_refuses_cleanly(data: bytes) -> None:
    check_message(data)


@given(valid_bytes, st.data())
def test_decode_message_with_a_hostile_trailing_field(data: bytes, draw: st.DataObject) -> None:
    extra = draw.draw(st.one_of(st.just(Deep(DEEP)), st.binary(max_size=4).map(BadStr)))
    check_message(with_extra(data, extra))


@example(pack([[["a", BadStr(b"\xff")]]]))
@example(pack([[], Deep(DEEP)]))
@given(hostile_bytes(configurations.map(rm.encode_configuration)))
def test_decode_configuration_refuses_cleanly(data: bytes) -> None:
    try:
        configuration = rm.decode_configuration(data)
    except rm.MessageError:
        return
    assert rm.decode_configuration(rm.encode_configuration(configuration)) == configuration


def _body_of(snapshot: bytes) -> bytes:
    body: bytes = msgspec.msgpack.decode(snapshot)[2]
    return body


def sealed(body: bytes) -> bytes:
    """A snapshot envelope around `body`, with the right magic and checksum."""
    return pack([MAGIC, VERSION, body, hashlib.sha256(body).digest()])


def empty_snapshot() -> bytes:
    return encode_snapshot(SnapshotBody(0, {}, [], [], [], [], {}, 0))


# Snapshot data travels in InstallSnapshot chunks and is restored on the follower
# (and the same bytes come in through a snapshot restore). The checksum is no
# defence against a sender who means harm: it is recomputed over any body.
# Found by this fuzzer: a trailing field nested past the recursion limit, in
# the envelope or in a checksummed body, raised RecursionError.
@example(pack([MAGIC, VERSION, b"", b"", Deep(DEEP)]))
@example(sealed(pack([0, {}, [], [], [], [], {}, 0, None, None, Deep(DEEP)])))
@example(sealed(pack([0, {BadStr(b"\xff"): 1}, [], [], [], [], {}, 0])))
@given(
    st.one_of(
        hostile_bytes(st.just(empty_snapshot())),
        hostile_bytes(st.just(_body_of(empty_snapshot()))).map(sealed),
    )
)
def test_snapshot_data_is_a_snapshot_or_snapshot_error(data: bytes) -> None:
    with contextlib.suppress(SnapshotError):
        decode_snapshot(data)


# `Raft.Step` batches (server/raft_transport.py): the payloads that once broke
# decode_message, wrapped in a batch, are refused as MessageError too.
@pytest.mark.parametrize(
    "payload", [pack([BadStr(b"\xff"), []]), pack(["10.0.0.1:8300", [], Deep(DEEP)])]
)
def test_step_batches_refuse_cleanly(payload: bytes) -> None:
    with contextlib.suppress(rm.MessageError):
        decode_batch(payload)
