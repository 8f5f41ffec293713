"""The DNS adapter in-process: real sockets, a real state store, dnspython as client.

The agent here is a stand-in with a store, the server endpoints and a local log,
the same read path a dev agent uses. Real agent processes are in
tests/integration/test_dns.py.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any, cast

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from tests.local_log import LocalLog

from proconsul.agent.dns_setup import AgentCatalog
from proconsul.dns.core import DnsSettings
from proconsul.dns.server import DnsServer
from proconsul.server.endpoints import ServerEndpoints
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import HealthCheck, NodeService
from proconsul.structs.commands import RegisterRequest
from proconsul.structs.requests import ReadRequest, ReadResponse


class FakeAgent:
    def __init__(self) -> None:
        self.store: StateStore | None = StateStore()
        self.endpoints = ServerEndpoints(self.store, LocalLog(FSM(self.store)), "dc1")
        self.reads = 0

    async def rpc_read(self, method: str, request: ReadRequest) -> ReadResponse:
        self.reads += 1
        return await self.endpoints.read(method, request)

    async def register(
        self,
        node: str,
        address: str,
        service: str | None = None,
        *,
        sid: str = "",
        port: int = 80,
        tags: list[str] | None = None,
        status: str | None = None,
        service_address: str = "",
        meta: dict[str, str] | None = None,
    ) -> None:
        svc = None
        checks = []
        if service:
            sid = sid or service
            svc = NodeService(
                id=sid, service=service, port=port, tags=tags or [], address=service_address
            )
            if status:
                checks.append(
                    HealthCheck(node=node, check_id=f"chk-{sid}", status=status, service_id=sid)
                )
        await self.endpoints.write(
            RegisterRequest(
                node=node, address=address, node_meta=meta or {}, service=svc, checks=checks
            )
        )


class Harness:
    def __init__(self, server: DnsServer, agent: FakeAgent, port: int) -> None:
        self.server = server
        self.agent = agent
        self.port = port

    async def udp(self, name: str, rdtype: str = "A", **kwargs: Any) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, **kwargs)
        return await dns.asyncquery.udp(query, "127.0.0.1", port=self.port, timeout=3)

    async def tcp(self, name: str, rdtype: str = "A", **kwargs: Any) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, **kwargs)
        return await dns.asyncquery.tcp(query, "127.0.0.1", port=self.port, timeout=3)

    def stats(self) -> dict[str, int]:
        return self.server.stats()


async def make_harness(settings: DnsSettings | None = None) -> Harness:
    agent = FakeAgent()
    server = DnsServer(settings or DnsSettings(), AgentCatalog(agent), random.Random(7))
    _, port = await server.listen("127.0.0.1", 0)
    return Harness(server, agent, port)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = await make_harness()
    yield harness
    await harness.server.close()


def addresses(response: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rrset in response.answer for rr in rrset)


async def test_service_a_answer_and_cache_hit(h: Harness) -> None:
    await h.agent.register("n1", "10.0.0.1", "web", status="passing")
    await h.agent.register("n2", "10.0.0.2", "web", status="passing")
    response = await h.udp("web.service.consul")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert addresses(response) == ["10.0.0.1", "10.0.0.2"]
    reads = h.agent.reads
    again = await h.udp("web.service.consul")
    assert addresses(again) == ["10.0.0.1", "10.0.0.2"]
    assert h.agent.reads == reads, "a repeated query is answered from the cache"
    assert h.stats()["cache_hits"] >= 1


async def test_cache_follows_health_changes(h: Harness) -> None:
    await h.agent.register("n1", "10.0.0.1", "web", status="passing")
    await h.agent.register("n2", "10.0.0.2", "web", status="passing")
    assert addresses(await h.udp("web.service.consul")) == ["10.0.0.1", "10.0.0.2"]
    await h.agent.register("n2", "10.0.0.2", "web", status="critical")
    assert addresses(await h.udp("web.service.consul")) == ["10.0.0.1"]
    await h.agent.register("n1", "10.0.0.1", "web", status="critical")
    response = await h.udp("web.service.consul")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0].rdtype == dns.rdatatype.SOA
    await h.agent.register("n1", "10.0.0.1", "web", status="passing")
    assert addresses(await h.udp("web.service.consul")) == ["10.0.0.1"]


async def test_negative_answer_sees_new_registration(h: Harness) -> None:
    assert (await h.udp("api.service.consul")).rcode() == dns.rcode.NXDOMAIN
    await h.agent.register("n1", "10.0.0.9", "api")
    assert addresses(await h.udp("api.service.consul")) == ["10.0.0.9"]


async def test_registered_name_case_is_matched(h: Harness) -> None:
    await h.agent.register("Node-A", "10.0.0.5", "Billing")
    assert addresses(await h.udp("billing.service.consul")) == ["10.0.0.5"]
    assert addresses(await h.udp("node-a.node.consul")) == ["10.0.0.5"]


async def test_shuffle_spreads_first_answer(h: Harness) -> None:
    for i in range(1, 6):
        await h.agent.register(f"n{i}", f"10.0.0.{i}", "web")
    firsts = set()
    for _ in range(40):
        response = await h.udp("web.service.consul")
        firsts.add(response.answer[0][0].to_text())
    assert len(firsts) == 5


async def test_srv_answer_over_tcp_has_additional_a(h: Harness) -> None:
    await h.agent.register("n1", "10.0.0.1", "web", port=8080)
    response = await h.tcp("web.service.consul", "SRV")
    srv = response.answer[0][0]
    assert (srv.priority, srv.weight, srv.port) == (1, 1, 8080)
    assert srv.target.to_text() == "n1.node.dc1.consul."
    extra = {rrset.name.to_text(): rrset for rrset in response.additional}
    assert extra["n1.node.dc1.consul."][0].to_text() == "10.0.0.1"


async def test_outside_domain_is_refused_without_recursors(h: Harness) -> None:
    response = await h.udp("example.com")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.RA


class _Upstream(asyncio.DatagramProtocol):
    """A tiny recursor: answers every A question with 192.0.2.1."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 30, "IN", "A", "192.0.2.1"))
        self.transport.sendto(reply.to_wire(), addr)


