"""Fuzzing DNS: the query parser and the server's UDP and TCP handling.

- `parse_query` returns a `Query` or raises `MalformedQuery`, whatever the bytes.
- The server, fed datagrams straight into its UDP protocol object (no sockets,
  so nothing is lost in flight and every outcome can be counted), answers each
  datagram once or drops it and counts the drop; it never counts a lookup
  error (an exception it did not expect). Every answer parses as a DNS
  response to the query's id.
- Over TCP, a stream of frames gets framed answers and nothing unexpected.
The catalog behind it is a real state store with a few services and nodes, so
answers go through the whole core and renderer, the cache included.
"""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any, cast

from dnslib import DNSRecord
from hypothesis import example, given
from hypothesis import strategies as st

from proconsul.agent.dns_setup import AgentCatalog
from proconsul.dns.core import DnsSettings
from proconsul.dns.query import MalformedQuery, Query, parse_query
from proconsul.dns.server import DnsServer, _UdpProtocol
from proconsul.server.endpoints import ServerEndpoints
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import HealthCheck, NodeService
from proconsul.structs.commands import RegisterRequest
from proconsul.structs.requests import ReadRequest, ReadResponse
from tests.fuzz.wire import chunks, mutated
from tests.local_log import LocalLog

# ----- packets ----------------------------------------------------------------------

LABELS = [
    b"web",
    b"WEB",
    b"service",
    b"consul",
    b"node",
    b"n1",
    b"addr",
    b"_web",
    b"_tcp",
    b"_tag",
    b"dc1",
    b"dc2",
    b"query",
    b"connect",
    b"in-addr",
    b"arpa",
    b"ip6",
    b"1",
    b"0",
    b"127",
    b"7f000001",
    b"a.b",
    b"\x00",
    b"\xff\xfe",
    b"*",
]
labels = st.lists(
    st.one_of(st.sampled_from(LABELS), st.binary(min_size=1, max_size=63)), max_size=8
)
QTYPES = [1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 41, 43, 252, 251, 255, 0, 65535]
qtypes = st.one_of(st.sampled_from(QTYPES), st.integers(0, 65535))
flags = st.one_of(
    st.sampled_from([0x0000, 0x0100, 0x0110, 0x0900, 0x2100, 0x7900]), st.integers(0, 0xFFFF)
)


def encode_name(parts: list[bytes]) -> bytes:
    return b"".join(bytes((len(p),)) + p for p in parts) + b"\x00"


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    """Query-shaped packets: a real header and question, an optional OPT record,
    sometimes wrong counts or stray records."""
    qid = draw(st.integers(0, 0xFFFF))
    parts = draw(labels)
    opt = draw(st.one_of(st.none(), st.integers(0, 0xFFFF)))
    extra = b""
    arcount = 0
    if opt is not None:
        do_bit = draw(st.sampled_from([0, 0x8000]))
        extra = b"\x00" + struct.pack("!HHIH", 41, opt, do_bit, 0)
        arcount = 1
    counts = draw(
        st.one_of(
            st.just((1, 0, 0, arcount)),
            st.tuples(*[st.integers(0, 3)] * 4),
        )
    )
    header = struct.pack("!HH", qid, draw(flags) & ~0x8000 | draw(st.sampled_from([0, 0x8000])))
    header += struct.pack("!HHHH", *counts)
    question = encode_name(parts) + struct.pack("!HH", draw(qtypes), draw(st.integers(0, 255)))
    return header + question + extra


packets = st.one_of(
    queries(),
    queries().flatmap(mutated),
    st.binary(max_size=64),
    st.tuples(queries(), st.binary(min_size=1, max_size=16)).map(lambda qb: qb[0] + qb[1]),
)


def well_formed(data: bytes) -> Query | None:
    try:
        return parse_query(data)
    except MalformedQuery:
        return None


# A compression pointer after the question must not loop, and one pointing at
# itself must not hang the parser.
@example(struct.pack("!HHHHHH", 1, 0, 1, 1, 0, 0) + b"\x00\x00\x01\x00\x01\xc0\x11")
@given(packets)
def test_parse_query_returns_a_query_or_malformed(data: bytes) -> None:
    query = well_formed(data)
    if query is not None:
        assert query.id == struct.unpack("!H", data[:2])[0]
        assert sum(len(label) + 1 for label in query.labels) + 1 <= 255


# ----- the server -------------------------------------------------------------------


