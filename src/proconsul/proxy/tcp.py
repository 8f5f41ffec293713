"""tcp_proxy: bytes between a downstream connection and one upstream connection.

Job: `TcpDownstream` is the protocol of an accepted connection on a
tcp_proxy listener: it asks RBAC (network filter) once, connects to the
listener's cluster and pipes both ways; `TcpUpstream` is the other side.

Rules:
- RBAC decides once, at connection time, with the peer's SPIFFE ID; a denied
  connection is closed at once (`rbac.denied`). A later intention change
  does not touch an established connection, as in Consul.
- Flow control both ways: when one side's write buffer is full, the other
  side stops reading until it drains; bytes that arrive before the upstream
  is connected are held (reading paused meanwhile).
- A half-close (EOF) is passed on where the other side's transport can
  write one (plain TCP); a TLS side cannot, so the connection then stays
  open until the other end closes. Either side closing closes the other
  after its pending bytes are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from proconsul.proxy.upstream import RuntimeView, UpstreamError

log = logging.getLogger("proconsul.proxy")


class TcpUpstream(asyncio.Protocol):
    __slots__ = ("down", "transport")

    def __init__(self, down: TcpDownstream) -> None:
        self.down = down
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.down.send(data)

    def eof_received(self) -> bool | None:
        # The upstream is done sending: pass the half-close on where the
        # downstream can take one, else close (after what is buffered).
        down = self.down.transport
        if down is not None and not self.down.closed and down.can_write_eof():
            down.write_eof()
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.upstream_gone()

    def pause_writing(self) -> None:
        self.down.pause_reading()

    def resume_writing(self) -> None:
        self.down.resume_reading()


class TcpDownstream(asyncio.Protocol):
    def __init__(self, runtime: RuntimeView, listener: str, cluster: str) -> None:
        self.runtime = runtime
        self.listener = listener
        self.cluster = cluster
        self.transport: Any = None
        self.upstream: TcpUpstream | None = None
        self.held: list[bytes] = []
        self.closed = False
        self.released = False
        self.eof_pending = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.pause_reading()
        self.runtime.track(self)
        self._task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        try:
            transport, protocol, _ = await self.runtime.clusters.connect(
                self.cluster, lambda: TcpUpstream(self)
            )
        except UpstreamError:
            self.close()
            return
        except Exception:  # a bug must cost one connection, not the proxy
            log.exception("listener %s: connecting upstream failed", self.listener)
            self.close()
            return
        if self.closed:
            transport.close()
            self.runtime.clusters.release(self.cluster)
            return
        self.upstream = protocol
        for chunk in self.held:
            transport.write(chunk)
        self.held.clear()
        if self.eof_pending and transport.can_write_eof():
            transport.write_eof()
        self.resume_reading()

    def data_received(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(data)
        else:
            self.held.append(data)

    def eof_received(self) -> bool | None:
        # The client is done sending; keep the connection for the answer.
        upstream = self.upstream
        if upstream is None or upstream.transport is None:
            self.eof_pending = True
        elif upstream.transport.can_write_eof():
            upstream.transport.write_eof()
        return True

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.closed:
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.closed and self.upstream is not None:
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    def pause_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.resume_reading()

    def upstream_gone(self) -> None:
        if not self.released:
            self.released = True
            self.runtime.clusters.release(self.cluster)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.runtime.untrack(self)
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.close()
