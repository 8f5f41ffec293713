"""Network coordinate table of the state store: the latest coordinate of each node.

Job: apply `CoordinateBatchUpdate` (DESIGN.md, "Network coordinates"): each
entry replaces its node's coordinate; the index key "coordinates" moves when
any changed.

Rules (Consul's): an entry for a node the catalog does not hold is skipped, as
is one whose coordinate is not finite; deregistering a node drops its
coordinate (the store calls `drop`). Deterministic: only `fsm.apply` writes.
"""

from __future__ import annotations

from collections.abc import Callable, Container

import msgspec

from proconsul.structs.commands import CoordinateBatchUpdate
from proconsul.structs.coordinate import CoordinateEntry

COORDINATES_KEY = "coordinates"


class CoordinateSnapshot(msgspec.Struct, array_like=True):
    """Every node's coordinate. APPEND-ONLY fields."""

    entries: list[CoordinateEntry]


class CoordinateTables:
    def __init__(self, bump: Callable[[int, str], None]) -> None:
        self._bump = bump
        self.coordinates: dict[str, CoordinateEntry] = {}

    def __repr__(self) -> str:
        return f"CoordinateTables(nodes={len(self.coordinates)})"

    def snapshot(self) -> CoordinateSnapshot:
        return CoordinateSnapshot(entries=list(self.coordinates.values()))

    def restore(self, snap: CoordinateSnapshot | None) -> None:
        self.coordinates = {} if snap is None else {e.node: e for e in snap.entries}

    def all(self) -> list[CoordinateEntry]:
        """Every node's coordinate, by node name (Consul's order)."""
        return [self.coordinates[name] for name in sorted(self.coordinates)]

    def apply(self, index: int, request: CoordinateBatchUpdate, nodes: Container[str]) -> None:
        changed = False
        for entry in request.updates:
            if entry.node not in nodes or not entry.coord.is_valid():
                continue
            if self.coordinates.get(entry.node) != entry:
                self.coordinates[entry.node] = entry
                changed = True
        if changed:
            self._bump(index, COORDINATES_KEY)

    def drop(self, index: int, node: str) -> None:
        if self.coordinates.pop(node, None) is not None:
            self._bump(index, COORDINATES_KEY)
