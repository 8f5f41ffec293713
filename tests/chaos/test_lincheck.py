"""The fault suite's checks on small made-up histories whose verdict is known.

The checker itself (tests/lincheck.py) has its own tests in
tests/unit/test_lincheck.py; these cover what the suite adds: register events
(reads, writes, CAS on ModifyIndex) expressed in the checker's model, unknown
outcomes as optional operations, lost writes, hang and unavailability
accounting, traceback classification and the seeded schedule. No agents.
"""

from __future__ import annotations

import math
import random

import pytest

from tests.chaos.history import (
    FAIL,
    OK,
    UNKNOWN_OUTCOME,
    Event,
    Fault,
    LeaderSample,
    acked_write_times,
    check_registers,
    definite_refusal,
    hangs,
    lost_writes,
    tracebacks,
    unavailability,
    unavailability_by_fault,
)
from tests.chaos.nemesis import ci_plan, long_plan


def read(p: str, value: str | None, t: float, u: float, outcome: str = OK) -> Event:
    return Event(p, "read", "k", "s0", t, u, outcome, value=value)


def put(p: str, value: str, t: float, u: float, outcome: str = OK) -> Event:
    return Event(p, "put", "k", "s0", t, u, outcome, value=value, result=outcome == OK or None)


def cas(
    p: str, expected: str | None, new: str, ok: bool | None, t: float, u: float, outcome: str = OK
) -> Event:
    return Event(
        p, "cas", "k", "c0", t, u, outcome, value=new, expected=expected, index=7, result=ok
    )


GOOD = {
    "write then read": [put("a", "a:1", 0, 1), read("b", "a:1", 2, 3)],
    "absent key reads None": [read("a", None, 0, 1), put("b", "b:1", 2, 3)],
    "cas on the index read with the value": [
        put("a", "a:1", 0, 1),
        read("b", "a:1", 2, 3),
        cas("b", "a:1", "b:2", True, 4, 5),
        read("a", "b:2", 6, 7),
    ],
    "cas on a moved index fails": [
        put("a", "a:1", 0, 1),
        read("b", "a:1", 2, 3),
        put("a", "a:2", 3.5, 3.8),
        cas("b", "a:1", "b:2", False, 4, 5),
        read("a", "a:2", 6, 7),
    ],
    "create-only cas on an absent key": [cas("a", None, "a:1", True, 0, 1), read("b", "a:1", 2, 3)],
    "unknown put that happened late": [
        put("a", "a:1", 0, 1),
        put("b", "b:1", 2, 3, UNKNOWN_OUTCOME),
        read("c", "a:1", 4, 5),
        read("c", "b:1", 30, 31),
    ],
    "unknown put that never happened": [
        put("a", "a:1", 0, 1),
        put("b", "b:1", 2, 3, UNKNOWN_OUTCOME),
        read("c", "a:1", 40, 41),
    ],
    "unknown cas that took effect": [
        put("a", "a:1", 0, 1),
        cas("b", "a:1", "b:1", None, 2, 3, UNKNOWN_OUTCOME),
        read("c", "b:1", 4, 5),
    ],
    "refused write is left out": [
        put("a", "a:1", 0, 1),
        put("b", "b:1", 2, 3, FAIL),
        read("c", "a:1", 4, 5),
    ],
    "failed reads are left out": [put("a", "a:1", 0, 1), read("c", "zzz", 2, 3, FAIL)],
}

