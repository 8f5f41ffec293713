"""The pure DNS parts: name classification, answers from rows, rendering, the cache."""

from __future__ import annotations

import ast
import random
from collections import Counter
from pathlib import Path

import dns.flags
import dns.message
import dns.rdatatype
import pytest
from dnslib import EDNS0, DNSRecord

from proconsul.dns import core
from proconsul.dns.cache import AnswerCache, CacheEntry
from proconsul.dns.core import DnsSettings
from proconsul.dns.query import Query, parse_query
from proconsul.dns.render import render
from proconsul.structs.catalog import CheckServiceNode, HealthCheck, Node, NodeService, Weights

S = DnsSettings()
SERIAL = 1_700_000_000


def row(
    node: str,
    address: str,
    *statuses: str,
    port: int = 80,
    tags: list[str] | None = None,
    service_address: str = "",
    meta: dict[str, str] | None = None,
    weights: Weights | None = None,
) -> CheckServiceNode:
    return CheckServiceNode(
        node=Node(node=node, address=address, meta=meta or {}),
        service=NodeService(
            id="web",
            service="web",
            port=port,
            tags=tags or [],
            address=service_address,
            weights=weights,
        ),
        checks=[HealthCheck(node=node, check_id=f"c{i}", status=s) for i, s in enumerate(statuses)],
    )


def lookup(name: str, qtype: int = core.A, settings: DnsSettings = S) -> core.Lookup:
    return core.classify(settings, tuple(name.lower().rstrip(".").split(".")), qtype, SERIAL)


@pytest.mark.parametrize(
    ("name", "qtype", "expected"),
    [
        ("web.service.consul", core.A, core.ServiceLookup("web", "", "consul.")),
        ("v1.web.service.consul", core.A, core.ServiceLookup("web", "v1", "consul.")),
        ("a.b.web.service.consul", core.A, core.ServiceLookup("web", "a.b", "consul.")),
        ("web.service.dc1.consul", core.A, core.ServiceLookup("web", "", "consul.")),
        ("_web._tcp.service.consul", core.SRV, core.ServiceLookup("web", "", "consul.")),
        ("_web._v1.service.dc1.consul", core.SRV, core.ServiceLookup("web", "v1", "consul.")),
        ("_web._tcp.consul", core.SRV, core.ServiceLookup("web", "", "consul.")),
        ("api.connect.consul", core.A, core.ServiceLookup("api", "", "consul.", connect=True)),
        ("api.connect.dc1.consul", core.SRV, core.ServiceLookup("api", "", "consul.", True)),
        ("n1.node.consul", core.A, core.NodeLookup("n1", "consul.")),
        ("n1.node.dc1.consul", core.AAAA, core.NodeLookup("n1", "consul.")),
        ("web.service.consul", core.SOA, core.NameserverLookup("consul.", core.SOA)),
        ("consul", core.NS, core.NameserverLookup("consul.", core.NS)),
        ("example.com", core.A, core.Recurse()),
        ("web.query.consul", core.A, core.QueryLookup("web", "consul.")),
        ("geo-db.query.dc1.consul", core.SRV, core.QueryLookup("geo-db", "consul.")),
        ("1.0.0.10.in-addr.arpa", core.PTR, core.PtrLookup("10.0.0.1")),
    ],
)
def test_classify(name: str, qtype: int, expected: core.Lookup) -> None:
    assert lookup(name, qtype) == expected


def test_connect_lookups_depend_on_the_connect_key() -> None:
    assert core.watch_key(lookup("api.connect.consul")) == "connect:api"
    assert core.watch_key(lookup("api.service.consul")) == "service:api"


@pytest.mark.parametrize(
    "name",
    [
        "consul",  # the apex has no A record
        "service.consul",
        "web.service.dc2.consul",  # no path to another datacenter
        "web.service.dc1.extra.consul",
        "web.virtual.consul",  # not served yet
        "v1.api.connect.consul",  # .connect takes no tag
        "nothing.consul",
        "zz.addr.dc1.consul",
    ],
)
def test_classify_nxdomain(name: str) -> None:
    found = lookup(name)
    assert isinstance(found, core.Fixed)
    assert found.answer.rcode == core.NXDOMAIN
    assert found.answer.authority[0].rtype == core.SOA


