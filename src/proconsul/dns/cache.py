"""Wire-format answers cached per query bytes and per catalog index.

Job: let the server answer a repeated query by copying bytes. The key is the
query minus its 2-byte id (flags, question spelling, EDNS0 size all included),
so a hit needs no parsing at all; the entry remembers which state-store index
keys its answer was computed from and is used only while they are unchanged.

Shuffling without re-encoding each time: an entry renders rotations of one
random order of its groups (lazily, one per position), hands them out in turn,
so every instance is first equally often and, when trimmed, every instance is
included equally often; after `RESHUFFLE_CYCLES` rounds it draws a new order.

Rules: bounded in entries and in bytes (counting every variant an entry may
render), oldest evicted first; pure (the caller passes the `random.Random`
and the rendering function).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the caller owns the generator; this module never draws on its own
    import random

MAX_ENTRIES = 10_000
MAX_BYTES = 64 * 1024 * 1024
MAX_KEY_BYTES = 512
MAX_VARIANTS = 64
RESHUFFLE_CYCLES = 64

# order of groups (None: as they are) -> (response without its id, trimmed?)
Render = Callable[[Sequence[int] | None], tuple[bytes, bool]]
Probe = Callable[[str], int | None]


class CacheEntry:
    __slots__ = (
        "_base",
        "_cycles",
        "_next",
        "_offsets",
        "_render",
        "_rng",
        "_variants",
        "deps",
        "group_count",
        "rcode",
        "trimmed",
    )

    def __init__(
        self,
        deps: tuple[tuple[str, int], ...],
        rcode: int,
        group_count: int,
        shuffle: bool,
        render: Render,
        rng: random.Random,
    ) -> None:
        self.deps = deps
        self.rcode = rcode
        self.group_count = group_count
        self._render = render
        self._rng = rng
        self._next = 0
        self._cycles = 0
        if shuffle and group_count > 1:
            step = -(-group_count // MAX_VARIANTS)  # ceil: at most MAX_VARIANTS rotations
            self._offsets: list[int] | None = list(range(0, group_count, step))
            self._base = list(range(group_count))
            rng.shuffle(self._base)
        else:
            self._offsets = None
            self._base = []
        slots = len(self._offsets) if self._offsets else 1
        self._variants: list[bytes | None] = [None] * slots
        self.trimmed = False

    def _build(self, slot: int) -> bytes:
        order: list[int] | None = None
        if self._offsets is not None:
            offset = self._offsets[slot]
            order = self._base[offset:] + self._base[:offset]
        packet, self.trimmed = self._render(order)
        self._variants[slot] = packet
        return packet

    def packet(self) -> bytes:
        """The next variant: the response without its 2-byte id."""
        slot = self._next
        self._next = slot + 1
        if self._next == len(self._variants):
            self._next = 0
            self._cycles += 1
            if self._offsets is not None and self._cycles % RESHUFFLE_CYCLES == 0:
                self._rng.shuffle(self._base)
                self._variants = [None] * len(self._variants)
        packet = self._variants[slot]
        return packet if packet is not None else self._build(slot)

    def weight(self) -> int:
        """Bytes this entry may come to hold: its first variant's size per slot."""
        first = next((v for v in self._variants if v is not None), b"")
        return max(len(first), 64) * len(self._variants)

    def valid(self, probe: Probe) -> bool:
        # A plain loop: this runs on every cache hit and beats all() + a generator.
        for key, index in self.deps:  # noqa: SIM110
            if probe(key) != index:
                return False
        return True


class AnswerCache:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: dict[bytes, CacheEntry] = {}
        self._weights: dict[bytes, int] = {}
        self.bytes = 0

    def get(self, key: bytes) -> CacheEntry | None:
        return self.entries.get(key)

    def _drop(self, key: bytes) -> None:
        del self.entries[key]
        self.bytes -= self._weights.pop(key)

    def put(self, key: bytes, entry: CacheEntry) -> None:
        """Store `entry` (after its first packet was rendered, so its size is known)."""
        weight = entry.weight() + len(key)
        if len(key) > MAX_KEY_BYTES or weight > self.max_bytes:
            return
        entries = self.entries
        if key in entries:
            self._drop(key)
        while entries and (
            len(entries) >= self.max_entries or self.bytes + weight > self.max_bytes
        ):
            self._drop(next(iter(entries)))
        entries[key] = entry
        self._weights[key] = weight
        self.bytes += weight

    def clear(self) -> None:
        self.entries.clear()
        self._weights.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.entries)
