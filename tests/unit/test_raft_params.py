"""Raft formulas and timing: tables, naive cross-checks, Consul's raft_multiplier scaling."""

from __future__ import annotations

import random

import pytest

from proconsul.raft.params import (
    DEFAULT_RAFT_MULTIPLIER,
    RaftParams,
    election_timeout_range,
    params_from_multiplier,
    quorum_commit_index,
    quorum_size,
    random_election_timeout,
)


@pytest.mark.parametrize(
    ("voters", "quorum"),
    [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4), (9, 5)],
)
def test_quorum_size_table(voters: int, quorum: int) -> None:
    assert quorum_size(voters) == quorum


def test_quorum_size_rejects_negative() -> None:
    with pytest.raises(ValueError):
        quorum_size(-1)


@pytest.mark.parametrize(
    ("matches", "commit"),
    [
        ([], 0),
        ([7], 7),
        ([5, 9], 5),  # two voters: both must have it
        ([1, 2, 3], 2),  # the median
        ([3, 3, 1], 3),
        ([10, 0, 0], 0),
        ([4, 8, 6, 2], 4),  # four voters need three
        ([5, 5, 5, 5, 5], 5),
        ([9, 1, 8, 2, 7], 7),
    ],
)
def test_quorum_commit_index_table(matches: list[int], commit: int) -> None:
    assert quorum_commit_index(matches) == commit


def naive_commit_index(matches: list[int]) -> int:
    """The largest N that at least a quorum of voters have reached."""
    if not matches:
        return 0
    need = len(matches) // 2 + 1
    return max(
        (n for n in range(max(matches) + 1) if sum(m >= n for m in matches) >= need), default=0
    )


def test_quorum_commit_index_matches_naive_version() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        matches = [rng.randint(0, 20) for _ in range(rng.randint(1, 9))]
        assert quorum_commit_index(matches) == naive_commit_index(matches), matches


@pytest.mark.parametrize(
    ("base", "low", "high"), [(1.0, 1.0, 2.0), (5.0, 5.0, 10.0), (0.15, 0.15, 0.3)]
)
def test_election_timeout_range(base: float, low: float, high: float) -> None:
    assert election_timeout_range(base) == pytest.approx((low, high))


def test_random_election_timeout_stays_in_range_and_spreads() -> None:
    rng = random.Random(1)
    draws = [random_election_timeout(rng, 1.0) for _ in range(2000)]
    assert all(1.0 <= d < 2.0 for d in draws)
    # Jitter is the point: draws must spread across the range.
    assert min(draws) < 1.1 and max(draws) > 1.9
    assert random_election_timeout(random.Random(3), 1.0) == random_election_timeout(
        random.Random(3), 1.0
    )


def test_election_timeout_range_rejects_nonpositive() -> None:
    with pytest.raises(ValueError):
        election_timeout_range(0)


@pytest.mark.parametrize(
    ("multiplier", "election", "heartbeat", "lease"),
    [
        (1, 1.0, 0.1, 0.5),
        (5, 5.0, 0.5, 2.5),
        (10, 10.0, 1.0, 5.0),
        (0, 5.0, 0.5, 2.5),  # 0 means Consul's default, 5
    ],
)
def test_params_scale_with_raft_multiplier(
    multiplier: int, election: float, heartbeat: float, lease: float
) -> None:
    params = params_from_multiplier(multiplier)
    assert params.election_timeout == pytest.approx(election)
    assert params.heartbeat_interval == pytest.approx(heartbeat)
    assert params.leader_lease_timeout == pytest.approx(lease)


def test_default_multiplier_is_consuls() -> None:
    assert DEFAULT_RAFT_MULTIPLIER == 5
    assert params_from_multiplier() == params_from_multiplier(5)


@pytest.mark.parametrize("multiplier", [-1, 11, 100])
def test_params_reject_out_of_range_multiplier(multiplier: int) -> None:
    with pytest.raises(ValueError, match="Must be between 1 and 10"):
        params_from_multiplier(multiplier)


def test_params_validate_relationships() -> None:
    with pytest.raises(ValueError):
        RaftParams(election_timeout=1.0, heartbeat_interval=1.0, leader_lease_timeout=0.5)
    with pytest.raises(ValueError):
        RaftParams(election_timeout=1.0, heartbeat_interval=0.1, leader_lease_timeout=1.5)
    with pytest.raises(ValueError):
        RaftParams(
            election_timeout=1.0,
            heartbeat_interval=0.1,
            leader_lease_timeout=0.5,
            max_inflight_appends=0,
        )
