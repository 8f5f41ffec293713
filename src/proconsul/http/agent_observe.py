"""Agent endpoints clients and operators watch: the log, metrics, host, version,
and the aggregated health of local services.

Routes (Consul's paths, codes and bodies):
- `GET /v1/agent/monitor?loglevel=` streams the agent's log lines as they are
  written (`trace`, `debug`, `info`, `warn`, `error`, `off`; default info; any
  other is 400 `Unknown log level: <level>`), in the agent's text format or,
  with `?logjson`, its JSON lines. Lines below the agent's own log
  level are shown too while a monitor asks for them: the root logger is
  lowered for as long as such a monitor runs, and the agent's own handler keeps
  its level. Each stream has a bounded queue; lines that do not fit are
  dropped and counted in one line. agent:read.
- `GET /v1/agent/metrics/stream` streams `/v1/agent/metrics` bodies, one JSON
  object per line, the first at once and then every 10 s. agent:read.
- `GET /v1/agent/host`: memory, CPUs, host and disk of the machine (from
  /proc and the stdlib; an unreadable part is named in `Errors`). operator:read.
- `GET /v1/agent/version`: `HumanVersion` and build facts. No ACL.
- `GET /v1/agent/health/service/name/:name` and `/id/:id`: the service's
  instances with their checks (node checks included) and the aggregated
  status (`maintenance` > `critical` > `warning` > `passing`): 200 passing,
  429 warning, 503 critical or maintenance; 404 `ServiceName <name> Not
  Found` / `ServiceId <id> not found`; `?format=text` answers the status word
  alone. service:read on the name.
- Streams end when the client goes away (checked at least once a second) or
  the agent stops (reads are cancelled at shutdown, http/server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import socket
import time
from typing import Any

from aiohttp import web

from proconsul import CONSUL_COMPAT_VERSION
from proconsul.http.acl_rules import authorize
from proconsul.http.agent_routes import agent_service
from proconsul.http.api import agent_of
from proconsul.http.common import bad_request, json_response
from proconsul.structs.catalog import NODE_MAINT_CHECK_ID, SERVICE_MAINT_PREFIX, HealthCheck

MONITOR_QUEUE_LINES = 512
METRICS_STREAM_INTERVAL_S = 10.0
_CLIENT_POLL_S = 1.0
_OFF = logging.CRITICAL + 10

_MONITOR_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "off": _OFF,
}


class _MonitorLevels:
    """The root logger's level while monitors run: the lowest asked for, and the
    agent's own when the last one ends. The agent's handlers keep their level."""

    def __init__(self) -> None:
        self.active: list[int] = []
        self.base: int | None = None

    def add(self, level: int) -> None:
        root = logging.getLogger()
        if not self.active:
            self.base = root.level
            for handler in root.handlers:
                if handler.level == logging.NOTSET:
                    handler.setLevel(root.level)
        self.active.append(level)
        root.setLevel(min([self.base or logging.INFO, *self.active]))

    def remove(self, level: int) -> None:
        self.active.remove(level)
        base = self.base or logging.INFO
        logging.getLogger().setLevel(min([base, *self.active]))


_levels = _MonitorLevels()


class _QueueHandler(logging.Handler):
    """Hands formatted lines to one monitor's queue, from any thread."""

    def __init__(
        self, level: int, loop: asyncio.AbstractEventLoop, formatter: logging.Formatter
    ) -> None:
        super().__init__(level)
        self.queue: asyncio.Queue[str] = asyncio.Queue(MONITOR_QUEUE_LINES)
        self.dropped = 0
        self._loop = loop
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record that does not format is not worth a crash
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._put, line)

    def _put(self, line: str) -> None:
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped += 1


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _stream_start(request: web.Request, content_type: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    return response


async def agent_monitor(request: web.Request) -> web.StreamResponse:
    name = request.query.get("loglevel", "") or "info"
    level = _MONITOR_LEVELS.get(name.strip().lower())
    if level is None:
        bad_request(f"Unknown log level: {name}")
    formatter = agent_of(request).log_formatter("logjson" in request.query)
    handler = _QueueHandler(level, asyncio.get_running_loop(), formatter)
    root = logging.getLogger()
    _levels.add(level)
    root.addHandler(handler)
    try:
        response = await _stream_start(request, "text/plain; charset=utf-8")
        reported_drops = 0
        while not _client_gone(request):
            try:
                line = await asyncio.wait_for(handler.queue.get(), _CLIENT_POLL_S)
            except TimeoutError:
                continue
            if handler.dropped != reported_drops:
                line = f"Monitor dropped {handler.dropped - reported_drops} logs\n{line}"
                reported_drops = handler.dropped
            await response.write(line.encode() + b"\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away mid-write
    finally:
        root.removeHandler(handler)
        _levels.remove(level)
    return response


async def agent_metrics_stream(request: web.Request) -> web.StreamResponse:
    agent = agent_of(request)
    response = await _stream_start(request, "application/json")
    next_s = time.monotonic()
    try:
        while not _client_gone(request):
            if time.monotonic() >= next_s:
                await response.write(json.dumps(agent.metrics_json()).encode() + b"\n")
                next_s += METRICS_STREAM_INTERVAL_S
            await asyncio.sleep(min(_CLIENT_POLL_S, max(0.0, next_s - time.monotonic())))
    except (ConnectionResetError, ConnectionError):
        pass
    return response


async def agent_version(request: web.Request) -> web.Response:
    return json_response(
        request,
        {"SHA": "", "BuildDate": "", "HumanVersion": CONSUL_COMPAT_VERSION, "FIPS": ""},
    )


# ----- /v1/agent/host ------------------------------------------------------------


def _meminfo() -> dict[str, int]:
    found: dict[str, int] = {}
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                found[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return found


def _memory() -> dict[str, Any]:
    info = _meminfo()
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0))
    used = total - available
    return {
        "total": total,
        "available": available,
        "used": used,
        "usedPercent": 100.0 * used / total if total else 0.0,
        "free": info.get("MemFree", 0),
    }


def _cpus() -> list[dict[str, Any]]:
    cpus: list[dict[str, Any]] = []
    current: dict[str, str] = {}
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
        blocks = handle.read().split("\n\n")
    for block in blocks:
        current = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            current[key.strip()] = value.strip()
        if "processor" not in current:
            continue
        cpus.append(
            {
                "cpu": int(current.get("processor", "0") or 0),
                "vendorId": current.get("vendor_id", ""),
                "family": current.get("cpu family", ""),
                "model": current.get("model", ""),
                "modelName": current.get("model name", ""),
                "mhz": float(current.get("cpu MHz", "0") or 0),
                "cores": int(current.get("cpu cores", "1") or 1),
                "cacheSize": int((current.get("cache size", "0").split() or ["0"])[0]),
                "flags": current.get("flags", "").split(),
            }
        )
    return cpus


def _host() -> dict[str, Any]:
    with open("/proc/uptime", encoding="ascii") as handle:
        uptime_s = int(float(handle.read().split()[0]))
    uname = platform.uname()
    procs = sum(1 for name in os.listdir("/proc") if name.isdigit())
    return {
        "hostname": socket.gethostname(),
        "uptime": uptime_s,
        "bootTime": int(time.time()) - uptime_s,
        "procs": procs,
        "os": uname.system.lower(),
        "platform": "",
        "platformFamily": "",
        "platformVersion": "",
        "kernelVersion": uname.release,
        "kernelArch": uname.machine,
        "virtualizationSystem": "",
        "virtualizationRole": "",
        "hostid": "",
    }


def _disk(path: str) -> dict[str, Any]:
    usage = shutil.disk_usage(path)
    return {
        "path": path,
        "total": usage.total,
        "free": usage.free,
        "used": usage.used,
        "usedPercent": 100.0 * usage.used / usage.total if usage.total else 0.0,
    }


async def agent_host(request: web.Request) -> web.Response:
    agent = agent_of(request)
    data_dir = str(agent.self_info().get("DebugConfig", {}).get("DataDir") or "/")
    if not os.path.isdir(data_dir):
        data_dir = "/"
    started_ns = time.monotonic_ns()
    found: dict[str, Any] = {}
    errors: list[str] = []
    for key, collect in (
        ("Memory", _memory),
        ("CPU", _cpus),
        ("Host", _host),
        ("Disk", lambda: _disk(data_dir)),
    ):
        try:
            found[key] = collect()
        except (OSError, ValueError) as exc:
            found[key] = None
            errors.append(f"{key.lower()}: {exc}")
    found["CollectionTime"] = time.monotonic_ns() - started_ns
    found["Errors"] = errors or None
    return json_response(request, found)


# ----- /v1/agent/health/service ---------------------------------------------------

_HEALTH_CODES = {"passing": 200, "warning": 429}


def aggregated_status(checks: list[HealthCheck]) -> str:
    """Consul's aggregate of a service's checks (node checks included)."""
    seen = set()
    for check in checks:
        if check.check_id == NODE_MAINT_CHECK_ID or check.check_id.startswith(SERVICE_MAINT_PREFIX):
            return "maintenance"
        seen.add(check.status)
    for status in ("critical", "warning"):
        if status in seen:
            return status
    return "passing"


def _service_health(request: web.Request, service_id: str) -> tuple[int, str, dict[str, Any]]:
    agent = agent_of(request)
    service = agent.local_services()[service_id]
    checks = [
        check for check in agent.local_checks().values() if check.service_id in ("", service_id)
    ]
    status = aggregated_status(checks)
    body = {
        "AggregatedStatus": status,
        "Service": agent_service(service, agent.datacenter),
        "Checks": checks,
    }
    return _HEALTH_CODES.get(status, 503), status, body


def _health_answer(request: web.Request, code: int, status: str, body: Any) -> web.Response:
    if request.query.get("format") == "text":
        return web.Response(status=code, text=status)
    response = json_response(request, body)
    response.set_status(code)
    return response


async def agent_health_by_name(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    authorize(request, "service", "read", name)
    code, status = 404, f"ServiceName {name} Not Found"
    found = []
    for service_id, service in sorted(agent_of(request).local_services().items()):
        if service.service != name:
            continue
        one_code, one_status, body = _service_health(request, service_id)
        found.append(body)
        if code == 404 or one_code > code:
            code, status = one_code, one_status
    return _health_answer(request, code, status, found)


async def agent_health_by_id(request: web.Request) -> web.Response:
    service_id = request.match_info["service_id"]
    service = agent_of(request).local_services().get(service_id)
    if service is None:
        reason = f"ServiceId {service_id} not found"
        body = {"AggregatedStatus": "critical", "Service": None, "Checks": None}
        return _health_answer(request, 404, reason, body)
    authorize(request, "service", "read", service.service)
    code, status, body = _service_health(request, service_id)
    return _health_answer(request, code, status, body)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/agent/monitor", agent_monitor)
    router.add_get("/v1/agent/metrics/stream", agent_metrics_stream)
    router.add_get("/v1/agent/host", agent_host)
    router.add_get("/v1/agent/version", agent_version)
    router.add_get("/v1/agent/health/service/name/{name}", agent_health_by_name)
    router.add_get("/v1/agent/health/service/id/{service_id}", agent_health_by_id)
