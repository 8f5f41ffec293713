"""What a leader knows about one follower's log, and how that knowledge moves.

Job: hold one follower's replication state (`Progress`: match and next index,
the window of AppendEntries in flight, the snapshot being sent, the last read
round it acknowledged, when we last heard from it) and its state transitions,
as plain data and pure methods. leader.py decides what to send; this module
only keeps the books.

Rules:
- A leaf: no node, no log, no clock (`now` is passed in); it imports nothing
  from proconsul.raft.
- Three states. PROBE: one AppendEntries at a time until the follower's log
  position is found; rejections back `next` off (by a whole term at once,
  thanks to the conflict hint). REPLICATE: pipelined, `next` moves
  optimistically as requests are sent and `inflight` holds the last index of
  each one outstanding. SNAPSHOT: the entries it needs were compacted, so it
  is sent the snapshot in chunks, one chunk in flight.
- `match` only grows: entries a follower acknowledged agree with this
  leader's log and were persisted before the answer, so it never loses them
  while this leader leads. `next` always stays above `match`.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Progress:
    """What the leader knows about one follower's log."""

    next: int
    last_contact: float
    progress_at: float  # when `match` last moved (stall detection)
    match: int = 0
    state: ProgressState = ProgressState.PROBE
    probe_sent_at: float | None = None
    inflight: deque[int] = field(default_factory=deque)  # last index of each request
    acked_seq: int = 0
    snapshot_index: int = 0
    snapshot_offset: int = 0
    snapshot_sent_at: float = 0.0

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.inflight.clear()
        self.probe_sent_at = None

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()
        self.probe_sent_at = None

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.snapshot_index = snapshot_index
        self.snapshot_offset = 0
        self.inflight.clear()

    def probe_paused(self, now: float, resend_after: float) -> bool:
        """A probe is outstanding and not yet old enough to be presumed lost."""
        return self.probe_sent_at is not None and now - self.probe_sent_at < resend_after

    def sent_entries(self, last_index: int) -> None:
        """A pipelined AppendEntries ending at `last_index` went out."""
        self.inflight.append(last_index)
        self.next = last_index + 1

    def maybe_update(self, index: int, now: float) -> bool:
        """The follower holds everything up to `index`; True if that is news."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.progress_at = now
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return True

    def rejection_is_stale(self, reject_index: int) -> bool:
        """A rejection of the AppendEntries with prev index `reject_index` tells us nothing."""
        if self.state is ProgressState.REPLICATE:
            return reject_index <= self.match  # we already know it matches further
        if self.state is ProgressState.PROBE:
            return reject_index != self.next - 1  # answer to an older probe
        return True  # a snapshot is on its way; its answer decides

    def back_off(self, hint: int, reject_index: int) -> None:
        """Probe again from `hint`, never at or below what is known to match."""
        self.become_probe()
        self.next = max(self.match + 1, min(hint, reject_index))
