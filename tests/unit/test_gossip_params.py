"""Gossip parameters and timing formulas: tables plus naive re-derivations."""

from __future__ import annotations

import math

import pytest

from proconsul.gossip.lifeguard import Awareness, Suspicion
from proconsul.gossip.params import (
    GossipParams,
    lan,
    local,
    push_pull_interval,
    retransmit_limit,
    scale_by_awareness,
    suspicion_expected_confirmations,
    suspicion_max_timeout,
    suspicion_min_timeout,
    suspicion_timeout,
)


def test_lan_defaults_are_consuls() -> None:
    p = lan()
    assert (p.probe_interval, p.probe_timeout, p.indirect_checks) == (1.0, 0.5, 3)
    assert (p.gossip_interval, p.gossip_nodes) == (0.2, 3)
    assert (p.suspicion_mult, p.suspicion_max_timeout_mult, p.retransmit_mult) == (4, 6, 4)
    assert (p.push_pull_interval, p.awareness_max_multiplier, p.udp_buffer_size) == (30.0, 8, 1400)
    assert p.gossip_to_the_dead_time == 30.0
    assert p.dead_node_reclaim_time == 30.0
    assert p.reconnect_interval == 30.0
    assert p.reconnect_timeout == 72 * 3600
    assert p.tombstone_timeout == 24 * 3600
    assert p.leave_propagate_delay == 3.0
    assert p.event_buffer == 512
    p.validate()


def test_local_profile_is_faster_and_valid() -> None:
    fast, slow = local(), lan()
    fast.validate()
    assert fast.probe_interval < slow.probe_interval
    assert fast.gossip_interval < slow.gossip_interval
    assert fast.push_pull_interval < slow.push_pull_interval
    assert fast.reconnect_interval < slow.reconnect_interval


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"probe_interval": 0}, "probe_interval"),
        ({"probe_timeout": 2.0}, "probe_timeout"),
        ({"suspicion_mult": 0}, "suspicion_mult"),
        ({"gossip_nodes": 0}, "gossip_nodes"),
        ({"indirect_checks": -1}, "indirect_checks"),
        ({"udp_buffer_size": 600}, "udp_buffer_size"),
        ({"user_event_size_limit": 10_000}, "user_event_size_limit"),
    ],
)
def test_validate_names_the_bad_field(change: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        lan().replace(**change)


# Suspicion min timeout: mult * max(1, log10(N)) * interval.
@pytest.mark.parametrize(
    ("mult", "n", "interval", "expected"),
    [
        (4, 0, 1.0, 4.0),
        (4, 1, 1.0, 4.0),
        (4, 5, 1.0, 4.0),  # under ten members the scale is clamped to 1
        (4, 10, 1.0, 4.0),
        (4, 100, 1.0, 8.0),
        (4, 1000, 1.0, 12.0),
        (4, 1000, 0.5, 6.0),
        (5, 10_000, 1.0, 20.0),
        (3, 50, 1.0, 3 * math.log10(50)),
    ],
)
def test_suspicion_min_timeout_table(mult: int, n: int, interval: float, expected: float) -> None:
    assert suspicion_min_timeout(mult, n, interval) == pytest.approx(expected)


def test_suspicion_max_timeout() -> None:
    # memberlist's comment: for 10k nodes the LAN max is 120 seconds... with
    # mult 4 and max mult 6: 4 * 4 * 1s * 6 = 96s; with mult 5 it is 120s.
    assert suspicion_max_timeout(6, suspicion_min_timeout(5, 10_000, 1.0)) == pytest.approx(120.0)
    assert suspicion_max_timeout(6, 2.5) == pytest.approx(15.0)


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [(4, 1, 0), (4, 3, 0), (4, 4, 2), (4, 100, 2), (3, 3, 1), (3, 2, 0), (2, 100, 0), (6, 10, 4)],
)
def test_expected_confirmations(mult: int, n: int, expected: int) -> None:
    assert suspicion_expected_confirmations(mult, n) == expected


def naive_suspicion_timeout(c: int, k: int, lo: float, hi: float) -> float:
    if k < 1:
        return lo
    c = min(c, k)
    value = hi - (hi - lo) * (math.log(c + 1) / math.log(k + 1))
    return max(lo, math.floor(value * 1000) / 1000)


