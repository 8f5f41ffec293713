"""Fuzzing the RPC layer's decoders: frames, then the payloads inside them.

- Frames (`rpc/frames.py`): the stream decoder, fed whole, byte by byte and in
  random chunks, with trailing garbage and hostile bodies: only `FrameError`
  escapes, chunking never changes the result, and a failed decoder stays failed.
- A server connection (`rpc/server.py`) fed any stream answers requests or
  closes on the first bad frame (counted), and writes only clean frames.
- Payloads: every request a server decodes (`rpc/codec.py`, `rpc/acl_codec.py`,
  the `structs/rpc.py` structs) and every answer a caller decodes: a bad one
  is an `RPCError`, never another exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from proconsul.acl.service import ACL_OPERATIONS
from proconsul.rpc import acl_codec, codec
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.rpc.frames import (
    LENGTH_PREFIX,
    MAX_METHOD_LENGTH,
    Frame,
    FrameDecoder,
    FrameError,
    FrameKind,
    decode_body,
    encode_frame,
)
from proconsul.rpc.server import RPCServer, _ServerConnection
from proconsul.server.operator import decode_operator_request
from proconsul.structs.catalog import KVEntry, NodeService
from proconsul.structs.commands import DeregisterRequest, KVSRequest, RegisterRequest
from proconsul.structs.connect import IndexedCARoots
from proconsul.structs.requests import QueryMeta, QueryOptions, ReadRequest, ReadResponse
from proconsul.structs.rpc import (
    ACLCall,
    ApplyRequest,
    OperatorRequest,
    SignReply,
    SignRequest,
)
from tests.fuzz.wire import (
    DEEP,
    BadStr,
    Deep,
    chunks,
    hostile_bytes,
    pack,
    packed,
    shaped,
    trees,
)

text = st.text(max_size=16)
u64 = st.integers(0, 2**64 - 1)

frames = st.builds(
    Frame,
    kind=st.integers(0, 255),
    id=u64,
    method=st.text(max_size=MAX_METHOD_LENGTH),
    payload=st.binary(max_size=64),
    timeout_ms=st.integers(0, 2**32 - 1),
    error=text,
    code=text,
)
frame_bodies = frames.map(lambda frame: bytes(encode_frame(frame)[LENGTH_PREFIX:]))


def prefixed(body: bytes) -> bytes:
    return len(body).to_bytes(LENGTH_PREFIX, "big") + body


def feed_all(pieces: list[bytes], max_frame_size: int | None = None) -> tuple[list[Frame], bool]:
    """Frames decoded from `pieces` fed one by one, and whether the decoder failed."""
    decoder = FrameDecoder() if max_frame_size is None else FrameDecoder(max_frame_size)
    found: list[Frame] = []
    for piece in pieces:
        try:
            found += decoder.feed(piece)
        except FrameError:
            with pytest.raises(FrameError):  # spent: the stream lost its framing
                decoder.feed(b"")
            return found, True
    return found, False


# ----- frames -------------------------------------------------------------------


@given(
    st.lists(frames, max_size=4),
    st.one_of(st.binary(max_size=40), packed().map(prefixed)),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_frames_then_garbage_whole_chunked_and_byte_by_byte(
    sent: list[Frame], garbage: bytes, cuts: list[int]
) -> None:
    stream = b"".join(bytes(encode_frame(frame)) for frame in sent) + garbage
    whole, whole_failed = feed_all([stream])
    for pieces in (chunks(stream, cuts), [stream[i : i + 1] for i in range(len(stream))]):
        found, failed = feed_all(pieces)
        assert failed == whole_failed
        if not failed:
            assert found == whole
        # Frames before the garbage always come out first and intact.
        assert found[: len(sent)] == sent[: len(found)]
    if not whole_failed:
        assert whole[: len(sent)] == sent


# Found by this fuzzer: a trailing field nested past the recursion limit made the
# decoder raise RecursionError (the connection's data_received then crashed).
@example(pack([1, 7, "Status.Leader", b"", 0, "", "", Deep(DEEP)]))
@example(pack([1, 7, BadStr(b"\xff")]))
@given(st.one_of(hostile_bytes(frame_bodies), shaped(range(0, 6))))
def test_hostile_frame_bodies_are_frame_errors(body: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_body(body)
    if body:
        found, failed = feed_all([prefixed(body)])
        assert failed or len(found) == 1


@given(st.binary(max_size=64), st.integers(1, 32))
def test_a_small_frame_limit_is_enforced_on_any_bytes(data: bytes, limit: int) -> None:
    feed_all([data], max_frame_size=limit)


# ----- request payloads (what a server decodes) -----------------------------------

read_requests = st.builds(
    ReadRequest,
    name=text,
    tags=st.lists(text, max_size=3),
    node_meta=st.dictionaries(text, text, max_size=2),
    options=st.builds(
        QueryOptions, token=text, min_index=u64, max_query_time_s=st.floats(allow_nan=False)
    ),
)
commands = st.one_of(
    st.builds(
        RegisterRequest,
        node=text,
        address=text,
        service=st.builds(NodeService, service=text, id=text, tags=st.lists(text, max_size=2)),
    ),
    st.builds(DeregisterRequest, node=text, service_id=text),
    st.builds(
        KVSRequest,
        op=st.sampled_from(["set", "cas", "delete"]),
        dir_ent=st.builds(KVEntry, key=text, value=st.binary(max_size=16)),
    ),
)
apply_requests = st.builds(ApplyRequest, commands, text)
acl_calls = st.builds(ACLCall, caller=text, id=text, text=text, policy=text)


def refused_as_bad_request(call: Any) -> None:
    try:
        call()
    except RPCError as exc:
        assert exc.code == ErrorCode.BAD_REQUEST


@example(pack({"name": BadStr(b"\xff")}), "KVS.Get")
@example(pack({"zz_unknown": Deep(DEEP)}), "KVS.Get")
@given(
    hostile_bytes(read_requests.map(codec.encode)), st.sampled_from(list(codec.READ_RESULT_TYPES))
)
def test_read_requests(payload: bytes, method: str) -> None:
    refused_as_bad_request(lambda: codec.decode_read_request(payload, method))


@example(
    pack({"command": {"Type": 1, "Node": "n", "Service": {"Proxy": {"a": Deep(DEEP)}}}}), "Apply"
)
@given(hostile_bytes(apply_requests.map(codec.encode)), st.sampled_from(["Apply", "Raft.Apply"]))
def test_apply_requests(payload: bytes, method: str) -> None:
    refused_as_bad_request(lambda: codec.decode_apply_request(payload, method))


@given(hostile_bytes(acl_calls.map(acl_codec.encode_call)), st.sampled_from(list(ACL_OPERATIONS)))
def test_acl_calls(payload: bytes, method: str) -> None:
    refused_as_bad_request(lambda: acl_codec.decode_call(payload, method))


# The other structs/rpc.py payloads, through the one decoding helper servers use.
PAYLOADS: dict[type, st.SearchStrategy[Any]] = {
    OperatorRequest: st.builds(OperatorRequest, token=text, id=text, address=text),
    SignRequest: st.builds(SignRequest, public_key_pem=text, node=text, token=text),
    SignReply: st.builds(SignReply, cert_pem=text, root_pems=st.lists(text, max_size=2)),
}


@given(st.sampled_from(list(PAYLOADS)), st.data())
def test_rpc_payload_structs(kind: type, data: st.DataObject) -> None:
    payload = data.draw(hostile_bytes(PAYLOADS[kind].map(codec.encode)))
    decoder = msgspec.msgpack.Decoder(kind)
    refused_as_bad_request(lambda: codec.decode_payload(decoder, payload, "Fuzz.Method"))


# ----- answers (what a caller decodes) ---------------------------------------------

EMPTY_VALUES: dict[str, Any] = {
    "Catalog.NodeServices": [None, []],
    "Catalog.ListServices": {},
    "KVS.Get": None,
    "ConnectCA.Roots": IndexedCARoots("", "", []),
}


def read_responses(method: str) -> st.SearchStrategy[bytes]:
    value = EMPTY_VALUES.get(method, [])
    return st.builds(
        lambda index: codec.encode(ReadResponse(QueryMeta(index), value)), st.integers(0, 2**63)
    )


def refused_as_rpc_error(call: Any) -> None:
    try:
        call()
    except RPCError as exc:
        assert exc.code == ErrorCode.BAD_RESPONSE


# Found by this fuzzer: a garbled answer raised msgspec's own errors (and
# RecursionError, UnicodeDecodeError) at the caller, which HTTP showed as an
# unexpected 500 "Internal error" with a traceback in the log.
@example((b"\xc1", "KVS.Get"))
@example((pack({"meta": {"index": 1}, "value": Deep(DEEP)}), "KVS.List"))
@given(
    st.sampled_from(list(codec.READ_RESULT_TYPES)).flatmap(
        lambda method: st.tuples(hostile_bytes(read_responses(method)), st.just(method))
    )
)
def test_read_responses(case: tuple[bytes, str]) -> None:
    data, method = case
    refused_as_rpc_error(lambda: codec.decode_read_response(method, data))


@example(pack([1, {"Message": BadStr(b"\xff")}]))
@given(
    hostile_bytes(st.tuples(u64, st.one_of(st.booleans(), st.none())).map(lambda r: pack(list(r))))
)
def test_apply_responses(data: bytes) -> None:
    refused_as_rpc_error(lambda: codec.decode_apply_response(data))


@example(pack([1, {"zz_unknown": Deep(DEEP)}]), "ACL.TokenRead")
@given(
    st.one_of(packed(), shaped([0, 1, 2**63]), st.binary(max_size=32)),
    st.sampled_from(list(ACL_OPERATIONS)),
)
def test_acl_results(data: bytes, method: str) -> None:
    refused_as_rpc_error(lambda: acl_codec.decode_result(method, data))


@given(trees())
def test_untyped_answers(value: Any) -> None:
    # Status.Leader, Status.Peers and Operator.* answers are decoded without a type.
    refused_as_rpc_error(lambda: codec.decode_reply(codec.ANY_DECODER, pack(value), "Status.Peers"))


# `Operator.*` requests (server/operator.py) decode through decode_payload, so
# a bad string or deep nesting is a bad request like any other payload.
@pytest.mark.parametrize(
    "payload", [pack({"token": BadStr(b"\xff")}), pack({"zz_unknown": Deep(DEEP)})]
)
def test_operator_requests(payload: bytes) -> None:
    method = "Operator.RaftGetConfiguration"
    refused_as_bad_request(lambda: decode_operator_request(payload, method))


# ----- a server connection, end to end ------------------------------------------------


class FakeTransport:
    """Stands in for the socket: collects what the server writes."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


