"""RPC server and client over real sockets on 127.0.0.1 (plaintext; TLS is in
test_rpc_tls_handshakes.py): multiplexing, deadlines, bounds, errors, bad peers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvloop

from proconsul.acl.errors import ACLDenied
from proconsul.rpc import (
    MAX_FRAME_SIZE,
    ErrorCode,
    FrameTooLarge,
    PeerInfo,
    RPCClient,
    RPCError,
    RPCServer,
    remaining_s,
)
from proconsul.rpc.frames import Frame, FrameDecoder, FrameKind, encode_frame

DEADLINE_S = 10.0


async def wait_until(
    condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S
) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


class Handlers:
    """Handlers the tests steer: gates they open, failures they ask for."""

    def __init__(self) -> None:
        self.gates: dict[bytes, asyncio.Event] = {}
        self.started = 0
        self.cancelled = 0
        self.one_way: asyncio.Queue[bytes] = asyncio.Queue()
        self.table: dict[str, Any] = {
            "echo": self.echo,
            "gated": self.gated,
            "hang": self.hang,
            "fail": self.fail,
            "refuse": self.refuse,
            "acl_refuse": self.acl_refuse,
            "deadline": self.deadline,
            "big": self.big,
            "note": self.note,
        }

    async def echo(self, payload: bytes, peer: PeerInfo) -> bytes:
        return payload

    async def gated(self, payload: bytes, peer: PeerInfo) -> bytes:
        gate = self.gates.setdefault(payload, asyncio.Event())
        await gate.wait()
        return payload

    async def hang(self, payload: bytes, peer: PeerInfo) -> bytes:
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return b""

    async def fail(self, payload: bytes, peer: PeerInfo) -> bytes:
        raise ValueError("kaboom: " + payload.decode())

    async def refuse(self, payload: bytes, peer: PeerInfo) -> bytes:
        raise RPCError("Permission denied", "acl")

    async def acl_refuse(self, payload: bytes, peer: PeerInfo) -> bytes:
        raise ACLDenied("Permission denied: provided token lacks permission 'key:read'")

    async def deadline(self, payload: bytes, peer: PeerInfo) -> bytes:
        return repr(remaining_s()).encode()

    async def big(self, payload: bytes, peer: PeerInfo) -> bytes:
        return b"x" * int(payload)

    async def note(self, payload: bytes, peer: PeerInfo) -> bytes:
        await self.one_way.put(payload)
        return b""


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
async def server(handlers: Handlers) -> AsyncIterator[RPCServer]:
    srv = RPCServer(handlers.table)
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def client() -> AsyncIterator[RPCClient]:
    cli = RPCClient()
    yield cli
    await cli.close()


async def test_round_trip(server: RPCServer, client: RPCClient) -> None:
    assert await client.call(server.address, "echo", b"hello", 5) == b"hello"
    host, port = server.address
    assert await client.call(f"{host}:{port}", "echo", b"", 5) == b""
    stats = server.stats()
    assert stats["requests"] == stats["responses"] == 2
    assert stats["connections_accepted"] == 1


async def test_1000_calls_share_one_connection_and_finish_out_of_order(
    handlers: Handlers,
) -> None:
    server = RPCServer(handlers.table, max_in_flight_per_conn=1000)
    await server.start()
    client = RPCClient(max_in_flight_per_conn=1000)
    finished: list[int] = []

    async def one(i: int) -> bytes:
        result = await client.call(server.address, "gated", str(i).encode(), DEADLINE_S)
        finished.append(i)
        return result

    calls = [asyncio.ensure_future(one(i)) for i in range(1000)]
    await wait_until(lambda: server.stats()["in_flight"] == 1000, "1000 requests in flight")
    for i in reversed(range(1000)):  # open the gates last-first
        handlers.gates[str(i).encode()].set()
    results = await asyncio.gather(*calls)
    assert results == [str(i).encode() for i in range(1000)]
    assert finished == list(reversed(range(1000)))
    assert server.stats()["connections_accepted"] == 1
    assert client.stats()["dials"] == 1
    await client.close()
    await server.close()


async def test_handler_exception_is_an_rpc_error_and_the_server_goes_on(
    server: RPCServer, client: RPCClient, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(RPCError) as info:
        await client.call(server.address, "fail", b"bad input", 5)
    assert info.value.message == "kaboom: bad input"
    assert info.value.code == ErrorCode.HANDLER
    assert "fail handler failed" in caplog.text
    with pytest.raises(RPCError) as refused:
        await client.call(server.address, "refuse", b"", 5)
    assert (refused.value.message, refused.value.code) == ("Permission denied", "acl")
    assert await client.call(server.address, "echo", b"still here", 5) == b"still here"
    assert server.stats()["handler_errors"] == 2


async def test_an_acl_refusal_crosses_as_acl_denied_and_comes_back_as_one(
    server: RPCServer, client: RPCClient, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ACLDenied) as refused:
        await client.call(server.address, "acl_refuse", b"", 5)
    assert refused.value.message == "Permission denied: provided token lacks permission 'key:read'"
    # Still a remote failure to the caller (not retried elsewhere), with the wire code.
    assert isinstance(refused.value, RPCError)
    assert refused.value.code == ErrorCode.ACL_DENIED
    assert server.stats()["refused_acl"] == 1
    assert "handler failed" not in caplog.text


async def test_unknown_method(server: RPCServer, client: RPCClient) -> None:
    with pytest.raises(RPCError) as info:
        await client.call(server.address, "Status.Nope", b"", 5)
    assert str(info.value) == "rpc: can't find method Status.Nope"
    assert info.value.code == ErrorCode.UNKNOWN_METHOD
    assert server.stats()["unknown_methods"] == 1


async def test_caller_timeout_cancels_the_request_on_the_server(
    server: RPCServer, client: RPCClient, handlers: Handlers
) -> None:
    with pytest.raises(TimeoutError, match=r"hang .* timed out after 0\.2s"):
        await client.call(server.address, "hang", b"", 0.2)
    await wait_until(lambda: handlers.cancelled == 1, "the handler to be cancelled")
    assert server.stats()["cancelled"] == 1
    assert server.stats()["in_flight"] == 0
    assert client.stats()["timeouts"] == 1
    assert await client.call(server.address, "echo", b"ok", 5) == b"ok"


async def test_server_deadline(handlers: Handlers, client: RPCClient) -> None:
    server = RPCServer(handlers.table, request_timeout_s=0.2)
    await server.start()
    with pytest.raises(RPCError) as info:
        await client.call(server.address, "hang", b"", DEADLINE_S)
    assert info.value.code == ErrorCode.TIMEOUT
    assert "timed out after 0.2s" in info.value.message
    assert server.stats()["timeouts"] == 1
    await server.close()


async def test_the_callers_deadline_reaches_the_handler(
    server: RPCServer, client: RPCClient
) -> None:
    left = float(await client.call(server.address, "deadline", b"", 3.0))
    assert 2.0 < left <= 3.0


async def test_server_in_flight_bound_refuses_the_excess(handlers: Handlers) -> None:
    server = RPCServer(handlers.table, max_in_flight_per_conn=4)
    await server.start()
    client = RPCClient(max_in_flight_per_conn=100)  # more than the server allows
    calls = [
        asyncio.ensure_future(client.call(server.address, "hang", b"", DEADLINE_S))
        for _ in range(10)
    ]
    await wait_until(lambda: sum(c.done() for c in calls) == 6, "6 refusals")
    refused = [c.exception() for c in calls if c.done()]
    assert all(isinstance(e, RPCError) and e.code == ErrorCode.TOO_MANY_REQUESTS for e in refused)
    assert server.stats()["too_many_requests"] == 6
    assert server.stats()["in_flight"] == 4
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    await wait_until(lambda: server.stats()["in_flight"] == 0, "cancels to free the slots")
    await client.close()
    await server.close()


async def test_client_in_flight_bound_waits(server: RPCServer, handlers: Handlers) -> None:
    client = RPCClient(max_in_flight_per_conn=4)
    calls = [
        asyncio.ensure_future(client.call(server.address, "gated", str(i).encode(), DEADLINE_S))
        for i in range(10)
    ]
    await wait_until(lambda: server.stats()["in_flight"] == 4, "4 requests in flight")
    released = 0
    while released < 10:
        # Every gate the server has seen so far is one of at most 4 in flight.
        assert server.stats()["in_flight"] <= 4
        waiting = [g for g in handlers.gates.values() if not g.is_set()]
        if waiting:
            waiting[0].set()
            released += 1
        await asyncio.sleep(0)
    assert sorted(await asyncio.gather(*calls)) == sorted(str(i).encode() for i in range(10))
    assert server.stats()["too_many_requests"] == 0
    await client.close()


async def raw_exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send raw bytes, return everything read until the server closes."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(data)
    await writer.drain()
    received = await asyncio.wait_for(reader.read(), DEADLINE_S)
    writer.close()
    return received


async def test_garbage_frames_close_that_connection_only(
    server: RPCServer, client: RPCClient
) -> None:
    assert await client.call(server.address, "echo", b"before", 5) == b"before"
    assert await raw_exchange(server.address, b"\x00\x00\x00\x03\xc1\xc1\xc1") == b""
    assert server.stats()["bad_frames"] == 1
    assert await client.call(server.address, "echo", b"after", 5) == b"after"


async def test_oversized_frames_are_refused_without_buffering(
    server: RPCServer, client: RPCClient
) -> None:
    assert await raw_exchange(server.address, (MAX_FRAME_SIZE + 1).to_bytes(4, "big")) == b""
    assert server.stats()["oversized_frames"] == 1
    assert await client.call(server.address, "echo", b"fine", 5) == b"fine"


async def test_raw_protocol_edges(server: RPCServer, handlers: Handlers) -> None:
    """Unknown kinds are skipped; a request id already in flight is refused."""
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(
        bytes(encode_frame(Frame(kind=99, id=1)))
        + bytes(encode_frame(Frame(kind=FrameKind.REQUEST, id=5, method="hang")))
        + bytes(encode_frame(Frame(kind=FrameKind.REQUEST, id=5, method="hang")))
        + bytes(encode_frame(Frame(kind=FrameKind.REQUEST, id=6, method="echo", payload=b"x")))
    )
    decoder = FrameDecoder()
    got: list[Frame] = []
    while len(got) < 2:
        got += decoder.feed(await asyncio.wait_for(reader.read(65536), DEADLINE_S))
    by_id = {f.id: f for f in got}
    assert by_id[5].kind == FrameKind.ERROR and by_id[5].code == ErrorCode.BAD_REQUEST
    assert by_id[6].kind == FrameKind.RESPONSE and by_id[6].payload == b"x"
    assert server.stats()["unknown_kinds"] == 1
    writer.close()
    await wait_until(lambda: handlers.cancelled == 1, "the hanging request to be cancelled")


async def test_too_large_payloads(handlers: Handlers) -> None:
    server = RPCServer(handlers.table, max_frame_size=4096)
    await server.start()
    client = RPCClient(max_frame_size=4096)
    with pytest.raises(FrameTooLarge):
        await client.call(server.address, "echo", b"x" * 5000, 5)
    with pytest.raises(RPCError, match="exceeds the limit"):
        await client.call(server.address, "big", b"5000", 5)
    assert await client.call(server.address, "big", b"100", 5) == b"x" * 100
    await client.close()
    await server.close()


async def test_broken_connections_fail_pending_calls_then_redial(handlers: Handlers) -> None:
    server = RPCServer(handlers.table)
    address = await server.start()
    client = RPCClient()
    pending = asyncio.ensure_future(client.call(address, "hang", b"", DEADLINE_S))
    await wait_until(lambda: handlers.started == 1, "the call to reach the server")
    await server.close()
    with pytest.raises(ConnectionError):
        await pending
    with pytest.raises(ConnectionError, match="cannot connect"):
        await client.call(address, "echo", b"", 5)
    server = RPCServer(handlers.table)
    await server.start(*address)
    assert await client.call(address, "echo", b"back", 5) == b"back"
    stats = client.stats()
    assert stats["dials"] == 3
    assert stats["dial_failures"] == 1
    assert stats["connections_lost"] == 1
    await client.close()
    await server.close()


async def test_closing_the_client_fails_waiting_calls(
    server: RPCServer, handlers: Handlers
) -> None:
    client = RPCClient()
    pending = asyncio.ensure_future(client.call(server.address, "hang", b"", DEADLINE_S))
    await wait_until(lambda: handlers.started == 1, "the call to reach the server")
    await client.close()
    with pytest.raises(ConnectionError, match="client is closed"):
        await pending
    with pytest.raises(ConnectionError, match="client is closed"):
        await client.call(server.address, "echo", b"", 5)
    await wait_until(lambda: handlers.cancelled == 1, "the server to drop the request")


async def test_one_way(server: RPCServer, client: RPCClient, handlers: Handlers) -> None:
    await client.notify(server.address, "hang", b"", 5)
    await client.notify(server.address, "note", b"fire and forget", 5)
    await client.notify(server.address, "Nope.Nope", b"", 5)  # nobody hears about this
    assert await asyncio.wait_for(handlers.one_way.get(), DEADLINE_S) == b"fire and forget"
    await wait_until(lambda: server.stats()["one_way"] == 3, "all one-way frames")
    assert server.stats()["in_flight"] == 1  # the hanging one, still bounded and counted
    await server.close()
    assert handlers.cancelled == 1


async def test_connections_per_client_are_bounded(handlers: Handlers) -> None:
    server = RPCServer(handlers.table, max_conns_per_client=2)
    await server.start()
    streams = [await asyncio.open_connection(*server.address) for _ in range(3)]
    await wait_until(lambda: server.stats()["connections_over_limit"] == 1, "a refusal")
    assert server.stats()["connections_open"] == 2
    assert await asyncio.wait_for(streams[2][0].read(), DEADLINE_S) == b""
    for _, writer in streams:
        writer.close()
    await server.close()


async def test_silent_connections_are_cut(handlers: Handlers) -> None:
    server = RPCServer(handlers.table, handshake_timeout_s=0.1)
    await server.start()
    reader, writer = await asyncio.open_connection(*server.address)
    assert await asyncio.wait_for(reader.read(), DEADLINE_S) == b""
    assert server.stats()["first_byte_timeouts"] == 1
    writer.close()
    await server.close()


def test_the_same_on_uvloop() -> None:
    """The agent runs on uvloop; its transports differ from asyncio's."""

    async def scenario() -> None:
        handlers = Handlers()
        server = RPCServer(handlers.table, max_in_flight_per_conn=8)
        await server.start()
        client = RPCClient(max_in_flight_per_conn=8)
        results = await asyncio.gather(
            *(client.call(server.address, "echo", str(i).encode(), 5) for i in range(200))
        )
        assert results == [str(i).encode() for i in range(200)]
        with pytest.raises(RPCError):
            await client.call(server.address, "fail", b"x", 5)
        with pytest.raises(TimeoutError):
            await client.call(server.address, "hang", b"", 0.1)
        assert await raw_exchange(server.address, b"\x00\x00\x00\x01\xc1") == b""
        assert server.stats()["bad_frames"] == 1
        await client.close()
        await server.close()

    uvloop.run(scenario())
