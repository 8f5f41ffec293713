"""The query decoder: whole, byte by byte, with trailing garbage, and fuzzed.

dnslib is the oracle: whatever it builds, `parse_query` must read the same
question and EDNS0 size; whatever bytes come in, only MalformedQuery escapes.
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from dnslib import EDNS0, QTYPE, DNSLabel, DNSQuestion, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from proconsul.dns.query import MalformedQuery, parse_query


def build(name: str = "web.service.consul", qtype: str = "A", edns: int | None = None) -> bytes:
    record = DNSRecord.question(name, qtype)
    record.header.id = 0x1234
    if edns is not None:
        record.add_ar(EDNS0(udp_len=edns))
    packed: bytes = record.pack()
    return packed


HEADER = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)


def test_whole_query() -> None:
    query = parse_query(build("Web.Service.Consul", "SRV"))
    assert query.id == 0x1234
    assert query.rd
    assert query.labels == (b"Web", b"Service", b"Consul")
    assert query.lower_labels == ("web", "service", "consul")
    assert query.qtype == 33
    assert query.qclass == 1
    assert query.edns_size is None


def test_edns0_size() -> None:
    assert parse_query(build(edns=1232)).edns_size == 1232


def test_every_prefix_is_malformed() -> None:
    data = build(edns=4096)
    for cut in range(len(data)):
        with pytest.raises(MalformedQuery):
            parse_query(data[:cut])


@pytest.mark.parametrize("garbage", [b"\x00", b"junk", b"\x00" * 11])
def test_trailing_garbage_is_malformed(garbage: bytes) -> None:
    with pytest.raises(MalformedQuery, match="trailing"):
        parse_query(build() + garbage)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xc0\x0c\x00\x01\x00\x01", "compressed"),  # points at itself: a loop
        (b"\x03abc\xc0\x0c\x00\x01\x00\x01", "compressed"),
        (b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", "label type"),
        (
            b"\x3f"
            + b"a" * 63
            + b"\x3f"
            + b"b" * 63
            + b"\x3f"
            + b"c" * 63
            + b"\x3f"
            + b"d" * 63
            + b"\x00\x00\x01\x00\x01",
            "255",
        ),
    ],
)
def test_bad_question_names(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedQuery, match=reason):
        parse_query(HEADER + body)


def test_response_and_question_count_are_rejected() -> None:
    response = bytearray(build())
    response[2] |= 0x80
    with pytest.raises(MalformedQuery, match="response"):
        parse_query(bytes(response))
    two = struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01" * 2
    with pytest.raises(MalformedQuery, match="questions"):
        parse_query(two)


def test_pointer_loop_in_additional_section_terminates() -> None:
    # An additional record whose name is a pointer to itself: skipped, not followed.
    body = b"\x03web\x00\x00\x01\x00\x01"
    rr = b"\xc0\x11" + struct.pack("!HHIH", 1, 1, 0, 0)
    data = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 1) + body + rr
    assert parse_query(data).labels == (b"web",)


def test_two_opt_records_are_malformed() -> None:
    record = DNSRecord.question("a.consul")
    record.add_ar(EDNS0(udp_len=1232))
    record.add_ar(EDNS0(udp_len=1232))
    with pytest.raises(MalformedQuery, match="OPT"):
        parse_query(record.pack())


label = st.binary(min_size=1, max_size=20).filter(lambda b: b"." not in b)


@settings(max_examples=300, deadline=None)
@given(
    labels=st.lists(label, min_size=0, max_size=6),
    qtype=st.sampled_from(["A", "AAAA", "SRV", "TXT", "ANY", "SOA", "NS", "PTR"]),
    edns=st.one_of(st.none(), st.integers(min_value=0, max_value=65535)),
)
def test_matches_dnslib(labels: list[bytes], qtype: str, edns: int | None) -> None:
    record = DNSRecord(q=DNSQuestion(DNSLabel(labels), getattr(QTYPE, qtype)))
    if edns is not None:
        record.add_ar(EDNS0(udp_len=edns))
    query = parse_query(record.pack())
    assert query.labels == tuple(labels)
    assert query.qtype == getattr(QTYPE, qtype)
    assert query.edns_size == edns


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedQuery):
        parse_query(data)


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=1, max_size=80), st.integers(min_value=0, max_value=200))
def test_mutated_queries_only_raise_malformed(noise: bytes, at: int) -> None:
    data = bytearray(build(edns=1232))
    at %= len(data)
    data[at : at + len(noise)] = noise
    with contextlib.suppress(MalformedQuery):
        parse_query(bytes(data))
