"""Strategies shared by the fuzz tests: hostile msgpack, and mutations of good bytes.

Random bytes rarely get past a decoder's first check, so most strategies here
build msgpack on purpose, with a small encoder of our own that can write what
a correct encoder never would:
- `BadStr`: a msgpack str whose bytes are not UTF-8;
- `Deep(n)`: n nested one-element arrays (decoders recurse; a peer can nest
  far deeper than Python's recursion limit in a few kilobytes);
- `Ext`: extension types (msgspec reads ext -1 as a timestamp);
- every int width and float, maps with any key types.
`shaped(head)` puts a valid head (a message tag) in front of random fields,
`with_extra(encoded)` appends a hostile field to a valid array-like struct (an
older decoder skips trailing fields, which is exactly where it recurses), and
`mutated(data)` flips, cuts, inserts and appends bytes.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import strategies as st

# Deep enough to pass any recursion limit msgspec or Python has (1000 by default).
DEEP = 3000


class BadStr(bytes):
    """Bytes sent under a msgpack str header."""


class Deep(int):
    """This many nested arrays around a nil."""


@dataclass(frozen=True)
class Ext:
    code: int
    data: bytes


def _sized(small_base: int | None, codes: Sequence[int], size: int) -> bytes:
    """The header for a str/bin/array/map of `size` items."""
    if small_base is not None and size < (32 if small_base == 0xA0 else 16):
        return bytes((small_base | size,))
    widths = (1, 2, 4) if len(codes) == 3 else (2, 4)
    for code, width in zip(codes, widths, strict=True):
        if size < 1 << (8 * width):
            return bytes((code,)) + size.to_bytes(width, "big")
    raise ValueError("too large for msgpack")


def pack(value: Any) -> bytes:
    """msgpack bytes for `value`, hostile leaves included."""
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, Deep):
        return b"\x91" * int(value) + b"\xc0"
    if isinstance(value, int):
        return _pack_int(value)
    if isinstance(value, float):
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, BadStr):
        return _sized(0xA0, (0xD9, 0xDA, 0xDB), len(value)) + bytes(value)
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        return _sized(0xA0, (0xD9, 0xDA, 0xDB), len(raw)) + raw
    if isinstance(value, bytes | bytearray):
        return _sized(None, (0xC4, 0xC5, 0xC6), len(value)) + bytes(value)
    if isinstance(value, Ext):
        return _pack_ext(value)
    if isinstance(value, list | tuple):
        return _sized(0x90, (0xDC, 0xDD), len(value)) + b"".join(pack(v) for v in value)
    if isinstance(value, dict):
        body = b"".join(pack(k) + pack(v) for k, v in value.items())
        return _sized(0x80, (0xDE, 0xDF), len(value)) + body
    raise TypeError(f"cannot pack {type(value).__name__}")


def _pack_int(value: int) -> bytes:
    if 0 <= value < 128:
        return bytes((value,))
    if -32 <= value < 0:
        return struct.pack(">b", value)
    if value >= 0:
        for code, fmt in ((0xCC, ">B"), (0xCD, ">H"), (0xCE, ">I"), (0xCF, ">Q")):
            if value < 1 << (8 * struct.calcsize(fmt)):
                return bytes((code,)) + struct.pack(fmt, value)
        raise ValueError("int too large for msgpack")
    for code, fmt in ((0xD0, ">b"), (0xD1, ">h"), (0xD2, ">i"), (0xD3, ">q")):
        bits = 8 * struct.calcsize(fmt)
        if value >= -(1 << (bits - 1)):
            return bytes((code,)) + struct.pack(fmt, value)
    raise ValueError("int too small for msgpack")


def _pack_ext(ext: Ext) -> bytes:
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    code = struct.pack(">b", ext.code)
    if len(ext.data) in fixed:
        return bytes((fixed[len(ext.data)],)) + code + ext.data
    return _sized(None, (0xC7, 0xC8, 0xC9), len(ext.data)) + code + ext.data


# ----- strategies -----------------------------------------------------------------

ints = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
)
# 0xff never occurs in UTF-8, so every one of these is invalid.
bad_strs = st.binary(max_size=6).map(lambda raw: BadStr(raw + b"\xff"))
deep = st.integers(DEEP - 10, DEEP).map(Deep)
exts = st.builds(Ext, st.integers(-128, 127), st.binary(max_size=20))

leaves = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=12),
    bad_strs,
    exts,
    deep,
)


def trees(max_leaves: int = 24) -> st.SearchStrategy[Any]:
    """Any msgpack value: lists and maps of hostile leaves."""
    return st.recursive(
        leaves,
        lambda kids: st.one_of(
            st.lists(kids, max_size=6),
            st.dictionaries(st.one_of(st.text(max_size=8), ints, bad_strs), kids, max_size=6),
        ),
        max_leaves=max_leaves,
    )


def packed(max_leaves: int = 24) -> st.SearchStrategy[bytes]:
    return trees(max_leaves).map(pack)


def shaped(heads: Sequence[Any], max_fields: int = 10) -> st.SearchStrategy[bytes]:
    """An array: one of `heads` (a tag), then random fields; what a forged message looks like."""
    return st.builds(
        lambda head, rest: pack([head, *rest]),
        st.sampled_from(list(heads)),
        st.lists(trees(8), max_size=max_fields),
    )


def with_extra(encoded: bytes, extra: Any) -> bytes:
    """`encoded` with one more field: a trailing one for an array-like struct, an
    unknown key for a map-like one. Decoders skip both, recursively."""
    fields = _tolerant(msgspec.msgpack.decode(encoded))
    if isinstance(fields, dict):
        return pack({**fields, "zz_unknown": extra})
    if isinstance(fields, list):
        return pack([*fields, extra])
    return pack([fields, extra])


def _tolerant(value: Any) -> Any:
    """Decoded generic msgpack back to values `pack` writes the same way."""
    if isinstance(value, list):
        return [_tolerant(v) for v in value]
    if isinstance(value, dict):
        return {_tolerant(k): _tolerant(v) for k, v in value.items()}
    return value


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few flipped, cut, inserted or appended bytes."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "append", "drop"]))
        if op == "append" or not buf:
            buf += draw(st.binary(min_size=1, max_size=8))
            continue
        at = draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del buf[at:]
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[at : at + draw(st.integers(1, 8))]
    return bytes(buf)


def hostile_bytes(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Everything a decoder of `valid` should survive: random bytes, random msgpack,
    mutations of valid encodings, and valid encodings with a hostile extra field."""
    return st.one_of(
        st.binary(max_size=64),
        packed(),
        valid.flatmap(mutated),
        st.builds(with_extra, valid, st.one_of(deep, bad_strs, exts, trees(6))),
    )


def chunks(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """`data` split at the given offsets (taken modulo its length, sorted)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]
