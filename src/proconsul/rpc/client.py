"""The RPC client: one multiplexed connection per server address, shared by
every call to that server.

Job: dial (TLS or plaintext), send request frames with fresh ids, match the
answers back to their callers, and fail every waiting call when the
connection breaks; the next call dials again.

Rules:
- `call` raises `RPCError` when the server answered with an error (for an
  ACL refusal a `RemoteACLDenied`, which is also an `ACLDenied`), a
  `ConnectionError` when there is no usable connection (refused, reset, TLS
  refused: `TLSHandshakeError` with the reason), and a `TimeoutError` when
  its own deadline passes. Nothing is retried here: a write may have
  happened before a connection broke, so only the caller knows what is safe.
- Each connection has at most `max_in_flight_per_conn` calls on the wire;
  more wait (within their timeout) for a slot. Keep it at or below the
  server's bound, or calls can be refused with "too_many_requests".
- A call that times out or is cancelled sends CANCEL so the server frees the
  slot too.
- The caller's remaining time travels with the request, so the server stops
  working on it when the caller stops waiting.
- A peer that stops acknowledging (partitioned, powered off) must not keep a
  connection alive in the kernel's retransmit backoff, which grows to minutes:
  Raft's one-way traffic would then reach a healed peer only at the next
  retransmit. `detect_dead_peers` makes the kernel drop such a connection after
  `DEAD_PEER_TIMEOUT_S` (TCP_USER_TIMEOUT plus keepalives), so the next call dials.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from proconsul.rpc.connection import FramedProtocol, TLSEngine
from proconsul.rpc.errors import RPCError, TLSHandshakeError, remote_error
from proconsul.rpc.frames import MAX_FRAME_SIZE, Frame, FrameError, FrameKind, encode_frame
from proconsul.rpc.tls import classify_tls_failure, describe_tls_failure
from proconsul.structs.hostport import split_host_port

log = logging.getLogger("proconsul.rpc")

Address = tuple[str, int]

DEFAULT_MAX_IN_FLIGHT = 512  # equal to the server's default bound
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEAD_PEER_TIMEOUT_S = 10.0  # unacknowledged data or silent keepalives for this long
_KEEPALIVE_IDLE_S = 5
_KEEPALIVE_INTERVAL_S = 2
_KEEPALIVE_PROBES = 3
_MAX_TIMEOUT_MS = 2**32 - 1


def parse_address(address: str | Address) -> Address:
    """("host", port) from a tuple, "host:port" or "[v6]:port" (an IPv6 host
    joined as f"{host}:{port}", without brackets, splits at its last colon)."""
    if isinstance(address, tuple):
        return (address[0], int(address[1]))
    text = address
    if not text.startswith("[") and text.count(":") > 1:
        head, _, tail = text.rpartition(":")
        text = f"[{head}]:{tail}"
    try:
        host, port = split_host_port(text)
    except ValueError:
        host = ""
    if not host:
        raise ValueError(f"rpc: address {address!r} is not host:port")
    return (host, port)


def detect_dead_peers(sock: socket.socket | None) -> None:
    """Ask the kernel to drop the connection once the peer stops acknowledging."""
    if sock is None:
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_USER_TIMEOUT", int(DEAD_PEER_TIMEOUT_S * 1000)),
        ("TCP_KEEPIDLE", _KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", _KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", _KEEPALIVE_PROBES),
    ):
        option = getattr(socket, name, None)  # Linux has them all; others some
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    for level, option, value in options:
        # Best effort: without it a dead peer is still found by the call timeouts.
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


class RPCClient:
    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        *,
        max_in_flight_per_conn: int = DEFAULT_MAX_IN_FLIGHT,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_frame_size: int = MAX_FRAME_SIZE,
    ) -> None:
        """`server_hostname` is the name the server's certificate is checked
        against when the context has `check_hostname` (verify_server_hostname);
        it is also sent as SNI."""
        if max_in_flight_per_conn < 1:
            raise ValueError("max_in_flight_per_conn must be at least 1")
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.max_in_flight_per_conn = max_in_flight_per_conn
        self.connect_timeout_s = connect_timeout_s
        self.max_frame_size = max_frame_size
        self._conns: dict[Address, _ClientConnection] = {}
        self._dials: dict[Address, asyncio.Task[_ClientConnection]] = {}
        self._counters: Counter[str] = Counter()
        self._tls_failures: Counter[str] = Counter()
        self._closed = False
        # Called with a peer's address when an established connection to it
        # closes without us closing it (Raft uses it to notice a dead leader).
        self.lost_listeners: list[Callable[[Address], None]] = []

    async def call(
        self, address: str | Address, method: str, payload: bytes, timeout_s: float
    ) -> bytes:
        """Call `method` on the server at `address`; returns the handler's bytes."""
        addr = parse_address(address)
        self._counters["calls"] += 1
        scope = asyncio.timeout(timeout_s)
        try:
            async with scope:
                conn = await self._connection(addr)
                return await conn.call(method, payload, scope.when())
        except TimeoutError:
            if not scope.expired():
                raise
            self._counters["timeouts"] += 1
            raise TimeoutError(
                f"rpc: {method} to {_fmt(addr)} timed out after {timeout_s:g}s"
            ) from None
        except RPCError:
            self._counters["remote_errors"] += 1
            raise
        except ConnectionError:
            self._counters["connection_errors"] += 1
            raise

    async def notify(
        self, address: str | Address, method: str, payload: bytes, timeout_s: float
    ) -> None:
        """Send a one-way request: no answer, no error from the handler comes back.
        Returns once the frame is queued (dialing first if need be)."""
        addr = parse_address(address)
        async with asyncio.timeout(timeout_s):
            conn = await self._connection(addr)
            await conn.drain()
        conn.send_frame(Frame(kind=FrameKind.ONE_WAY, id=0, method=method, payload=payload))
        self._counters["one_way"] += 1

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Fail every waiting call with ConnectionError and close the connections."""
        self._closed = True
        dials = list(self._dials.values())
        for task in dials:
            task.cancel()
        if dials:
            await asyncio.gather(*dials, return_exceptions=True)
        for conn in list(self._conns.values()):
            conn.fail(ConnectionError("rpc: client is closed"))
            conn.close()
        self._conns.clear()

    def stats(self) -> dict[str, Any]:
        counters: dict[str, Any] = {
            key: self._counters.get(key, 0)
            for key in (
                "calls",
                "one_way",
                "remote_errors",
                "connection_errors",
                "timeouts",
                "cancelled",
                "dials",
                "dial_failures",
                "connections_lost",
                "late_responses",
                "bad_frames",
            )
        }
        counters["connections_open"] = len(self._conns)
        counters["in_flight"] = sum(len(c.pending) for c in self._conns.values())
        counters["tls_handshake_failures"] = dict(self._tls_failures)
        counters["tls_handshake_failures_total"] = sum(self._tls_failures.values())
        return counters

    # --- connections -----------------------------------------------------------

    async def _connection(self, addr: Address) -> _ClientConnection:
        if self._closed:
            raise ConnectionError("rpc: client is closed")
        conn = self._conns.get(addr)
        if conn is not None and not conn.closed:
            return conn
        dial = self._dials.get(addr)
        if dial is None:
            dial = asyncio.get_running_loop().create_task(self._dial(addr))
            self._dials[addr] = dial

            def forget(task: asyncio.Task[_ClientConnection], addr: Address = addr) -> None:
                if self._dials.get(addr) is task:
                    del self._dials[addr]
                if not task.cancelled():
                    task.exception()  # mark it retrieved: a caller may have timed out

            dial.add_done_callback(forget)
        # shield: one caller timing out must not abort a dial others wait on.
        try:
            return await asyncio.shield(dial)
        except asyncio.CancelledError:
            if dial.cancelled() and self._closed:
                raise ConnectionError("rpc: client is closed") from None
            raise

    async def _dial(self, addr: Address) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        self._counters["dials"] += 1
        conn: _ClientConnection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                transport, conn = await loop.create_connection(
                    lambda: _ClientConnection(self, addr, loop), addr[0], addr[1]
                )
                detect_dead_peers(transport.get_extra_info("socket"))
                await conn.ready
        except TimeoutError:
            self._counters["dial_failures"] += 1
            if conn is not None:
                if not conn.tls_up and conn.tls is not None:
                    self._tls_failures["handshake_timeout"] += 1
                conn.abort()
            raise ConnectionError(
                f"rpc: connecting to {_fmt(addr)} timed out after {self.connect_timeout_s:g}s"
            ) from None
        except TLSHandshakeError:
            self._counters["dial_failures"] += 1
            raise
        except asyncio.CancelledError:
            if conn is not None:
                conn.abort()
            raise
        except OSError as exc:
            self._counters["dial_failures"] += 1
            if conn is not None:
                conn.abort()
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ConnectionError(f"rpc: cannot connect to {_fmt(addr)}: {reason}") from exc
        if self._closed:
            conn.close()
            raise ConnectionError("rpc: client is closed")
        self._conns[addr] = conn
        return conn

    # --- called by connections -------------------------------------------------

    def count(self, key: str) -> None:
        self._counters[key] += 1

    def tls_refused(self, addr: Address, reason: str, detail: str, *, by_peer: bool) -> str:
        self._tls_failures[reason] += 1
        who = "the server refused us" if by_peer else "refused the server"
        message = f"rpc: TLS to {_fmt(addr)} failed, {who}: {describe_tls_failure(reason, detail)}"
        log.warning("%s", message)
        return message

    def forget(self, conn: _ClientConnection) -> None:
        if self._conns.get(conn.addr) is conn:
            del self._conns[conn.addr]


class _ClientConnection(FramedProtocol):
    def __init__(self, client: RPCClient, addr: Address, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, client.max_frame_size)
        self.client = client
        self.addr = addr
        self.ready: asyncio.Future[None] = loop.create_future()
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.slots = asyncio.Semaphore(client.max_in_flight_per_conn)
        self._ids = itertools.count(1)
        self._failure: ConnectionError | None = None
        if client.ssl_context is not None:
            self.tls = TLSEngine(
                client.ssl_context, server_side=False, server_hostname=client.server_hostname
            )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio's.
        self.transport = cast(asyncio.Transport, transport)
        if self.tls is None:
            self.ready.set_result(None)
        else:
            self._write_raw(self.tls.start())

    def data_received(self, data: bytes) -> None:
        self.feed_wire(data)

    def tls_established(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def tls_failed(self, exc: ssl.SSLError) -> None:
        if isinstance(exc, ssl.SSLZeroReturnError):
            self.fail(ConnectionError(f"rpc: {_fmt(self.addr)} closed the connection"))
            self.close()
            return
        reason, detail = classify_tls_failure(exc)
        # Under TLS 1.3 a server checks our certificate after our side of the
        # handshake is done, so its refusal arrives as an alert on first read.
        by_peer = "ALERT" in (exc.reason or "")
        message = self.client.tls_refused(self.addr, reason, detail, by_peer=by_peer)
        self.fail(TLSHandshakeError(message, reason))
        self.drop()

    def frame_error(self, exc: FrameError) -> None:
        self.client.count("bad_frames")
        log.warning("rpc: closing connection to %s: %s", _fmt(self.addr), exc)
        self.fail(ConnectionError(f"rpc: bad frame from {_fmt(self.addr)}: {exc}"))
        self.drop()

    def frame_received(self, frame: Frame) -> None:
        kind = frame.kind
        if kind != FrameKind.RESPONSE and kind != FrameKind.ERROR:
            return  # nothing else is meant for a caller; a newer server's kinds are ignored
        waiter = self.pending.pop(frame.id, None)
        if waiter is None or waiter.done():
            self.client.count("late_responses")  # the caller gave up already
            return
        if kind == FrameKind.RESPONSE:
            waiter.set_result(frame.payload)
        else:
            waiter.set_exception(remote_error(frame.error, frame.code))

    async def call(self, method: str, payload: bytes, deadline: float | None) -> bytes:
        async with self.slots:
            if self.closed:
                raise self._failure or ConnectionError(f"rpc: connection to {_fmt(self.addr)} lost")
            await self.drain()
            request_id = next(self._ids)
            waiter: asyncio.Future[bytes] = self.loop.create_future()
            self.pending[request_id] = waiter
            try:
                self.send_frame(
                    Frame(
                        kind=FrameKind.REQUEST,
                        id=request_id,
                        method=method,
                        payload=payload,
                        timeout_ms=self._timeout_ms(deadline),
                    )
                )
                return await waiter
            except asyncio.CancelledError:
                # Timed out or cancelled: tell the server so it frees the slot.
                if self.pending.pop(request_id, None) is not None and not self.closed:
                    self.client.count("cancelled")
                    self.send_frame(Frame(kind=FrameKind.CANCEL, id=request_id))
                raise
            finally:
                self.pending.pop(request_id, None)

    def send_frame(self, frame: Frame) -> None:
        self.send(encode_frame(frame, self.max_frame_size))

    def _timeout_ms(self, deadline: float | None) -> int:
        """The caller's remaining time, for the server to honor (0: none given)."""
        if deadline is None:
            return 0
        remaining = deadline - self.loop.time()
        return min(_MAX_TIMEOUT_MS, max(1, int(remaining * 1000)))

    def fail(self, error: ConnectionError) -> None:
        if self._failure is None:
            self._failure = error
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: the dialer may have gone already
        waiters, self.pending = self.pending, {}
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(error)

    def lost(self, exc: Exception | None) -> None:
        self.client.forget(self)
        if self.ready.done() and self._failure is None:
            self.client.count("connections_lost")
            if not self.client.closed:
                for listener in self.client.lost_listeners:
                    listener(self.addr)
        detail = f": {exc}" if exc else ""
        self.fail(ConnectionError(f"rpc: connection to {_fmt(self.addr)} lost{detail}"))


def _fmt(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
