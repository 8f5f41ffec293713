"""The demo service's HTTP app: a fake service that names itself and calls upstreams.

Routes:
- `GET /` (and any other GET path): JSON naming this service, its message, and
  the responses of every upstream, called concurrently, each with a timeout.
  An upstream that fails or answers non-2xx makes this answer's `code` 500.
- `GET /health`: 200 `OK`, or 500 while failed. It only reads a flag, so it
  answers at once whatever the query string or the upstreams are doing.
- `POST /fail` or `PUT /health/fail`: fail /health; `POST /recover` or
  `PUT /health/recover`: heal it.

Every request is logged to the log stream as one line (method, path, status,
duration), as text or JSON. Upstream calls carry a hop count so a loop of
services pointing at each other ends with 508 instead of running forever.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from proconsul.checks.probes import os_error_text
from proconsul.structs.duration import format_duration

HOP_HEADER = "X-Proconsul-Demo-Hops"
MAX_HOPS = 8
# Upstream bodies beyond this are cut: the demo nests responses, it does not proxy files.
MAX_UPSTREAM_BODY = 1 << 20


@dataclass
class DemoConfig:
    name: str
    message: str = "Hello World"
    upstreams: tuple[str, ...] = ()
    upstream_timeout: float = 5.0
    fail: bool = False
    log_json: bool = False
    ip_addresses: tuple[str, ...] = ()


@dataclass
class DemoState:
    healthy: bool = True
    requests: int = 0
    upstream_failures: int = 0


CONFIG = web.AppKey("config", DemoConfig)
STATE = web.AppKey("state", DemoState)
CLIENT = web.AppKey("client", aiohttp.ClientSession)
LOG = web.AppKey("log", TextIO)


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def upstream_url(text: str) -> str:
    """`host:port` means `http://host:port`; full URLs pass through."""
    return text if "://" in text else f"http://{text}"


async def call_upstream(
    client: aiohttp.ClientSession, url: str, timeout: float, hops: int
) -> tuple[dict[str, Any], bool]:
    """Call one upstream; (entry for `upstream_calls`, whether it succeeded)."""
    try:
        async with asyncio.timeout(timeout):
            async with client.get(url, headers={HOP_HEADER: str(hops + 1)}) as response:
                raw = await response.content.read(MAX_UPSTREAM_BODY)
                code = response.status
    except TimeoutError:
        return {"uri": url, "code": -1, "error": f"upstream timed out after {timeout:g}s"}, False
    except aiohttp.ClientConnectorError as exc:
        reason = os_error_text(exc.os_error)
        error = f"error calling upstream: connect {exc.host}:{exc.port}: {reason}"
        return {"uri": url, "code": -1, "error": error}, False
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        error = f"error calling upstream: {exc or type(exc).__name__}"
        return {"uri": url, "code": -1, "error": error}, False
    try:
        decoded = json.loads(raw)
    except ValueError:
        decoded = None
    entry: dict[str, Any] = (
        decoded if isinstance(decoded, dict) else {"body": raw.decode("utf-8", "replace")}
    )
    entry["uri"] = url
    entry["code"] = code
    return entry, 200 <= code <= 299


def _json(data: dict[str, Any], status: int) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=2, ensure_ascii=False) + "\n",
        status=status,
        content_type="application/json",
    )


async def handle_root(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    state = request.app[STATE]
    started = _now()
    clock = time.perf_counter()
    try:
        hops = int(request.headers.get(HOP_HEADER, "0"))
    except ValueError:
        hops = 0
    if hops >= MAX_HOPS:
        return _json({"name": config.name, "error": "upstream loop detected", "code": 508}, 508)
    urls = [upstream_url(u) for u in config.upstreams]
    results = await asyncio.gather(
        *(call_upstream(request.app[CLIENT], url, config.upstream_timeout, hops) for url in urls)
    )
    calls = {url: entry for url, (entry, _) in zip(urls, results, strict=True)}
    failed = sum(1 for _, ok in results if not ok)
    state.upstream_failures += failed
    code = 500 if failed else 200
    body: dict[str, Any] = {
        "name": config.name,
        "uri": request.path_qs,
        "type": "HTTP",
        "ip_addresses": list(config.ip_addresses),
        "start_time": _timestamp(started),
        "end_time": _timestamp(_now()),
        "duration": format_duration(time.perf_counter() - clock),
        "body": config.message,
        "code": code,
    }
    if calls:
        body["upstream_calls"] = calls
    return _json(body, code)


async def handle_health(request: web.Request) -> web.Response:
    if request.app[STATE].healthy:
        return web.Response(text="OK\n")
    return web.Response(text="Service unhealthy\n", status=500)


async def handle_fail(request: web.Request) -> web.Response:
    request.app[STATE].healthy = False
    return web.Response(text="Health check will now fail\n")


async def handle_recover(request: web.Request) -> web.Response:
    request.app[STATE].healthy = True
    return web.Response(text="Health check will now pass\n")


def _log_line(config: DemoConfig, method: str, path: str, status: int, seconds: float) -> str:
    if config.log_json:
        record = {
            "@timestamp": _timestamp(_now()),
            "@level": "info",
            "@module": "demo",
            "@message": "request",
            "service": config.name,
            "method": method,
            "path": path,
            "status": status,
            "duration": format_duration(seconds),
        }
        return json.dumps(record)
    duration = format_duration(seconds)
    return f"{_timestamp(_now())} [INFO] {config.name}: {method} {path} {status} {duration}"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    clock = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[STATE].requests += 1
        line = _log_line(
            request.app[CONFIG],
            request.method,
            request.path_qs,
            status,
            time.perf_counter() - clock,
        )
        stream = request.app[LOG]
        print(line, file=stream, flush=True)


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as client:
        app[CLIENT] = client
        yield


def build_app(config: DemoConfig, *, log: TextIO | None = None) -> web.Application:
    app = web.Application(middlewares=[log_requests])
    app[CONFIG] = config
    app[STATE] = DemoState(healthy=not config.fail)
    app[LOG] = log if log is not None else sys.stderr
    app.cleanup_ctx.append(_client_ctx)
    app.router.add_get("/health", handle_health)
    app.router.add_post("/fail", handle_fail)
    app.router.add_put("/health/fail", handle_fail)
    app.router.add_post("/recover", handle_recover)
    app.router.add_put("/health/recover", handle_recover)
    app.router.add_get("/{tail:.*}", handle_root)
    return app
