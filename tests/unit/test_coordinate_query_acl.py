"""ACLs of coordinate updates and prepared query writes at the server endpoints:
who may send which node's coordinate, how a forwarded batch is accepted, and
that a query's owner is the writer's AccessorID whatever the caller claims."""

from __future__ import annotations

import asyncio

import pytest
from tests.unit.test_endpoints_acl import MGMT, make_world

from proconsul.acl.errors import ACLDenied
from proconsul.server.raft_rpc import authorize_forwarded
from proconsul.structs.commands import CoordinateBatchUpdate, PreparedQueryRequest
from proconsul.structs.coordinate import Coordinate, CoordinateEntry
from proconsul.structs.prepared_query import PreparedQuery, ServiceQuery

COORD = Coordinate(vec=[0.0] * 8, error=1.0, adjustment=0.0, height=1e-5)


def batch(node: str) -> CoordinateBatchUpdate:
    return CoordinateBatchUpdate(updates=[CoordinateEntry(node=node, coord=COORD)])


def test_coordinate_updates_need_node_write_where_they_come_in() -> None:
    async def body() -> None:
        world = await make_world()
        n1 = await world.token('node "n1" { policy = "write" }', "n1-writer")
        with pytest.raises(ACLDenied) as err:
            await world.endpoints.write(batch("n2"), n1)
        assert "'node:write' on \"n2\"" in err.value.message
        assert await world.endpoints.write(batch("n1"), n1) == (0, None)
        assert world.endpoints.coordinates.stats()["pending"] == 1
        # The batch a server forwards carries no token: accepted as the server's own.
        authorize_forwarded(world.endpoints, batch("n2"), "")
        world.endpoints.coordinates.close()

    asyncio.run(body())


def test_query_owner_is_the_writers_accessor_not_the_callers_claim() -> None:
    async def body() -> None:
        world = await make_world()
        anyone = await world.token('node_prefix "" { policy = "read" }', "anyone")
        query = PreparedQuery(id="q1", service=ServiceQuery(service="api"))
        create = PreparedQueryRequest(op="create", query=query, owner="forged-accessor")
        await world.endpoints.write(create, anyone)
        owner = world.store.queries.owners["q1"]
        assert owner not in ("", "forged-accessor")
        assert owner == world.endpoints.resolve(anyone).accessor_id  # type: ignore[union-attr]
        other = await world.token('node_prefix "" { policy = "read" }', "other")
        update = PreparedQueryRequest(op="update", query=query)
        with pytest.raises(ACLDenied):
            await world.endpoints.write(update, other)
        await world.endpoints.write(update, MGMT)  # management may

    asyncio.run(body())
