"""GET /v1/connect/ca/roots: Consul's JSON shape with the read's index headers,
`?pem=true` as a PEM chain, and never a private key in either."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proconsul.http.api import AGENT_KEY
from proconsul.http.connect_routes import ROOTS_METHOD, add_routes
from proconsul.server.connect_ca import ensure_ca_root
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.commands import ApplyResult, Command
from proconsul.structs.requests import QueryMeta, ReadRequest, ReadResponse


class FakeAgent:
    """Answers "ConnectCA.Roots" from a store, as the server endpoint will."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.methods: list[str] = []

    def effective_token(self, secret: str) -> str:
        return secret

    async def rpc_read(self, method: str, request: ReadRequest) -> ReadResponse:
        self.methods.append(method)
        index, value = self.store.ca_roots()
        return ReadResponse(meta=QueryMeta(index=max(index, 1)), value=value)


async def _client(store: StateStore) -> tuple[TestClient[Any, Any], FakeAgent]:
    app = web.Application()
    agent = FakeAgent(store)
    app[AGENT_KEY] = cast(Any, agent)
    add_routes(app)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client, agent


async def _initialized() -> StateStore:
    store = StateStore()
    fsm = FSM(store)

    async def apply(command: Command) -> tuple[int, ApplyResult]:
        return 12, fsm.apply(12, command)

    await ensure_ca_root(store, apply, datetime.now(UTC), random.Random(4))
    return store


async def test_roots_in_consuls_shape() -> None:
    store = await _initialized()
    client, agent = await _client(store)
    try:
        response = await client.get("/v1/connect/ca/roots")
        assert response.status == 200
        assert response.headers["X-Consul-Index"] == "12"
        text = await response.text()
        body = await response.json()
    finally:
        await client.close()
    assert agent.methods == [ROOTS_METHOD]
    assert "PRIVATE" not in text
    assert set(body) == {"ActiveRootID", "TrustDomain", "Roots"}
    assert body["TrustDomain"] == f"{store.ca.cluster_id}.consul"
    (root,) = body["Roots"]
    assert root["ID"] == body["ActiveRootID"] and root["Active"] is True
    assert root["Name"] == "Consul CA Primary Cert"
    assert root["RootCert"].startswith("-----BEGIN CERTIFICATE-----")
    assert (root["CreateIndex"], root["ModifyIndex"]) == (12, 12)
    assert "PrivateKey" not in root


async def test_roots_as_a_pem_chain() -> None:
    store = await _initialized()
    client, _ = await _client(store)
    try:
        response = await client.get("/v1/connect/ca/roots?pem=true")
        text = await response.text()
        content_type = response.headers["Content-Type"]
    finally:
        await client.close()
    assert content_type == "application/pem-certificate-chain"
    active = store.ca.active_root()
    assert active is not None and text == active.root_cert
    assert "PRIVATE" not in text


async def test_roots_before_initialization_are_empty() -> None:
    client, _ = await _client(StateStore())
    try:
        body = await (await client.get("/v1/connect/ca/roots")).json()
    finally:
        await client.close()
    assert body == {"ActiveRootID": "", "TrustDomain": "", "Roots": []}