def test_alt_domain_and_addr_names() -> None:
    settings = DnsSettings(alt_domain="example.")
    assert lookup("web.service.example", settings=settings) == core.ServiceLookup(
        "web", "", "example."
    )
    found = lookup("0a000001.addr.dc1.consul")
    assert isinstance(found, core.Fixed)
    assert found.answer.groups[0].answers[0].data == "10.0.0.1"
    v6 = lookup("20010db8000000000000000000000001.addr.consul", core.AAAA)
    assert isinstance(v6, core.Fixed)
    assert v6.answer.groups[0].answers[0].data == "2001:db8::1"


def test_soa_fields() -> None:
    soa = core.soa_record(S, "consul.", SERIAL).data
    assert soa == core.Soa("ns.consul.", "hostmaster.consul.", SERIAL, 3600, 600, 86400, 0)


def answer(rows: list[CheckServiceNode], qtype: int = core.A, **kw: object) -> core.Answer:
    settings = DnsSettings(**kw)  # type: ignore[arg-type]
    return core.answer_service(settings, core.ServiceLookup("web", "", "consul."), qtype, rows, 1)


def datas(ans: core.Answer) -> list[object]:
    return [r.data for g in ans.groups for r in g.answers]


def test_health_filtering() -> None:
    rows = [
        row("n1", "10.0.0.1", "passing"),
        row("n2", "10.0.0.2", "warning", "passing"),
        row("n3", "10.0.0.3", "passing", "critical"),
        row("n4", "10.0.0.4", "maintenance"),
    ]
    assert datas(answer(rows)) == ["10.0.0.1", "10.0.0.2"]
    assert datas(answer(rows, only_passing=True)) == ["10.0.0.1"]
    empty = answer([rows[2]])
    assert empty.rcode == core.NXDOMAIN
    assert empty.authority[0].rtype == core.SOA


def test_tag_filter_is_case_insensitive() -> None:
    rows = [row("n1", "10.0.0.1", tags=["Primary"]), row("n2", "10.0.0.2", tags=["replica"])]
    found = core.answer_service(S, core.ServiceLookup("web", "primary", "consul."), core.A, rows, 1)
    assert datas(found) == ["10.0.0.1"]


def test_aaaa_for_ipv4_only_is_nodata() -> None:
    found = answer([row("n1", "10.0.0.1")], core.AAAA)
    assert found.rcode == core.NOERROR
    assert not found.groups
    assert found.authority[0].rtype == core.SOA
    assert datas(answer([row("n1", "2001:db8::5")], core.AAAA)) == ["2001:db8::5"]


def test_service_address_and_dedup() -> None:
    rows = [row("n1", "10.0.0.1", service_address="10.1.1.1"), row("n2", "10.1.1.1")]
    assert datas(answer(rows)) == ["10.1.1.1"]


def test_ttls() -> None:
    ttl = {"web": 5, "we*": 7, "*": 9, "db*": 11}
    assert core.DnsSettings(service_ttl=ttl).service_ttl_for("web") == 5
    assert core.DnsSettings(service_ttl=ttl).service_ttl_for("webby") == 7
    assert core.DnsSettings(service_ttl=ttl).service_ttl_for("api") == 9
    assert core.DnsSettings(service_ttl={}).service_ttl_for("api") == 0
    assert answer([row("n1", "10.0.0.1")], service_ttl={"*": 9}).groups[0].answers[0].ttl == 9
    node = Node(node="n1", address="10.0.0.1")
    settings = DnsSettings(node_ttl=15)
    found = core.answer_node(settings, core.NodeLookup("n1", "consul."), core.A, node, 1)
    assert found.groups[0].answers[0].ttl == 15


