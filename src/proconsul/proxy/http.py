"""http_connection_manager: HTTP/1.1 requests routed to clusters, with RBAC and retries.

Job: `HttpDownstream` parses requests on an accepted connection (httptools),
checks the HTTP RBAC filter, picks the route and the cluster, sends the
request upstream (pooled keep-alive connections, `UpstreamHttp`), retries as
the route says, and writes the answer with the route's response headers.

Rules (Envoy's behaviour for what our translator emits):
- RBAC per request with the peer's SPIFFE ID, against the listener's
  configuration of that moment (an intention change applies to the next
  request, also on a kept-alive connection); denied: 403
  `RBAC: access denied`.
- No route: 404. No healthy endpoint or no connection: 503
  `no healthy upstream` / `upstream connect error or disconnect/reset
  before headers. reset reason: connection failure`. Route timeout: 504
  `upstream request timeout`; the timeout spans all tries.
- Retries: up to the route's count, on connect failure (`connect-failure`
  or `5xx`/`gateway-error`), and on the statuses the policy names; each try
  picks the next endpoint.
- Requests and responses are read whole (bounded by `MAX_BODY`) and sent
  with Content-Length; hop-by-hop headers are not forwarded. Requests on one
  connection are answered in order.
- The public listener adds `x-forwarded-client-cert` for the caller as Envoy
  does (By, Hash, Cert, Subject, URI, DNS; tls.py `client_cert_details`),
  after any the caller sent.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httptools

from proconsul.proxy.matchers import RequestView
from proconsul.proxy.routing import HeaderChanges, Route, rewrite_path
from proconsul.proxy.stats import ClusterStats, ListenerStats
from proconsul.proxy.upstream import (
    CONNECT_FAILURE,
    NO_HEALTHY,
    OVERFLOW,
    RuntimeView,
    UpstreamError,
)

if TYPE_CHECKING:
    from proconsul.proxy.config import Endpoint

log = logging.getLogger("proconsul.proxy")

MAX_BODY = 64 << 20
MAX_QUEUED = 16  # pipelined requests held before reading pauses
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"upgrade",
        b"content-length",
        b"trailer",
        b"expect",
    }
)
BODYLESS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS"})
REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
RBAC_DENIED = b"RBAC: access denied"
NO_HEALTHY_TEXT = b"no healthy upstream"
CONNECT_FAILED_TEXT = (
    b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
)
OVERFLOW_TEXT = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
RESET_TEXT = (
    b"upstream connect error or disconnect/reset before headers. "
    b"reset reason: connection termination"
)
TIMEOUT_TEXT = b"upstream request timeout"


class Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "started", "url")

    def __init__(self) -> None:
        self.method = b""
        self.url = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.keep_alive = True
        self.started = 0.0


class Response:
    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.keep_alive = True


class LazyHeaders(Mapping[str, str]):
    """A request's headers by lower-case name (repeats joined with ','), decoded
    only when a matcher first asks: most routes look at the path alone."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._decoded: dict[str, str] | None = None

    def _all(self) -> dict[str, str]:
        decoded = self._decoded
        if decoded is None:
            decoded = self._decoded = {}
            for name, value in self._raw:
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                decoded[key] = f"{decoded[key]},{text}" if key in decoded else text
        return decoded

    def __getitem__(self, key: str) -> str:
        return self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


class UpstreamReset(Exception):
    """The upstream closed or sent garbage before a whole response."""


# ------------------------------------------------------------------ upstream


