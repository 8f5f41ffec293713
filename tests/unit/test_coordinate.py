"""The Vivaldi client (gossip/coordinate.py): Serf's parameters and rules."""

from __future__ import annotations

import random

import msgspec
import pytest

from proconsul.gossip import messages as m
from proconsul.gossip.coordinate import CoordinateClient, VivaldiParams, new_coordinate
from proconsul.structs.coordinate import Coordinate


def test_new_coordinate_is_serfs() -> None:
    coord = new_coordinate()
    assert coord.vec == [0.0] * 8
    assert (coord.error, coord.adjustment, coord.height) == (1.5, 0.0, 10.0e-6)
    assert VivaldiParams() == VivaldiParams(8, 1.5, 0.25, 0.25, 20, 10.0e-6, 3, 150.0)


def test_two_members_learn_their_distance() -> None:
    a, b = CoordinateClient(random.Random(1)), CoordinateClient(random.Random(2))
    rtt = 0.030
    for _ in range(200):
        a.update("b", b.coord, rtt)
        b.update("a", a.coord, rtt)
    assert a.coord.distance_s(b.coord) == pytest.approx(rtt, rel=0.05)
    assert a.coord.error < 0.5  # confidence grew from 1.5


def test_latency_filter_takes_the_median_of_three() -> None:
    client = CoordinateClient(random.Random(1))
    other = new_coordinate()
    assert client._filtered_rtt("x", 0.010) == 0.010
    assert client._filtered_rtt("x", 0.500) == 0.500  # median of two: the upper
    assert client._filtered_rtt("x", 0.011) == 0.011  # the outlier is ignored
    client.forget("x")
    assert client._filtered_rtt("x", 0.2) == 0.2
    assert client.update("x", other, 0.01) is not None


@pytest.mark.parametrize(
    ("other", "rtt"),
    [
        (Coordinate(vec=[0.0] * 3, error=1.5, adjustment=0.0, height=1e-5), 0.01),
        (Coordinate(vec=[float("nan")] * 8, error=1.5, adjustment=0.0, height=1e-5), 0.01),
        (new_coordinate(), 0.0),
        (new_coordinate(), 11.0),
    ],
)
def test_refuses_what_serf_refuses(other: Coordinate, rtt: float) -> None:
    client = CoordinateClient(random.Random(1))
    assert client.update("x", other, rtt) is None
    assert client.coord == new_coordinate() and client.refused == 1


def test_ack_carries_the_coordinate_on_the_wire() -> None:
    coord = Coordinate(vec=[0.001] * 8, error=0.3, adjustment=-0.0001, height=0.0002)
    decoded = m.decode(m.encode(m.Ack(7, coord)))
    assert decoded == m.Ack(7, coord)
    assert m.decode(m.encode(m.Ack(8))) == m.Ack(8, None)
    as_json = msgspec.json.decode(msgspec.json.encode(coord))
    assert set(as_json) == {"Vec", "Error", "Adjustment", "Height"}


def test_reaped_members_lose_their_samples() -> None:
    client = CoordinateClient(random.Random(1))
    client.update("a", new_coordinate(), 0.01)
    client.update("b", new_coordinate(), 0.01)
    client.keep_only({"b"})
    assert list(client._samples) == ["b"]
