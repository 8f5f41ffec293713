"""Running the built-in proxy as a process: runtime, admin, ADS, signals.

Job: `serve(options)` runs the proxy until SIGINT/SIGTERM (or `stop` is
set): it starts the admin listener, the ADS client that feeds the runtime,
and on a stop signal drains (in-flight requests get `drain_s`) and exits.
`run(options)` does it on uvloop and returns the exit code. Both
`proconsul connect proxy` and `proconsul connect envoy` (without Envoy)
end here; benchmarks can call `serve` in-process.

Rules:
- The admin listener binding fails the start (exit 1, one line); the agent
  being away does not (the ADS client keeps retrying).
- Logs go to stderr at `-log-level`; the token never appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass, field

import uvloop

from proconsul.proxy.admin import admin_port, start_admin
from proconsul.proxy.ads_client import AdsClient, AgentTarget
from proconsul.proxy.ads_state import AdsState
from proconsul.proxy.runtime import Runtime

DEFAULT_DRAIN_S = 5.0
LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "err": logging.ERROR,
    "error": logging.ERROR,
}


@dataclass(frozen=True)
class ProxyOptions:
    proxy_id: str
    cluster: str  # the service the proxy fronts (xDS node.cluster)
    target: AgentTarget
    token: str = field(default="", repr=False)
    admin_host: str = "127.0.0.1"
    admin_port: int = 19000
    log_level: str = "info"
    drain_s: float = DEFAULT_DRAIN_S


@dataclass
class Running:
    """What a started proxy exposes (tests and benchmarks read it)."""

    runtime: Runtime
    admin_port: int
    client: AdsClient


async def serve(
    options: ProxyOptions,
    stop: asyncio.Event,
    started: asyncio.Future[Running] | None = None,
) -> int:
    runtime = Runtime()
    try:
        runner = await start_admin(runtime, options.admin_host, options.admin_port)
    except OSError as err:
        print(
            "Failed to start the admin listener on "
            f"{options.admin_host}:{options.admin_port}: {err}",
            file=sys.stderr,
        )
        return 1
    state = AdsState(node_id=options.proxy_id, cluster=options.cluster)
    client = AdsClient(options.target, state, options.token, runtime.apply, runtime.stats)
    ads = asyncio.get_running_loop().create_task(client.run())
    logging.getLogger("proconsul.proxy").info(
        "proxy %s: admin on %s:%d, xDS from %s",
        options.proxy_id,
        options.admin_host,
        admin_port(runner),
        options.target.address,
    )
    if started is not None and not started.done():
        started.set_result(Running(runtime, admin_port(runner), client))
    try:
        await stop.wait()
    finally:
        ads.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ads
        await runtime.drain(options.drain_s)
        await runner.cleanup()
    return 0


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=LEVELS.get(level.lower(), logging.INFO),
        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s",
    )
    logging.getLogger("grpc").setLevel(logging.ERROR)


def run(options: ProxyOptions) -> int:
    setup_logging(options.log_level)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await serve(options, stop)

    return uvloop.run(main())