class UpstreamHttp(asyncio.Protocol):
    """One keep-alive connection to an endpoint; one request at a time."""

    def __init__(self, pool: Pool, cluster: str) -> None:
        self.pool = pool
        self.cluster = cluster
        self.endpoint: Endpoint | None = None
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.response = Response()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.reused = False
        self.head = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def request(self, data: bytes, head: bool = False) -> asyncio.Future[Response]:
        self.head = head
        self.response = Response()
        self.parser = httptools.HttpResponseParser(self)
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return waiter

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            self.response.headers.clear()  # an interim answer (100 Continue): the next one counts
            return
        self.response.status = status
        if self.head:  # no body follows, whatever the length says; not reused
            self.response.keep_alive = False
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(self.response)
            self.close()

    def on_body(self, body: bytes) -> None:
        self.response.body += body
        if len(self.response.body) > MAX_BODY:
            self._fail()

    def on_message_complete(self) -> None:
        response = self.response
        if response.status == 0:
            return  # the end of an interim answer
        response.status = self.parser.get_status_code()
        response.keep_alive = self.parser.should_keep_alive()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamReset())
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
        response, waiter = self.response, self.waiter
        if waiter is not None and response.status and not waiter.done():
            # A response without a length ends with its connection.
            response.keep_alive = False
            self.waiter = None
            waiter.set_result(response)
        self._fail_waiter()
        self.pool.lost(self)

    def _fail_waiter(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamReset())


class Pool:
    """Idle upstream connections per (cluster, endpoint)."""

    def __init__(self, runtime: RuntimeView) -> None:
        self.runtime = runtime
        self.idle: dict[tuple[str, str, int], list[UpstreamHttp]] = collections.defaultdict(list)

    async def acquire(self, cluster: str) -> UpstreamHttp:
        balancer = self.runtime.clusters.balancers.get(cluster)
        endpoint = balancer.pick(time.monotonic()) if balancer is not None else None
        if endpoint is not None:
            idle = self.idle.get((cluster, endpoint.host, endpoint.port))
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    conn.reused = True
                    return conn
        _, protocol, endpoint = await self.runtime.clusters.connect(
            cluster, lambda: UpstreamHttp(self, cluster), endpoint
        )
        protocol.endpoint = endpoint
        protocol.reused = False
        return protocol  # type: ignore[no-any-return]

    def release(self, conn: UpstreamHttp, keep: bool) -> None:
        if keep and not conn.closed and conn.endpoint is not None and not self.runtime.draining:
            key = (conn.cluster, conn.endpoint.host, conn.endpoint.port)
            self.idle[key].append(conn)
        else:
            conn.close()

    def lost(self, conn: UpstreamHttp) -> None:
        if conn.endpoint is not None:
            idle = self.idle.get((conn.cluster, conn.endpoint.host, conn.endpoint.port))
            if idle and conn in idle:
                idle.remove(conn)
        self.runtime.clusters.release(conn.cluster)

    def close_all(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle.clear()


# ---------------------------------------------------------------- downstream


def _serialize_request(
    request: Request, path: bytes, changes: HeaderChanges, extra: bytes
) -> bytes:
    parts: list[bytes | bytearray] = [request.method, b" ", path, b" HTTP/1.1\r\n"]
    dropped = changes.dropped
    for name, value in request.headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in dropped:
            continue
        parts += [name, b": ", value, b"\r\n"]
    parts.append(changes.lines)
    parts.append(extra)
    if request.body or request.method not in BODYLESS:
        parts.append(b"content-length: %d\r\n" % len(request.body))
    parts.append(b"\r\n")
    parts.append(request.body)
    return b"".join(parts)


def _serialize_response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes | bytearray,
    changes: HeaderChanges,
    keep_alive: bool,
    head: bool = False,
) -> bytes:
    reason = REASONS.get(status, b"Unknown")
    parts: list[bytes | bytearray] = [b"HTTP/1.1 %d " % status, reason, b"\r\n"]
    dropped = changes.dropped
    for name, value in headers:
        lower = name.lower()
        if (lower in HOP_BY_HOP and not (head and lower == b"content-length")) or lower in dropped:
            continue
        parts += [name, b": ", value, b"\r\n"]
    parts.append(changes.lines)
    if not head:
        parts.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


def _local_reply(status: int, text: bytes, keep_alive: bool) -> bytes:
    headers = [(b"content-type", b"text/plain")] if text else []
    return _serialize_response(status, headers, text, HeaderChanges(), keep_alive)


