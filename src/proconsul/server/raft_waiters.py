"""Who is waiting on the Raft log, and how each waiter is answered.

Job: the futures behind `RaftLog`'s requests: proposals waiting for their
index to be applied, linearizable reads waiting for their read state,
callers waiting for an applied index, and callers waiting for a change of
leader or configuration. The Ready loop reports events here; callers await.

Rules:
- A proposal succeeded iff the entry applied at its index carries its term;
  another term at that index, or a snapshot installed over it, fails it with
  LeadershipLostError (the caller cannot know the outcome otherwise).
- At most one proposal waits per index: a new proposal at an index fails the
  older one, whose entry our log no longer holds.
- A waiter that gave up (timed out, cancelled) is skipped, never resolved.
- `fail_all` answers everyone at once (shutdown, fatal error).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any

from proconsul.raft.messages import Entry
from proconsul.server.raft_errors import LeadershipLostError
from proconsul.structs.commands import ApplyResult

ApplyFuture = asyncio.Future[tuple[int, ApplyResult]]


class Waiters:
    def __init__(self) -> None:
        self.proposals: dict[int, tuple[int, ApplyFuture]] = {}  # index -> (term, future)
        self.reads: dict[bytes, asyncio.Future[int]] = {}
        self._applied: list[tuple[int, int, asyncio.Future[None]]] = []  # heap by index
        self._ids = itertools.count()
        self._changed = asyncio.Event()

    # ----- proposals -------------------------------------------------------------------

    def add_proposal(self, index: int, term: int) -> ApplyFuture:
        future: ApplyFuture = asyncio.get_running_loop().create_future()
        stale = self.proposals.pop(index, None)
        if stale is not None:
            _set_exception(stale[1], LeadershipLostError())
        self.proposals[index] = (term, future)
        return future

    def forget_proposal(self, index: int, future: ApplyFuture) -> None:
        current = self.proposals.get(index)
        if current is not None and current[1] is future:
            del self.proposals[index]

    def applied(self, entry: Entry, result: ApplyResult) -> None:
        pending = self.proposals.pop(entry.index, None)
        if pending is None:
            return
        term, future = pending
        if future.done():
            return
        if term == entry.term:
            future.set_result((entry.index, result))
        else:
            future.set_exception(LeadershipLostError())

    def fail_proposals(self, error: Exception) -> None:
        """Leadership was lost: what this server proposed will not be answered here
        (a new leader may still commit it, so the outcome is unknown to the caller)."""
        pending, self.proposals = self.proposals, {}
        for _, future in pending.values():
            _set_exception(future, error)

    def snapshot_installed(self, index: int) -> None:
        for at in [i for i in self.proposals if i <= index]:
            _set_exception(self.proposals.pop(at)[1], LeadershipLostError())

    # ----- reads -----------------------------------------------------------------------

    def add_read(self, ctx: bytes) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.reads[ctx] = future
        return future

    def read_confirmed(self, ctx: bytes, index: int) -> None:
        future = self.reads.pop(ctx, None)
        if future is not None and not future.done():
            future.set_result(index)

    def read_failed(self, ctx: bytes, error: Exception) -> None:
        future = self.reads.pop(ctx, None)
        if future is not None:
            _set_exception(future, error)

    # ----- applied index ---------------------------------------------------------------

    def wait_applied(self, index: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied, (index, next(self._ids), future))
        return future

    def release_applied(self, applied_index: int) -> None:
        heap = self._applied
        while heap and heap[0][0] <= applied_index:
            _, _, future = heapq.heappop(heap)
            if not future.done():
                future.set_result(None)

    # ----- leader / configuration changes ------------------------------------------------

    def changed(self) -> None:
        """Wake everyone waiting in `next_change`."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def next_change(self) -> None:
        await self._changed.wait()

    # ----- everyone --------------------------------------------------------------------

    def fail_all(self, error: Exception) -> None:
        futures: list[asyncio.Future[Any]] = [f for _, f in self.proposals.values()]
        futures += self.reads.values()
        futures += [f for _, _, f in self._applied]
        self.proposals.clear()
        self.reads.clear()
        self._applied.clear()
        for future in futures:
            _set_exception(future, error)
        self.changed()

    def stats(self) -> dict[str, int]:
        return {
            "pending_applies": len(self.proposals),
            "pending_reads": len(self.reads),
            "applied_waiters": len(self._applied),
        }


def _set_exception(future: asyncio.Future[Any], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
        # Marked retrieved: its caller may have stopped waiting already.
        future.exception()
