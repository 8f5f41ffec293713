"""The asyncio gossip transport on real loopback sockets, in one process.

Covers: join and convergence, graceful leave, sealing on the wire, bad
datagrams and frames dropped and counted by reason (never raised), refusals
that tell a joiner why, control frames, and stream bounds.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from tests.agent_process import free_gossip_port

from proconsul.gossip import EncryptionPolicy, GossipCore, Keyring, State, local
from proconsul.gossip import control as ctl
from proconsul.gossip import messages as m
from proconsul.gossip.actions import MemberEvent
from proconsul.gossip.transport import (
    FRAME_HEADER,
    MAX_FRAME_BYTES,
    GossipTransport,
    StreamError,
)

KEY = b"k" * 32
OTHER = b"o" * 32
HOST = "127.0.0.1"


async def eventually(check: Callable[[], bool], deadline_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not check():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Node:
    def __init__(self, name: str, policy: EncryptionPolicy) -> None:
        self.name = name
        self.policy = policy
        self.events: list[MemberEvent] = []
        self.transport: GossipTransport | None = None

    async def start(
        self, handler: Callable[[bytes, m.Address], Awaitable[bytes]] | None = None
    ) -> None:
        port = free_gossip_port(HOST)
        now = asyncio.get_running_loop().time()
        rng = random.Random(self.name)
        core = GossipCore(self.name, (HOST, port), {"role": "node"}, local(), rng, now)
        self.transport = GossipTransport(
            core,
            self.policy,
            HOST,
            port,
            on_member_event=self.events.append,
            control_handler=handler,
        )
        await self.transport.start()

    @property
    def t(self) -> GossipTransport:
        assert self.transport is not None
        return self.transport

    @property
    def addr(self) -> m.Address:
        return (HOST, self.t.port)

    def alive(self) -> set[str]:
        return {x.name for x in self.t.core.members() if x.state <= State.SUSPECT}


def encrypted() -> EncryptionPolicy:
    return EncryptionPolicy(Keyring(KEY))


@pytest.fixture
async def pool() -> AsyncIterator[list[Node]]:
    nodes = [Node(f"n{i}", encrypted()) for i in range(3)]
    for node in nodes:
        await node.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.t.close()


async def test_join_converges_and_leave_is_seen_as_left(pool: list[Node]) -> None:
    a, b, c = pool
    assert await b.t.join([a.addr]) == {a.addr: None}
    assert await c.t.join([a.addr]) == {a.addr: None}
    await eventually(lambda: all(n.alive() == {"n0", "n1", "n2"} for n in pool))
    assert any(e.member.name == "n2" for e in a.events)
    await c.t.leave(1.0)
    await eventually(lambda: a.t.core.state_of("n2") == State.LEFT)
    await eventually(lambda: b.t.core.state_of("n2") == State.LEFT)
    stats = a.t.stats()
    assert stats["udp_out_packets"] > 0 and stats["udp_in_packets"] > 0
    assert stats["refused_total"] == 0 and stats["members_left"] == 1


async def test_join_failures_say_why() -> None:
    target = Node("t", encrypted())
    wrong = Node("w", EncryptionPolicy(Keyring(OTHER)))
    plain = Node("p", EncryptionPolicy(None))
    for node in (target, wrong, plain):
        await node.start()
    try:
        result = await wrong.t.join([target.addr])
        assert "encryption keys differ" in (result[target.addr] or "")
        result = await plain.t.join([target.addr])
        assert "requires encrypted gossip" in (result[target.addr] or "")
        result = await target.t.join([plain.addr])
        assert "no gossip encryption key" in (result[plain.addr] or "")
        closed = socket.socket()
        closed.bind((HOST, 0))
        port = closed.getsockname()[1]
        closed.close()
        result = await target.t.join([(HOST, port)])
        assert result[(HOST, port)] == "connection refused"
        assert target.alive() == {"t"}
        assert target.t.stats()["refused_decrypt_failed"] >= 1
        assert target.t.stats()["refused_plaintext_refused"] >= 1
    finally:
        for node in (target, wrong, plain):
            await node.t.close()


async def test_datagrams_on_the_wire_are_sealed_and_bad_ones_are_counted(pool: list[Node]) -> None:
    a, b, _ = pool
    await b.t.join([a.addr])
    await eventually(lambda: a.alive() == {"n0", "n1"})
    # A fake member that only listens: it sees what a sniffer would.
    sniffer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sniffer.bind((HOST, 0))
    sniffer.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        fake = m.Alive(1, "sniffer", (HOST, sniffer.getsockname()[1]), {"role": "node"})
        a.t._send_udp(b.addr, m.encode(fake))
        data = await asyncio.wait_for(loop.sock_recv(sniffer, 65536), 5.0)
        assert data[0] == 1 and b"n0" not in data and b"n1" not in data
        assert m.decode_packet(Keyring(KEY).open(data))
        before = a.t.stats()
        wrong_key = EncryptionPolicy(Keyring(OTHER)).seal(m.encode(m.Ping(1, "n0")))
        tampered = bytearray(data)
        tampered[-1] ^= 1
        junk = [
            b"",
            b"\x01short",
            wrong_key,
            bytes(tampered),
            m.encode(m.Ping(1, "n0")),  # plaintext
            os.urandom(60_000),
            bytes(data),  # replayed: opens, then the core finds nothing to do
            Keyring(KEY).seal(b"\xc1junk", os.urandom(12)),
            Keyring(KEY).seal(os.urandom(200), os.urandom(12)),
        ]
        for packet in junk:
            sniffer.sendto(packet, a.addr)
        await eventually(lambda: a.t.stats()["udp_in_packets"] >= before["udp_in_packets"] + 8)
        after = a.t.stats()
        assert after["refused_decrypt_failed"] - before.get("refused_decrypt_failed", 0) >= 2
        assert after["refused_plaintext_refused"] - before.get("refused_plaintext_refused", 0) >= 1
        assert after["refused_oversized"] >= 1
        assert after["refused_malformed"] >= 2
        assert after["malformed"] >= 1
        assert after.get("core_errors", 0) == 0
    finally:
        sniffer.close()
    # Still working: a new member joins.
    c = pool[2]
    assert await c.t.join([a.addr]) == {a.addr: None}
    await eventually(lambda: "n2" in a.alive())


async def test_bad_frames_are_refused_and_answered_with_a_reason(pool: list[Node]) -> None:
    a = pool[0]

    async def exchange(payload: bytes, header: bytes | None = None) -> bytes:
        reader, writer = await asyncio.open_connection(*a.addr)
        writer.write((header if header is not None else FRAME_HEADER.pack(len(payload))) + payload)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 5.0)
        finally:
            writer.close()

    reply = await exchange(m.encode(m.Ping(1, "n0")))
    assert ctl.decode_control(reply[FRAME_HEADER.size :]) == ctl.Refusal("plaintext_refused")
    reply = await exchange(EncryptionPolicy(Keyring(OTHER)).seal(b"\x90"))
    assert ctl.decode_control(reply[FRAME_HEADER.size :]) == ctl.Refusal("decrypt_failed")
    assert await exchange(b"", FRAME_HEADER.pack(MAX_FRAME_BYTES + 1)) == b""
    reply = await exchange(ctl.encode_control(ctl.KeyringRequest("install", OTHER)))
    assert ctl.decode_control(reply[FRAME_HEADER.size :]) == ctl.Refusal("control_unsealed")
    stats = a.t.stats()
    assert stats["refused_oversized"] == 1 and stats["refused_control_unsealed"] == 1
    assert a.t.policy.keyring is not None and OTHER not in a.t.policy.keyring


async def test_control_requests_are_sealed_both_ways() -> None:
    seen: list[bytes] = []

    async def handler(plain: bytes, peer: m.Address) -> bytes:
        seen.append(plain)
        return ctl.encode_control(ctl.KeyringReply(True, "", [KEY], KEY))

    server = Node("s", encrypted())
    client = Node("c", encrypted())
    plain_client = Node("p", EncryptionPolicy(None))
    await server.start(handler)
    await client.start()
    await plain_client.start()
    try:
        request = ctl.encode_control(ctl.KeyringRequest("list", b""))
        reply = ctl.decode_control(await client.t.request_control(server.addr, request))
        assert isinstance(reply, ctl.KeyringReply) and reply.keys == [KEY]
        assert seen == [request]
        with pytest.raises(StreamError, match="not enabled"):
            await plain_client.t.request_control(server.addr, request)
        wrong = Node("w", EncryptionPolicy(Keyring(OTHER)))
        await wrong.start()
        try:
            with pytest.raises(StreamError, match="keys differ"):
                await wrong.t.request_control(server.addr, request)
        finally:
            await wrong.t.close()
        assert len(seen) == 1
    finally:
        for node in (server, client, plain_client):
            await node.t.close()


@pytest.mark.parametrize(
    "pair",
    [
        # Each rollout step must interoperate with the step before it.
        ((None, True, True), (KEY, False, False)),
        ((KEY, False, False), (KEY, False, True)),
        ((KEY, False, True), (KEY, True, True)),
    ],
    ids=["plain+step1", "step1+step2", "step2+step3"],
)
async def test_rollout_steps_interoperate(
    pair: tuple[tuple[bytes | None, bool, bool], tuple[bytes | None, bool, bool]],
) -> None:
    nodes = []
    for i, (key, incoming, outgoing) in enumerate(pair):
        policy = EncryptionPolicy(Keyring(key) if key else None, incoming, outgoing)
        nodes.append(Node(f"r{i}", policy))
    for node in nodes:
        await node.start()
    try:
        assert await nodes[1].t.join([nodes[0].addr]) == {nodes[0].addr: None}
        await eventually(lambda: all(n.alive() == {"r0", "r1"} for n in nodes))
        # An observation window (two probe rounds): not one refusal or suspicion.
        await asyncio.sleep(2 * local().probe_interval)
        for node in nodes:
            stats = node.t.stats()
            assert stats["refused_total"] == 0 and stats["suspects"] == 0
    finally:
        for node in nodes:
            await node.t.close()
