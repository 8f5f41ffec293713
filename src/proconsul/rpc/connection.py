"""The byte path both ends of an RPC connection share, as one asyncio Protocol.

Job: bytes from the socket -> (TLS) -> frames; frames -> (TLS) -> socket,
with writes coalesced per loop iteration and flow control both ways.

Why TLS runs here over memory BIOs instead of `create_server(ssl=...)`: the
server must see the first byte before choosing TLS or plaintext (Consul
serves both on one port when `verify_incoming` is off), and it must see every
handshake failure with OpenSSL's reason to count and log it; asyncio's own
TLS layer swallows those. Our frames' first byte is 0x00 or 0x01 (the length
is at most 16 MiB) and a TLS connection's first byte is 0x16 (a handshake
record), so one byte decides.

Rules:
- Nothing a peer sends raises out of a callback: TLS errors and bad frames
  become `tls_failed` / `frame_error` calls, and the subclass closes.
- Writes queued in one loop iteration go out as one TLS record run and one
  `transport.write`, which matters for many small answers on one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from proconsul.rpc.frames import MAX_FRAME_SIZE, Frame, FrameDecoder, FrameError

TLS_HANDSHAKE_RECORD = 0x16  # first byte of every TLS connection
_READ_CHUNK = 256 * 1024


class TLSEngine:
    """An `ssl.SSLObject` over memory BIOs: ciphertext in, plaintext out, and back."""

    def __init__(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
        )
        self.handshake_done = False

    def start(self) -> bytes:
        """The client's first flight (ClientHello)."""
        self._handshake()
        return self._outgoing.read()

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Feed ciphertext; returns (plaintext, ciphertext to send). Raises ssl.SSLError."""
        self._incoming.write(data)
        if not self.handshake_done:
            self._handshake()
            if not self.handshake_done:
                return b"", self._outgoing.read()
        chunks: list[bytes] = []
        read = self._obj.read
        try:
            while True:
                chunk = read(_READ_CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        plain = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return plain, self._outgoing.read()

    def send(self, data: bytes | bytearray | memoryview) -> bytes:
        self._obj.write(data)
        return self._outgoing.read()

    def pending(self) -> bytes:
        """Ciphertext OpenSSL queued on its own, e.g. the alert after a failed handshake."""
        return self._outgoing.read()

    def close(self) -> bytes:
        """close_notify for the peer (best effort)."""
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._obj.unwrap()
        return self._outgoing.read()

    def peercert(self) -> dict[str, Any]:
        return self._obj.getpeercert() or {}

    def _handshake(self) -> None:
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return
        self.handshake_done = True


class FramedProtocol(asyncio.Protocol):
    """Base for server and client connections. Subclasses set `tls` before
    the first `feed_wire` and implement the hooks at the bottom."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_frame_size: int = MAX_FRAME_SIZE):
        self.loop = loop
        self.max_frame_size = max_frame_size
        self.transport: asyncio.Transport | None = None
        self.tls: TLSEngine | None = None
        self.tls_up = False
        self.closed = False
        self._decoder = FrameDecoder(max_frame_size)
        self._out: list[bytes | bytearray] = []
        self._flush_handle: asyncio.Handle | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    # --- reading ---------------------------------------------------------------

    def feed_wire(self, data: bytes) -> None:
        """Bytes as read from the socket."""
        if self.tls is not None:
            try:
                plain, out = self.tls.receive(data)
            except ssl.SSLError as exc:
                self._write_raw(self.tls.pending())  # the alert tells the peer why
                self.tls_failed(exc)
                return
            self._write_raw(out)
            if not self.tls_up and self.tls.handshake_done:
                self.tls_up = True
                self.tls_established()
            if not plain or self.closed:
                return
            data = plain
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            self.frame_error(exc)
            return
        for frame in frames:
            if self.closed:
                return
            self.frame_received(frame)

    def eof_received(self) -> bool:
        return False  # half-open connections serve no purpose here: close

    # --- writing ---------------------------------------------------------------

    def send(self, data: bytes | bytearray) -> None:
        """Queue one encoded frame; it goes out at the end of this loop iteration."""
        if self.closed:
            return
        self._out.append(data)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self.closed or not self._out:
            self._out.clear()
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        if self.tls is not None:
            try:
                data = self.tls.send(data)
            except ssl.SSLError as exc:
                self.tls_failed(exc)
                return
        self._write_raw(data)

    def _write_raw(self, data: bytes | bytearray) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait while the socket's send buffer is over its high-water mark."""
        if not self._write_paused or self.closed:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    # --- closing ---------------------------------------------------------------

    def close(self) -> None:
        """Flush what is queued, say goodbye (TLS close_notify), close."""
        if self.closed:
            return
        self._flush()
        if self.closed:
            return  # the flush hit a TLS error and dropped the connection
        if self.tls is not None and self.tls_up:
            self._write_raw(self.tls.close())
        self._mark_closed()
        if self.transport is not None:
            self.transport.close()

    def drop(self) -> None:
        """Close after an error: queued frames are dropped, but bytes already
        handed to the transport (the TLS alert that says why) still go out,
        followed by FIN rather than a reset that could destroy them."""
        self._mark_closed()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._mark_closed()
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._mark_closed()
        self.lost(exc)

    def _mark_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._out.clear()
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionError("rpc: connection closed"))

    # --- hooks -----------------------------------------------------------------

    def frame_received(self, frame: Frame) -> None:
        raise NotImplementedError

    def frame_error(self, exc: FrameError) -> None:
        raise NotImplementedError

    def tls_failed(self, exc: ssl.SSLError) -> None:
        raise NotImplementedError

    def tls_established(self) -> None:
        pass

    def lost(self, exc: Exception | None) -> None:
        pass