def test_srv_records() -> None:
    rows = [
        row("n1", "10.0.0.1", "passing", port=8080, weights=Weights(passing=10, warning=2)),
        row("n2", "10.0.0.2", "warning", port=8081, weights=Weights(passing=10, warning=2)),
        row("n3", "10.0.0.3", port=8082, service_address="10.9.9.9"),
        row("n4", "10.0.0.4", port=8083, service_address="db.example.com"),
    ]
    found = answer(rows, core.SRV)
    srvs = {g.answers[0].data.port: g for g in found.groups}  # type: ignore[union-attr]
    assert srvs[8080].answers[0].data == core.Srv(1, 10, 8080, "n1.node.dc1.consul.")
    assert srvs[8080].extras[0].data == "10.0.0.1"
    assert srvs[8081].answers[0].data.weight == 2  # type: ignore[union-attr]
    assert srvs[8082].answers[0].data.target == "0a090909.addr.dc1.consul."  # type: ignore[union-attr]
    assert srvs[8082].extras[0].name == "0a090909.addr.dc1.consul."
    assert srvs[8083].answers[0].data.target == "db.example.com."  # type: ignore[union-attr]


def test_node_answers_and_meta_txt() -> None:
    node = Node(node="n1", address="10.0.0.1", meta={"rack": "r1", "rfc1035-x": "raw", "a=b": "c"})
    look = core.NodeLookup("n1", "consul.")
    a = core.answer_node(S, look, core.A, node, 1)
    assert [r.data for r in a.groups[0].answers] == ["10.0.0.1"]
    assert sorted(str(r.data) for r in a.groups[0].extras) == ["a`=b=c", "rack=r1", "raw"]
    txt = core.answer_node(S, look, core.TXT, node, 1)
    assert {r.rtype for r in txt.groups[0].answers} == {core.TXT}
    missing = core.answer_node(S, look, core.A, None, 1)
    assert missing.rcode == core.NXDOMAIN
    host = core.answer_node(S, look, core.A, Node(node="n1", address="n1.example.com"), 1)
    assert host.groups[0].answers[0].rtype == core.CNAME


def test_nameservers() -> None:
    servers = [row(f"s{i}", f"10.0.1.{i}") for i in range(5)]
    soa = core.answer_nameservers(S, core.NameserverLookup("consul.", core.SOA), servers, 1)
    assert soa.groups[0].answers[0].rtype == core.SOA
    assert len(soa.authority) == 3
    ns = core.answer_nameservers(S, core.NameserverLookup("consul.", core.NS), servers, 1)
    assert next(r.data for r in ns.groups[0].answers) == "s0.node.dc1.consul."
    assert len(ns.extras) == 3


# ----- rendering ----------------------------------------------------------------


def make_query(
    qtype: str = "A", edns: int | None = None, name: str = "web.service.consul"
) -> Query:
    record = DNSRecord.question(name, qtype)
    if edns is not None:
        record.add_ar(EDNS0(udp_len=edns))
    return parse_query(record.pack())