async def test_recursor_answers_outside_names() -> None:
    loop = asyncio.get_running_loop()
    upstream, _ = await loop.create_datagram_endpoint(_Upstream, local_addr=("127.0.0.1", 0))
    up_port = upstream.get_extra_info("sockname")[1]
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))  # bound but never read: that recursor times out
    settings = DnsSettings(
        recursors=(("127.0.0.1", dead.getsockname()[1]), ("127.0.0.1", up_port)),
        recursor_timeout_s=0.3,
    )
    h = await make_harness(settings)
    try:
        response = await h.udp("www.example.com")
        assert addresses(response) == ["192.0.2.1"]
        assert h.stats()["recursed"] == 1
        ours = await h.udp("nothing.service.consul")
        assert ours.flags & dns.flags.RA
    finally:
        await h.server.close()
        upstream.close()
        dead.close()


async def test_garbage_is_dropped_and_counted(h: Harness) -> None:
    await h.agent.register("n1", "10.0.0.1", "web")
    loop = asyncio.get_running_loop()
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        rng = random.Random(1)
        header = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0)
        bad = [
            b"",
            b"\x00",
            header[:7],
            header + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop in the question
            header + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # label type 0x40
            header + b"\x03web\x07service\x06consul\x00\x00\x01\x00\x01trailing",
        ] + [rng.randbytes(rng.randint(1, 300)) for _ in range(50)]
        for packet in bad:
            await loop.sock_sendto(sock, packet, ("127.0.0.1", h.port))
            sent += 1
    assert addresses(await h.udp("web.service.consul")) == ["10.0.0.1"]
    stats = h.stats()
    assert stats["dropped"] >= 6  # random bytes may parse as a (useless) query


async def test_tcp_lying_length_prefix_is_dropped(h: Harness) -> None:
    await h.agent.register("n1", "10.0.0.1", "web")
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(struct.pack("!H", 500) + b"\x00" * 20)
    writer.write_eof()
    assert await reader.read() == b""
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(struct.pack("!H", 5) + b"abcde")
    await writer.drain()
    assert await reader.read() == b""
    writer.close()
    assert h.stats()["dropped"] == 2
    assert addresses(await h.tcp("web.service.consul")) == ["10.0.0.1"]


async def test_reload_changes_ttl_and_clears_cache(h: Harness) -> None:
    await h.agent.register("n1", "10.0.0.1", "web")
    assert (await h.udp("web.service.consul")).answer[0].ttl == 0
    h.server.reload(DnsSettings(service_ttl={"*": 30}))
    assert (await h.udp("web.service.consul")).answer[0].ttl == 30


async def test_lookup_failure_is_servfail() -> None:
    agent = FakeAgent()

    async def broken(method: str, request: ReadRequest) -> ReadResponse:
        raise ConnectionError("No known Consul servers")

    agent.rpc_read = broken  # type: ignore[method-assign]
    agent.store = None
    server = DnsServer(DnsSettings(), AgentCatalog(agent))
    _, port = await server.listen("127.0.0.1", 0)
    try:
        query = dns.message.make_query("web.service.consul", "A")
        response = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=3)
        assert response.rcode() == dns.rcode.SERVFAIL
        assert server.stats()["lookup_errors"] == 1
    finally:
        await server.close()


async def test_identical_misses_share_one_lookup(h: Harness) -> None:
    await h.agent.register("n1", "10.0.0.1", "web")
    reads = h.agent.reads
    query = dns.message.make_query("web.service.consul", "A")
    replies = await asyncio.gather(
        *(dns.asyncquery.udp(query, "127.0.0.1", port=h.port, timeout=3) for _ in range(20))
    )
    assert all(addresses(r) == ["10.0.0.1"] for r in replies)
    # Coalesced while in flight, cached after: one catalog read answers them all.
    assert h.agent.reads - reads == 1


async def test_full_send_buffer_sheds_load(h: Harness) -> None:
    proto = h.server._udp[0].get_protocol()
    proto.pause_writing()
    with pytest.raises(dns.exception.Timeout):
        await dns.asyncquery.udp(
            dns.message.make_query("x.service.consul", "A"), "127.0.0.1", port=h.port, timeout=0.3
        )
    assert h.stats()["dropped_overload"] == 1
    proto.resume_writing()
    assert (await h.udp("x.service.consul")).rcode() == dns.rcode.NXDOMAIN
