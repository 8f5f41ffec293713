"""ClientRPC over real sockets: a read that times out moves on, a write does not.

Two in-process RPC servers: one never answers, one does. The client's server
list and call timeout are set directly; everything else is ClientRPC as a
client agent builds it (agent/client_rpc.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from tests.agent_process import wait_for_async

from proconsul.agent.client_rpc import ClientRPC, ServerFailedError
from proconsul.config.agent_args import parse_agent_args
from proconsul.config.loader import load_config
from proconsul.rpc import PeerInfo, RPCServer
from proconsul.rpc.codec import APPLY_METHOD, encode
from proconsul.structs.catalog import KVEntry
from proconsul.structs.commands import KVSRequest
from proconsul.structs.requests import QueryMeta, ReadRequest, ReadResponse

if TYPE_CHECKING:
    pass

CALL_TIMEOUT_S = 0.3


class Servers:
    def __init__(self) -> None:
        self.calls: dict[str, list[str]] = {"stuck": [], "good": []}
        self.stuck = RPCServer({"KVS.Get": self._hang, APPLY_METHOD: self._hang_write})
        self.good = RPCServer({"KVS.Get": self._answer, APPLY_METHOD: self._apply})
        self.addresses: dict[str, str] = {}

    async def start(self) -> None:
        for name, server in (("stuck", self.stuck), ("good", self.good)):
            host, port = await server.start("127.0.0.1", 0)
            self.addresses[name] = f"{host}:{port}"

    async def close(self) -> None:
        await self.stuck.close()
        await self.good.close()

    async def _hang(self, payload: bytes, peer: PeerInfo) -> bytes:
        self.calls["stuck"].append("read")
        await asyncio.Event().wait()  # cancelled by the caller's CANCEL or close()
        return b""

    async def _hang_write(self, payload: bytes, peer: PeerInfo) -> bytes:
        self.calls["stuck"].append("write")
        await asyncio.Event().wait()
        return b""

    async def _answer(self, payload: bytes, peer: PeerInfo) -> bytes:
        self.calls["good"].append("read")
        entry = KVEntry(key="k", value=b"v", create_index=3, modify_index=3)
        return encode(ReadResponse(meta=QueryMeta(index=3), value=entry))

    async def _apply(self, payload: bytes, peer: PeerInfo) -> bytes:
        self.calls["good"].append("write")
        return encode((4, True))


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    found = Servers()
    await found.start()
    try:
        yield found
    finally:
        await found.close()


def client_with(order: list[str]) -> ClientRPC:
    config = load_config(parse_agent_args(["-dev"]), hostname=lambda: "box").config
    client = ClientRPC(config, random.Random(1))
    client.timeout_s = CALL_TIMEOUT_S
    client.servers = lambda: list(order)  # type: ignore[method-assign]
    client.current = order[0]  # stick to the stuck one first
    client.rebalance_at = float("inf")
    return client


async def test_a_read_that_times_out_moves_on_to_the_next_server(servers: Servers) -> None:
    client = client_with([servers.addresses["stuck"], servers.addresses["good"]])
    try:
        response = await asyncio.wait_for(client.read("KVS.Get", ReadRequest(name="k")), 10.0)
        assert isinstance(response.value, KVEntry) and response.value.value == b"v"
        assert servers.calls == {"stuck": ["read"], "good": ["read"]}
        assert client.current == servers.addresses["good"]  # sticks to the one that answered
    finally:
        await client.close()


async def test_a_write_that_times_out_goes_to_the_caller(servers: Servers) -> None:
    client = client_with([servers.addresses["stuck"], servers.addresses["good"]])
    command = KVSRequest(op="set", dir_ent=KVEntry(key="k", value=b"v"))
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.write(command), 10.0)
        # Not repeated elsewhere: the stuck server may have applied it.
        assert servers.calls == {"stuck": ["write"], "good": []}
    finally:
        await client.close()


async def test_reads_timing_out_everywhere_raise_the_timeout(servers: Servers) -> None:
    client = client_with([servers.addresses["stuck"]])
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.read("KVS.Get", ReadRequest(name="k")), 10.0)
    finally:
        await client.close()


async def test_a_read_from_a_server_gossip_declares_failed_moves_on(servers: Servers) -> None:
    client = client_with([servers.addresses["stuck"], servers.addresses["good"]])
    client.timeout_s = 60.0  # only gossip's word can end the wait in time
    try:
        reading = asyncio.ensure_future(client.read("KVS.Get", ReadRequest(name="k")))
        await wait_for_async(lambda: "read" in servers.calls["stuck"])
        client.server_failed(servers.addresses["stuck"])
        response = await asyncio.wait_for(reading, 10.0)
        assert isinstance(response.value, KVEntry)
        assert servers.calls == {"stuck": ["read"], "good": ["read"]}
    finally:
        await client.close()


async def test_a_write_to_a_server_gossip_declares_failed_has_an_unknown_outcome(
    servers: Servers,
) -> None:
    client = client_with([servers.addresses["stuck"], servers.addresses["good"]])
    client.timeout_s = 60.0
    command = KVSRequest(op="set", dir_ent=KVEntry(key="k", value=b"v"))
    try:
        writing = asyncio.ensure_future(client.write(command))
        await wait_for_async(lambda: "write" in servers.calls["stuck"])
        client.server_failed(servers.addresses["stuck"])
        with pytest.raises(ServerFailedError, match="outcome is unknown"):
            await asyncio.wait_for(writing, 10.0)
        assert servers.calls == {"stuck": ["write"], "good": []}  # never sent twice
    finally:
        await client.close()
