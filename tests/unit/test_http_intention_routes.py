"""The intentions HTTP API over real server endpoints (a StateStore and a
LocalLog): concurrent creates for one destination all land through the
check-and-set retries, and bad input gets Consul's texts."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from aiohttp.test_utils import TestClient, TestServer
from tests.local_log import LocalLog

from proconsul.http.server import build_app
from proconsul.server.endpoints import ServerEndpoints
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.commands import ApplyResult, Command
from proconsul.structs.requests import ReadRequest, ReadResponse


class EndpointsAgent:
    """The agent side of the HTTP API, answered by in-process server endpoints.
    A read of a config entry yields to the loop, as a network round trip
    does, so concurrent writers really do read the same ModifyIndex."""

    kv_max_value_size = 512 * 1024
    node_name = "n1"

    def __init__(self) -> None:
        store = StateStore()
        self.endpoints = ServerEndpoints(store, LocalLog(FSM(store)), "dc1")
        self.lost_cas = 0

    def effective_token(self, secret: str) -> str:
        return secret

    async def resolve_token(self, secret: str) -> None:
        return None

    async def rpc_read(self, method: str, request: ReadRequest) -> ReadResponse:
        response = await self.endpoints.read(method, request)
        if method == "ConfigEntry.Get":
            await asyncio.sleep(0)
        return response

    async def rpc_write(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        index, result = await self.endpoints.write(command, token)
        if result is False:
            self.lost_cas += 1
        return index, result


async def _client() -> tuple[TestClient[Any, Any], EndpointsAgent]:
    agent = EndpointsAgent()
    app = build_app(cast(Any, agent), ui_enabled=False)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client, agent


async def test_concurrent_creates_for_one_destination_all_land() -> None:
    client, agent = await _client()
    try:
        sources = [f"svc-{i}" for i in range(6)]

        async def create(source: str) -> str:
            body = {"SourceName": source, "DestinationName": "api", "Action": "allow"}
            response = await client.post("/v1/connect/intentions", json=body)
            assert response.status == 200, await response.text()
            created: str = (await response.json())["ID"]
            return created

        ids = await asyncio.gather(*(create(source) for source in sources))
        assert len(set(ids)) == len(sources)
        assert agent.lost_cas > 0  # the writers did collide, and retried
        listed = await (await client.get("/v1/connect/intentions")).json()
        assert sorted(row["SourceName"] for row in listed) == sources
        assert sorted(row["ID"] for row in listed) == sorted(ids)
    finally:
        await client.close()


async def test_bad_input_gets_consuls_texts() -> None:
    client, _ = await _client()
    try:
        cases = [
            ("GET", "/v1/connect/intentions/exact?source=web", None, 400,
             "required query parameter 'destination' not set"),
            ("GET", "/v1/connect/intentions/check?destination=api", None, 400,
             "required query parameter 'source' not set"),
            ("GET", "/v1/connect/intentions/match?by=sideways&name=api", None, 400,
             "'by' parameter must be one of 'source' or 'destination'"),
            ("GET", "/v1/connect/intentions/match?by=source", None, 400,
             "required query parameter 'name' not set"),
            ("GET", "/v1/connect/intentions/exact?source=web&destination=api", None, 404,
             "Intention not found"),
            ("GET", "/v1/connect/intentions/0b5e6a2c-0000-4000-8000-000000000000", None, 404,
             "Intention not found"),
            ("POST", "/v1/connect/intentions",
             {"SourceName": "web", "DestinationName": "api", "Action": "maybe"}, 400,
             "1 error occurred:\n\t* Action must be set to 'allow' or 'deny'\n\n"),
            ("PUT", "/v1/connect/intentions/exact?source=web&destination=api",
             {"Action": "maybe"}, 400, "Sources[0].Action must be set to 'allow' or 'deny'"),
            ("PUT", "/v1/connect/intentions/exact?source=web&destination=api",
             {"Action": "allow", "Meta": {"a": "b"}}, 400, "Meta must not be specified"),
            ("POST", "/v1/agent/connect/authorize", {"ClientCertURI": "spiffe://x"}, 400,
             "Target service must be specified"),
            ("POST", "/v1/agent/connect/authorize",
             {"Target": "api", "ClientCertURI": "https://example.com/web"}, 400,
             "ClientCertURI not a valid Connect identifier"),
            ("POST", "/v1/agent/connect/authorize",
             {"Target": "api", "ClientCertURI": "spiffe://td.consul/agent/server/dc/dc1"}, 400,
             "ClientCertURI not a valid Service identifier"),
        ]  # fmt: skip
        for method, path, body, status, text in cases:
            data = None if body is None else json.dumps(body)
            response = await client.request(method, path, data=data)
            assert (response.status, await response.text()) == (status, text), path
        listed = await (await client.get("/v1/connect/intentions")).json()
        assert listed == []  # nothing bad was written
    finally:
        await client.close()


async def test_authorize_matches_only_default_namespace_sources() -> None:
    client, _ = await _client()
    try:
        put = await client.put(
            "/v1/connect/intentions/exact?source=web&destination=api", json={"Action": "deny"}
        )
        assert put.status == 200, await put.text()

        async def decide(namespace: str) -> Any:
            uri = f"spiffe://td.consul/ns/{namespace}/dc/dc1/svc/web"
            body = {"Target": "api", "ClientCertURI": uri}
            response = await client.post("/v1/agent/connect/authorize", json=body)
            assert response.status == 200, await response.text()
            return await response.json()

        assert await decide("default") == {
            "Authorized": False,
            "Reason": "Matched L4 intention: default/web => default/api "
            "(Precedence: 9, Action: DENY)",
        }
        # Consul's JSON: empty fields (ID, Description, Meta, times) left out.
        (row,) = await (await client.get("/v1/connect/intentions")).json()
        assert row == {
            "SourceName": "web",
            "DestinationName": "api",
            "Action": "deny",
            "Precedence": 9,
            "SourceNS": "default",
            "DestinationNS": "default",
            "SourceType": "consul",
            "CreateIndex": row["CreateIndex"],
            "ModifyIndex": row["ModifyIndex"],
        }
        assert await decide("other") == {
            "Authorized": True,
            "Reason": "Default behavior configured by ACLs",
        }
    finally:
        await client.close()
