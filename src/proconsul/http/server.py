"""The HTTP API server: routes, Consul-style errors, request counters, connection bounds.

Every error leaves as plain text with Consul's status code: 400 for bad input,
403 for an ACL refusal (`ACLDenied`, whoever raised it), the ACL API's own
status for its other errors (`ACLError`), 404 for unknown paths and missing
rows, 405 with `Allow` for a wrong method, 408 for a body that did not arrive
in time, 413 for oversized bodies, 500 for a server's refusal and (logged,
with its traceback) for anything unexpected: a traceback means a bug.
Tokens are never logged.

No client can hold the agent (`http_runner`):
- A request body must arrive within `BODY_GRACE_S` (5 s) plus one second per
  `BODY_MIN_RATE` (64 KiB) its Content-Length announces (a chunked body: the
  5 s alone), counted from the headers; past that its read fails, the request
  is answered 408 (`body_timeouts`) and its connection closed. Consul sets no
  such bound (it only limits connections per client); a body announced as
  1000 bytes that stops after 3 would otherwise hold a connection and a
  handler for ever.
- A malformed request (a bad request line, header or chunk: aiohttp's parser
  refuses it with 400; or a body whose read fails mid-way) is counted as
  `malformed_requests` and logged as one DEBUG line with the peer and the
  error's class, not its text (which may quote a token), never a traceback.
- Stopping (`AppRunner.cleanup`): reads still in flight (blocking queries,
  whether their client is there or gone) are cancelled at once; other
  requests get `SHUTDOWN_GRACE_S` (1 s, what Consul gives its HTTP servers)
  to finish before they are cancelled, so an agent stops in seconds whatever
  it was serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from proconsul.acl.errors import ACLDenied, ACLError
from proconsul.http import (
    acl_routes,
    agent_observe,
    agent_routes,
    catalog,
    config_routes,
    connect_routes,
    coordinate_routes,
    gossip_routes,
    intention_routes,
    kv,
    live_routes,
    operator_routes,
    query_routes,
    session_routes,
    snapshot_routes,
    txn,
    ui_routes,
    watch_routes,
)
from proconsul.http.acl_rules import acl_middleware, check_routes
from proconsul.http.api import AGENT_KEY, AgentAPI
from proconsul.http.common import HTTPError, error_answer
from proconsul.rpc.errors import RPCError

log = logging.getLogger("proconsul.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Request bodies other than KV values are small; KV's own limit is checked per request.
_MIN_BODY_LIMIT = 1024 * 1024
# A body's deadline: this long, plus a second per BODY_MIN_RATE bytes announced.
BODY_GRACE_S = 5.0
BODY_MIN_RATE = 64 * 1024
# What requests other than reads get to finish when the agent stops (Consul's 1 s).
SHUTDOWN_GRACE_S = 1.0


class HTTPStats:
    def __init__(self) -> None:
        self.requests = 0
        self.by_status: Counter[int] = Counter()
        self.malformed_requests = 0  # refused by the HTTP parser, or a body that broke off
        self.body_timeouts = 0

    def as_dict(self) -> dict[str, int]:
        out = {
            "requests": self.requests,
            "malformed_requests": self.malformed_requests,
            "body_timeouts": self.body_timeouts,
        }
        for status, count in sorted(self.by_status.items()):
            out[f"status_{status}"] = count
        return out


STATS_KEY: web.AppKey[HTTPStats] = web.AppKey("http_stats")
# The largest body the app accepts (a body's deadline counts no more than this).
_BODY_LIMIT_KEY: web.AppKey[int] = web.AppKey("body_limit")
# Reads in flight, cancelled when the app shuts down.
_READS_KEY: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("reads_in_flight")


class BodyTimeout(TimeoutError):
    """A request body that did not arrive within its deadline.

    A TimeoutError, so that aiohttp's lingering read of the rest of the body,
    after the 408, stops at once instead of logging it as unhandled.
    """


def _expire_body(content: StreamReader) -> None:
    if not content.is_eof():
        content.set_exception(BodyTimeout())


def _arm_body_deadline(request: web.Request) -> asyncio.TimerHandle | None:
    """Fail the body's reads once its deadline passes; None when it is all here."""
    content = request.content
    if content.is_eof():  # no body, or all of it came with the headers
        return None
    # Reading stops at the body limit (413) whatever the length announced; a
    # chunked body announces none and gets the base alone (Consul's clients
    # send a Content-Length with every body).
    limit = request.app.get(_BODY_LIMIT_KEY, _MIN_BODY_LIMIT)
    size = min(request.content_length or 0, limit)
    deadline_s = BODY_GRACE_S + size / BODY_MIN_RATE
    return asyncio.get_running_loop().call_later(deadline_s, _expire_body, content)


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=message, headers=headers)


def _check_datacenter(request: web.Request) -> None:
    """`?dc=` naming a datacenter this agent cannot reach is Consul's 500 on every
    route, never a silent answer from (or write to) the local one."""
    datacenter = request.query.get("dc")
    if datacenter and datacenter not in request.app[AGENT_KEY].datacenters():
        raise HTTPError(500, "No path to datacenter")


