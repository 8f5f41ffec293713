"""Health-check monitors: run probes on an interval, time out TTL checks.

The agent builds one monitor per check with `make_monitor` (or through a
`CheckRunnerSet`, which shares one HTTP session between its checks), starts
it, and gets `report(check_id, status, output)` calls whenever the check's
status or output should change. The agent sets the initial status itself
(critical unless the definition says otherwise); monitors only report results.

Rules:
- Interval checks (script, HTTP, TCP, gRPC, H2PING; probes in probes.py and
  more_probes.py) first run after a random stagger within one
  interval, then once per interval after each run ends, so runs never overlap.
  Each result goes through `StatusThresholds` (see status.py).
- Every probe is bounded by the check's timeout (default 10s) and by a
  backstop deadline a little past it; a probe that raises is a critical result,
  never a dead loop.
- TTL checks report each `set_status` at once (Consul applies no thresholds
  to them) and go critical with `TTL expired` when `ttl` passes without one.
- Alias checks get a passive monitor: the agent computes the aliased health
  and pushes it with `set_status`.
- After `stop()` returns, a monitor never calls `report` again.
- HTTP connections are not kept alive between runs, as in Consul: a pooled
  connection the server has dropped would show as a false critical.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
import weakref
from collections.abc import Awaitable, Callable

import aiohttp

from proconsul.checks.kinds import (
    MIN_INTERVAL,
    CheckKind,
    check_kind,
    effective_interval,
    effective_timeout,
    thresholds_for,
    validate_definition,
)
from proconsul.checks.more_probes import grpc_probe, h2ping_probe, script_probe
from proconsul.checks.probes import HttpProbe, http_probe, tcp_probe
from proconsul.checks.status import (
    CRITICAL,
    OUTPUT_MAX_SIZE,
    StatusThresholds,
    is_valid_status,
    truncate_ttl_output,
    ttl_expired_output,
)
from proconsul.structs.definitions import CheckDefinition

__all__ = [
    "MIN_INTERVAL",
    "CheckMonitor",
    "CheckRunnerSet",
    "HttpMonitor",
    "HttpSessionPool",
    "PassiveMonitor",
    "ProbeMonitor",
    "Report",
    "TcpMonitor",
    "TtlMonitor",
    "check_kind",
    "make_monitor",
    "validate_definition",
]

Report = Callable[[str, str, str], None]

log = logging.getLogger("proconsul.checks")

# Extra time past a probe's own timeout before the runner gives up on it.
_BACKSTOP = 1.0


class HttpSessionPool:
    """One lazily created aiohttp session for many HTTP checks."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                # Each probe sets its own deadline; the session adds none.
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class CheckMonitor:
    """Base of every monitor: lifecycle, guarded reporting and counters."""

    kind: CheckKind

    def __init__(self, check_id: str, report: Report) -> None:
        self.check_id = check_id
        self._report = report
        self._started = False
        self._stopped = False
        self._runs = 0
        self._reports = 0

    def start(self) -> None:
        """Begin monitoring; needs a running event loop. Idempotent; no restart after stop."""
        self._started = not self._stopped

    async def stop(self) -> None:
        """Stop monitoring and release resources. Idempotent."""
        self._stopped = True

    @property
    def running(self) -> bool:
        """Started and not stopped: reports may still come."""
        return self._started and not self._stopped

    def set_status(self, status: str, output: str) -> None:
        raise ValueError(f'CheckID "{self.check_id}" does not have associated TTL')

    def stats(self) -> dict[str, int]:
        return {"runs": self._runs, "reports": self._reports}

    def _emit(self, status: str, output: str) -> None:
        if self._stopped:
            return
        self._reports += 1
        try:
            self._report(self.check_id, status, output)
        except Exception:
            # A failing consumer must not kill the monitor that feeds it.
            log.exception("check report callback failed: check=%s", self.check_id)


