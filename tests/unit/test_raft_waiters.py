"""Waiters (server/raft_waiters.py): who hears what when leadership is lost.

A deposed or cut-off leader answers its pending proposals at once with
"leadership lost" (outcome unknown: a new leader may still commit them),
rather than when a healed partition lets another entry take their slot.
"""

from __future__ import annotations

import pytest

from proconsul.raft.messages import Entry, EntryType
from proconsul.server.raft_errors import LeadershipLostError
from proconsul.server.raft_waiters import Waiters


async def test_losing_leadership_answers_every_pending_proposal() -> None:
    waiters = Waiters()
    first = waiters.add_proposal(5, 2)
    second = waiters.add_proposal(6, 2)
    waiters.fail_proposals(LeadershipLostError())
    for future in (first, second):
        with pytest.raises(LeadershipLostError):
            await future
    assert waiters.stats()["pending_applies"] == 0
    # The entry applied later (a new leader committed it) finds nobody waiting.
    waiters.applied(Entry(5, 2, EntryType.COMMAND, b"x"), None)


async def test_an_applied_proposal_of_its_own_term_succeeds() -> None:
    waiters = Waiters()
    future = waiters.add_proposal(3, 1)
    waiters.applied(Entry(3, 1, EntryType.COMMAND, b"x"), True)
    assert await future == (3, True)
