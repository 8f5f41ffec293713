"""DNS against real agent processes, with dnspython as the client.

Each test starts a `-dev` agent with DNS on a free port, registers services over
HTTP and asks over UDP and TCP. Counters are read from /v1/agent/metrics.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.agent_process import AgentProcess, free_port, wait_for

Factory = Callable[..., AgentProcess]


class DnsAgent:
    def __init__(self, agent: AgentProcess, port: int) -> None:
        self.agent = agent
        self.port = port

    def ask(
        self, name: str, rdtype: str = "A", *, tcp: bool = False, payload: int | None = None
    ) -> dns.message.Message:
        query = dns.message.make_query(
            name, rdtype, use_edns=payload is not None, payload=payload or 512
        )
        if tcp:
            return dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=5)
        return dns.query.udp(query, "127.0.0.1", port=self.port, timeout=5, ignore_trailing=False)

    def register(self, body: dict[str, Any]) -> None:
        status, _, text = self.agent.request("PUT", "/v1/agent/service/register", body)
        assert status == 200, text

    def catalog_register(self, body: dict[str, Any]) -> None:
        status, _, text = self.agent.request("PUT", "/v1/catalog/register", body)
        assert status == 200, text

    def check(self, verb: str, check_id: str) -> None:
        status, _, text = self.agent.request("PUT", f"/v1/agent/check/{verb}/{check_id}")
        assert status == 200, text

    def metric(self, name: str) -> float:
        gauges = self.agent.get_json("/v1/agent/metrics")["Gauges"]
        return float(next(g["Value"] for g in gauges if g["Name"] == name))


def start(factory: Factory, *args: str) -> DnsAgent:
    port = free_port()
    agent = factory("-dns-port", str(port), *args)
    return DnsAgent(agent, port)


@pytest.fixture
def dev(agent_factory: Factory) -> DnsAgent:
    return start(agent_factory)


def addrs(response: dns.message.Message, rdtype: int = dns.rdatatype.A) -> list[str]:
    return sorted(
        rr.to_text() for rrset in response.answer if rrset.rdtype == rdtype for rr in rrset
    )


def eventually(check: Callable[[], bool], deadline_s: float = 5.0) -> None:
    wait_for(lambda: check() or None, deadline_s)


# ----- names and answers ---------------------------------------------------------


def test_a_aaaa_tags_and_case(dev: DnsAgent) -> None:
    dev.register({"Name": "web", "ID": "web1", "Address": "10.0.0.1", "Tags": ["v1"]})
    dev.register({"Name": "web", "ID": "web2", "Address": "10.0.0.2", "Tags": ["v2"]})
    dev.register({"Name": "web", "ID": "web6", "Address": "2001:db8::6", "Tags": ["v1"]})
    eventually(lambda: len(addrs(dev.ask("web.service.consul"))) == 2)
    # Anti-entropy syncs the three registrations in turn; wait for the last one too.
    eventually(lambda: addrs(dev.ask("web.service.consul", "AAAA"), dns.rdatatype.AAAA))
    response = dev.ask("web.service.consul")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert addrs(response) == ["10.0.0.1", "10.0.0.2"]
    assert addrs(dev.ask("web.service.consul", "AAAA"), dns.rdatatype.AAAA) == ["2001:db8::6"]
    assert addrs(dev.ask("v1.web.service.consul")) == ["10.0.0.1"]
    upper = dev.ask("V2.WEB.SERVICE.DC1.CONSUL")
    assert addrs(upper) == ["10.0.0.2"]
    assert upper.question[0].name.to_text() == "V2.WEB.SERVICE.DC1.CONSUL."
    assert addrs(dev.ask("web.service.dc1.consul")) == ["10.0.0.1", "10.0.0.2"]


def test_srv_rfc2782_and_plain(dev: DnsAgent) -> None:
    dev.catalog_register(
        {
            "Node": "db-node",
            "Address": "10.1.0.7",
            "Service": {"Service": "db", "ID": "db1", "Port": 5432, "Tags": ["primary"]},
        }
    )
    eventually(lambda: dev.ask("db.service.consul").rcode() == dns.rcode.NOERROR)
    for name in ("db.service.consul", "_db._tcp.service.consul", "_db._primary.service.consul"):
        response = dev.ask(name, "SRV")
        srv = response.answer[0][0]
        assert (srv.priority, srv.weight, srv.port) == (1, 1, 5432), name
        assert srv.target.to_text() == "db-node.node.dc1.consul."
        extra = response.find_rrset(
            response.additional, srv.target, dns.rdataclass.IN, dns.rdatatype.A
        )
        assert extra[0].to_text() == "10.1.0.7"
    assert dev.ask("_db._replica.service.consul", "SRV").rcode() == dns.rcode.NXDOMAIN


def test_node_lookups_and_nxdomain(dev: DnsAgent) -> None:
    dev.catalog_register({"Node": "box", "Address": "10.2.0.1", "NodeMeta": {"rack": "r7"}})
    eventually(lambda: dev.ask("box.node.consul").rcode() == dns.rcode.NOERROR)
    response = dev.ask("box.node.dc1.consul")
    assert addrs(response) == ["10.2.0.1"]
    txt = [rr.to_text() for rrset in response.additional for rr in rrset]
    assert txt == ['"rack=r7"']
    assert addrs(dev.ask("BOX.NODE.CONSUL")) == ["10.2.0.1"]
    for name in ("nobody.node.consul", "nothing.service.consul", "web.service.dc9.consul"):
        missing = dev.ask(name)
        assert missing.rcode() == dns.rcode.NXDOMAIN, name
        soa = missing.authority[0]
        assert soa.rdtype == dns.rdatatype.SOA
        assert soa[0].mname.to_text() == "ns.consul."
        assert soa[0].rname.to_text() == "hostmaster.consul."
        assert (soa[0].refresh, soa[0].retry, soa[0].expire, soa[0].minimum) == (
            3600,
            600,
            86400,
            0,
        )


def test_ttls_default_to_zero_and_follow_config_and_reload(
    agent_factory: Factory, tmp_path: Path
) -> None:
    config = tmp_path / "dns.json"
    config.write_text(json.dumps({"dns_config": {"node_ttl": "10s", "service_ttl": {"*": "5s"}}}))
    agent = start(agent_factory, "-config-file", str(config))
    agent.register({"Name": "web", "Address": "10.0.0.1"})
    eventually(lambda: agent.ask("web.service.consul").rcode() == dns.rcode.NOERROR)
    assert agent.ask("web.service.consul").answer[0].ttl == 5
    node = agent.agent.get_json("/v1/agent/self")["Config"]["NodeName"]
    assert agent.ask(f"{node}.node.consul").answer[0].ttl == 10
    config.write_text(json.dumps({"dns_config": {"service_ttl": {"web": "30s"}}}))
    agent.agent.signal(signal.SIGHUP)
    eventually(lambda: agent.ask("web.service.consul").answer[0].ttl == 30)
    assert agent.ask(f"{node}.node.consul").answer[0].ttl == 0

    plain = start(agent_factory)
    plain.register({"Name": "web", "Address": "10.0.0.1"})
    eventually(lambda: plain.ask("web.service.consul").rcode() == dns.rcode.NOERROR)
    assert plain.ask("web.service.consul").answer[0].ttl == 0


# ----- health ------------------------------------------------------------------------


def ttl_service(agent: DnsAgent, sid: str, address: str) -> None:
    agent.register(
        {"Name": "api", "ID": sid, "Address": address, "Port": 80, "Check": {"TTL": "2s"}}
    )
    agent.check("pass", f"service:{sid}")


def test_critical_drops_out_and_comes_back(dev: DnsAgent) -> None:
    ttl_service(dev, "api1", "10.3.0.1")
    ttl_service(dev, "api2", "10.3.0.2")
    eventually(lambda: addrs(dev.ask("api.service.consul")) == ["10.3.0.1", "10.3.0.2"])
    dev.check("fail", "service:api2")
    # Within one check interval (the TTL) the critical instance is gone.
    eventually(lambda: addrs(dev.ask("api.service.consul")) == ["10.3.0.1"], deadline_s=2.0)
    dev.check("pass", "service:api2")
    eventually(
        lambda: addrs(dev.ask("api.service.consul")) == ["10.3.0.1", "10.3.0.2"], deadline_s=2.0
    )
    dev.check("warn", "service:api2")
    eventually(lambda: dev.agent.get_json("/v1/health/checks/api")[1]["Status"] == "warning")
    assert addrs(dev.ask("api.service.consul")) == ["10.3.0.1", "10.3.0.2"]
    dev.check("fail", "service:api1")
    dev.check("fail", "service:api2")
    eventually(lambda: dev.ask("api.service.consul").rcode() == dns.rcode.NXDOMAIN)


def test_only_passing_drops_warning(agent_factory: Factory) -> None:
    agent = start(agent_factory, "-hcl", "dns_config { only_passing = true }")
    ttl_service(agent, "api1", "10.3.0.1")
    ttl_service(agent, "api2", "10.3.0.2")
    eventually(lambda: addrs(agent.ask("api.service.consul")) == ["10.3.0.1", "10.3.0.2"])
    agent.check("warn", "service:api2")
    eventually(lambda: addrs(agent.ask("api.service.consul")) == ["10.3.0.1"], deadline_s=2.0)


# ----- size limits -------------------------------------------------------------------


def thirty(agent: DnsAgent) -> None:
    for i in range(30):
        agent.register(
            {"Name": "big", "ID": f"big{i}", "Address": f"10.4.0.{i + 1}", "Port": 8000 + i}
        )
    eventually(lambda: len(addrs(agent.ask("big.service.consul", tcp=True))) == 30)


def test_large_answers(dev: DnsAgent) -> None:
    thirty(dev)
    for rdtype in ("A", "SRV"):
        query = dns.message.make_query("big.service.consul", rdtype, use_edns=False)
        wire = dns.query.udp(query, "127.0.0.1", port=dev.port, timeout=5).to_wire()
        assert len(wire) <= 512
        response = dev.ask("big.service.consul", rdtype)
        assert 0 < len(response.answer[0]) < 30
        assert not response.flags & dns.flags.TC
        edns = dev.ask("big.service.consul", rdtype, payload=1232)
        assert len(edns.to_wire()) <= 1232
        assert edns.edns == 0
        full = dev.ask("big.service.consul", rdtype, tcp=True)
        assert len(full.answer[0]) == 30
    assert len(dev.ask("big.service.consul", payload=4096).answer[0]) == 30
    assert dev.metric("consul.dns.trimmed") > 0


def test_enable_truncate_sets_tc(agent_factory: Factory) -> None:
    agent = start(agent_factory, "-hcl", "dns_config { enable_truncate = true }")
    thirty(agent)
    response = agent.ask("big.service.consul", "SRV")
    assert response.flags & dns.flags.TC


# ----- recursion ---------------------------------------------------------------------


class _Recursor(socketserver.BaseRequestHandler):
    """Answers every question with 192.0.2.53 (UDP)."""

    def handle(self) -> None:
        data, sock = self.request
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.answer.append(
            dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.53")
        )
        sock.sendto(reply.to_wire(), self.client_address)


@pytest.fixture
def recursor() -> Iterator[int]:
    server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), _Recursor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_recursors(agent_factory: Factory, recursor: int, dev: DnsAgent) -> None:
    agent = start(agent_factory, "-hcl", f'recursors = ["127.0.0.1:{recursor}"]')
    response = agent.ask("www.example.com")
    assert addrs(response) == ["192.0.2.53"]
    assert agent.metric("consul.dns.recursed") == 1
    refused = dev.ask("www.example.com")
    assert refused.rcode() == dns.rcode.REFUSED
    assert not refused.answer


# ----- bad input ---------------------------------------------------------------------

HEADER = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0)
BAD_DATAGRAMS = [
    b"",
    b"\x12",
    HEADER[:11],
    HEADER,  # a header promising a question that is not there
    HEADER + b"\xc0\x0c\x00\x01\x00\x01",  # compression loop
    HEADER + b"\x03abc\xc0\x0e\x00\x01\x00\x01",
    HEADER + b"\x41" + b"x" * 65 + b"\x00\x00\x01\x00\x01",  # oversized label
    HEADER + (b"\x3f" + b"y" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # name over 255
    HEADER + b"\x03web\x07service\x06consul\x00\x00\x01\x00\x01" + b"garbage",
]


def test_bad_datagrams_are_dropped_and_counted(dev: DnsAgent) -> None:
    dev.register({"Name": "web", "Address": "10.0.0.1"})
    rng = random.Random(11)
    packets = BAD_DATAGRAMS + [rng.randbytes(rng.randint(1, 700)) for _ in range(200)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for packet in packets:
            sock.sendto(packet, ("127.0.0.1", dev.port))
    eventually(lambda: dev.metric("consul.dns.dropped") >= len(BAD_DATAGRAMS) - 1)
    assert addrs(dev.ask("web.service.consul")) == ["10.0.0.1"]


def test_lying_tcp_frames_are_dropped(dev: DnsAgent) -> None:
    dev.register({"Name": "web", "Address": "10.0.0.1"})
    good = dns.message.make_query("web.service.consul", "A").to_wire()
    frames = [
        struct.pack("!H", 400) + good,  # promises more than it sends
        struct.pack("!H", 3) + good[:3],  # too short to be a message
        struct.pack("!H", len(good) - 4) + good[:-4],  # cut question
        b"\x00",  # half a length prefix
    ]
    for frame in frames:
        with socket.create_connection(("127.0.0.1", dev.port), timeout=5) as sock:
            sock.sendall(frame)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(100) == b""
    eventually(lambda: dev.metric("consul.dns.dropped") >= len(frames))
    # Two good frames on one connection still work.
    with socket.create_connection(("127.0.0.1", dev.port), timeout=5) as sock:
        sock.sendall((struct.pack("!H", len(good)) + good) * 2)
        for _ in range(2):
            (length,) = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))
            reply = dns.message.from_wire(sock.recv(length, socket.MSG_WAITALL))
            assert addrs(reply) == ["10.0.0.1"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=600))
def test_fuzzed_datagrams_never_stop_the_server(dev: DnsAgent, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, ("127.0.0.1", dev.port))
    assert dev.ask("consul.service.consul").rcode() == dns.rcode.NOERROR


def test_counters_on_metrics(dev: DnsAgent) -> None:
    dev.ask("consul.service.consul")
    dev.ask("consul.service.consul")
    dev.ask("nothing.service.consul")
    assert dev.metric("consul.dns.queries") == 3
    assert dev.metric("consul.dns.answers.noerror") == 2
    assert dev.metric("consul.dns.answers.nxdomain") == 1
    assert dev.metric("consul.dns.cache_hits") == 1