class Catalog:
    """The agent side of DNS reads: a real store and endpoints, in process."""

    def __init__(self) -> None:
        self.store: StateStore | None = StateStore()
        self.endpoints = ServerEndpoints(self.store, LocalLog(FSM(self.store)), "dc1")

    async def rpc_read(self, method: str, request: ReadRequest) -> ReadResponse:
        return await self.endpoints.read(method, request)

    async def fill(self) -> None:
        for node, address, status in (
            ("n1", "10.0.0.1", "passing"),
            ("n2", "10.0.0.2", "critical"),
            ("n3", "::1", "passing"),
        ):
            service = NodeService(id="web", service="web", port=80, tags=["tag", "v1"])
            check = HealthCheck(node=node, check_id="c", status=status, service_id="web")
            await self.endpoints.write(
                RegisterRequest(
                    node=node,
                    address=address,
                    node_meta={"rack": "r1"},
                    service=service,
                    checks=[check],
                )
            )


class FakeUdp:
    """Stands in for the datagram transport: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((bytes(data), addr))

    def is_closing(self) -> bool:
        return False


async def new_server(settings: DnsSettings) -> DnsServer:
    catalog = Catalog()
    await catalog.fill()
    return DnsServer(settings, AgentCatalog(catalog), random.Random(7))


async def settle(server: DnsServer) -> None:
    while server._tasks:
        await asyncio.gather(*list(server._tasks))


def check_answer(answer: bytes, query: bytes) -> None:
    """A response to `query`: its id, QR set, and its question echoed byte for byte
    (dnslib's parser is no oracle here: it refuses labels that are not ASCII,
    which a client may send and gets back as sent)."""
    parsed = parse_query(query)
    assert answer[:2] == query[:2]
    assert answer[2] & 0x80, "QR is set on every answer"
    qdcount = struct.unpack("!H", answer[4:6])[0]
    assert qdcount == 1
    question = encode_name(list(parsed.labels)) + struct.pack("!HH", parsed.qtype, parsed.qclass)
    assert answer[12 : 12 + len(question)] == question
    if all(label.isascii() for label in parsed.labels):
        DNSRecord.parse(answer)  # and the rest of it is well formed


settings_strategy = st.builds(
    DnsSettings,
    udp_answer_limit=st.integers(0, 10),
    a_record_limit=st.integers(0, 3),
    enable_truncate=st.booleans(),
    only_passing=st.booleans(),
    node_ttl=st.integers(0, 2**31),
)


@given(st.lists(packets, min_size=1, max_size=6), settings_strategy)
def test_each_datagram_is_answered_once_or_dropped_and_counted(
    datagrams: list[bytes], settings: DnsSettings
) -> None:
    async def scenario() -> None:
        server = await new_server(settings)
        transport = FakeUdp()
        protocol = _UdpProtocol(server)
        protocol.connection_made(cast(asyncio.BaseTransport, transport))
        # Twice: the second round meets the cache the first one filled.
        for _ in range(2):
            transport.sent.clear()
            before = server.stats()
            for port, data in enumerate(datagrams, start=1000):
                protocol.datagram_received(data, ("127.0.0.1", port))
            await settle(server)
            stats = server.stats()
            assert stats["lookup_errors"] == 0
            dropped = stats["dropped"] - before["dropped"]
            assert dropped == sum(well_formed(d) is None for d in datagrams)
            assert len(transport.sent) + dropped == len(datagrams)
            for packet, (_, port) in transport.sent:
                check_answer(packet, datagrams[port - 1000])
        await server.close()

    asyncio.run(scenario())


class FakeWriter:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 53000) if name == "peername" else None


def tcp_frame(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


@given(
    st.lists(packets, min_size=1, max_size=4),
    st.one_of(st.just(b""), st.binary(max_size=6)),
    st.lists(st.integers(0, 500), max_size=4),
)
def test_tcp_frames_are_answered_in_order_or_the_connection_closes(
    queries_sent: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    stream = b"".join(tcp_frame(q) for q in queries_sent) + tail

    async def scenario() -> None:
        server = await new_server(DnsSettings())
        reader = asyncio.StreamReader()
        for piece in chunks(stream, cuts):
            reader.feed_data(piece)
        reader.feed_eof()
        writer = FakeWriter()
        await server._handle_tcp(reader, cast(asyncio.StreamWriter, writer))
        assert server.stats()["lookup_errors"] == 0
        # Answers come back framed, one per query, until the first malformed one.
        out = bytes(writer.data)
        answered = 0
        while out:
            (length,) = struct.unpack("!H", out[:2])
            check_answer(out[2 : 2 + length], queries_sent[answered])
            out = out[2 + length :]
            answered += 1
        good = 0
        while good < len(queries_sent) and well_formed(queries_sent[good]) is not None:
            good += 1
        assert answered == good
        await server.close()

    asyncio.run(scenario())
