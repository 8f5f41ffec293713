"""RPC frames: encoding, the incremental decoder fed whole, byte by byte and
with trailing garbage, and fuzzing that only FrameError ever escapes."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import proconsul.rpc.frames as frames_module
from proconsul.rpc.frames import (
    MAX_FRAME_SIZE,
    Frame,
    FrameDecoder,
    FrameError,
    FrameKind,
    FrameTooLarge,
    encode_frame,
)

SAMPLES = [
    Frame(
        kind=FrameKind.REQUEST, id=1, method="KVS.Get", payload=b"\x81\xa1a\x01", timeout_ms=5000
    ),
    Frame(kind=FrameKind.RESPONSE, id=1, payload=b"result"),
    Frame(kind=FrameKind.ERROR, id=2**64 - 1, error="rpc: can't find method X", code="x"),
    Frame(kind=FrameKind.ONE_WAY, id=0, method="Raft.Heartbeat", payload=b""),
    Frame(kind=FrameKind.CANCEL, id=7),
]


def stream(items: list[Frame]) -> bytes:
    return b"".join(bytes(encode_frame(f)) for f in items)


def test_wire_numbers_are_append_only() -> None:
    # Changing any of these breaks mixed-version clusters: add, never edit.
    assert {k.name: k.value for k in FrameKind} == {
        "REQUEST": 1,
        "RESPONSE": 2,
        "ERROR": 3,
        "ONE_WAY": 4,
        "CANCEL": 5,
    }
    assert Frame.__struct_fields__ == (
        "kind",
        "id",
        "method",
        "payload",
        "timeout_ms",
        "error",
        "code",
    )


def test_frame_layout_is_length_prefix_then_msgpack_array() -> None:
    data = bytes(encode_frame(Frame(kind=FrameKind.CANCEL, id=7)))
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    assert msgspec.msgpack.decode(data[4:]) == [5, 7, "", b"", 0, "", ""]


def test_fed_whole() -> None:
    assert FrameDecoder().feed(stream(SAMPLES)) == SAMPLES


def test_fed_byte_by_byte() -> None:
    decoder = FrameDecoder()
    out: list[Frame] = []
    for byte in stream(SAMPLES):
        out += decoder.feed(bytes([byte]))
    assert out == SAMPLES
    assert decoder.buffered == 0


def test_trailing_partial_frame_is_kept_for_later() -> None:
    data = stream(SAMPLES)
    decoder = FrameDecoder()
    assert decoder.feed(data + data[:7]) == SAMPLES
    assert decoder.buffered == 7
    assert decoder.feed(data[7:]) == SAMPLES


def test_trailing_garbage_fails_after_the_good_frames() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(stream(SAMPLES)) == SAMPLES
    with pytest.raises(FrameError):
        decoder.feed(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
    # Spent: the stream lost its framing, so nothing more is decoded.
    with pytest.raises(FrameError):
        decoder.feed(stream(SAMPLES))


def test_oversized_length_fails_before_buffering_the_body() -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed((1025).to_bytes(4, "big"))
    assert info.value.reason == "oversized"
    assert isinstance(info.value, FrameError)
    assert decoder.buffered == 0


def test_default_limit_is_16_mib() -> None:
    assert MAX_FRAME_SIZE == 16 * 1024 * 1024
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed((MAX_FRAME_SIZE + 1).to_bytes(4, "big"))


@pytest.mark.parametrize(
    "body",
    [
        b"",  # empty frame
        b"\xc1",  # not msgpack
        msgspec.msgpack.encode({"kind": 1}),  # a map, not the array layout
        msgspec.msgpack.encode([1]),  # no id
        msgspec.msgpack.encode([1, -1]),  # negative id
        msgspec.msgpack.encode([300, 1]),  # kind out of range
        msgspec.msgpack.encode([1, 1, "m" * 300]),  # method name too long
        msgspec.msgpack.encode([1, 1, "m", "not bytes"]),
        msgspec.msgpack.encode([1, 1]) + b"\x00",  # trailing bytes inside the frame
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(FrameError) as info:
        FrameDecoder().feed(len(body).to_bytes(4, "big") + body)
    assert info.value.reason == "malformed"


def test_unknown_kind_decodes_for_forward_compatibility() -> None:
    body = msgspec.msgpack.encode([99, 1])
    (frame,) = FrameDecoder().feed(len(body).to_bytes(4, "big") + body)
    assert frame.kind == 99


def test_older_and_newer_peers_frames_decode() -> None:
    # Fields travel by position: an older peer's shorter array gets defaults,
    # a newer peer's extra trailing fields are ignored.
    for fields in ([1, 9], [1, 9, "m", b"p", 0, "", "", "from-the-future", 42]):
        body = msgspec.msgpack.encode(fields)
        (frame,) = FrameDecoder().feed(len(body).to_bytes(4, "big") + body)
        assert (frame.kind, frame.id) == (1, 9)


def test_encode_refuses_frames_over_the_limit() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(Frame(kind=FrameKind.REQUEST, id=1, payload=b"x" * 2000), 1024)


def test_frames_module_is_pure() -> None:
    tree = ast.parse(Path(frames_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported & {"asyncio", "socket", "ssl", "time", "random", "threading"} == set()


# --- fuzzing --------------------------------------------------------------------

frame_strategy = st.builds(
    Frame,
    kind=st.integers(0, 255),
    id=st.integers(0, 2**64 - 1),
    method=st.text(max_size=40),
    payload=st.binary(max_size=300),
    timeout_ms=st.integers(0, 2**32 - 1),
    error=st.text(max_size=40),
    code=st.text(max_size=10),
)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for point in [*points, len(data)]:
        out.append(data[last:point])
        last = point
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(frame_strategy, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_split_of_valid_frames_decodes_the_same(items: list[Frame], cuts: list[int]) -> None:
    data = stream(items)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for chunk in _chunks(data, cuts):
        out += decoder.feed(chunk)
    assert out == items
    assert decoder.buffered == 0


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 10_000), max_size=12))
def test_random_bytes_raise_only_frame_error(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_frame_size=4096)
    for chunk in _chunks(data, cuts):
        try:
            decoder.feed(chunk)
        except FrameError:
            return


@settings(max_examples=300, deadline=None)
@given(st.lists(frame_strategy, min_size=1, max_size=4), st.binary(min_size=1, max_size=200))
def test_valid_frames_then_garbage(items: list[Frame], garbage: bytes) -> None:
    decoder = FrameDecoder(max_frame_size=4096)
    assert decoder.feed(stream(items)) == items
    with contextlib.suppress(FrameError):
        decoder.feed(garbage)


@settings(max_examples=300, deadline=None)
@given(st.lists(frame_strategy, min_size=1, max_size=4), st.data())
def test_mutated_streams_raise_only_frame_error(items: list[Frame], data: st.DataObject) -> None:
    raw = bytearray(stream(items))
    for _ in range(data.draw(st.integers(1, 5))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(FrameError):
        FrameDecoder(max_frame_size=1 << 20).feed(bytes(raw))
