"""`proconsul agent`: load the config, run the agent until a signal or a leave.

Signals: SIGHUP reloads the config; SIGINT and SIGTERM stop the agent.
A config error prints `<file>: <key>: <problem>` and exits 1 before anything
starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import uvloop

from proconsul.agent.agent import Agent
from proconsul.agent.logs import setup_logging
from proconsul.config.agent_args import AgentArgs, parse_agent_args
from proconsul.config.errors import ConfigError
from proconsul.config.flags import FlagError
from proconsul.config.loader import load_config
from proconsul.config.schema import RuntimeConfig

log = logging.getLogger("proconsul.agent")


def run(argv: list[str]) -> int:
    try:
        args = parse_agent_args(argv)
    except FlagError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        loaded = load_config(args)
    except ConfigError as exc:
        print(f"==> {exc}", file=sys.stderr)
        return 1
    setup_logging(loaded.config.log_level, loaded.config.log_json)
    for warning in loaded.warnings:
        log.warning("agent: %s", warning)
    try:
        return uvloop.run(_serve(args, loaded.config))
    except KeyboardInterrupt:
        return 0


async def _serve(args: AgentArgs, config: RuntimeConfig) -> int:
    agent = Agent(args, config)
    try:
        await agent.start()
    except (OSError, ValueError) as exc:
        log.error("agent: error starting agent: %s", exc)
        await agent.stop()
        return 1
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        async def do_reload() -> None:
            try:
                await agent.reload()
            except (ConfigError, ValueError) as exc:
                log.error("agent: failed to reload configuration: %s", exc)

        task = asyncio.ensure_future(do_reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.stopped.set)
    await agent.stopped.wait()
    log.info("agent: shutting down")
    with contextlib.suppress(Exception):
        await agent.stop()
    log.info("agent: shutdown complete")
    return agent.exit_code
