"""LeaderDuties (server/leader_duties.py): one task group per term of leadership.

Driven by hand (`set_leading`), as Raft's role changes drive it on a server:
duties start together on a gain and are cancelled together on a loss; a
one-shot duty is retried until it succeeds and counts towards `established`;
a duty that fails for good does not take the others down. Every wait has a
deadline.
"""

from __future__ import annotations

import asyncio

import pytest
from tests.agent_process import wait_for_async

from proconsul.server.leader_duties import LeaderDuties, LeaderDuty, every, once

DEADLINE_S = 5.0


async def test_duties_start_on_gain_and_stop_on_loss() -> None:
    duties = LeaderDuties()
    ticks: list[int] = []
    loop_started = asyncio.Event()

    async def forever() -> None:
        loop_started.set()
        await asyncio.Event().wait()

    async def tick() -> None:
        ticks.append(1)

    duties.add(LeaderDuty("loop", forever))
    duties.add(every("tick", tick, 0.01))
    assert duties.running() == []
    duties.set_leading(True)
    await asyncio.wait_for(loop_started.wait(), DEADLINE_S)
    await wait_for_async(lambda: len(ticks) >= 3, DEADLINE_S)
    assert duties.running() == ["loop", "tick"]
    duties.set_leading(False)
    await wait_for_async(lambda: duties.running() == [], DEADLINE_S)
    after_loss = len(ticks)
    # A second term starts every duty again, on a fresh group.
    loop_started.clear()
    duties.set_leading(True)
    await asyncio.wait_for(loop_started.wait(), DEADLINE_S)
    await wait_for_async(lambda: len(ticks) > after_loss, DEADLINE_S)
    assert duties.starts == {"loop": 2, "tick": 2} and duties.terms_led == 2
    stats = duties.stats()
    assert stats["proconsul.leader.duty.loop.running"] == 1.0
    assert stats["proconsul.leader.duty.tick.starts"] == 2.0
    await duties.stop()
    assert duties.running() == []


async def test_one_shots_retry_until_done_then_established() -> None:
    duties = LeaderDuties()
    attempts: list[int] = []

    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("no quorum yet")

    duties.add(once("flaky", flaky, retry_s=0.01))
    duties.set_leading(True)
    await asyncio.wait_for(duties.established.wait(), DEADLINE_S)
    assert len(attempts) == 3
    await wait_for_async(lambda: duties.running() == [], DEADLINE_S)
    duties.set_leading(False)
    assert not duties.established.is_set()
    await duties.stop()


async def test_a_duty_that_fails_for_good_leaves_the_others_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    duties = LeaderDuties()
    alive = asyncio.Event()

    async def broken() -> None:
        raise RuntimeError("a bug")

    async def steady() -> None:
        alive.set()
        await asyncio.Event().wait()

    duties.add(LeaderDuty("broken", broken))
    duties.add(LeaderDuty("steady", steady))
    duties.set_leading(True)
    await asyncio.wait_for(alive.wait(), DEADLINE_S)
    await wait_for_async(lambda: duties.running() == ["steady"], DEADLINE_S)
    assert "leader duty broken stopped with an error" in caplog.text
    await duties.stop()


async def test_duties_are_fixed_before_the_first_term() -> None:
    duties = LeaderDuties()
    duties.set_leading(True)
    with pytest.raises(RuntimeError):
        duties.add(LeaderDuty("late", asyncio.sleep))  # type: ignore[arg-type]
    await duties.stop()
