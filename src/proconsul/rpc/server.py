"""The RPC server: named async handlers behind a TLS (or plaintext) TCP port.

Job: accept connections, run the TLS handshake (or take plaintext when
allowed), decode request frames, run each request's handler as its own task
and answer with a response or error frame carrying the request's id. One
connection carries many requests at once; answers go out as they finish.

Rules:
- A handler is `async (payload: bytes, peer: PeerInfo) -> bytes`. It may
  raise `RPCError` for an expected refusal, or `ACLDenied` for an ACL one
  (code "acl_denied"): sent as it is, logged at debug. A transport failure
  (`ConnectionError`, `TimeoutError`: a peer the handler talked to died) is
  expected: one warning line, counted as `handler_transport_errors`. Any
  other exception is a bug: logged with its traceback, its message sent as
  the error.
  Nothing a handler or a peer does stops the server.
- A new connection must send its first byte (and finish a TLS handshake)
  within `handshake_timeout_s` (Consul's limits.rpc_handshake_timeout; 0
  disables the limit, as in Consul).
- Every request has a deadline: `request_timeout_s`, or the caller's
  (`timeout_ms`) if sooner, plus a second of grace so the caller's own
  timeout and CANCEL normally come first. `remaining_s()` tells a handler
  how long its caller will still wait.
- In flight per connection is bounded by `max_in_flight_per_conn`. A request
  over the bound is answered at once with a "too_many_requests" error; the
  server never stops reading to enforce it, because a connection full of
  parked blocking queries must not hold up the next Raft heartbeat behind
  them. (`RPCClient` keeps its own, equal or lower, bound, so a well-behaved
  client waits locally and never sees that error.)
- A CANCEL frame stops its request at once and frees its slot; nothing is
  sent back for it.
- Unknown methods answer "rpc: can't find method X" (net/rpc's words, which
  Consul's callers see).
- Refused peers are counted in `stats()` and logged with the reason: TLS
  handshake failures by cause (a peer's alert refusing our certificate is
  "peer_refused_cert", whatever it objected to, and its line says the peer
  refused), plaintext on a TLS-only port, TLS on a plaintext port, bad and
  oversized frames (which close the connection),
  and connections over the per-client limit (`max_conns_per_client`, Consul's
  limits.rpc_max_conns_per_client; 0 means no limit, as in Consul); with
  auto_encrypt's anonymous
  TLS, requests without a verified client certificate for anything but the
  allowed methods.
- `metrics_from_stats` turns `stats()` (this server's or an `RPCClient`'s)
  into flat gauges for /v1/agent/metrics, one per refusal reason, so an
  operator can see which TLS check is turning peers away.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, cast

from proconsul.acl.errors import ACLDenied
from proconsul.rpc.connection import TLS_HANDSHAKE_RECORD, FramedProtocol, TLSEngine
from proconsul.rpc.errors import ErrorCode, RPCError, refusal
from proconsul.rpc.frames import (
    MAX_FRAME_SIZE,
    Frame,
    FrameError,
    FrameKind,
    FrameTooLarge,
    encode_frame,
)
from proconsul.rpc.tls import (
    FAILURE_REASONS,
    PeerInfo,
    classify_tls_failure,
    describe_tls_failure,
    format_address,
    peer_info,
)

log = logging.getLogger("proconsul.rpc")

Handler = Callable[[bytes, PeerInfo], Awaitable[bytes]]

DEFAULT_MAX_IN_FLIGHT = 512
# Above the longest blocking query: 10 minutes plus up to 1/16 of jitter.
DEFAULT_REQUEST_TIMEOUT_S = 700.0
DEFAULT_HANDSHAKE_TIMEOUT_S = 5.0  # Consul's limits.rpc_handshake_timeout
DEFAULT_MAX_CONNS_PER_CLIENT = 100  # Consul's limits.rpc_max_conns_per_client
CALLER_DEADLINE_GRACE_S = 1.0
_REFUSALS_LOGGED_MAX = 1024  # (caller, method) pairs remembered for log-once

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "rpc_deadline", default=None
)


def remaining_s(default: float | None = None) -> float | None:
    """Seconds left before the current request's deadline (inside a handler),
    else `default`. A forwarding handler passes this on as its call timeout."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(0.0, deadline - asyncio.get_running_loop().time())