BAD = {
    "stale consistent read": [put("a", "a:1", 0, 1), put("a", "a:2", 2, 3), read("b", "a:1", 4, 5)],
    "lost acknowledged put": [put("a", "a:1", 0, 1), read("b", None, 2, 3)],
    "cas said false but took effect": [
        put("a", "a:1", 0, 1),
        cas("b", "a:1", "b:1", False, 2, 3),
        read("c", "b:1", 4, 5),
    ],
    "cas said true on a moved index": [
        put("a", "a:1", 0, 1),
        put("a", "a:2", 2, 3),
        cas("b", "a:1", "b:1", True, 4, 5),
    ],
    "refused write seen": [
        put("a", "a:1", 0, 1),
        put("b", "b:1", 2, 3, FAIL),
        read("c", "b:1", 4, 5),
    ],
    "unknown write seen then unseen": [
        put("a", "a:1", 0, 1),
        put("b", "b:1", 2, 3, UNKNOWN_OUTCOME),
        read("c", "b:1", 4, 5),
        read("c", "a:1", 6, 7),
    ],
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_linearizable_register_histories_pass(name: str) -> None:
    assert all(r is not None and r.ok for r in check_registers(GOOD[name]).values())


@pytest.mark.parametrize("name", sorted(BAD))
def test_non_linearizable_register_histories_fail(name: str) -> None:
    assert not all(r is not None and r.ok for r in check_registers(BAD[name]).values())


def test_unknown_outcomes_open_at_the_end_of_time() -> None:
    # An unknown CAS may land after everything else; a read long after still sees it.
    events = [
        put("a", "a:1", 0, 1),
        cas("b", "a:1", "b:1", None, 2, 3, UNKNOWN_OUTCOME),
        read("c", "a:1", 4, 5),
        read("c", "b:1", 100, 101),
    ]
    assert all(r is not None and r.ok for r in check_registers(events).values())


def test_lost_writes_per_view() -> None:
    events = [
        Event("w0", "write", "chaos/w/w0-1", "s0", 0, 1, OK, value="x", result=True),
        Event("w0", "write", "chaos/w/w0-2", "s0", 1, 2, UNKNOWN_OUTCOME, value="x"),
        Event("w1", "write", "chaos/w/w1-1", "c0", 1, 2, OK, value="x", result=True),
    ]
    views = {"leader": {"chaos/w/w0-1", "chaos/w/w1-1"}, "s2 stale": {"chaos/w/w0-1"}}
    assert lost_writes(events, views) == {"s2 stale": ["chaos/w/w1-1"]}


def test_hangs_are_counted_only_while_a_leader_existed_and_classified() -> None:
    samples = [LeaderSample(t, "s0" if t < 10 or t >= 30 else None) for t in range(0, 120)]
    faults = [
        Fault("stop", "leader", "s0", 40, 55),
        Fault("kill", "follower", "s1", 12, 14),
        Fault("partition", "leader", "s2", 70, 75),
        Fault("partition", "follower", "s1", 100, 104),
    ]
    events = [
        Event("w0", "write", "a", "s1", 1, 2, OK),  # quick
        Event("w0", "write", "b", "s1", 1, 15, UNKNOWN_OUTCOME),  # slow, leader existed
        Event("w0", "write", "c", "s2", 11, 25, OK),  # slow, no leader in its hold
        Event("w0", "write", "d", "s2", 41, 55, OK),  # slow, leader frozen
        Event("w0", "write", "e", "s0", 41, 55, OK),  # sent to the frozen agent itself
        Event("w0", "read", "f", "s1", 70.5, 81, FAIL),  # forwarded to the cut-off leader
        Event("w0", "write", "g", "s2", 70.5, 82, OK),  # sent to the cut-off leader itself
        Event("w0", "write", "h", "s1", 100.5, 112, OK),  # forwarded by a cut-off follower
        Event("w0", "write", "i", "c0", 100.5, 112, OK),  # a client agent on the cut server
        Event("w0", "write", "j", "s0", 1, 12, OK),  # no fault that could explain it
    ]
    found = hangs(events, faults, samples, hold_s=7.0, margin_s=3.0, t0=0.0)
    assert [(h.event.key, h.cause) for h in found] == [
        ("b", "unexplained"),
        ("d", "frozen-leader"),
        ("f", "cut-off-leader"),
        ("g", "cut-off-leader-itself"),
        ("h", "cut-off-follower"),
        ("i", "cut-off-server"),
        ("j", "unexplained"),
    ]
    assert found[1].context == ["stop-leader s0 [40.0s, 55.0s]"]


def test_unavailability_stops_where_the_next_fault_starts() -> None:
    def write(invoke: float, complete: float) -> Event:
        return Event("w0", "write", f"k{invoke}", "s0", invoke, complete, OK, result=True)

    events = [write(t / 10, t / 10 + 0.05) for t in range(0, 100)] + [write(10.0, 14.0)]
    events += [write(t / 10, t / 10 + 0.05) for t in range(140, 200)]
    faults = [Fault("kill", "follower", "s1", 5.0, 8.0), Fault("kill", "leader", "s0", 9.5, 12.0)]
    found = unavailability_by_fault(events, faults, settle_s=3.0)
    # The follower's window ends where the leader's fault starts: its gap is not charged.
    assert found["kill-follower"] == [pytest.approx(0.1)]
    # Cut at 10.0, the gap that follows (to the ack at 14.0) is not this window's.
    assert unavailability(acked_write_times(events), 5.0, 10.0, cut=True) == pytest.approx(0.1)
    assert unavailability(acked_write_times(events), 5.0, 10.0) == pytest.approx(4.05)
    assert found["kill-leader"] == [pytest.approx(4.05)]


def test_unavailability_is_the_longest_gap_from_the_fault_on() -> None:
    acks = [(0.0, 0.5), (9.0, 10.2), (10.5, 11.0), (11.0, 14.0), (15.0, 15.1), (20.0, 20.1)]
    # From 10: acks completing at 11.0, 14.0, 15.1, then 20.1 is the first after 16.
    assert unavailability(acks, 10.0, 16.0) == pytest.approx(5.0)
    # The run ended inside the window, writes going through: its end is no outage.
    assert unavailability(acks, 19.0, 30.0) == pytest.approx(1.1)
    assert unavailability(acks, 21.0, 30.0) == math.inf


def test_tracebacks_are_found_and_the_known_one_recognised() -> None:
    log = "\n".join(
        [
            "2026-01-01T00:00:00.000Z [INFO]  agent: started",
            "2026-01-01T00:00:01.000Z [ERROR] rpc: Apply handler failed",
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in f',
            "ConnectionError: rpc: cannot connect to 127.0.0.1:1: refused",
            "2026-01-01T00:00:02.000Z [ERROR] http: unexpected error serving PUT /v1/kv/a",
            "Traceback (most recent call last):",
            '  File "y.py", line 2, in g',
            "KeyError: 'a'",
        ]
    )
    found = tracebacks("s0-1.log", log)
    assert [(t.known, t.exception) for t in found] == [
        (True, "ConnectionError: rpc: cannot connect to 127.0.0.1:1: refused"),
        (False, "KeyError: 'a'"),
    ]
    assert "Apply handler failed" in found[0].header


def test_the_ci_schedule_has_the_required_faults_and_a_seed_replays_it() -> None:
    for seed in range(20):
        plans = ci_plan(random.Random(seed), partitions=True)
        assert plans == ci_plan(random.Random(seed), partitions=True)
        kinds = sorted((p.kind, p.role) for p in plans if p.kind != "partition")
        assert kinds == [("kill", "follower"), ("kill", "leader"), ("stop", "leader")]
        assert sorted(p.role for p in plans if p.kind == "partition") == ["follower", "leader"]
        assert all(2.0 <= p.duration_s <= 4.0 for p in plans if p.kind == "stop")
    assert all(p.kind != "partition" for p in ci_plan(random.Random(0), partitions=False))
    stream = long_plan(random.Random(3), partitions=False)
    drawn = [next(stream) for _ in range(50)]
    assert {p.kind for p in drawn} == {"kill", "stop"}
    assert all(5.0 <= p.duration_s <= 15.0 for p in drawn if p.kind == "stop")


def test_only_a_servers_own_refusal_is_definite() -> None:
    assert definite_refusal(500, b"No cluster leader", via_server=True)
    assert definite_refusal(500, b"rpc: cannot connect to 10.0.0.1:8300: refused", True)
    # A client agent may have reached another server before the one that refused.
    assert not definite_refusal(500, b"No cluster leader", via_server=False)
    assert not definite_refusal(500, b"rpc: connection to 10.0.0.1:8300 lost", True)
    assert not definite_refusal(500, b"leadership lost while committing log", True)
