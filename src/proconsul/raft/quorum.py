"""Raft's quorum rules: majority size, commit index from match indexes, vote and ack tallies.

Job: hold the counting every Raft decision rests on (elections, commit,
check-quorum, confirmed reads) as small pure functions over plain values, so
unit tests check them from tables and against naive versions.

Rules:
- A leaf: no node, no log, no clock; it imports nothing from proconsul.raft.
- One configuration at a time (single-server membership changes), so a quorum
  is a strict majority of that configuration's voters.
- Only the listed voters count: a vote or ack from anyone else (a removed
  server, a non-voter) is ignored, and a voter that has not answered is
  neither for nor against.
- No voters means no quorum: nothing is won, committed or acknowledged.
"""

from __future__ import annotations

import enum
from collections.abc import Container, Mapping, Sequence


class VoteResult(enum.Enum):
    PENDING = "pending"  # neither side has a quorum yet
    WON = "won"
    LOST = "lost"


def quorum_size(voters: int) -> int:
    """Votes (or acknowledgements) needed out of `voters`: a strict majority."""
    if voters < 0:
        raise ValueError("voter count cannot be negative")
    return voters // 2 + 1


def quorum_commit_index(match_indexes: Sequence[int]) -> int:
    """The highest index stored on a majority, given each voter's match index.

    It is the `quorum_size`-th largest value: sort descending and take the
    element a quorum can vouch for (for an odd count, the median). No voters
    means nothing can commit, so the answer is 0.
    """
    if not match_indexes:
        return 0
    ordered = sorted(match_indexes, reverse=True)
    return ordered[quorum_size(len(ordered)) - 1]


def vote_result(voters: Sequence[str], votes: Mapping[str, bool]) -> VoteResult:
    """Tally an election: `votes` maps a server to whether it granted its vote."""
    need = quorum_size(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    refused = sum(1 for v in voters if votes.get(v) is False)
    if granted >= need:
        return VoteResult.WON
    if refused >= need:
        return VoteResult.LOST
    return VoteResult.PENDING


def quorum_acked(voters: Sequence[str], acked: Container[str]) -> bool:
    """Whether a quorum of `voters` is among the servers in `acked`.

    One rule for check-quorum (heard from recently) and read rounds (answered
    the round's heartbeat); the leader puts itself in `acked`.
    """
    return sum(1 for v in voters if v in acked) >= quorum_size(len(voters))