def metrics_from_stats(prefix: str, stats: Mapping[str, Any]) -> dict[str, float]:
    """Flat gauges from a `stats()` dict: `<prefix>.<key>` for each counter and
    `<prefix>.<key>.<sub>` for each entry of a nested one (the refusals by
    reason). A reason not seen yet has no gauge; the `_total` one always has."""
    out: dict[str, float] = {}
    for key, value in stats.items():
        if isinstance(value, Mapping):
            for sub, count in value.items():
                out[f"{prefix}.{key}.{sub}"] = float(count)
        elif isinstance(value, int | float):
            out[f"{prefix}.{key}"] = float(value)
    return out


class RPCServer:
    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        ssl_context: ssl.SSLContext | None = None,
        accept_plaintext: bool = False,
        max_in_flight_per_conn: int = DEFAULT_MAX_IN_FLIGHT,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
        max_conns_per_client: int = DEFAULT_MAX_CONNS_PER_CLIENT,
        max_frame_size: int = MAX_FRAME_SIZE,
        anonymous_methods: Collection[str] = (),
    ) -> None:
        """`handlers` is looked up on every request, so a dict the caller fills
        later (Raft's handlers, say) works. With `ssl_context` the port speaks
        TLS, and also plaintext if `accept_plaintext` (no verify_incoming).

        When the context verifies client certificates but lets a client
        without one finish the handshake (`server_context(...,
        allow_anonymous_tls=True)`, for auto_encrypt), such a client may call
        only `anonymous_methods` (e.g. the certificate-signing method)."""
        if max_in_flight_per_conn < 1:
            raise ValueError("max_in_flight_per_conn must be at least 1")
        if max_frame_size >= TLS_HANDSHAKE_RECORD << 24:
            # A length prefix could then start with 0x16 and pass for TLS.
            raise ValueError("max_frame_size too large to tell frames from TLS")
        self.handlers = handlers
        self.ssl_context = ssl_context
        self.accept_plaintext = accept_plaintext or ssl_context is None
        self.max_in_flight_per_conn = max_in_flight_per_conn
        self.request_timeout_s = request_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.max_conns_per_client = max_conns_per_client
        self.max_frame_size = max_frame_size
        self.anonymous_methods = frozenset(anonymous_methods)
        # Whether a request needs a verified client certificate: the context
        # asks for one (verify_incoming) even if it let the handshake pass.
        self.require_verified_peer = (
            ssl_context is not None and ssl_context.verify_mode != ssl.CERT_NONE
        )
        self._server: asyncio.Server | None = None
        self._conns: set[_ServerConnection] = set()
        self._conns_per_host: Counter[str] = Counter()
        self._counters: Counter[str] = Counter()
        self._refusals_logged: set[tuple[str, str]] = set()
        self._tls_failures: Counter[str] = Counter()
        self._address: tuple[str, int] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen; returns the bound (host, port) (port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self, loop), host, port, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self._address = (str(sockname[0]), int(sockname[1]))
        return self._address

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("RPCServer is not started")
        return self._address

    async def close(self) -> None:
        """Stop listening, close every connection, cancel what is in flight."""
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task[None]] = []
        for conn in list(self._conns):
            tasks.extend(conn.tasks())
            conn.shutdown()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def stats(self) -> dict[str, Any]:
        """Counters since start; `tls_handshake_failures` is by reason."""
        counters: dict[str, Any] = dict(self._counters)
        for key in _COUNTER_KEYS:
            counters.setdefault(key, 0)
        counters["connections_open"] = len(self._conns)
        counters["in_flight"] = sum(c.in_flight for c in self._conns)
        counters["tls_handshake_failures"] = dict(self._tls_failures)
        counters["tls_handshake_failures_total"] = sum(self._tls_failures.values())
        return counters

    # --- called by connections ---------------------------------------------------

    def count(self, key: str, n: int = 1) -> None:
        self._counters[key] += n

    def refused(self, peer_label: str, method: str, code: str, message: str) -> None:
        """A handler refused the caller: counted always, logged once per caller
        and method (a client certificate knocking on `Raft.Step` every heartbeat
        must not flood the log)."""
        if code == ErrorCode.PERMISSION_DENIED:
            self.count("refused_not_permitted")
            key = (peer_label, method)
            if key not in self._refusals_logged:
                if len(self._refusals_logged) >= _REFUSALS_LOGGED_MAX:
                    self._refusals_logged.clear()
                self._refusals_logged.add(key)
                log.warning("rpc: refused %s from %s: %s", method, peer_label, message)
                return
        elif code == ErrorCode.ACL_DENIED:
            self.count("refused_acl")
        log.debug("rpc: %s from %s refused: %s", method, peer_label, message)

    def tls_refused(
        self, conn: _ServerConnection, reason: str, detail: str, *, by_peer: bool = False
    ) -> None:
        """Count and log a failed handshake. `by_peer`: the peer's alert ended it
        (it refused our certificate), so the line must not read as our refusal."""
        self._tls_failures[reason] += 1
        if by_peer:
            log.warning(
                "rpc: TLS connection from %s failed: %s",
                conn.peer_label,
                describe_tls_failure(reason, detail),
            )
            return
        log.warning(
            "rpc: refused TLS connection from %s: %s",
            conn.peer_label,
            describe_tls_failure(reason, detail),
        )

    def opened(self, conn: _ServerConnection) -> bool:
        self.count("connections_accepted")
        host = conn.peer.address[0] if conn.peer.address else ""
        limit = self.max_conns_per_client
        if limit > 0 and self._conns_per_host[host] >= limit:
            self.count("connections_over_limit")
            log.warning(
                "rpc: refused connection from %s: over %d connections from that address",
                conn.peer_label,
                self.max_conns_per_client,
            )
            return False
        self._conns_per_host[host] += 1
        self._conns.add(conn)
        return True

    def closed(self, conn: _ServerConnection) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            host = conn.peer.address[0] if conn.peer.address else ""
            self._conns_per_host[host] -= 1
            if self._conns_per_host[host] <= 0:
                del self._conns_per_host[host]


