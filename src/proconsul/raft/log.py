"""The in-memory view of one server's Raft log, as the core sees it.

Job: hold the uncompacted entries, the compaction point, the commit and apply
positions, and which entries are not yet durable; answer the questions the
protocol asks (term at an index, does a prefix match, where is the conflict).

Rules:
- Indexes start at 1. `prev_index`/`prev_term` name the entry just before the
  first one kept (0/0 for an empty, never-compacted log, or a snapshot's last
  entry after a snapshot was installed).
- Entries at or below `commit` are never truncated: a conflict there means the
  Raft safety argument was broken, and we raise instead of diverging.
- `stable_index` is the last index the adapter confirmed durable; entries above
  it are handed out by `unstable()` until `stable_to` confirms them.
- Between compactions the log holds about snapshot_threshold + trailing_logs
  entries, or up to 2 x snapshot_threshold + trailing_logs when snapshots wait
  for `raft_snapshot_interval` (the adapter snapshots at once past that), so
  keeping it in memory is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

from proconsul.raft.messages import Entry


class LogSafetyError(RuntimeError):
    """A change that would drop a committed entry: a bug or a corrupted peer."""


def entry_size(entry: Entry) -> int:
    # A fixed overhead keeps empty entries from looking free to the batching limits.
    return len(entry.data) + 24


class RaftLog:
    def __init__(
        self, prev_index: int = 0, prev_term: int = 0, entries: Sequence[Entry] = ()
    ) -> None:
        self.prev_index = prev_index
        self.prev_term = prev_term
        self.entries: list[Entry] = []
        self.commit = prev_index
        self.applied = prev_index
        self.stable_index = prev_index
        expected = prev_index + 1
        for entry in entries:
            if entry.index != expected:
                raise LogSafetyError(f"log entries not contiguous at index {entry.index}")
            self.entries.append(entry)
            expected += 1
        self.stable_index = self.last_index()

    # ----- queries ---------------------------------------------------------------------

    def first_index(self) -> int:
        return self.prev_index + 1

    def last_index(self) -> int:
        return self.prev_index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.prev_term

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`, or None when it is compacted away or beyond the end."""
        if index == self.prev_index:
            return self.prev_term
        if index < self.prev_index or index > self.last_index():
            return None
        return self.entries[index - self.prev_index - 1].term

    def entry(self, index: int) -> Entry:
        return self.entries[index - self.prev_index - 1]

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a candidate's log at least as up-to-date as ours (§5.4.1)?"""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int, max_count: int) -> tuple[Entry, ...]:
        """Entries [lo, hi) capped by count and bytes, but always at least one if any."""
        if lo < self.first_index():
            raise IndexError(f"entry {lo} is compacted")
        hi = min(hi, self.last_index() + 1, lo + max_count)
        out: list[Entry] = []
        size = 0
        for index in range(lo, hi):
            entry = self.entry(index)
            size += entry_size(entry)
            if out and size > max_bytes:
                break
            out.append(entry)
        return tuple(out)

    def conflict_hint(self, index: int) -> tuple[int, int]:
        """(conflict_index, conflict_term) for a rejected prev_log_index.

        See AppendEntriesResponse for what the two numbers mean.
        """
        if index > self.last_index():
            return self.last_index() + 1, 0
        term = self.term(index)
        if term is None:
            # Below our compaction point: everything there is committed, so the
            # leader should start just after it.
            return self.first_index(), 0
        first = index
        while first - 1 > self.prev_index and self.term(first - 1) == term:
            first -= 1
        return first, term

    def last_index_of_term(self, term: int, at_most: int) -> int | None:
        """Highest index <= at_most holding `term`, if we have one."""
        index = min(at_most, self.last_index())
        while index > self.prev_index:
            entry_term = self.entry(index).term
            if entry_term == term:
                return index
            if entry_term < term:
                return None
            index -= 1
        return None

    # ----- changes ---------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Leader append: entries continue our log exactly."""
        for entry in entries:
            if entry.index != self.last_index() + 1:
                raise LogSafetyError(
                    f"append at {entry.index} does not continue {self.last_index()}"
                )
            self.entries.append(entry)

    def maybe_append(
        self, prev_index: int, prev_term: int, entries: Sequence[Entry]
    ) -> tuple[int, int] | None:
        """Follower append. None when (prev_index, prev_term) does not match; otherwise
        (last index the request proves equal to the leader's log, first index
        actually written or 0 when nothing was).

        Entries we already hold with the same term are left alone, so a stale or
        duplicated request never truncates newer entries (that would un-ack them).
        A write at an index we already held is a truncation from that index.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for position, entry in enumerate(entries):
            if entry.index <= self.prev_index:
                continue  # compacted: committed, hence equal
            existing = self.term(entry.index)
            if existing == entry.term:
                continue
            if existing is not None:
                if entry.index <= self.commit:
                    raise LogSafetyError(
                        f"conflict at committed index {entry.index} "
                        f"(have term {existing}, leader sent {entry.term})"
                    )
                self.truncate_from(entry.index)
            self.append(entries[position:])
            return last_new, entry.index
        return last_new, 0

    def truncate_from(self, index: int) -> None:
        """Drop entries at `index` and after (uncommitted ones only)."""
        if index <= self.commit:
            raise LogSafetyError(f"truncating committed index {index}")
        del self.entries[index - self.prev_index - 1 :]
        self.stable_index = min(self.stable_index, index - 1)

    def compact(self, index: int) -> None:
        """Forget entries up to `index` (they are covered by a durable snapshot)."""
        if index <= self.prev_index:
            return
        if index > self.applied:
            raise LogSafetyError(f"compacting past applied index ({index} > {self.applied})")
        term = self.term(index)
        assert term is not None
        del self.entries[: index - self.prev_index]
        self.prev_index = index
        self.prev_term = term

    def restore(self, index: int, term: int) -> None:
        """Replace everything with an installed snapshot ending at (index, term)."""
        self.entries.clear()
        self.prev_index = index
        self.prev_term = term
        self.commit = index
        self.applied = index
        self.stable_index = index

    def commit_to(self, index: int) -> bool:
        index = min(index, self.last_index())
        if index > self.commit:
            self.commit = index
            return True
        return False

    def unstable(self) -> tuple[Entry, ...]:
        return tuple(self.entries[self.stable_index - self.prev_index :])

    def stable_to(self, index: int, term: int) -> None:
        """The adapter made everything up to (index, term) durable."""
        if self.match_term(index, term) and index > self.stable_index:
            self.stable_index = index

    def committed_after(self, after: int, max_bytes: int) -> tuple[Entry, ...]:
        """Committed entries after `after`, capped in bytes (at least one if any)."""
        lo = max(after + 1, self.first_index())
        if lo > self.commit:
            return ()
        return self.slice(lo, self.commit + 1, max_bytes, self.commit - lo + 1)
