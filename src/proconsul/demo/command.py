"""`proconsul demo service`: run the fake service until SIGINT or SIGTERM.

Flags: `-name` (required), `-listen HOST:PORT` (default 127.0.0.1:8080; port
0 picks a free one), `-upstream URL` (repeatable; `host:port` means http),
`-message TEXT`, `-upstream-timeout DURATION` (default 5s), `-fail` (start
with /health failing), `-log-json`.

fake-service's environment variables work too, so unit files written for it
run this unchanged: `NAME`, `MESSAGE`, `LISTEN_ADDR` and `UPSTREAM_URIS`
(comma-separated). A flag given on the command line beats its variable.

On start it prints `==> Demo service NAME listening on HOST:PORT` to stderr,
with the port actually bound, so scripts and tests can read it. A signal stops
it cleanly with exit code 0; bad flags or an unusable address exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from proconsul.config.flags import FlagError, FlagSet
from proconsul.demo.service import DemoConfig, build_app
from proconsul.structs.duration import Duration, parse_duration
from proconsul.structs.hostport import split_host_port

DEFAULT_LISTEN = "127.0.0.1:8080"
# How long in-flight requests get to finish once a stop signal arrives.
SHUTDOWN_GRACE = 2.0


def _flags() -> FlagSet:
    flags = FlagSet("demo service")
    flags.string("name", "", help="Name this service reports (required).")
    flags.string("listen", DEFAULT_LISTEN, help="Address to listen on, HOST:PORT.")
    flags.repeated("upstream", help="URL of an upstream to call on each request. Repeatable.")
    flags.string("message", "Hello World", help="Text returned in the response's body field.")
    flags.custom(
        "upstream-timeout",
        parse_duration,
        Duration(5.0),
        help="How long to wait for each upstream.",
    )
    flags.boolean("fail", help="Start with /health answering 500.")
    flags.boolean("log-json", help="Log requests as JSON lines.")
    return flags


# fake-service's variable for each flag it has an equivalent of.
ENV_FLAGS = {"NAME": "name", "MESSAGE": "message", "LISTEN_ADDR": "listen"}


def apply_env(values: dict[str, Any], env: Mapping[str, str]) -> None:
    """Fill flags not given on the command line from fake-service's variables."""
    given = values["set"]
    for var, flag in ENV_FLAGS.items():
        if flag not in given and env.get(var):
            values[flag] = env[var]
    if "upstream" not in given and env.get("UPSTREAM_URIS"):
        values["upstream"] = [u.strip() for u in env["UPSTREAM_URIS"].split(",") if u.strip()]


def parse_listen(text: str) -> tuple[str, int]:
    try:
        host, port = split_host_port(text)
    except ValueError:
        raise ValueError(f"invalid -listen address {text!r}: expected HOST:PORT") from None
    return host or "0.0.0.0", port


def local_addresses(listen_host: str) -> tuple[str, ...]:
    """Addresses to report: the listen host if specific, and the outbound one."""
    found: list[str] = []
    if listen_host not in ("0.0.0.0", "::", ""):
        found.append(listen_host)
    # Connecting a UDP socket sends nothing; it only picks the outbound source address.
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        outbound = str(probe.getsockname()[0])
        if outbound not in found:
            found.append(outbound)
    return tuple(found)


def _format_address(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(config: DemoConfig, host: str, port: int) -> int:
    runner = web.AppRunner(build_app(config), access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        print(f"Error starting demo service: {exc}", file=sys.stderr)
        await runner.cleanup()
        return 1
    bound = ", ".join(_format_address(a) for a in runner.addresses)
    print(f"==> Demo service {config.name} listening on {bound}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
    print(f"==> Demo service {config.name} stopped", file=sys.stderr, flush=True)
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(argv: list[str]) -> int:
    flags = _flags()
    try:
        values, rest = flags.parse(argv)
    except FlagError as exc:
        print(exc, file=sys.stderr)
        return 1
    apply_env(values, os.environ)
    if rest:
        print(f"Too many arguments (expected 0, got {len(rest)})", file=sys.stderr)
        return 1
    if not values["name"]:
        print("Missing required -name flag", file=sys.stderr)
        return 1
    try:
        host, port = parse_listen(values["listen"])
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    config = DemoConfig(
        name=values["name"],
        message=values["message"],
        upstreams=tuple(values["upstream"]),
        upstream_timeout=float(values["upstream-timeout"]),
        fail=values["fail"],
        log_json=values["log-json"],
        ip_addresses=local_addresses(host),
    )
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(serve(config, host, port))