class _IntervalMonitor(CheckMonitor):
    def __init__(
        self,
        check_id: str,
        report: Report,
        *,
        interval: float,
        timeout: float,
        thresholds: StatusThresholds,
        rng: random.Random,
    ) -> None:
        super().__init__(check_id, report)
        self.interval = interval
        self.timeout = timeout
        self._thresholds = thresholds
        self._stagger = rng.uniform(0.0, interval)
        self._task: asyncio.Task[None] | None = None

    async def probe(self) -> tuple[str, str]:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None and not self._stopped:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._loop(), name=f"check:{self.check_id}")

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            # Swallow only the cancellation we caused, never one aimed at our caller.
            if current is not None and current.cancelling():
                raise
        except Exception:
            log.exception("check loop failed: check=%s", self.check_id)

    async def _loop(self) -> None:
        await asyncio.sleep(self._stagger)
        while True:
            status, output = await self._bounded_probe()
            self._runs += 1
            decided = self._thresholds.observe(status, output)
            if decided is not None:
                self._emit(*decided)
            await asyncio.sleep(self.interval)

    async def _bounded_probe(self) -> tuple[str, str]:
        try:
            async with asyncio.timeout(self.timeout + _BACKSTOP):
                return await self.probe()
        except TimeoutError:
            return CRITICAL, f"check did not finish within {self.timeout + _BACKSTOP:g}s"
        except Exception as exc:
            log.exception("check probe failed: check=%s", self.check_id)
            return CRITICAL, f"check failed: {exc or type(exc).__name__}"


class HttpMonitor(_IntervalMonitor):
    kind: CheckKind = "http"

    def __init__(
        self,
        check_id: str,
        report: Report,
        *,
        probe: HttpProbe,
        pool: HttpSessionPool,
        owns_pool: bool,
        ssl_context: ssl.SSLContext | None,
        interval: float,
        thresholds: StatusThresholds,
        rng: random.Random,
    ) -> None:
        super().__init__(
            check_id,
            report,
            interval=interval,
            timeout=probe.timeout,
            thresholds=thresholds,
            rng=rng,
        )
        self.spec = probe
        self._pool = pool
        self._owns_pool = owns_pool
        self._ssl_context = ssl_context

    async def probe(self) -> tuple[str, str]:
        return await http_probe(self._pool.get(), self.spec, ssl_context=self._ssl_context)

    async def stop(self) -> None:
        await super().stop()
        if self._owns_pool:
            await self._pool.close()


class ProbeMonitor(_IntervalMonitor):
    """Script, gRPC and H2PING checks: one probe callable, run on the interval."""

    def __init__(
        self,
        check_id: str,
        report: Report,
        *,
        kind: CheckKind,
        probe: Callable[[], Awaitable[tuple[str, str]]],
        interval: float,
        timeout: float,
        thresholds: StatusThresholds,
        rng: random.Random,
    ) -> None:
        super().__init__(
            check_id, report, interval=interval, timeout=timeout, thresholds=thresholds, rng=rng
        )
        self.kind = kind
        self._probe = probe

    async def probe(self) -> tuple[str, str]:
        return await self._probe()


class TcpMonitor(ProbeMonitor):
    def __init__(
        self,
        check_id: str,
        report: Report,
        *,
        address: str,
        interval: float,
        timeout: float,
        thresholds: StatusThresholds,
        rng: random.Random,
    ) -> None:
        probe = functools.partial(tcp_probe, address, timeout)
        super().__init__(
            check_id,
            report,
            kind="tcp",
            probe=probe,
            interval=interval,
            timeout=timeout,
            thresholds=thresholds,
            rng=rng,
        )
        self.address = address


class PassiveMonitor(CheckMonitor):
    """Reports what it is told; the base of TTL and the monitor for alias checks."""

    kind: CheckKind = "alias"

    def __init__(self, check_id: str, report: Report) -> None:
        super().__init__(check_id, report)
        self._last_output = ""

    def set_status(self, status: str, output: str) -> None:
        if not is_valid_status(status):
            raise ValueError(f"invalid check status {status!r}")
        if self._stopped:
            return
        self._last_output = truncate_ttl_output(output)
        self._runs += 1
        self._emit(status, self._last_output)


class TtlMonitor(PassiveMonitor):
    kind: CheckKind = "ttl"

    def __init__(self, check_id: str, report: Report, *, ttl: float) -> None:
        super().__init__(check_id, report)
        self.ttl = ttl
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        if self._loop is None and not self._stopped:
            super().start()
            self._loop = asyncio.get_running_loop()
            self._arm()

    def set_status(self, status: str, output: str) -> None:
        super().set_status(status, output)
        if self._loop is not None and not self._stopped:
            self._arm()

    async def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self.ttl, self._expire)

    def _expire(self) -> None:
        self._timer = None
        log.warning("check missed TTL, is now critical: check=%s", self.check_id)
        self._emit(CRITICAL, ttl_expired_output(self._last_output))


