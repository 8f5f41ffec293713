"""Network coordinates: Serf's Vivaldi client, pure (DESIGN.md, "Network coordinates").

Job: keep this member's coordinate in a Euclidean space plus a height (the
access link), updated from each probe's measured round trip and the peer's
coordinate carried in its ack, so the distance between two coordinates
estimates their round trip time without measuring it.

The algorithm and its published parameters are Serf's (`DefaultConfig` of its
coordinate package): 8 dimensions, error starting at and capped by
`vivaldi_error_max` 1.5, `vivaldi_ce` and `vivaldi_cc` 0.25, height at least
`height_min` 10 µs, a median filter over each peer's last 3 samples, an
adjustment term averaging the last 20 residuals (halved), and gravity
(`gravity_rho` 150) pulling the coordinate towards the origin so the whole
space does not drift. Each update runs: latency filter, Vivaldi step, adjustment,
gravity; a coordinate that turns non-finite is reset.

Rules: pure; randomness (a unit vector when two coordinates coincide) comes
from the caller's `random.Random`. Coordinates are frozen values.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from proconsul.structs.coordinate import Coordinate

if TYPE_CHECKING:
    import random

_ZERO = 1.0e-6
MAX_RTT_S = 10.0  # Serf refuses samples above 10 s


@dataclass(frozen=True)
class VivaldiParams:
    dimensionality: int = 8
    vivaldi_error_max: float = 1.5
    vivaldi_ce: float = 0.25
    vivaldi_cc: float = 0.25
    adjustment_window_size: int = 20
    height_min: float = 10.0e-6
    latency_filter_size: int = 3
    gravity_rho: float = 150.0


def new_coordinate(params: VivaldiParams = VivaldiParams()) -> Coordinate:
    return Coordinate(
        vec=[0.0] * params.dimensionality,
        error=params.vivaldi_error_max,
        adjustment=0.0,
        height=params.height_min,
    )


def _diff(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _magnitude(v: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _unit_vector_at(
    a: Sequence[float], b: Sequence[float], rng: random.Random
) -> tuple[list[float], float]:
    """The unit vector from b to a and the distance; a random one if they coincide."""
    d = _diff(a, b)
    mag = _magnitude(d)
    if mag > _ZERO:
        return [x / mag for x in d], mag
    d = [rng.random() - 0.5 for _ in d]
    mag = _magnitude(d)
    if mag > _ZERO:
        return [x / mag for x in d], 0.0
    return [1.0] + [0.0] * (len(d) - 1), 0.0


def apply_force(
    coord: Coordinate, params: VivaldiParams, force: float, other: Coordinate, rng: random.Random
) -> Coordinate:
    unit, mag = _unit_vector_at(coord.vec, other.vec, rng)
    vec = [x + u * force for x, u in zip(coord.vec, unit, strict=True)]
    height = coord.height
    if mag > _ZERO:
        height = max((coord.height + other.height) * force / mag + coord.height, params.height_min)
    return Coordinate(vec=vec, error=coord.error, adjustment=coord.adjustment, height=height)


class CoordinateClient:
    """This member's coordinate and what it learnt from its peers' samples."""

    def __init__(self, rng: random.Random, params: VivaldiParams = VivaldiParams()) -> None:
        self.params = params
        self._rng = rng
        self.coord = new_coordinate(params)
        self._origin = Coordinate(
            vec=[0.0] * params.dimensionality, error=0.0, adjustment=0.0, height=0.0
        )
        self._adjustments = [0.0] * params.adjustment_window_size
        self._adjustment_index = 0
        self._samples: dict[str, list[float]] = {}
        self.updates = 0
        self.resets = 0
        self.refused = 0

    def forget(self, node: str) -> None:
        """A member left: drop its latency samples."""
        self._samples.pop(node, None)

    def keep_only(self, members: Container[str]) -> None:
        """Drop the samples of every node no longer a member (reaped)."""
        for node in [name for name in self._samples if name not in members]:
            del self._samples[node]

    def _filtered_rtt(self, node: str, rtt_s: float) -> float:
        samples = self._samples.setdefault(node, [])
        samples.append(rtt_s)
        if len(samples) > self.params.latency_filter_size:
            del samples[0]
        ordered = sorted(samples)
        return ordered[len(ordered) // 2]

    def update(self, node: str, other: Coordinate, rtt_s: float) -> Coordinate | None:
        """Take one sample: `rtt_s` measured to `node` whose coordinate is `other`.
        Returns the new coordinate, or None for a sample Serf refuses (a
        coordinate of another dimensionality or not finite, an RTT <= 0 or > 10 s)."""
        params = self.params
        if (
            len(other.vec) != params.dimensionality
            or not other.is_valid()
            or not 0.0 < rtt_s <= MAX_RTT_S
        ):
            self.refused += 1
            return None
        rtt = self._filtered_rtt(node, rtt_s)
        self._vivaldi(other, rtt)
        self._adjust(other, rtt)
        self._gravity()
        if not self.coord.is_valid():
            self.resets += 1
            self.coord = new_coordinate(params)
        self.updates += 1
        return self.coord

    def _vivaldi(self, other: Coordinate, rtt: float) -> None:
        params = self.params
        coord = self.coord
        dist = coord.distance_s(other)
        rtt = max(rtt, _ZERO)
        wrongness = abs(dist - rtt) / rtt
        total_error = max(coord.error + other.error, _ZERO)
        weight = coord.error / total_error
        error = params.vivaldi_ce * weight * wrongness + coord.error * (
            1.0 - params.vivaldi_ce * weight
        )
        error = min(error, params.vivaldi_error_max)
        force = params.vivaldi_cc * weight * (rtt - dist)
        moved = apply_force(coord, params, force, other, self._rng)
        self.coord = msgspec.structs.replace(moved, error=error)

    def _adjust(self, other: Coordinate, rtt: float) -> None:
        window = self.params.adjustment_window_size
        if window == 0:
            return
        self._adjustments[self._adjustment_index] = rtt - self.coord.raw_distance_s(other)
        self._adjustment_index = (self._adjustment_index + 1) % window
        adjustment = sum(self._adjustments) / (2.0 * window)
        self.coord = msgspec.structs.replace(self.coord, adjustment=adjustment)

    def _gravity(self) -> None:
        dist = self._origin.distance_s(self.coord)
        force = -1.0 * (dist / self.params.gravity_rho) ** 2
        self.coord = apply_force(self.coord, self.params, force, self._origin, self._rng)
