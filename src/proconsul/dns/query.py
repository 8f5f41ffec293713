"""Decode one DNS query: header, the single question and an optional EDNS0 OPT record.

Job: turn untrusted bytes into a `Query` or raise `MalformedQuery`; nothing else
may escape, whatever the input (hypothesis fuzzes this against dnslib).

Rules:
- Pure: no sockets, clocks or randomness.
- Only what answering needs is decoded. Answer/authority records (absent in
  real queries) and non-OPT additional records are skipped, never interpreted.
- Skipping a name never follows a compression pointer, so pointer loops cannot
  make it spin. The question name may not be compressed at all: it is the first
  name in the message, so a pointer there can only point into the header.
- Names over 255 octets, label types other than plain/pointer, counts that run
  past the end, a second OPT record and trailing bytes are all malformed.
- Messages with QR set (responses) are malformed for a server: answering them
  would let two servers bounce packets at each other forever.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHHH")
_U16x2 = struct.Struct("!HH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength

MAX_NAME_OCTETS = 255
MAX_LABEL_OCTETS = 63
TYPE_OPT = 41
FLAG_QR = 0x8000
FLAG_RD = 0x0100
FLAG_CD = 0x0010


class MalformedQuery(ValueError):
    """The bytes are not a DNS query this server will answer; the text says why."""


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int  # the header's flags word, as sent
    labels: tuple[bytes, ...]  # question name labels, exactly as sent (case kept)
    qtype: int
    qclass: int
    edns_size: int | None  # the OPT record's UDP payload size; None without EDNS0
    edns_do: bool = False  # DNSSEC OK bit

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def rd(self) -> bool:
        return bool(self.flags & FLAG_RD)

    @property
    def lower_labels(self) -> tuple[str, ...]:
        """Labels lower-cased (ASCII only, as DNS does) and decoded byte-for-char."""
        return tuple(label.lower().decode("latin-1") for label in self.labels)


def _question_name(data: bytes, pos: int) -> tuple[tuple[bytes, ...], int]:
    labels: list[bytes] = []
    octets = 1  # the root label
    end = len(data)
    while True:
        if pos >= end:
            raise MalformedQuery("question name runs past the end")
        length = data[pos]
        if length == 0:
            return tuple(labels), pos + 1
        if length & 0xC0 == 0xC0:
            raise MalformedQuery("compressed question name")
        if length & 0xC0:
            raise MalformedQuery("unknown label type")
        octets += length + 1
        if octets > MAX_NAME_OCTETS:
            raise MalformedQuery("name longer than 255 octets")
        if pos + 1 + length > end:
            raise MalformedQuery("label runs past the end")
        labels.append(bytes(data[pos + 1 : pos + 1 + length]))
        pos += 1 + length


def _skip_name(data: bytes, pos: int) -> tuple[bool, int]:
    """Step over a (possibly compressed) name; returns (is_root, next offset)."""
    end = len(data)
    start = pos
    octets = 1
    while True:
        if pos >= end:
            raise MalformedQuery("record name runs past the end")
        length = data[pos]
        if length == 0:
            return pos == start, pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise MalformedQuery("pointer runs past the end")
            if ((length & 0x3F) << 8 | data[pos + 1]) >= len(data):
                raise MalformedQuery("pointer past the end")
            # The rest of the name is elsewhere; it need not be read to skip.
            return False, pos + 2
        if length & 0xC0:
            raise MalformedQuery("unknown label type")
        octets += length + 1
        if octets > MAX_NAME_OCTETS:
            raise MalformedQuery("name longer than 255 octets")
        pos += 1 + length


def parse_query(data: bytes) -> Query:
    """Decode `data` as a query, or raise MalformedQuery."""
    if len(data) < HEADER.size:
        raise MalformedQuery("shorter than a DNS header")
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & FLAG_QR:
        raise MalformedQuery("a response, not a query")
    if qdcount != 1:
        raise MalformedQuery(f"{qdcount} questions (want 1)")
    labels, pos = _question_name(data, HEADER.size)
    if pos + 4 > len(data):
        raise MalformedQuery("question type/class missing")
    qtype, qclass = _U16x2.unpack_from(data, pos)
    pos += 4
    edns_size: int | None = None
    edns_do = False
    for section, count in enumerate((ancount, nscount, arcount)):
        for _ in range(count):
            is_root, pos = _skip_name(data, pos)
            if pos + _RR_FIXED.size > len(data):
                raise MalformedQuery("record header runs past the end")
            rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
            pos += _RR_FIXED.size + rdlength
            if pos > len(data):
                raise MalformedQuery("record data runs past the end")
            if rtype == TYPE_OPT:
                if section != 2 or not is_root or edns_size is not None:
                    raise MalformedQuery("misplaced or repeated OPT record")
                edns_size = rclass
                edns_do = bool(ttl & 0x8000)
    if pos != len(data):
        raise MalformedQuery("trailing bytes after the message")
    return Query(
        id=qid,
        flags=flags,
        labels=labels,
        qtype=qtype,
        qclass=qclass,
        edns_size=edns_size,
        edns_do=edns_do,
    )
