"""RaftLog: the in-memory log's matching, truncation, hints, compaction and batching."""

from __future__ import annotations

import pytest

from proconsul.raft.log import LogSafetyError, RaftLog
from proconsul.raft.messages import Entry, EntryType


def entries(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(start + i, t, EntryType.COMMAND, b"x") for i, t in enumerate(terms)]


def test_empty_log() -> None:
    log = RaftLog()
    assert (log.first_index(), log.last_index(), log.last_term()) == (1, 0, 0)
    assert log.term(0) == 0 and log.term(1) is None
    assert log.unstable() == ()


def test_loaded_entries_are_stable_and_contiguous() -> None:
    log = RaftLog(0, 0, entries(1, 1, 2))
    assert log.last_index() == 3 and log.stable_index == 3 and log.unstable() == ()
    with pytest.raises(LogSafetyError):
        RaftLog(0, 0, [*entries(1), *entries(1, start=3)])


def test_maybe_append_rejects_mismatch() -> None:
    log = RaftLog(0, 0, entries(1, 1, 2))
    assert log.maybe_append(3, 1, entries(2, start=4)) is None  # wrong prev term
    assert log.maybe_append(5, 2, entries(2, start=6)) is None  # beyond our end


def test_maybe_append_ignores_stale_duplicate() -> None:
    log = RaftLog(0, 0, entries(1, 1, 2, 2))
    # An old request re-delivered: it proves index 2 and must not cut 3..4.
    assert log.maybe_append(1, 1, entries(1, start=2)) == (2, 0)
    assert log.last_index() == 4


def test_maybe_append_truncates_a_conflict() -> None:
    log = RaftLog(0, 0, entries(1, 1, 2, 2))
    assert log.maybe_append(2, 1, entries(3, start=3)) == (3, 3)
    assert [e.term for e in log.entries] == [1, 1, 3]
    assert log.stable_index == 2 and [e.index for e in log.unstable()] == [3]


def test_conflict_below_commit_is_refused() -> None:
    log = RaftLog(0, 0, entries(1, 1, 2))
    log.commit_to(3)
    with pytest.raises(LogSafetyError):
        log.maybe_append(1, 1, entries(5, start=2))


def test_conflict_hint() -> None:
    log = RaftLog(0, 0, entries(1, 1, 2, 2, 2, 4))
    assert log.conflict_hint(9) == (7, 0)  # our log is shorter
    assert log.conflict_hint(5) == (3, 2)  # first index of term 2
    assert log.conflict_hint(1) == (1, 1)


def test_last_index_of_term() -> None:
    log = RaftLog(0, 0, entries(1, 1, 2, 2, 4, 4))
    assert log.last_index_of_term(2, 6) == 4
    assert log.last_index_of_term(3, 6) is None
    assert log.last_index_of_term(4, 5) == 5
    assert log.last_index_of_term(1, 1) == 1


def test_up_to_date() -> None:
    log = RaftLog(0, 0, entries(1, 2, 2))
    assert log.is_up_to_date(3, 2) and log.is_up_to_date(9, 2) and log.is_up_to_date(1, 3)
    assert not log.is_up_to_date(2, 2) and not log.is_up_to_date(9, 1)


def test_slice_caps_count_and_bytes_but_returns_one() -> None:
    log = RaftLog(0, 0, [Entry(i, 1, EntryType.COMMAND, b"x" * 100) for i in range(1, 11)])
    assert len(log.slice(1, 11, 10_000, 3)) == 3
    assert len(log.slice(1, 11, 300, 10)) == 2  # 124 bytes each with overhead
    assert len(log.slice(1, 11, 1, 10)) == 1  # never starve on one big entry


def test_compact_and_restore() -> None:
    log = RaftLog(0, 0, entries(1, 1, 2, 2, 3))
    log.commit_to(4)
    log.applied = 4
    log.compact(3)
    assert (log.prev_index, log.prev_term, log.first_index(), log.last_index()) == (3, 2, 4, 5)
    assert log.term(3) == 2 and log.term(2) is None
    with pytest.raises(IndexError):
        log.slice(2, 5, 1000, 10)
    with pytest.raises(LogSafetyError):
        log.compact(5)  # not applied yet
    log.restore(20, 7)
    assert (log.last_index(), log.last_term(), log.commit, log.applied) == (20, 7, 20, 20)


def test_stable_to_needs_matching_term() -> None:
    log = RaftLog()
    log.append(entries(1, 1))
    assert log.unstable() != ()
    log.stable_to(2, 9)  # a Ready for entries that were replaced meanwhile
    assert log.stable_index == 0
    log.stable_to(2, 1)
    assert log.unstable() == ()


def test_committed_after_respects_byte_cap() -> None:
    log = RaftLog(0, 0, [Entry(i, 1, EntryType.COMMAND, b"x" * 100) for i in range(1, 6)])
    log.commit_to(4)
    assert [e.index for e in log.committed_after(0, 10_000)] == [1, 2, 3, 4]
    assert [e.index for e in log.committed_after(1, 200)] == [2]
    assert log.committed_after(4, 10_000) == ()