# Reasons that are about a certificate (see rpc/tls.py FAILURE_REASONS).
_CERTIFICATE_REASONS = frozenset(
    {
        "wrong_ca",
        "expired_cert",
        "cert_not_yet_valid",
        "hostname_mismatch",
        "bad_cert_purpose",
        "cert_verify_failed",
        "peer_refused_cert",
    }
)

_COUNTER_KEYS = (
    "connections_accepted",
    "connections_over_limit",
    "plaintext_connections",
    "tls_connections",
    "tls_on_plaintext_port",
    "requests",
    "one_way",
    "responses",
    "errors",
    "unknown_methods",
    "handler_errors",
    "handler_transport_errors",
    "timeouts",
    "too_many_requests",
    "cancelled",
    "bad_frames",
    "oversized_frames",
    "unknown_kinds",
    "tls_stream_errors",
    "first_byte_timeouts",
    "unverified_requests",
    "refused_not_permitted",
    "refused_acl",
)


class _ServerConnection(FramedProtocol):
    def __init__(self, server: RPCServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, server.max_frame_size)
        self.server = server
        self.peer = PeerInfo(address=None)
        self.inflight: dict[int, asyncio.Task[None]] = {}  # requests, by id
        self.one_way: set[asyncio.Task[None]] = set()  # one-way frames share id 0
        self._mode: str | None = None  # "tls" or "plain", from the first byte
        self._registered = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def peer_label(self) -> str:
        return self.peer.describe() if self.peer.verified else format_address(self.peer.address)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio's.
        self.transport = cast(asyncio.Transport, transport)
        self.peer = peer_info(transport.get_extra_info("peername"), None, tls=False)
        if not self.server.opened(self):
            self.abort()
            return
        self._registered = True
        # A peer gets handshake_timeout_s to send its first byte and, for TLS,
        # to finish the handshake; then it may idle as long as it likes.
        if self.server.handshake_timeout_s > 0:
            self._timer = self.loop.call_later(
                self.server.handshake_timeout_s, self._handshake_timeout
            )

    def data_received(self, data: bytes) -> None:
        if self._mode is None and not self._choose_mode(data):
            return
        self.feed_wire(data)

    def _choose_mode(self, data: bytes) -> bool:
        server = self.server
        if data[0] == TLS_HANDSHAKE_RECORD:
            if server.ssl_context is None:
                server.count("tls_on_plaintext_port")
                log.warning(
                    "rpc: refused TLS connection from %s: this port is plaintext", self.peer_label
                )
                self.abort()
                return False
            self._mode = "tls"
            self.tls = TLSEngine(server.ssl_context, server_side=True)
            return True
        if not server.accept_plaintext:
            server.tls_refused(self, "not_tls", "")
            self.abort()
            return False
        self._mode = "plain"
        self._cancel_timer()
        server.count("plaintext_connections")
        return True

    def tls_established(self) -> None:
        self._cancel_timer()
        assert self.tls is not None
        self.peer = peer_info(self.peer.address, self.tls.peercert(), tls=True)
        self.server.count("tls_connections")

    def tls_failed(self, exc: ssl.SSLError) -> None:
        if isinstance(exc, ssl.SSLZeroReturnError):
            self.close()  # the peer said goodbye properly
            return
        if self.tls_up:
            self.server.count("tls_stream_errors")
            log.debug("rpc: TLS error from %s: %s", self.peer_label, exc)
        else:
            reason, detail = classify_tls_failure(exc)
            # An alert is the peer ending the handshake. About a certificate it
            # is the peer's verdict on ours (a client with another CA file, or
            # verify_server_hostname against our name): counted apart from our
            # own refusals, the alert kept as the detail.
            by_peer = "ALERT" in (exc.reason or "")
            if by_peer and reason in _CERTIFICATE_REASONS:
                reason = "peer_refused_cert"
            self.server.tls_refused(self, reason, detail, by_peer=by_peer)
        self.drop()

    def _handshake_timeout(self) -> None:
        self._timer = None
        if self.closed:
            return
        if self._mode == "tls":
            self.server.tls_refused(self, "handshake_timeout", "")
        else:
            self.server.count("first_byte_timeouts")
            log.warning(
                "rpc: closing connection from %s: nothing sent within %gs",
                self.peer_label,
                self.server.handshake_timeout_s,
            )
        self.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def frame_error(self, exc: FrameError) -> None:
        if isinstance(exc, FrameTooLarge):
            self.server.count("oversized_frames")
        else:
            self.server.count("bad_frames")
        log.warning("rpc: closing connection from %s: %s", self.peer_label, exc)
        self.drop()

    def frame_received(self, frame: Frame) -> None:
        kind = frame.kind
        if kind == FrameKind.REQUEST:
            self._start(frame, respond=True)
        elif kind == FrameKind.ONE_WAY:
            self._start(frame, respond=False)
        elif kind == FrameKind.CANCEL:
            task = self.inflight.pop(frame.id, None)
            if task is not None:
                task.cancel()
                self.server.count("cancelled")
        else:
            # RESPONSE/ERROR from a caller, or a kind newer than this server.
            self.server.count("unknown_kinds")

    def _start(self, frame: Frame, *, respond: bool) -> None:
        server = self.server
        server.count("requests" if respond else "one_way")
        if respond and frame.id in self.inflight:
            self._fail(
                frame,
                respond,
                ErrorCode.BAD_REQUEST,
                f"rpc: request id {frame.id} is already in flight",
            )
            return
        if self.in_flight >= server.max_in_flight_per_conn:
            server.count("too_many_requests")
            self._fail(
                frame,
                respond,
                ErrorCode.TOO_MANY_REQUESTS,
                f"rpc: too many requests in flight on this connection "
                f"(limit {server.max_in_flight_per_conn})",
            )
            return
        if (
            server.require_verified_peer
            and not self.peer.verified
            and frame.method not in server.anonymous_methods
        ):
            server.count("unverified_requests")
            log.warning(
                "rpc: refused %s from %s: %s",
                frame.method,
                self.peer_label,
                FAILURE_REASONS["missing_client_cert"],
            )
            self._fail(
                frame,
                respond,
                ErrorCode.PERMISSION_DENIED,
                "Permission denied: a verified client certificate is required",
            )
            return
        handler = server.handlers.get(frame.method)
        if handler is None:
            server.count("unknown_methods")
            self._fail(
                frame, respond, ErrorCode.UNKNOWN_METHOD, f"rpc: can't find method {frame.method}"
            )
            return
        budget = server.request_timeout_s
        timeout = budget
        if frame.timeout_ms:
            budget = min(budget, frame.timeout_ms / 1000)
            # The caller times out first and sends CANCEL; our own deadline,
            # a little later, only backs that up.
            timeout = min(timeout, budget + CALLER_DEADLINE_GRACE_S)
        task = self.loop.create_task(self._run(frame, handler, budget, timeout, respond))
        if respond:
            self.inflight[frame.id] = task
        else:
            self.one_way.add(task)

    async def _run(
        self, frame: Frame, handler: Handler, budget: float, timeout: float, respond: bool
    ) -> None:
        server = self.server
        task = asyncio.current_task()
        _deadline.set(self.loop.time() + budget)
        try:
            scope = asyncio.timeout(timeout)
            try:
                async with scope:
                    result = await handler(frame.payload, self.peer)
            except TimeoutError:
                if not scope.expired():
                    raise
                server.count("timeouts")
                self._fail(
                    frame,
                    respond,
                    ErrorCode.TIMEOUT,
                    f"rpc: {frame.method} timed out after {timeout:g}s",
                )
                return
            if respond:
                self._respond(frame, result)
        except asyncio.CancelledError:
            raise
        except (RPCError, ACLDenied) as exc:
            code, message = refusal(exc)
            server.count("handler_errors")
            server.refused(self.peer_label, frame.method, code, message)
            self._fail(frame, respond, code, message)
        except (ConnectionError, TimeoutError) as exc:
            # Expected when a peer the handler talks to dies: one line, no traceback.
            server.count("handler_errors")
            server.count("handler_transport_errors")
            log.warning("rpc: %s from %s failed: %s", frame.method, self.peer_label, exc)
            self._fail(frame, respond, ErrorCode.HANDLER, str(exc) or type(exc).__name__)
        except Exception as exc:
            # Anything else is a bug: the traceback is what it takes to fix it.
            server.count("handler_errors")
            log.error("rpc: %s handler failed", frame.method, exc_info=True)
            self._fail(frame, respond, ErrorCode.HANDLER, str(exc) or type(exc).__name__)
        finally:
            if not respond:
                self.one_way.discard(task)
            elif self.inflight.get(frame.id) is task:
                del self.inflight[frame.id]

    def _respond(self, frame: Frame, result: bytes) -> None:
        try:
            data = encode_frame(
                Frame(kind=FrameKind.RESPONSE, id=frame.id, payload=bytes(result)),
                self.max_frame_size,
            )
        except FrameTooLarge as exc:
            self._fail(frame, True, ErrorCode.HANDLER, f"rpc: {frame.method} response: {exc}")
            return
        self.server.count("responses")
        self.send(data)

    def _fail(self, frame: Frame, respond: bool, code: str, message: str) -> None:
        if not respond:
            log.debug("rpc: one-way %s failed: %s", frame.method, message)
            return
        self.server.count("errors")
        self.send(encode_frame(Frame(kind=FrameKind.ERROR, id=frame.id, error=message, code=code)))

    def pause_writing(self) -> None:
        # The peer is not reading its answers: stop reading its requests, so
        # what we hold for it stays bounded by the in-flight limit.
        super().pause_writing()
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    @property
    def in_flight(self) -> int:
        return len(self.inflight) + len(self.one_way)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [*self.inflight.values(), *self.one_way]

    def shutdown(self) -> None:
        for task in self.tasks():
            task.cancel()
        self.close()

    def lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        for task in self.tasks():
            task.cancel()
        self.inflight.clear()
        self.one_way.clear()
        if self._registered:
            self.server.closed(self)
