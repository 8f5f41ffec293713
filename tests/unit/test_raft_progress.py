"""A follower's replication progress: state transitions, acknowledgements, back-off."""

from __future__ import annotations

import pytest

from proconsul.raft.progress import Progress, ProgressState


def progress(
    state: ProgressState = ProgressState.PROBE, *, match: int = 0, next_index: int = 1
) -> Progress:
    return Progress(next=next_index, last_contact=0.0, progress_at=0.0, match=match, state=state)


def test_transitions_restart_from_the_match_and_drop_the_window() -> None:
    pr = progress(ProgressState.REPLICATE, match=4, next_index=9)
    pr.inflight.extend([6, 8])
    pr.become_probe()
    assert (pr.state, pr.next, list(pr.inflight)) == (ProgressState.PROBE, 5, [])
    pr.probe_sent_at = 1.0
    pr.become_replicate()
    assert (pr.state, pr.next, pr.probe_sent_at) == (ProgressState.REPLICATE, 5, None)
    pr.inflight.append(7)
    pr.snapshot_offset = 30
    pr.become_snapshot(20)
    assert (pr.state, pr.snapshot_index, pr.snapshot_offset, list(pr.inflight)) == (
        ProgressState.SNAPSHOT,
        20,
        0,
        [],
    )


@pytest.mark.parametrize(
    ("sent_at", "now", "paused"),
    [(None, 5.0, False), (1.0, 1.0, True), (1.0, 1.49, True), (1.0, 1.5, False)],
)
def test_probe_paused_until_resend_interval(
    sent_at: float | None, now: float, paused: bool
) -> None:
    pr = progress()
    pr.probe_sent_at = sent_at
    assert pr.probe_paused(now, 0.5) is paused


def test_maybe_update_moves_match_forward_only_and_trims_the_window() -> None:
    pr = progress(ProgressState.REPLICATE, match=2, next_index=3)
    for last in (5, 8, 11):
        pr.sent_entries(last)
    assert (pr.next, list(pr.inflight)) == (12, [5, 8, 11])
    assert pr.maybe_update(8, now=3.0)
    assert (pr.match, pr.next, pr.progress_at, list(pr.inflight)) == (8, 12, 3.0, [11])
    assert not pr.maybe_update(6, now=4.0)  # stale acknowledgement
    assert (pr.match, pr.progress_at) == (8, 3.0)
    assert pr.maybe_update(20, now=5.0)  # beyond what we sent (e.g. a snapshot)
    assert (pr.match, pr.next, list(pr.inflight)) == (20, 21, [])


@pytest.mark.parametrize(
    ("state", "match", "next_index", "reject_index", "stale"),
    [
        (ProgressState.REPLICATE, 5, 10, 5, True),  # already known to match there
        (ProgressState.REPLICATE, 5, 10, 7, False),
        (ProgressState.PROBE, 5, 8, 7, False),  # answers the outstanding probe
        (ProgressState.PROBE, 5, 8, 6, True),  # answers an older probe
        (ProgressState.SNAPSHOT, 5, 8, 7, True),
    ],
)
def test_rejection_is_stale(
    state: ProgressState, match: int, next_index: int, reject_index: int, stale: bool
) -> None:
    pr = progress(state, match=match, next_index=next_index)
    assert pr.rejection_is_stale(reject_index) is stale


@pytest.mark.parametrize(
    ("match", "hint", "reject_index", "next_index"),
    [
        (0, 4, 9, 4),  # the hint skips back a whole term
        (0, 12, 9, 9),  # never past the rejected position
        (6, 3, 9, 7),  # never at or below the match
    ],
)
def test_back_off(match: int, hint: int, reject_index: int, next_index: int) -> None:
    pr = progress(ProgressState.REPLICATE, match=match, next_index=10)
    pr.inflight.append(9)
    pr.back_off(hint, reject_index)
    assert (pr.state, pr.next, list(pr.inflight)) == (ProgressState.PROBE, next_index, [])