@pytest.mark.parametrize(
    ("c", "k", "lo", "hi", "expected"),
    [
        (0, 3, 1.0, 6.0, 6.0),
        (1, 3, 1.0, 6.0, 3.5),
        (2, 3, 1.0, 6.0, 6.0 - 5.0 * math.log(3) / math.log(4)),
        (3, 3, 1.0, 6.0, 1.0),
        (9, 3, 1.0, 6.0, 1.0),  # more confirmations than expected: still the minimum
        (0, 0, 2.0, 12.0, 2.0),  # nobody can confirm: minimum from the start
        (1, 2, 6.8, 40.8, 40.8 - 34.0 * math.log(2) / math.log(3)),
    ],
)
def test_suspicion_timeout_table(c: int, k: int, lo: float, hi: float, expected: float) -> None:
    got = suspicion_timeout(c, k, lo, hi)
    assert got == pytest.approx(math.floor(expected * 1000) / 1000, abs=1e-9)
    assert got == pytest.approx(naive_suspicion_timeout(c, k, lo, hi))


def test_suspicion_timeout_matches_naive_and_shrinks_monotonically() -> None:
    for k in range(0, 8):
        for lo, hi in [(1.0, 6.0), (4.0, 24.0), (0.3, 0.3)]:
            previous = math.inf
            for c in range(0, 10):
                t = suspicion_timeout(c, k, lo, hi)
                assert t == pytest.approx(naive_suspicion_timeout(c, k, lo, hi))
                assert lo <= t <= hi
                assert t <= previous
                previous = t


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [
        (4, 0, 0),
        (4, 1, 4),
        (4, 9, 4),
        (4, 10, 8),
        (4, 99, 8),
        (4, 100, 12),
        (4, 1000, 16),
        (3, 50, 6),
    ],
)
def test_retransmit_limit_table(mult: int, n: int, expected: int) -> None:
    assert retransmit_limit(mult, n) == expected


def test_retransmit_limit_matches_naive() -> None:
    for n in range(0, 20_000, 37):
        # ceil(log10(n + 1)) is the smallest d with 10**d >= n + 1.
        d = 0
        while 10**d < n + 1:
            d += 1
        assert retransmit_limit(4, n) == 4 * d


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, 30.0),
        (32, 30.0),
        (33, 60.0),
        (64, 60.0),
        (65, 90.0),
        (128, 90.0),
        (129, 120.0),
        (1000, 180.0),
    ],
)
def test_push_pull_interval_table(n: int, expected: float) -> None:
    assert push_pull_interval(30.0, n) == pytest.approx(expected)


def test_push_pull_interval_matches_naive() -> None:
    for n in range(1, 5000):
        if n <= 32:
            want = 1
        else:
            # Smallest d with 32 * 2**d >= n, plus one.
            d = 0
            while 32 * 2**d < n:
                d += 1
            want = d + 1
        assert push_pull_interval(1.0, n) == want


def test_awareness_scaling_and_bounds() -> None:
    assert [scale_by_awareness(0.5, s) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    a = Awareness(8)
    a.apply(-3)
    assert a.score == 0
    for _ in range(20):
        a.apply(1)
    assert a.score == 7  # multiplier 8 is score 7 + 1
    a.apply(-2)
    assert a.score == 5


def test_suspicion_shrinks_with_independent_confirmations_only() -> None:
    s = Suspicion("a", 3, expected=2, min_timeout=2.0, max_timeout=12.0, now=100.0)
    assert s.deadline == pytest.approx(112.0)
    assert not s.confirm("a")  # the original accuser repeating itself
    assert s.confirm("b")
    assert s.deadline == pytest.approx(100.0 + suspicion_timeout(1, 2, 2.0, 12.0))
    assert not s.confirm("b")
    assert s.confirm("c")
    assert s.deadline == pytest.approx(102.0)
    assert not s.confirm("d")  # enough already


def test_second_hand_suspicion_waits_for_a_real_accuser() -> None:
    s = Suspicion(None, 1, expected=2, min_timeout=2.0, max_timeout=12.0, now=0.0)
    assert s.deadline == pytest.approx(12.0)
    assert s.confirm("a")  # the first accuser: worth passing on, but no shortening
    assert s.confirmations == 0
    assert s.deadline == pytest.approx(12.0)
    assert s.confirm("b")
    assert s.confirmations == 1
    assert s.deadline < 12.0


def test_replace_returns_validated_copy() -> None:
    p = GossipParams().replace(gossip_nodes=4)
    assert p.gossip_nodes == 4
    assert lan().gossip_nodes == 3