def make_monitor(
    check_id: str,
    definition: CheckDefinition,
    report: Report,
    *,
    pool: HttpSessionPool | None = None,
    ssl_context: ssl.SSLContext | None = None,
    min_interval: float = MIN_INTERVAL,
    rng: random.Random | None = None,
    primed: bool = False,
) -> CheckMonitor:
    """Build (not start) the monitor for a definition; ValueError if it is invalid.

    Without `pool`, an HTTP monitor has a session of its own, closed by `stop()`.
    `ssl_context` verifies HTTPS targets (default: the system's CAs) unless the
    check sets `tls_skip_verify`. `min_interval` is Consul's 1s floor; tests pass
    less. `primed=True` reports the first result at once, as Consul's code does
    (see status.py); by default thresholds apply from the first result.
    """
    kind = check_kind(definition)
    if kind == "ttl":
        return TtlMonitor(check_id, report, ttl=float(definition.ttl or 0.0))
    if kind == "alias":
        return PassiveMonitor(check_id, report)
    interval, raised = effective_interval(definition, min_interval)
    if raised:
        log.warning(
            "check has interval below minimum: check=%s minimum_interval=%gs",
            check_id,
            min_interval,
        )
    thresholds = thresholds_for(definition, primed=primed)
    rng = rng or random.Random()
    timeout = effective_timeout(definition)
    if kind in ("script", "grpc", "h2ping"):
        return ProbeMonitor(
            check_id,
            report,
            kind=kind,
            probe=_probe_for(kind, definition, timeout),
            interval=interval,
            timeout=timeout,
            thresholds=thresholds,
            rng=rng,
        )
    if kind == "tcp":
        return TcpMonitor(
            check_id,
            report,
            address=definition.tcp,
            interval=interval,
            timeout=timeout,
            thresholds=thresholds,
            rng=rng,
        )
    probe = HttpProbe(
        url=definition.http,
        method=definition.method or "GET",
        header=definition.header,
        body=definition.body,
        timeout=timeout,
        tls_skip_verify=definition.tls_skip_verify,
        tls_server_name=definition.tls_server_name,
        disable_redirects=definition.disable_redirects,
    )
    return HttpMonitor(
        check_id,
        report,
        probe=probe,
        pool=pool or HttpSessionPool(),
        owns_pool=pool is None,
        ssl_context=ssl_context,
        interval=interval,
        thresholds=thresholds,
        rng=rng,
    )


def _probe_for(
    kind: CheckKind, definition: CheckDefinition, timeout: float
) -> Callable[[], Awaitable[tuple[str, str]]]:
    if kind == "script":
        args = list(definition.script_args)
        limit = definition.output_max_size or OUTPUT_MAX_SIZE
        return functools.partial(script_probe, args, timeout, limit)
    if kind == "grpc":
        return functools.partial(grpc_probe, definition.grpc, definition.grpc_use_tls, timeout)
    return functools.partial(
        h2ping_probe,
        definition.h2ping,
        definition.h2ping_use_tls,
        definition.tls_skip_verify,
        definition.tls_server_name,
        timeout,
    )


class CheckRunnerSet:
    """Monitors that share one HTTP session, TLS settings, floor and randomness."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        min_interval: float = MIN_INTERVAL,
        rng: random.Random | None = None,
        primed: bool = False,
    ) -> None:
        self._pool = HttpSessionPool()
        self._ssl_context = ssl_context
        self._min_interval = min_interval
        self._rng = rng or random.Random()
        self._primed = primed
        self._monitors: weakref.WeakSet[CheckMonitor] = weakref.WeakSet()

    def make_monitor(
        self, check_id: str, definition: CheckDefinition, report: Report
    ) -> CheckMonitor:
        monitor = make_monitor(
            check_id,
            definition,
            report,
            pool=self._pool,
            ssl_context=self._ssl_context,
            min_interval=self._min_interval,
            rng=self._rng,
            primed=self._primed,
        )
        self._monitors.add(monitor)
        return monitor

    async def close(self) -> None:
        """Stop every monitor still running and close the shared session."""
        monitors = list(self._monitors)
        await asyncio.gather(*(monitor.stop() for monitor in monitors))
        await self._pool.close()
