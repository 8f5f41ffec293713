"""Network coordinates on the servers: their reads, the batching of updates, `?near=` order.

Job (DESIGN.md, "Network coordinates"):
- reads "Coordinate.ListNodes" (every node's coordinate) and "Coordinate.Node"
  (one node's, a list of one or none), filtered by node:read;
- `CoordinateBatcher`: agents send their coordinate as a one-entry
  `CoordinateBatchUpdate` through the ordinary write path; the server that
  takes it checks node:write on the node, keeps the latest per node and, every
  `update_period_s` (Consul's `coordinate_update_period`, 5 s), applies them in
  batches of `batch_size` (128), at most `max_batches` (5) per period, through
  the log (forwarded to the leader like any write). More nodes pending than one
  period carries is refused with Consul's text;
- `sort_by_distance`: catalog and health rows ordered by the estimated round
  trip from a node (`?near=`), nodes without a coordinate last in their order.

Rules: the batch is the server's own write, authorized where the entries came
in; the leader accepts a forwarded batch from a server without a token check
(server/raft_rpc.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from proconsul.acl.authorizer import Authorizer
from proconsul.acl.resolved import ResolvedToken
from proconsul.rpc.errors import RPCError
from proconsul.state.coordinate_tables import COORDINATES_KEY
from proconsul.state.store import StateStore
from proconsul.structs.catalog import CheckServiceNode, Node, ServiceNode
from proconsul.structs.commands import ApplyResult, Command, CoordinateBatchUpdate
from proconsul.structs.coordinate import CoordinateEntry
from proconsul.structs.requests import ReadRequest

log = logging.getLogger("proconsul.server")

LIST_METHOD = "Coordinate.ListNodes"
NODE_METHOD = "Coordinate.Node"
RATE_LIMITED = "Coordinate update rate limit exceeded, increase SyncCoordinateRateTarget"
# Reads whose rows `?near=` orders, and how to find each row's node.
NEAR_READS: dict[str, Callable[[Any], str]] = {
    "Catalog.ListNodes": lambda row: row.node,
    "Catalog.ServiceNodes": lambda row: row.node,
    "Health.ServiceNodes": lambda row: row.node.node,
}

Read = Callable[[ReadRequest], tuple[Sequence[str], Callable[[], Any]]]
Apply = Callable[[Command], Awaitable[tuple[int, ApplyResult]]]


def coordinate_reads(store: StateStore) -> dict[str, Read]:
    def list_nodes(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return (COORDINATES_KEY,), lambda: (
            store.index(COORDINATES_KEY),
            store.coordinates.all(),
        )

    def node(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[CoordinateEntry]]:
            entry = store.coordinates.coordinates.get(req.name)
            return store.index(COORDINATES_KEY), [] if entry is None else [entry]

        return (COORDINATES_KEY,), run

    return {LIST_METHOD: list_nodes, NODE_METHOD: node}


def filter_coordinates(
    authz: Authorizer, entries: list[CoordinateEntry]
) -> tuple[list[CoordinateEntry], bool]:
    kept = [entry for entry in entries if authz.node_read(entry.node)]
    return (entries, False) if len(kept) == len(entries) else (kept, True)


def vet_coordinate_update(resolved: ResolvedToken, request: CoordinateBatchUpdate) -> None:
    for entry in request.updates:
        if not resolved.authorizer.node_write(entry.node):
            raise resolved.deny("node", "write", entry.node)


def distance_from(store: StateStore, near: str) -> Callable[[str], float | None]:
    """The estimated round trip (s) from `near` to a node; None when either has no coordinate."""
    table = store.coordinates.coordinates
    origin = table.get(near)

    def distance(node: str) -> float | None:
        if origin is None:
            return 0.0 if node == near else None
        other = table.get(node)
        if other is None or not origin.coord.compatible(other.coord):
            return None
        return origin.coord.distance_s(other.coord)

    return distance


def sort_by_distance(
    method: str,
    rows: list[Node] | list[ServiceNode] | list[CheckServiceNode],
    store: StateStore,
    near: str,
) -> list[Any]:
    """`rows` nearest to `near` first; rows whose distance is unknown after, in order."""
    node_of = NEAR_READS[method]
    distance = distance_from(store, near)
    known: list[tuple[float, int, Any]] = []
    unknown: list[Any] = []
    for position, row in enumerate(rows):
        d = distance(node_of(row))
        if d is None:
            unknown.append(row)
        else:
            known.append((d, position, row))
    known.sort(key=lambda item: (item[0], item[1]))
    return [row for _, _, row in known] + unknown


class CoordinateBatcher:
    """Latest coordinate per node, applied in batches every period (see module doc)."""

    def __init__(
        self,
        apply: Apply,
        update_period_s: float = 5.0,
        batch_size: int = 128,
        max_batches: int = 5,
    ) -> None:
        self._apply = apply
        self.update_period_s = update_period_s
        self.batch_size = batch_size
        self.max_batches = max_batches
        self._pending: dict[str, CoordinateEntry] = {}
        self._task: asyncio.Task[None] | None = None
        self.applied = 0
        self.failures = 0

    def submit(self, entries: Sequence[CoordinateEntry]) -> None:
        for entry in entries:
            if (
                entry.node not in self._pending
                and len(self._pending) >= self.batch_size * self.max_batches
            ):
                raise RPCError(RATE_LIMITED)
            self._pending[entry.node] = entry
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._flush_later(), name="coordinate-batch"
            )

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.update_period_s)
        pending, self._pending = list(self._pending.values()), {}
        for start in range(0, len(pending), self.batch_size):
            batch = CoordinateBatchUpdate(updates=pending[start : start + self.batch_size])
            try:
                await self._apply(batch)
                self.applied += len(batch.updates)
            except Exception as exc:  # a lost batch is replaced by the next sync
                self.failures += 1
                log.warning(
                    "coordinate: batch update of %d nodes failed: %s", len(batch.updates), exc
                )

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def stats(self) -> dict[str, int]:
        return {"pending": len(self._pending), "applied": self.applied, "failures": self.failures}
