"""Where a read is served, by Consul's consistency modes: a pure decision.

Job: `route_read` looks at a read's options and this server's view of
leadership and says what to do next: serve from the local store, pass a read
barrier first, forward to the leader, or wait for one to be elected.

Rules:
- `?stale` is served by whichever server has the request.
- Otherwise only the leader serves; a follower forwards to it.
- `?consistent` on the leader passes a read barrier (Raft's read index) first,
  whichever way the read got there: a read that waited out an election on a
  server that then won it must not skip the barrier, because a new leader may
  not yet have applied every entry the old one committed.
- The caller asks again after every wait; the decision is never carried over
  from before one (the stale-read defect this module closes came from that).
- Pure: no I/O, no clock. The server adapter and the Raft simulator run it.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class ReadStep(enum.Enum):
    LOCAL = "local"  # serve from this server's store now
    BARRIER = "barrier"  # pass a read barrier, then serve locally
    FORWARD = "forward"  # send to the leader at `address`
    WAIT = "wait"  # no leader known: wait for one, then ask again


class ReadRoute(NamedTuple):
    step: ReadStep
    address: str | None = None


def route_read(
    *,
    allow_stale: bool,
    require_consistent: bool,
    leading: bool,
    leader_address: str | None,
) -> ReadRoute:
    """The next step for one read (see the module rules)."""
    if allow_stale:
        return ReadRoute(ReadStep.LOCAL)
    if not leading:
        if leader_address is None:
            return ReadRoute(ReadStep.WAIT)
        return ReadRoute(ReadStep.FORWARD, leader_address)
    return ReadRoute(ReadStep.BARRIER if require_consistent else ReadStep.LOCAL)
