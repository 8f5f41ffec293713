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


def test_each_members_awareness_is_shown_and_its_changes_named() -> None:
    from proconsul.gossip.messages import State
    from proconsul.http.live import gossip_part

    class Member:
        def __init__(self, name: str, tags: dict[str, str]) -> None:
            self.name, self.tags, self.addr = name, tags, ("127.0.0.1", 8301)
            self.state, self.incarnation = State.ALIVE, 1

    members = [Member("s1", {"awareness": "1"}), Member("c1", {"awareness": "3"}), Member("x", {})]
    part = gossip_part(members, {"awareness": 2.0}, own_name="s1")
    # Our own score is read live (2), the others' as published; none published is None.
    assert {m["Name"]: m["Awareness"] for m in part["Members"]} == {"c1": 3, "s1": 2, "x": None}
    before = picture({"c1": "alive"})
    after = picture({"c1": "alive"})
    before["Gossip"]["Members"][0]["Awareness"] = 0
    after["Gossip"]["Members"][0]["Awareness"] = 3
    assert live_events(before, after) == [{"Kind": "awareness", "Text": "c1: awareness 0 -> 3"}]
