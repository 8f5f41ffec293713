"""Network coordinates as stored and served (Consul's `/v1/coordinate` shapes).

`Coordinate` is Serf's (Vec, Error, Adjustment, Height; seconds); gossip/coordinate.py
computes it, the state store keeps one per node (`CoordinateEntry`), and
`distance_s` is the one estimate every reader uses (DESIGN.md, "Network coordinates").
"""

from __future__ import annotations

import math

import msgspec

from proconsul.structs.naming import pascal


class Coordinate(msgspec.Struct, frozen=True, rename=pascal):
    """One member's coordinate (Consul's JSON: Vec, Error, Adjustment, Height; seconds)."""

    vec: list[float]
    error: float
    adjustment: float
    height: float

    def is_valid(self) -> bool:
        return all(math.isfinite(x) for x in (*self.vec, self.error, self.adjustment, self.height))

    def compatible(self, other: Coordinate) -> bool:
        return len(self.vec) == len(other.vec)

    def raw_distance_s(self, other: Coordinate) -> float:
        squares = sum((x - y) * (x - y) for x, y in zip(self.vec, other.vec, strict=True))
        return math.sqrt(squares) + self.height + other.height

    def distance_s(self, other: Coordinate) -> float:
        """The estimated round trip to `other`, in seconds (Serf's DistanceTo)."""
        dist = self.raw_distance_s(other)
        adjusted = dist + self.adjustment + other.adjustment
        return adjusted if adjusted > 0.0 else dist


class CoordinateEntry(msgspec.Struct, rename=pascal):
    """One node's coordinate (`/v1/coordinate/nodes` rows)."""

    node: str
    coord: Coordinate
    segment: str = ""