class HttpDownstream(asyncio.Protocol):
    def __init__(
        self, runtime: RuntimeView, listener: str, principal: str | None, xfcc: str = ""
    ) -> None:
        self.runtime = runtime
        self.listener = listener
        self.principal = principal
        self.stats: ListenerStats = runtime.stats.listener(listener)
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.current = Request()
        self.queue: collections.deque[Request] = collections.deque()
        self.worker: asyncio.Task[None] | None = None
        self.closed = False
        self.paused = False
        self.busy = False
        # x-forwarded-client-cert, for the public listener's local app
        self.xfcc = f"x-forwarded-client-cert: {xfcc}\r\n".encode() if xfcc else b""

    # parsing ------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.runtime.track(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply_and_close(400, b"upgrades are not supported")
        except httptools.HttpParserError:
            self._reply_and_close(400, b"")

    def on_message_begin(self) -> None:
        self.current = Request()
        self.current.started = time.perf_counter()

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # We read the body before forwarding: ask a waiting client for it at once.
        if self.parser.get_http_version() == "1.1":
            for name, value in self.current.headers:
                if name.lower() == b"expect" and value.lower() == b"100-continue":
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.current.body += body
        if len(self.current.body) > MAX_BODY:
            raise httptools.HttpParserError("body too large")

    def on_message_complete(self) -> None:
        request = self.current
        request.method = self.parser.get_method()
        request.keep_alive = self.parser.should_keep_alive()
        self.queue.append(request)
        if len(self.queue) >= MAX_QUEUED and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        if self.worker is None or self.worker.done():
            self.worker = asyncio.get_running_loop().create_task(self._work())

    def _reply_and_close(self, status: int, text: bytes) -> None:
        if not self.closed:
            self.transport.write(_local_reply(status, text, False))
            self.close()

    # serving -------------------------------------------------------------
    async def _work(self) -> None:
        while self.queue and not self.closed:
            request = self.queue.popleft()
            if self.paused and len(self.queue) < MAX_QUEUED // 2:
                self.paused = False
                self.transport.resume_reading()
            self.busy = True
            self.runtime.request_started()
            try:
                keep = await self._serve(request)
            except Exception:  # a bug must cost one connection, not the proxy
                log.exception("listener %s: request failed", self.listener)
                keep = self._finish(request, 500, _local_reply(500, b"", False), False)
            finally:
                self.busy = False
                self.runtime.request_done()
            if not keep:
                self.close()
                return
            if self.runtime.draining:
                self.close()
                return

    async def _serve(self, request: Request) -> bool:
        stats = self.stats
        stats.downstream_rq_total += 1
        listener = self.runtime.config.listeners.get(self.listener)
        manager = listener.http if listener is not None else None
        keep = request.keep_alive and not self.runtime.draining
        if manager is None:
            return self._finish(request, 503, _local_reply(503, b"listener removed", False), False)
        raw_url = bytes(request.url)
        if raw_url[:1] == b"/":  # origin form, nearly always: no parser needed
            raw_path, _, raw_query = raw_url.partition(b"?")
        else:
            try:
                url = httptools.parse_url(raw_url)
            except httptools.HttpParserInvalidURLError:
                return self._finish(request, 400, _local_reply(400, b"", False), False)
            raw_path, raw_query = url.path or b"/", url.query or b""
        path = raw_path.decode("latin-1")
        query = raw_query.decode("latin-1")
        headers = LazyHeaders(request.headers)
        view = RequestView(request.method.decode("latin-1"), path, query, headers)
        if manager.rbac is not None:
            if not manager.rbac.allows(self.principal, view):
                stats.rbac_denied += 1
                return self._finish(request, 403, _local_reply(403, RBAC_DENIED, keep), keep)
            stats.rbac_allowed += 1
        table = manager.routes or self.runtime.config.routes.get(manager.rds_name)
        route = table.select(view) if table is not None else None
        if route is None:
            return self._finish(request, 404, _local_reply(404, b"", keep), keep)
        return await self._forward(request, route, path, query, keep)

    async def _forward(
        self, request: Request, route: Route, path: str, query: str, keep: bool
    ) -> bool:
        leg = route.legs[0] if len(route.legs) == 1 else route.pick(self.runtime.rng.random())
        target = rewrite_path(route, path)
        raw_path = (target + ("?" + query if query else "")).encode("latin-1")
        extra = self.xfcc
        data = _serialize_request(request, raw_path, leg.request_headers, extra)
        clusters = self.runtime.clusters
        cstats: ClusterStats = clusters.cluster_stats(leg.cluster)
        retry = route.retry
        head = request.method == b"HEAD"
        tries = 1 + retry.num_retries
        failure = CONNECT_FAILED_TEXT
        status = 503
        balancer = clusters.balancers.get(leg.cluster)
        if balancer is not None and not balancer.may_request():
            cstats.upstream_rq_pending_overflow += 1
            return self._finish(request, 503, _local_reply(503, OVERFLOW_TEXT, keep), keep)
        if balancer is not None:
            balancer.requests += 1
        try:
            async with asyncio.timeout(route.timeout_s or None):
                for attempt in range(tries):
                    if attempt:
                        cstats.upstream_rq_retry += 1
                    last = attempt == tries - 1
                    started = time.perf_counter()
                    try:
                        response, conn = await self._exchange(leg.cluster, data, head)
                    except UpstreamError as err:
                        status, failure = 503, _failure_text(err.kind)
                        retriable = err.kind == CONNECT_FAILURE and (
                            retry.on_connect_failure or retry.on_5xx or retry.on_gateway_error
                        )
                        if retriable and not last:
                            continue
                        break
                    except UpstreamReset:
                        status, failure = 503, RESET_TEXT
                        if (retry.on_5xx or retry.on_gateway_error) and not last:
                            continue
                        break
                    cstats.upstream_rq_total += 1
                    cstats.responses.count(response.status)
                    cstats.rq_time.record((time.perf_counter() - started) * 1000)
                    if conn.endpoint is not None:
                        clusters.report(leg.cluster, conn.endpoint, response.status < 500)
                    if retry.retries_status(response.status) and not last:
                        continue
                    reply = _serialize_response(
                        response.status,
                        response.headers,
                        response.body,
                        leg.response_headers,
                        keep,
                        head,
                    )
                    return self._finish(request, response.status, reply, keep)
        except TimeoutError:
            cstats.upstream_rq_timeout += 1
            return self._finish(request, 504, _local_reply(504, TIMEOUT_TEXT, keep), keep)
        finally:
            if balancer is not None:
                balancer.requests -= 1
        return self._finish(request, status, _local_reply(status, failure, keep), keep)

    async def _exchange(
        self, cluster: str, data: bytes, head: bool
    ) -> tuple[Response, UpstreamHttp]:
        pool = self.runtime.pool
        for _ in range(2):
            conn = await pool.acquire(cluster)
            try:
                response = await conn.request(data, head)
            except UpstreamReset:
                if conn.reused:
                    continue  # a kept-alive connection the server had closed: try a new one
                if conn.endpoint is not None:
                    self.runtime.clusters.report(cluster, conn.endpoint, False)
                raise
            except BaseException:
                conn.close()
                raise
            pool.release(conn, response.keep_alive)
            return response, conn
        raise UpstreamReset()

    def _finish(self, request: Request, status: int, reply: bytes, keep: bool) -> bool:
        self.stats.responses.count(status)
        self.stats.rq_time.record((time.perf_counter() - request.started) * 1000)
        if not self.closed:
            self.transport.write(reply)
        return keep

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.runtime.untrack(self)
        if self.worker is not None and not self.worker.done() and not self.busy:
            self.worker.cancel()


def _failure_text(kind: str) -> bytes:
    if kind == NO_HEALTHY:
        return NO_HEALTHY_TEXT
    if kind == OVERFLOW:
        return OVERFLOW_TEXT
    return CONNECT_FAILED_TEXT