async def echo(payload: bytes, peer: Any) -> bytes:
    return payload


async def refuse(payload: bytes, peer: Any) -> bytes:
    raise RPCError("rpc: refused", ErrorCode.BAD_REQUEST)


requests = st.builds(
    Frame,
    kind=st.sampled_from([1, 1, 1, 4, 5, 2, 3, 99]),
    id=st.integers(0, 3),
    method=st.sampled_from(["Echo", "Refuse", "Nope", ""]),
    payload=st.binary(max_size=16),
    timeout_ms=st.integers(0, 50),
)


@given(
    st.lists(requests, max_size=6),
    st.one_of(st.just(b""), st.binary(max_size=12), packed().map(prefixed)),
    st.lists(st.integers(0, 2000), max_size=6),
)
def test_a_server_connection_answers_or_closes_on_any_stream(
    sent: list[Frame], garbage: bytes, cuts: list[int]
) -> None:
    stream = b"".join(bytes(encode_frame(frame)) for frame in sent) + garbage

    async def scenario() -> None:
        server = RPCServer({"Echo": echo, "Refuse": refuse}, handshake_timeout_s=0)
        conn = _ServerConnection(server, asyncio.get_running_loop())
        transport = FakeTransport()
        conn.connection_made(cast(asyncio.Transport, transport))
        for piece in chunks(stream, cuts):
            if piece and not conn.closed:
                conn.data_received(piece)
        await asyncio.gather(*conn.tasks(), return_exceptions=True)
        await asyncio.sleep(0)  # queued answers are flushed on the next iteration
        stats = server.stats()
        bad = stats["bad_frames"] + stats["oversized_frames"]
        # A stream that lost its framing is counted and closed, nothing else.
        assert bool(bad) == (conn.closed and stream[:1] != b"\x16")
        # Whatever the server wrote is a clean sequence of answers.
        for frame in FrameDecoder().feed(bytes(transport.written)):
            assert frame.kind in (FrameKind.RESPONSE, FrameKind.ERROR)
        conn.connection_lost(None)

    asyncio.run(scenario())
