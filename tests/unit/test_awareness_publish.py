"""When an agent publishes its Lifeguard awareness score in its gossip tags
(gossip/lifeguard.py, `awareness_publish_due`): only a changed score, and at
most once per interval, so tag updates cannot flood gossip."""

from __future__ import annotations

import itertools

from proconsul.gossip.lifeguard import awareness_publish_due

INTERVAL_S = 2.0


def test_an_unchanged_score_is_never_published_again() -> None:
    assert not awareness_publish_due(0, 0, float("-inf"), 100.0, INTERVAL_S)
    assert not awareness_publish_due(3, 3, 0.0, 100.0, INTERVAL_S)


def test_the_first_change_goes_at_once() -> None:
    assert awareness_publish_due(1, 0, float("-inf"), 0.0, INTERVAL_S)


def test_a_flapping_score_is_published_at_most_once_per_interval() -> None:
    published, at, updates = 0, float("-inf"), []
    # The score flips every 0.1 s for 10 s.
    for step in range(100):
        now = step * 0.1
        score = step % 2
        if awareness_publish_due(score, published, at, now, INTERVAL_S):
            published, at = score, now
            updates.append(now)
    assert len(updates) <= 10 / INTERVAL_S + 1
    assert all(b - a >= INTERVAL_S for a, b in itertools.pairwise(updates))


def test_a_score_that_settles_is_published_once_the_interval_passed() -> None:
    assert not awareness_publish_due(4, 1, 10.0, 11.0, INTERVAL_S)
    assert awareness_publish_due(4, 1, 10.0, 12.0, INTERVAL_S)
