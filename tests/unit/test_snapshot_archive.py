"""Snapshot archives: built, read back, and refused when anything is off."""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib

import pytest

from proconsul.state.fsm import FSM
from proconsul.state.snapshot import SnapshotError
from proconsul.state.snapshot_archive import build_archive, read_archive, table_stats
from proconsul.state.store import StateStore
from proconsul.structs.catalog import KVEntry
from proconsul.structs.commands import KVSRequest, RegisterRequest


def _state() -> bytes:
    fsm = FSM(StateStore())
    fsm.apply(1, RegisterRequest(node="n1", address="10.0.0.1"))
    for i in range(3):
        fsm.apply(2 + i, KVSRequest(op="set", dir_ent=KVEntry(key=f"k{i}", value=b"v" * 10)))
    return fsm.snapshot()


def test_round_trip_and_stats() -> None:
    state = _state()
    archive = build_archive(state, index=4, term=2, now_ms=1_700_000_000_123)
    meta, back = read_archive(archive)
    assert back == state
    assert (meta.id, meta.index, meta.term, meta.version, meta.size) == (
        "2-4-1700000000123",
        4,
        2,
        1,
        len(state),
    )
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        names = tar.getnames()
    assert names == ["meta.json", "state.bin", "SHA256SUMS"]
    stats = {name: (count, size) for name, count, size in table_stats(state)}
    assert stats["KVS"][0] == 3 and stats["Node"][0] == 1 and stats["KVS"][1] > 30


def _retar(archive: bytes, change: dict[str, bytes | None]) -> bytes:
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as src,
        tarfile.open(fileobj=out, mode="w") as tar,
    ):
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name in change:
                replaced = change[member.name]
                if replaced is None:
                    continue
                data = replaced
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return gzip.compress(out.getvalue())


def _inflates_the_same(damaged: bytes, archive: bytes) -> bool:
    try:
        return gzip.decompress(damaged) == gzip.decompress(archive)
    except (OSError, EOFError, zlib.error):
        return False


def test_corrupt_archives_are_refused_saying_what_failed() -> None:
    state = _state()
    archive = build_archive(state, index=4, term=2, now_ms=1)
    flipped_state = bytearray(state)
    flipped_state[len(state) // 2] ^= 0x01
    cases = [
        (archive[: len(archive) // 2], "truncated"),
        (b"not gzip at all", "not gzip"),
        (_retar(archive, {"state.bin": bytes(flipped_state)}), "SHA-256 mismatch for state.bin"),
        (_retar(archive, {"SHA256SUMS": None}), "missing SHA256SUMS"),
        (gzip.compress(b"\x00" * 10), "tar"),
    ]
    for data, text in cases:
        with pytest.raises(SnapshotError, match=text):
            read_archive(data)
    # A flipped byte anywhere past gzip's 10-byte header (whose mtime and OS
    # bytes carry nothing of the snapshot) is refused, and in its magic too.
    for position in [0, *range(10, len(archive), max(1, len(archive) // 40))]:
        damaged = bytearray(archive)
        damaged[position] ^= 0x40
        if _inflates_the_same(bytes(damaged), archive):
            continue  # a bit deflate never reads (block padding): nothing was damaged
        with pytest.raises(SnapshotError):
            read_archive(bytes(damaged))