@web.middleware
async def consul_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    app = request.app
    stats = app[STATS_KEY]
    stats.requests += 1
    timer = _arm_body_deadline(request)
    # A read may wait for minutes (a blocking query): it is cancelled at shutdown.
    reads = app.get(_READS_KEY) if request.method in ("GET", "HEAD") else None
    read = asyncio.current_task() if reads is not None else None
    if reads is not None and read is not None:
        reads.add(read)
    try:
        if "dc=" in request.query_string:
            _check_datacenter(request)
        response = await handler(request)
    except BodyTimeout:
        stats.body_timeouts += 1
        response = _text(408, "Request body not received in time")
        response.force_close()
    except RequestPayloadError as exc:
        # The body broke off (a bad chunk, a connection closed mid-way): bad input.
        stats.malformed_requests += 1
        log.debug("http: malformed request body from %s: %s", request.remote, _kind(exc))
        response = _text(400, "Request body malformed")
        response.force_close()
    except HTTPError as exc:
        response = _text(exc.status, exc.message, exc.headers)
    except web.HTTPMethodNotAllowed as exc:
        allow = ", ".join(sorted(exc.allowed_methods))
        response = _text(405, f"method {request.method} not allowed", {"Allow": allow})
    except web.HTTPNotFound:
        response = _text(404, "404 page not found")
    except web.HTTPRequestEntityTooLarge as exc:
        response = _text(413, exc.text or "Request body too large")
    except web.HTTPException as exc:
        response = _text(exc.status, exc.text or exc.reason)
    except (ACLDenied, ACLError, RPCError, ConnectionError, TimeoutError) as exc:
        # ACL refusals (403), the ACL API's other failures, a server's errors and
        # no server reachable: `error_answer` maps them, for streams too.
        answer = error_answer(exc)
        assert answer is not None
        response = _text(*answer)
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        response = _text(500, "Internal error")
    finally:
        if timer is not None:
            timer.cancel()
        if reads is not None and read is not None:
            reads.discard(read)
    stats.by_status[response.status] += 1
    return response


class _ConnectionLog(logging.LoggerAdapter[logging.Logger]):
    """The logger aiohttp's connection handlers get (`http_runner`).

    aiohttp logs a request its parser refused ("Error handling request") with
    a traceback, at ERROR, so anyone could fill the log. That is bad input,
    not a bug: here it is counted and logged as one DEBUG line. Everything else
    aiohttp logs (an unhandled exception in its own code) keeps its traceback.
    """

    def __init__(self, logger: logging.Logger, stats: HTTPStats) -> None:
        super().__init__(logger, {})
        self.stats = stats

    def _refused(self, exc: object, args: tuple[object, ...]) -> bool:
        if isinstance(exc, HttpProcessingError):
            self.stats.malformed_requests += 1
            peer = args[0] if args else "?"  # aiohttp passes the peer first
            self.logger.debug("http: malformed request from %s: %s", peer, _kind(exc))
            return True
        if isinstance(exc, RequestPayloadError):
            # aiohttp reading the rest of a broken body that `consul_errors`
            # already answered (and counted): nothing more to say.
            self.logger.debug("http: dropped the rest of a malformed body: %s", _kind(exc))
            return True
        return False

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if not self._refused(exc_info, args):
            super().exception(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        if not self._refused(kwargs.get("exc_info"), args):
            super().debug(msg, *args, **kwargs)


def _kind(exc: BaseException) -> str:
    """An error's class: its text may quote the request line, and so a token."""
    return type(exc).__name__


async def _cancel_reads(app: web.Application) -> None:
    """At shutdown: end the reads still in flight (blocking queries) at once."""
    in_flight = app[_READS_KEY]
    reads = list(in_flight)
    for task in reads:
        task.cancel()
    if reads:
        await asyncio.wait(reads, timeout=SHUTDOWN_GRACE_S)


def build_app(agent: AgentAPI, ui_enabled: bool) -> web.Application:
    body_limit = max(_MIN_BODY_LIMIT, agent.kv_max_value_size + 1)
    app = web.Application(middlewares=[consul_errors, acl_middleware], client_max_size=body_limit)
    app[AGENT_KEY] = agent
    app[STATS_KEY] = HTTPStats()
    app[_BODY_LIMIT_KEY] = body_limit
    app[_READS_KEY] = set()
    app.on_shutdown.append(_cancel_reads)
    catalog.add_routes(app)
    kv.add_routes(app)
    session_routes.add_routes(app)
    agent_routes.add_routes(app)
    agent_observe.add_routes(app)
    gossip_routes.add_routes(app)
    acl_routes.add_routes(app)
    operator_routes.add_routes(app)
    connect_routes.add_routes(app)
    config_routes.add_routes(app)
    intention_routes.add_routes(app)
    query_routes.add_routes(app)
    coordinate_routes.add_routes(app)
    txn.add_routes(app)
    snapshot_routes.add_routes(app)
    live_routes.add_routes(app)
    watch_routes.add_routes(app)
    ui_routes.add_routes(app, ui_enabled)
    check_routes(app)
    return app


def http_runner(app: web.Application) -> web.AppRunner:
    """The runner every listener of the agent's API uses (TCP and unix alike):
    parser refusals counted, not logged as tracebacks (`_ConnectionLog`), and
    requests other than reads get SHUTDOWN_GRACE_S at shutdown."""
    stats = app.get(STATS_KEY)
    if stats is None:  # an app not built by `build_app` (tests): count on the side
        stats = HTTPStats()
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE_S,
        logger=_ConnectionLog(logging.getLogger("aiohttp.server"), stats),
    )
