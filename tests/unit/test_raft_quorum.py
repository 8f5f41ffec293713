"""Raft quorum rules: tables, and brute-force cross-checks over seeded random inputs.

The naive versions below use only the definition of a quorum (a set of voters
holding more than half of them), never `quorum_size`, so a wrong majority
formula cannot hide behind itself.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection, Mapping, Sequence

import pytest

from proconsul.raft import params
from proconsul.raft.quorum import (
    VoteResult,
    quorum_acked,
    quorum_commit_index,
    quorum_size,
    vote_result,
)

SEED = 20240611
ROUNDS = 2000


def is_majority(group: Collection[str], voters: Sequence[str]) -> bool:
    return 2 * len(group) > len(voters)


def majorities(voters: Sequence[str]) -> list[tuple[str, ...]]:
    """Every subset of `voters` holding more than half of them."""
    return [
        group
        for k in range(len(voters) + 1)
        for group in itertools.combinations(voters, k)
        if is_majority(group, voters)
    ]


def naive_commit_index(matches: Sequence[int]) -> int:
    """The largest N such that a majority of voters have a match index >= N."""
    voters = [str(i) for i in range(len(matches))]
    best = 0
    for n in range(max(matches, default=0) + 1):
        reached = [v for v, m in zip(voters, matches, strict=True) if m >= n]
        if voters and is_majority(reached, voters):
            best = n
    return best


def naive_vote_result(voters: Sequence[str], votes: Mapping[str, bool]) -> VoteResult:
    groups = majorities(voters)
    if any(all(votes.get(v) is True for v in g) for g in groups):
        return VoteResult.WON
    if any(all(votes.get(v) is False for v in g) for g in groups):
        return VoteResult.LOST
    return VoteResult.PENDING


def naive_quorum_acked(voters: Sequence[str], acked: Collection[str]) -> bool:
    return any(all(v in acked for v in g) for g in majorities(voters))


# ----- quorum_size -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voters", "quorum"),
    [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4), (8, 5), (9, 5)],
)
def test_quorum_size_table(voters: int, quorum: int) -> None:
    assert quorum_size(voters) == quorum


def test_quorum_size_rejects_negative() -> None:
    with pytest.raises(ValueError):
        quorum_size(-1)


def test_quorum_size_is_the_smallest_majority() -> None:
    for n in range(1, 30):
        names = [str(i) for i in range(n)]
        assert is_majority(names[: quorum_size(n)], names)
        assert not is_majority(names[: quorum_size(n) - 1], names)


def test_params_reexports_the_quorum_rules() -> None:
    # Callers (the simulator among them) import these from params.
    assert params.quorum_size is quorum_size
    assert params.quorum_commit_index is quorum_commit_index


# ----- quorum_commit_index -----------------------------------------------------------


@pytest.mark.parametrize(
    ("matches", "commit"),
    [
        ([], 0),
        ([0], 0),
        ([7], 7),
        ([5, 9], 5),  # two voters: both must have it
        ([1, 2, 3], 2),  # the median
        ([3, 3, 1], 3),
        ([10, 0, 0], 0),  # the leader alone commits nothing
        ([4, 8, 6, 2], 4),  # four voters need three
        ([8, 8, 0, 0], 0),  # half is not a majority
        ([5, 5, 5, 5, 5], 5),
        ([9, 1, 8, 2, 7], 7),
        ([12, 12, 11, 3, 1, 1, 1], 3),  # seven voters need four
    ],
)
def test_quorum_commit_index_table(matches: list[int], commit: int) -> None:
    assert quorum_commit_index(matches) == commit


def test_quorum_commit_index_ignores_order() -> None:
    rng = random.Random(SEED)
    for _ in range(200):
        matches = [rng.randint(0, 30) for _ in range(rng.randint(1, 9))]
        shuffled = matches[:]
        rng.shuffle(shuffled)
        assert quorum_commit_index(shuffled) == quorum_commit_index(matches)


def test_quorum_commit_index_matches_naive_version() -> None:
    rng = random.Random(SEED)
    for _ in range(ROUNDS):
        matches = [rng.randint(0, 20) for _ in range(rng.randint(0, 9))]
        assert quorum_commit_index(matches) == naive_commit_index(matches), matches


# ----- vote_result -------------------------------------------------------------------

ABC = ("a", "b", "c")
ABCD = ("a", "b", "c", "d")


@pytest.mark.parametrize(
    ("voters", "votes", "result"),
    [
        ((), {}, VoteResult.PENDING),
        (("a",), {"a": True}, VoteResult.WON),
        (("a",), {"a": False}, VoteResult.LOST),
        (ABC, {"a": True}, VoteResult.PENDING),
        (ABC, {"a": True, "b": True}, VoteResult.WON),
        (ABC, {"a": True, "b": False}, VoteResult.PENDING),
        (ABC, {"a": True, "b": False, "c": False}, VoteResult.LOST),
        (ABCD, {"a": True, "b": True}, VoteResult.PENDING),  # two of four is not enough
        (ABCD, {"a": True, "b": True, "c": True}, VoteResult.WON),
        (ABCD, {"a": True, "b": True, "c": False, "d": False}, VoteResult.PENDING),  # split
        (ABCD, {"a": True, "b": False, "c": False, "d": False}, VoteResult.LOST),
        # Votes from servers outside the configuration do not count.
        (ABC, {"a": True, "x": True, "y": True}, VoteResult.PENDING),
        (ABC, {"a": True, "x": False, "y": False}, VoteResult.PENDING),
    ],
)
def test_vote_result_table(
    voters: tuple[str, ...], votes: dict[str, bool], result: VoteResult
) -> None:
    assert vote_result(voters, votes) is result


def test_vote_result_matches_naive_version() -> None:
    rng = random.Random(SEED + 1)
    servers = [f"s{i}" for i in range(9)]
    for _ in range(ROUNDS):
        voters = rng.sample(servers, rng.randint(0, 7))
        # Some voters have not answered; some answers come from non-voters.
        votes = {s: rng.random() < 0.5 for s in servers if rng.random() < 0.7}
        assert vote_result(voters, votes) is naive_vote_result(voters, votes), (voters, votes)


# ----- quorum_acked ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voters", "acked", "ok"),
    [
        ((), set(), False),  # no voters: never a quorum
        ((), {"a"}, False),
        (("a",), {"a"}, True),
        (ABC, {"a"}, False),
        (ABC, {"a", "c"}, True),
        (ABCD, {"a", "b"}, False),
        (ABCD, {"a", "b", "d"}, True),
        (ABC, {"a", "x", "y"}, False),  # acks from non-voters do not count
    ],
)
def test_quorum_acked_table(voters: tuple[str, ...], acked: set[str], ok: bool) -> None:
    assert quorum_acked(voters, acked) is ok


def test_quorum_acked_matches_naive_version() -> None:
    rng = random.Random(SEED + 2)
    servers = [f"s{i}" for i in range(9)]
    for _ in range(ROUNDS):
        voters = rng.sample(servers, rng.randint(0, 7))
        acked = {s for s in servers if rng.random() < 0.5}
        assert quorum_acked(voters, acked) is naive_quorum_acked(voters, acked), (voters, acked)
