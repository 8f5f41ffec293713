"""User events: a Lamport clock and a bounded de-duplication buffer.

Job: order user events (`proconsul event`) by Lamport time, recognise an event
seen before however many times gossip delivers it, and remember recent events
so push-pull can hand them to members that missed the gossip.

Rules:
- The buffer has `size` slots indexed by `ltime % size`; an event older than
  the newest by `size` or more is dropped as too old (serf's rule), so memory
  stays bounded whatever peers send.
- Pure; the clock only moves forward, and stops at the largest time the wire
  carries (a peer's event at that time must not push ours past it).
"""

from __future__ import annotations

from collections.abc import Iterator

from .messages import UserEvent, saturated

# Distinct events kept per Lamport time; honest pools rarely have more than a
# handful, and the cap keeps a hostile peer from growing one slot without end.
MAX_EVENTS_PER_SLOT = 64


class LamportClock:
    __slots__ = ("time",)

    def __init__(self) -> None:
        self.time = 0

    def increment(self) -> int:
        self.time = saturated(self.time + 1)
        return self.time

    def witness(self, other: int) -> None:
        """Move past a time seen from another member."""
        if other >= self.time:
            self.time = saturated(other + 1)


class EventBuffer:
    """Recently seen user events, for de-duplication and push-pull catch-up."""

    __slots__ = ("_slots", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        # Each slot: (ltime, events seen at that ltime).
        self._slots: list[tuple[int, list[UserEvent]] | None] = [None] * size

    def add(self, event: UserEvent, clock_time: int) -> bool:
        """Remember `event`; False if it is a duplicate or too old to track."""
        if clock_time > self.size and event.ltime < clock_time - self.size:
            return False
        idx = event.ltime % self.size
        slot = self._slots[idx]
        if slot is not None and slot[0] == event.ltime:
            for seen in slot[1]:
                if seen.name == event.name and seen.payload == event.payload:
                    return False
            if len(slot[1]) >= MAX_EVENTS_PER_SLOT:
                return False
            slot[1].append(event)
            return True
        if slot is not None and slot[0] > event.ltime:
            # The slot already tracks a newer time; this event is older than the
            # window even though the clock check above let it through.
            return False
        self._slots[idx] = (event.ltime, [event])
        return True

    def recent(self, limit: int) -> list[UserEvent]:
        """Up to `limit` remembered events, newest Lamport times first."""
        filled = sorted((s for s in self._slots if s is not None), key=lambda s: s[0], reverse=True)
        out: list[UserEvent] = []
        for _, events in filled:
            for event in events:
                if len(out) >= limit:
                    return out
                out.append(event)
        return out

    def __iter__(self) -> Iterator[UserEvent]:
        for slot in self._slots:
            if slot is not None:
                yield from slot[1]

    def __len__(self) -> int:
        return sum(len(slot[1]) for slot in self._slots if slot is not None)
