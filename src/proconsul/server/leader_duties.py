"""Leader duties: what a server does only while it leads, started and stopped in one place.

Job: `LeaderDuties` holds the duties a server runs while it is the Raft
leader. Raft publishes each change of role (`RaftLog.on_leadership`); on a
gain the duties start as one task group, on a loss the group is cancelled.
Adding a duty is one `add(...)` call in server/delegate.py; a dev agent (a
lone voter) goes through the same path.

Rules:
- A duty is a coroutine function that runs until it is done or cancelled.
  `once` makes one from a step that must succeed once per term (retried
  after a failure, with a warning); `every` one from a step repeated at an
  interval. A duty that raises is logged and ends; the others go on.
- `established` is set once every `once` duty of the current term has
  succeeded, and cleared when leadership is lost: a lone dev server waits
  for it before it serves, so its first request sees its own registration
  and the ACL bootstrap rows, as before.
- Nothing here knows Raft or the store: it takes callables.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("proconsul.agent")

DEFAULT_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class LeaderDuty:
    name: str
    run: Callable[[], Awaitable[None]]
    # A one-shot duty counts towards `established`.
    one_shot: bool = False


def once(
    name: str, step: Callable[[], Awaitable[object]], retry_s: float = DEFAULT_RETRY_S
) -> LeaderDuty:
    """A duty that runs `step` until it succeeds once (per term)."""

    async def run() -> None:
        while True:
            try:
                await step()
                return
            except Exception as exc:  # no quorum yet, leadership moving, ...
                log.warning("agent: leader duty %s failed, will retry: %s", name, exc)
            await asyncio.sleep(retry_s)

    return LeaderDuty(name, run, one_shot=True)


def every(name: str, step: Callable[[], Awaitable[object]], interval_s: float) -> LeaderDuty:
    """A duty that runs `step` every `interval_s` while leading (first run at once)."""

    async def run() -> None:
        while True:
            try:
                await step()
            except Exception as exc:
                log.warning("agent: leader duty %s failed, will retry: %s", name, exc)
            await asyncio.sleep(interval_s)

    return LeaderDuty(name, run)


class LeaderDuties:
    def __init__(self) -> None:
        self._duties: list[LeaderDuty] = []
        self._group: asyncio.Task[None] | None = None
        self._running: set[str] = set()
        self.starts: dict[str, int] = {}  # per duty: the terms it was started in
        self.established = asyncio.Event()
        self.terms_led = 0

    def add(self, duty: LeaderDuty) -> None:
        if self._group is not None:
            raise RuntimeError("leader duties are added before leadership is first gained")
        self._duties.append(duty)
        self.starts[duty.name] = 0

    def set_leading(self, leading: bool) -> None:
        """Raft's role changed (called from its Ready loop: must not block)."""
        if leading and self._group is None:
            self.terms_led += 1
            log.info("agent: cluster leadership acquired")
            self._group = asyncio.create_task(self._run_group(), name="leader-duties")
        elif not leading and self._group is not None:
            log.info("agent: cluster leadership lost")
            self._group.cancel()
            self._group = None
            self.established.clear()

    def running(self) -> list[str]:
        """The duties running now (empty on a follower)."""
        return sorted(self._running)

    async def stop(self) -> None:
        group, self._group = self._group, None
        if group is not None:
            group.cancel()
            await asyncio.gather(group, return_exceptions=True)
        self.established.clear()

    def stats(self) -> dict[str, float]:
        """Per duty: whether it runs now and how many terms started it."""
        found = {"proconsul.leader.terms_led": float(self.terms_led)}
        for name, starts in self.starts.items():
            found[f"proconsul.leader.duty.{name}.running"] = float(name in self._running)
            found[f"proconsul.leader.duty.{name}.starts"] = float(starts)
        return found

    async def _run_group(self) -> None:
        # Per term: a cancelled term's tasks finish on their own set, never this one's.
        running: set[str] = set()
        self._running = running
        pending = {d.name for d in self._duties if d.one_shot}
        if not pending:
            self.established.set()

        async def guarded(duty: LeaderDuty) -> None:
            running.add(duty.name)
            self.starts[duty.name] += 1
            try:
                await duty.run()
                if duty.one_shot:
                    pending.discard(duty.name)
                    if not pending:
                        self.established.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("agent: leader duty %s stopped with an error", duty.name)
            finally:
                running.discard(duty.name)

        async with asyncio.TaskGroup() as group:
            for duty in self._duties:
                group.create_task(guarded(duty), name=f"leader-duty-{duty.name}")
