"""The live view's events (http/live.py): what changed between two pictures."""

from __future__ import annotations

from typing import Any

from proconsul.http.live import live_events


def picture(
    states: dict[str, str], term: int = 2, leader: str = "s1", applied: tuple[int, ...] = ()
) -> dict[str, Any]:
    return {
        "Node": "s1",
        "Gossip": {
            "Members": [{"Name": n, "State": s} for n, s in states.items()],
            "Awareness": 0,
            "Counters": {"Probes": 3, "Refutations": 0},
        },
        "Raft": {
            "Term": term,
            "Leader": leader,
            "Role": "follower",
            "RecentApplied": [{"Index": i, "Term": term, "Type": "command"} for i in applied],
        },
    }


def test_first_picture_has_no_events() -> None:
    assert live_events(None, picture({"a": "alive"})) == []


def test_suspicion_refutation_and_failure_are_named() -> None:
    alive = picture({"a": "alive", "b": "alive"})
    suspect = picture({"a": "suspect", "b": "alive"})
    assert [e["Kind"] for e in live_events(alive, suspect)] == ["suspicion"]
    assert [e["Kind"] for e in live_events(suspect, alive)] == ["refutation"]
    dead = picture({"a": "dead", "b": "alive"})
    assert live_events(suspect, dead) == [{"Kind": "dead", "Text": "a: suspect -> dead"}]


def test_an_election_shows_the_new_term_and_leader_and_new_entries() -> None:
    before = picture({"a": "alive"}, term=2, leader="s1", applied=(4, 5))
    after = picture({"a": "alive"}, term=3, leader="s2", applied=(5, 6))
    texts = [e["Text"] for e in live_events(before, after)]
    assert texts == ["term 2 -> 3", "leader is now s2", "applied #6 (term 3, command)"]


def test_counters_that_grow_are_reported_once_each() -> None:
    before = picture({"a": "alive"})
    after = picture({"a": "alive"})
    after["Gossip"]["Counters"] = {"Probes": 5, "Refutations": 1}
    texts = [e["Text"] for e in live_events(before, after)]
    assert texts == ["probe x2", "refuted a suspicion of this node"]
