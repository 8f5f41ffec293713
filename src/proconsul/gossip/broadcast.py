"""The transmit-limited broadcast queue that feeds piggybacked gossip.

Job: hold encoded broadcasts (alive, suspect, dead, user events) and hand out
the ones that fit in the room left in a datagram, preferring those sent the
fewest times and, among equals, the newest. Each broadcast is dropped once it
has been sent `limit` times.

Rules:
- A broadcast with a key (a member's name) replaces any queued broadcast with
  the same key: newer news about a member makes older news worthless.
- Payloads are encoded once by the caller; the queue never re-encodes.
- The queue is bounded: `prune` drops the most-sent, then oldest, entries.
- Pure; no clocks.
"""

from __future__ import annotations

from collections.abc import Iterator

# Smallest message worth looking for once the datagram is nearly full (an ack).
_MIN_MESSAGE = 4
# Entries examined without finding one that fits before giving up on a datagram;
# keeps the cost per packet bounded when many large broadcasts are queued.
_MAX_SKIPS = 64


class Broadcast:
    """One queued broadcast. `done` turns true when it leaves the queue."""

    __slots__ = ("done", "id", "key", "payload", "transmits")

    def __init__(self, key: str | None, payload: bytes, ident: int) -> None:
        self.key = key
        self.payload = payload
        self.id = ident
        self.transmits = 0
        self.done = False


class BroadcastQueue:
    """Broadcasts bucketed by how many times each has been sent."""

    __slots__ = ("_buckets", "_by_key", "_count", "_next_id", "_oversized", "max_size")

    def __init__(self, max_size: int) -> None:
        # Broadcasts larger than max_size can never ride in a datagram; they are
        # kept apart so finding them does not mean scanning the queue.
        self.max_size = max_size
        # _buckets[t] holds broadcasts sent t times, keyed by id in insertion
        # order, so iterating reversed gives newest first.
        self._buckets: list[dict[int, Broadcast]] = [{}]
        self._by_key: dict[str, Broadcast] = {}
        self._oversized: dict[int, Broadcast] = {}
        self._next_id = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Broadcast]:
        for bucket in self._buckets:
            yield from bucket.values()

    def queue(self, key: str | None, payload: bytes) -> Broadcast:
        """Add a broadcast, invalidating any queued one with the same key."""
        if key is not None:
            old = self._by_key.pop(key, None)
            if old is not None:
                self._discard(old)
        self._next_id += 1
        item = Broadcast(key, payload, self._next_id)
        self._buckets[0][item.id] = item
        self._count += 1
        if len(payload) > self.max_size:
            self._oversized[item.id] = item
        if key is not None:
            self._by_key[key] = item
        return item

    def invalidate(self, key: str) -> None:
        old = self._by_key.pop(key, None)
        if old is not None:
            self._discard(old)

    def _discard(self, item: Broadcast) -> None:
        del self._buckets[item.transmits][item.id]
        self._oversized.pop(item.id, None)
        self._count -= 1
        item.done = True

    def _remove(self, item: Broadcast) -> None:
        self._discard(item)
        if item.key is not None and self._by_key.get(item.key) is item:
            del self._by_key[item.key]

    def get(self, room: int, limit: int, max_items: int = 255) -> list[bytes]:
        """Up to `max_items` broadcasts that fit in `room` bytes, each counted as sent once more."""
        if self._count == 0 or room < _MIN_MESSAGE or max_items <= 0:
            return []
        chosen: list[Broadcast] = []
        skips = 0
        for bucket in self._buckets:
            if not bucket:
                continue
            for item in reversed(bucket.values()):
                size = len(item.payload)
                if size <= room:
                    chosen.append(item)
                    room -= size
                    if room < _MIN_MESSAGE or len(chosen) >= max_items:
                        room = 0
                        break
                else:
                    skips += 1
                    if skips > _MAX_SKIPS:
                        break
            if room < _MIN_MESSAGE or skips > _MAX_SKIPS:
                break
        out = [item.payload for item in chosen]
        for item in chosen:
            self._sent(item, limit)
        return out

    def take_oversized(self, limit: int) -> list[bytes]:
        """Broadcasts larger than `max_size`; each counted as sent once more.

        The caller sends these over a stream instead of piggybacking them.
        """
        if not self._oversized:
            return []
        big = list(self._oversized.values())
        for item in big:
            self._sent(item, limit)
        return [item.payload for item in big]

    def _sent(self, item: Broadcast, limit: int) -> None:
        bucket = self._buckets[item.transmits]
        del bucket[item.id]
        item.transmits += 1
        if item.transmits >= limit:
            self._count -= 1
            item.done = True
            self._oversized.pop(item.id, None)
            if item.key is not None and self._by_key.get(item.key) is item:
                del self._by_key[item.key]
            return
        while len(self._buckets) <= item.transmits:
            self._buckets.append({})
        self._buckets[item.transmits][item.id] = item

    def prune(self, max_depth: int) -> int:
        """Drop the most-sent, oldest broadcasts until at most `max_depth` remain."""
        dropped = 0
        for t in range(len(self._buckets) - 1, -1, -1):
            bucket = self._buckets[t]
            while self._count > max_depth and bucket:
                self._remove(next(iter(bucket.values())))
                dropped += 1
            if self._count <= max_depth:
                break
        return dropped

    def reset(self) -> None:
        for item in list(self):
            item.done = True
        self._buckets = [{}]
        self._by_key.clear()
        self._oversized.clear()
        self._count = 0
