"""Encode an `Answer` for one query as wire bytes, with dnslib as the codec.

Job: header flags, the echoed question, the records in the order given, the
EDNS0 OPT record when the query had one, and Consul's size rules:
- UDP without EDNS0: at most min(8, `udp_answer_limit`) answer groups, then
  as many as fit in 512 bytes. With EDNS0: as many as fit in the advertised
  size (at least 512, at most `MAX_UDP_SIZE`). TCP: as many as fit in 65535.
- At least one group is always sent, even if it alone is too big.
- Trimming is silent unless `enable_truncate`, which sets TC.
- A group's extras (the SRV target's A record) go and come with it; extras
  shared by several groups are written once.

Pure: no sockets, clocks or randomness; the order comes from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dnslib import (
    AAAA,
    CNAME,
    EDNS0,
    NS,
    PTR,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
)

from proconsul.dns import core
from proconsul.dns.query import FLAG_CD, FLAG_QR, FLAG_RD, Query

DEFAULT_UDP_SIZE = 512
# Our cap on EDNS0 sizes: bigger UDP answers fragment, and fragments get lost.
MAX_UDP_SIZE = 4096
MAX_TCP_SIZE = 65535
MAX_UDP_ANSWERS = 8  # Consul's hard cap for non-EDNS UDP answers
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RA = 0x0080


@dataclass(frozen=True, slots=True)
class Rendered:
    packet: bytes
    trimmed: bool  # fewer groups than the answer had (after a_record_limit)


def _rdata(record: core.Record) -> object:
    data = record.data
    rtype = record.rtype
    if isinstance(data, core.Srv):
        return SRV(data.priority, data.weight, data.port, data.target)
    if isinstance(data, core.Soa):
        times = (data.serial, data.refresh, data.retry, data.expire, data.minimum)
        return SOA(data.mname, data.rname, times)
    if rtype == core.A:
        return A(data)
    if rtype == core.AAAA:
        return AAAA(data)
    if rtype == core.CNAME:
        return CNAME(data)
    if rtype == core.NS:
        return NS(data)
    if rtype == core.PTR:
        return PTR(data)
    if rtype == core.TXT:
        raw = data.encode()
        # One TXT string holds 255 octets; longer values are split, as RFC 1035 allows.
        return TXT([raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""])
    raise ValueError(f"cannot encode record type {rtype}")


def _rr(record: core.Record, qname: DNSLabel) -> RR:
    name = qname if record.name is None else record.name
    return RR(name, record.rtype, ttl=record.ttl, rdata=_rdata(record))


def max_size(query: Query, udp: bool) -> int:
    if not udp:
        return MAX_TCP_SIZE
    if query.edns_size is None:
        return DEFAULT_UDP_SIZE
    return max(DEFAULT_UDP_SIZE, min(query.edns_size, MAX_UDP_SIZE))


def header_flags(query: Query, rcode: int, authoritative: bool, ra: bool, tc: bool) -> int:
    flags = FLAG_QR | (query.opcode << 11) | (query.flags & (FLAG_RD | FLAG_CD)) | (rcode & 0xF)
    if authoritative:
        flags |= FLAG_AA
    if ra:
        flags |= FLAG_RA
    if tc:
        flags |= FLAG_TC
    return flags


class _Packer:
    """Packs the same answer with different numbers of groups, for the size search."""

    def __init__(self, query: Query, answer: core.Answer, groups: Sequence[core.Group]) -> None:
        self.query = query
        self.answer = answer
        self.qname = DNSLabel(query.labels)
        self.answers = [[_rr(r, self.qname) for r in g.answers] for g in groups]
        self.extras = [[(r, _rr(r, self.qname)) for r in g.extras] for g in groups]
        self.authority = [_rr(r, self.qname) for r in answer.authority]
        self.glue = [_rr(r, self.qname) for r in answer.extras]

    def pack(self, count: int, ra: bool, tc: bool) -> bytes:
        query = self.query
        flags = header_flags(query, self.answer.rcode, self.answer.authoritative, ra, tc)
        record = DNSRecord(
            DNSHeader(id=0, bitmap=flags),
            q=DNSQuestion(self.qname, query.qtype, query.qclass),
        )
        seen: set[core.Record] = set()
        for i in range(count):
            for rr in self.answers[i]:
                record.add_answer(rr)
            for key, rr in self.extras[i]:
                if key not in seen:
                    seen.add(key)
                    record.add_ar(rr)
        for rr in self.authority:
            record.add_auth(rr)
        for rr in self.glue:
            record.add_ar(rr)
        if query.edns_size is not None:
            record.add_ar(EDNS0(udp_len=query.edns_size, flags="do" if query.edns_do else ""))
        return bytes(record.pack())  # dnslib hands back a bytearray


def render(
    query: Query,
    answer: core.Answer,
    order: Sequence[int] | None,
    *,
    udp: bool,
    udp_answer_limit: int,
    enable_truncate: bool,
    recursion_available: bool,
) -> Rendered:
    """The response to `query`, id 0 (the sender puts the client's id in)."""
    groups = [answer.groups[i] for i in order] if order is not None else list(answer.groups)
    if answer.answer_limit > 0:
        groups = groups[: answer.answer_limit]
    available = len(groups)
    limit = max_size(query, udp)
    count = available
    if udp and query.edns_size is None:
        cap = MAX_UDP_ANSWERS if udp_answer_limit <= 0 else min(MAX_UDP_ANSWERS, udp_answer_limit)
        count = min(count, cap)
    packer = _Packer(query, answer, groups[:count])
    packet = packer.pack(count, recursion_available, False)
    if len(packet) > limit and count > 1:
        # Binary search for the most groups that fit; one group always goes out.
        low, high = 1, count - 1
        best = packer.pack(1, recursion_available, False)
        count = 1
        while low <= high:
            mid = (low + high) // 2
            candidate = packer.pack(mid, recursion_available, False)
            if len(candidate) <= limit:
                best, count, low = candidate, mid, mid + 1
            else:
                high = mid - 1
        packet = best
    trimmed = count < available
    if trimmed and enable_truncate:
        packet = packer.pack(count, recursion_available, True)
    return Rendered(packet, trimmed)


def simple_response(query: Query, rcode: int, recursion_available: bool) -> bytes:
    """A header-and-question reply (REFUSED, NOTIMP, SERVFAIL)."""
    return render(
        query,
        core.Answer(rcode, authoritative=False),
        None,
        udp=False,
        udp_answer_limit=0,
        enable_truncate=False,
        recursion_available=recursion_available,
    ).packet
