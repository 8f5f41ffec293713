"""The tiny KV state machine the Raft simulator replicates.

Commands are msgpack lists: ["put", key, value], ["cas", key, expected, new]
(a null `new` empties the key: a lock's release), or ["mput", [key, ...], value]
(a transaction: every key set in one entry).
Reads never enter the log; they go through read-index. The snapshot is the
msgpack map itself, and `digest` is what the simulator compares across
servers at equal applied indexes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from proconsul.raft.messages import Entry, EntryType, Snapshot

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()


def put_command(key: str, value: int) -> bytes:
    return _enc.encode(["put", key, value])


def cas_command(key: str, expected: int | None, new: int | None) -> bytes:
    return _enc.encode(["cas", key, expected, new])


def mput_command(keys: Sequence[str], value: int) -> bytes:
    return _enc.encode(["mput", list(keys), value])


class KV:
    def __init__(self) -> None:
        self.data: dict[str, int | None] = {}
        self.applied = 0

    def apply(self, entry: Entry) -> Any:
        """Apply one committed entry; returns the command's result (None for non-commands)."""
        if entry.index != self.applied + 1:
            raise AssertionError(f"apply out of order: {entry.index} after {self.applied}")
        self.applied = entry.index
        if entry.type is not EntryType.COMMAND:
            return None
        command = _dec.decode(entry.data)
        if command[0] == "put":
            self.data[command[1]] = command[2]
            return None
        if command[0] == "mput":
            for key in command[1]:
                self.data[key] = command[2]
            return None
        if command[0] == "cas":
            _, key, expected, new = command
            if self.data.get(key) == expected:
                self.data[key] = new
                return True
            return False
        raise AssertionError(f"unknown command {command!r}")

    def digest(self) -> bytes:
        return hashlib.blake2b(_enc.encode(sorted(self.data.items())), digest_size=12).digest()

    def snapshot_data(self) -> bytes:
        return _enc.encode(self.data)

    @classmethod
    def restore(cls, snapshot: Snapshot | None) -> KV:
        kv = cls()
        if snapshot is not None:
            kv.data = dict(_dec.decode(snapshot.data))
            kv.applied = snapshot.meta.index
        return kv


def rebuild(snapshot: Snapshot | None, entries: Sequence[Entry]) -> bytes:
    """recover_cluster's callback: the state after the snapshot plus every entry."""
    kv = KV.restore(snapshot)
    for entry in entries:
        kv.apply(entry)
    return kv.snapshot_data()
