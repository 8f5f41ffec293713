"""Sending this agent's network coordinate to the servers (Consul's sendCoordinate).

Job: every interval, read the gossip core's Vivaldi coordinate and write it
as a one-entry `CoordinateBatchUpdate` with the agent token; the server that
takes it checks node:write and batches it (server/coordinate_endpoints.py).

Timing (Consul's): the interval scales with the pool so the servers see about
`rate_target` updates per second in all (64), never less than
`interval_min_s` (15 s), plus a random stagger of up to one interval. The
first send comes after `first_delay_s` (a few seconds, once some probes have
been timed) instead of a whole interval, so a new node shows up soon.
A failed send is logged once per change of error and retried next interval.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from proconsul.structs.commands import ApplyResult, Command, CoordinateBatchUpdate
from proconsul.structs.coordinate import Coordinate, CoordinateEntry

log = logging.getLogger("proconsul.agent")


def sync_interval_s(members: int, rate_target: float = 64.0, interval_min_s: float = 15.0) -> float:
    """Consul's RateScaledInterval: `members / rate` seconds, at least the minimum."""
    return max(interval_min_s, members / rate_target)


async def run_coordinate_sync(
    node: str,
    coordinate: Callable[[], Coordinate | None],
    members: Callable[[], int],
    write: Callable[[Command, str], Awaitable[tuple[int, ApplyResult]]],
    token: Callable[[], str],
    rng: random.Random,
    first_delay_s: float = 3.0,
) -> None:
    await asyncio.sleep(first_delay_s * (1 + rng.random()))
    last_error = ""
    while True:
        coord = coordinate()
        if coord is not None:
            try:
                entry = CoordinateEntry(node=node, coord=coord)
                await write(CoordinateBatchUpdate(updates=[entry]), token())
                last_error = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the servers may be away; the next interval retries
                if str(exc) != last_error:
                    last_error = str(exc)
                    log.warning("agent: coordinate update failed: %s", exc)
        interval = sync_interval_s(members())
        await asyncio.sleep(interval + rng.uniform(0, interval))
