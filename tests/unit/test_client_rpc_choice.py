"""The client's choice of server: sticky, shuffled, rebalanced after an interval.

`choose_servers` and `rebalance_interval_s` (agent/client_rpc.py) are pure: the
rng, the server list and the clock are passed in.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from proconsul.agent.client_rpc import (
    MIN_REUSE_S,
    REBALANCE_CONNS_PER_S_PER_SERVER,
    REUSE_JITTER_S,
    choose_servers,
    rebalance_interval_s,
)

SERVERS = ["10.0.0.1:8300", "10.0.0.2:8300", "10.0.0.3:8300"]


def test_every_server_once_current_first_while_not_due() -> None:
    rng = random.Random(7)
    for current in SERVERS:
        order, at = choose_servers(rng, SERVERS, current, now=10.0, rebalance_at=100.0, members=5)
        assert order[0] == current
        assert sorted(order) == sorted(SERVERS)
        assert at == 100.0


def test_a_current_server_that_left_is_not_tried() -> None:
    order, _ = choose_servers(
        random.Random(1), SERVERS, "10.0.0.9:8300", now=0.0, rebalance_at=50.0, members=3
    )
    assert sorted(order) == sorted(SERVERS)


def test_no_servers_gives_nothing_to_try() -> None:
    order, _ = choose_servers(random.Random(1), [], None, now=0.0, rebalance_at=0.0, members=1)
    assert order == []


def test_first_call_sets_the_rebalance_time() -> None:
    order, at = choose_servers(
        random.Random(3), SERVERS, None, now=5.0, rebalance_at=0.0, members=4
    )
    assert sorted(order) == sorted(SERVERS)
    assert 5.0 + MIN_REUSE_S <= at < 5.0 + MIN_REUSE_S + REUSE_JITTER_S


def test_due_rebalance_lets_go_of_current_and_spreads_the_picks() -> None:
    rng = random.Random(11)
    firsts: Counter[str] = Counter()
    for _ in range(3000):
        order, at = choose_servers(
            rng, SERVERS, SERVERS[0], now=200.0, rebalance_at=200.0, members=10
        )
        firsts[order[0]] += 1
        assert at >= 200.0 + MIN_REUSE_S
    # A fresh uniform pick: each server first about a third of the time.
    assert set(firsts) == set(SERVERS)
    for count in firsts.values():
        assert 800 < count < 1200, firsts


def test_order_depends_only_on_the_rng_not_the_input_order() -> None:
    one, _ = choose_servers(random.Random(5), SERVERS, None, now=0.0, rebalance_at=9.0, members=3)
    two, _ = choose_servers(
        random.Random(5), list(reversed(SERVERS)), None, now=0.0, rebalance_at=9.0, members=3
    )
    assert one == two


@pytest.mark.parametrize(
    ("servers", "members", "base"),
    [
        (3, 10, MIN_REUSE_S),  # small cluster: Consul's two minutes
        (0, 10, MIN_REUSE_S),  # no server known yet
        (3, 3 * REBALANCE_CONNS_PER_S_PER_SERVER * 120, MIN_REUSE_S),  # at the edge
        (1, 64_000, 1000.0),  # 64k clients on one server: 1000 s so 64/s move
        (5, 64_000, 200.0),
    ],
)
def test_rebalance_interval_scales_with_cluster_size(
    servers: int, members: int, base: float
) -> None:
    class Fixed(random.Random):
        def __init__(self, value: float) -> None:
            super().__init__(0)
            self.value = value

        def random(self) -> float:
            return self.value

    assert rebalance_interval_s(Fixed(0.0), servers, members) == pytest.approx(base)
    assert rebalance_interval_s(Fixed(0.5), servers, members) == pytest.approx(
        base + REUSE_JITTER_S / 2
    )