def many(n: int) -> list[CheckServiceNode]:
    return [row(f"node-{i:02d}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(n)]


def wire(
    query: Query, ans: core.Answer, udp: bool = True, **kw: object
) -> tuple[dns.message.Message, bytes, bool]:
    options = {"udp_answer_limit": 3, "enable_truncate": False, "recursion_available": False}
    options.update(kw)
    out = render(query, ans, None, udp=udp, **options)  # type: ignore[arg-type]
    return dns.message.from_wire(out.packet), out.packet, out.trimmed


def test_udp_without_edns_is_trimmed_silently() -> None:
    msg, packet, trimmed = wire(make_query(), answer(many(30)))
    assert trimmed and len(packet) <= 512
    assert len(msg.answer[0]) == 3
    assert not msg.flags & dns.flags.TC
    msg, packet, _ = wire(make_query("SRV"), answer(many(30), core.SRV), udp_answer_limit=8)
    assert len(packet) <= 512
    assert len(msg.answer[0]) == len(msg.additional)


def test_enable_truncate_sets_tc() -> None:
    msg, _, _ = wire(make_query(), answer(many(30)), enable_truncate=True)
    assert msg.flags & dns.flags.TC


def test_edns_size_and_tcp() -> None:
    msg, packet, trimmed = wire(make_query("SRV", edns=1232), answer(many(30), core.SRV))
    assert trimmed and 512 < len(packet) <= 1232
    assert msg.edns == 0 and msg.payload == 1232
    msg, _, trimmed = wire(make_query("SRV"), answer(many(30), core.SRV), udp=False)
    assert not trimmed
    assert len(msg.answer[0]) == 30
    assert len(msg.additional) == 30


def test_a_record_limit() -> None:
    msg, _, trimmed = wire(make_query(edns=4096), answer(many(10), a_record_limit=2))
    assert len(msg.answer[0]) == 2
    assert not trimmed


def test_question_spelling_is_echoed() -> None:
    query = make_query(name="WeB.SeRvIcE.CoNsUl")
    msg, _, _ = wire(query, answer(many(1)))
    assert msg.question[0].name.to_text() == "WeB.SeRvIcE.CoNsUl."
    assert msg.answer[0].name.to_text() == "WeB.SeRvIcE.CoNsUl."
    assert msg.flags & dns.flags.AA and msg.flags & dns.flags.RD


# ----- cache --------------------------------------------------------------------


def test_rotations_spread_first_record_evenly() -> None:
    query = make_query(edns=4096)
    ans = answer(many(5))

    def render_order(order: object) -> tuple[bytes, bool]:
        out = render(
            query,
            ans,
            order,
            udp=True,
            udp_answer_limit=3,  # type: ignore[arg-type]
            enable_truncate=False,
            recursion_available=False,
        )
        return out.packet[2:], out.trimmed

    entry = CacheEntry((), 0, len(ans.groups), True, render_order, random.Random(3))
    firsts = Counter(
        dns.message.from_wire(b"\x00\x00" + entry.packet()).answer[0][0].to_text()
        for _ in range(50)
    )
    assert sorted(firsts.values()) == [10] * 5


def test_cache_validity_and_bound() -> None:
    entry = CacheEntry(
        (("service:web", 4),), 0, 1, False, lambda o: (b"xx", False), random.Random()
    )
    assert entry.valid({"service:web": 4}.get)
    assert not entry.valid({"service:web": 5}.get)
    cache = AnswerCache(max_entries=3)
    for i in range(5):
        cache.put(bytes([i]), entry)
    assert len(cache) == 3
    assert cache.get(b"\x00") is None and cache.get(b"\x04") is entry
    cache.put(b"x" * 600, entry)
    assert cache.get(b"x" * 600) is None
    small = AnswerCache(max_bytes=1000)
    for i in range(20):
        small.put(bytes([i]), entry)  # 64 bytes (the floor) + 1 byte of key each
    assert small.bytes <= 1000
    assert len(small) == 1000 // 65
    small.clear()
    assert small.bytes == 0 and len(small) == 0


def test_core_modules_do_no_io() -> None:
    banned = {"asyncio", "socket", "ssl", "time", "random", "selectors"}
    for module in ("query", "core", "render", "cache"):
        source = Path(core.__file__).with_name(f"{module}.py").read_text()
        tree = ast.parse(source)
        runtime = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {
            a.name.split(".")[0] for n in runtime if isinstance(n, ast.Import) for a in n.names
        }
        names |= {(n.module or "").split(".")[0] for n in runtime if isinstance(n, ast.ImportFrom)}
        assert not names & banned, (module, names & banned)


def test_rdatatype_constants_match_dnspython() -> None:
    for name in ("A", "NS", "CNAME", "SOA", "PTR", "TXT", "AAAA", "SRV", "ANY", "AXFR", "IXFR"):
        assert getattr(core, name) == dns.rdatatype.from_text(name)
