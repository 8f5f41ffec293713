"""Network coordinates on the servers: the store's table through the FSM, the
batcher's periods and bounds, and `?near=` ordering by estimated RTT."""

from __future__ import annotations

import asyncio

import pytest

from proconsul.rpc.errors import RPCError
from proconsul.server.coordinate_endpoints import (
    RATE_LIMITED,
    CoordinateBatcher,
    sort_by_distance,
)
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import Node
from proconsul.structs.commands import (
    ApplyResult,
    Command,
    CoordinateBatchUpdate,
    DeregisterRequest,
    RegisterRequest,
)
from proconsul.structs.coordinate import Coordinate, CoordinateEntry


def at(x_s: float, height_s: float = 1e-5) -> Coordinate:
    return Coordinate(vec=[x_s] + [0.0] * 7, error=0.2, adjustment=0.0, height=height_s)


def entry(node: str, x_s: float) -> CoordinateEntry:
    return CoordinateEntry(node=node, coord=at(x_s))


def store_with(*nodes: str) -> tuple[StateStore, FSM]:
    store = StateStore()
    fsm = FSM(store)
    for i, name in enumerate(nodes, start=1):
        fsm.apply(i, RegisterRequest(node=name, address=f"10.0.0.{i}"))
    return store, fsm


def test_table_keeps_known_nodes_and_drops_them_with_the_node() -> None:
    store, fsm = store_with("a", "b")
    nan = CoordinateEntry(node="b", coord=at(float("nan")))
    batch = CoordinateBatchUpdate(updates=[entry("a", 0.01), entry("ghost", 0.02), nan])
    assert fsm.apply(10, batch) is None
    assert [e.node for e in store.coordinates.all()] == ["a"]
    assert store.index("coordinates") == 10
    fsm.apply(11, batch)  # the same again changes nothing
    assert store.index("coordinates") == 10

    copy = StateStore()
    copy.restore(store.snapshot())
    assert copy.coordinates.all() == store.coordinates.all()

    fsm.apply(12, DeregisterRequest(node="a"))
    assert store.coordinates.all() == [] and store.index("coordinates") == 12


def test_near_orders_by_estimated_rtt_unknown_last() -> None:
    store, fsm = store_with("a", "b", "c", "d")
    fsm.apply(
        10, CoordinateBatchUpdate(updates=[entry("a", 0.0), entry("b", 0.05), entry("c", 0.01)])
    )
    nodes = [Node(node=n, address="x") for n in ("d", "b", "c", "a")]
    ordered = sort_by_distance("Catalog.ListNodes", nodes, store, "a")
    assert [n.node for n in ordered] == ["a", "c", "b", "d"]
    # A near node without a coordinate: itself first, the rest as they were.
    ordered = sort_by_distance("Catalog.ListNodes", nodes, store, "d")
    assert [n.node for n in ordered] == ["d", "b", "c", "a"]


def test_batcher_applies_the_latest_per_node_in_bounded_batches() -> None:
    applied: list[list[str]] = []

    async def apply(command: Command) -> tuple[int, ApplyResult]:
        assert isinstance(command, CoordinateBatchUpdate)
        applied.append([e.node for e in command.updates])
        return 1, None

    async def scenario() -> None:
        batcher = CoordinateBatcher(apply, update_period_s=0.01, batch_size=2, max_batches=2)
        batcher.submit([entry("a", 0.01)])
        batcher.submit([entry("a", 0.02), entry("b", 0.0), entry("c", 0.0), entry("d", 0.0)])
        with pytest.raises(RPCError, match=RATE_LIMITED):
            batcher.submit([entry("e", 0.0)])
        batcher.submit([entry("a", 0.03)])  # a known node is always taken
        for _ in range(100):
            if batcher.stats()["applied"] == 4:
                break
            await asyncio.sleep(0.01)
        assert applied == [["a", "b"], ["c", "d"]]
        batcher.close()

    asyncio.run(scenario())
