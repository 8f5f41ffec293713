"""When the server's Raft log takes a snapshot, and taking it.

Job: `SnapshotScheduler`, owned by the RaftLog (raft_log.py), decides when a
snapshot is due and takes it: serializes the FSM at once, writes it in the
background on the storage thread, then calls the core's snapshot_done (or
snapshot_failed). Installing a snapshot sent by the leader stays in the
RaftLog's Ready loop.

Rules:
- When snapshots are taken (Consul's raft_snapshot_threshold and
  raft_snapshot_interval): with `params.snapshot_interval` 0, as soon as the
  core asks (`want_snapshot`, i.e. `snapshot_threshold` entries applied since
  the last one). Otherwise, as hashicorp/raft's snapshot loop does, a timer
  fires at random times in [interval, 2 * interval) and a snapshot is taken
  when, at that moment, the threshold is reached; a threshold crossed just
  after a check waits for the next one. One exception keeps the in-memory log
  bounded: once SNAPSHOT_BACKLOG_FACTOR thresholds are applied without a
  snapshot, it is taken at once.
- The check (`maybe_take`) runs only in the RaftLog's loop task between
  Readies, the only place the store sits exactly at the core's applied index;
  the timer only marks a check due and wakes the loop.
- One write at a time. A failed write is tried again at the next interval
  check (no retry per Ready) or, with no interval, when the core asks again.
- A write that finishes after the log closed or failed is ignored; a core
  error on snapshot_done is fatal (`fatal`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable

from proconsul.raft.core import RaftError, RaftNode
from proconsul.raft.log import LogSafetyError
from proconsul.raft.messages import Snapshot
from proconsul.raft.params import RaftParams
from proconsul.state.fsm import FSM

log = logging.getLogger("proconsul.raft")

# Entries applied since the last snapshot, in thresholds, past which the next
# snapshot does not wait for the interval check (see the module rules).
SNAPSHOT_BACKLOG_FACTOR = 2


class SnapshotScheduler:
    def __init__(
        self,
        params: RaftParams,
        rng: random.Random,
        fsm: FSM,
        counters: Counter[str],
        *,
        write: Callable[[Snapshot], asyncio.Future[None]],
        wake: Callable[[], None],
        stopped: Callable[[], bool],
        fatal: Callable[[BaseException], None],
    ) -> None:
        """`write` starts storing a snapshot on the storage thread; `wake` wakes
        the loop task; `stopped` tells whether the log closed or failed; `fatal`
        stops the log."""
        self.params = params
        self.rng = rng
        self.fsm = fsm
        self.counters = counters
        self._write = write
        self._wake = wake
        self._stopped = stopped
        self._fatal = fatal
        self._writing = False
        self._timer: asyncio.TimerHandle | None = None
        self._due = False  # the interval timer fired; check at the next chance
        self._failed = False  # the last write failed; wait for the interval check

    def start(self) -> None:
        self._arm_timer()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def maybe_take(self, node: RaftNode, applied_index: int, *, asked: bool) -> None:
        """Take a snapshot if one is due (module rules); call only between Readies.
        `asked`: the Ready just advanced had want_snapshot."""
        params = self.params
        if params.snapshot_interval <= 0:
            if asked:
                self._take(node, applied_index)
            return
        if self._writing:
            return  # checked again when the write is done
        base = node.snapshot.meta.index if node.snapshot is not None else 0
        since = node.log.applied - base
        if since < params.snapshot_threshold:
            self._due = False  # this check found nothing to do
            return
        # After a failed write only the interval check tries again: no retry per Ready.
        backlog = not self._failed and (
            since >= SNAPSHOT_BACKLOG_FACTOR * params.snapshot_threshold
        )
        if self._due or backlog:
            self._due = False
            if backlog:
                self.counters["snapshots_over_backlog"] += 1
            self._take(node, applied_index)

    def _take(self, node: RaftNode, applied_index: int) -> None:
        if self._writing:
            return
        meta = node.prepare_snapshot()
        if meta is None:
            return
        if meta.index != applied_index:
            node.snapshot_failed()
            raise RaftError(f"snapshot at {meta.index} but the FSM applied {applied_index}")
        # Serialize now, while the store is exactly at meta.index; write later.
        snapshot = Snapshot(meta, self.fsm.snapshot())
        self._writing = True
        started = time.monotonic()
        written = self._write(snapshot)

        def done(future: asyncio.Future[None]) -> None:
            self._writing = False
            if self._stopped():
                return
            error = future.exception() if not future.cancelled() else None
            if future.cancelled() or error is not None:
                log.error("raft: writing snapshot at index %d failed: %s", meta.index, error)
                # Tried again at the next interval check (as hashicorp/raft) or,
                # with no interval, when the core asks again after more applies.
                node.snapshot_failed()
                self._failed = True
                return
            self._failed = False
            try:
                node.snapshot_done(snapshot)
            except (RaftError, LogSafetyError) as exc:
                self._fatal(exc)
                return
            self.counters["snapshots_taken"] += 1
            log.info(
                "raft: snapshot at index %d written (%d bytes, %.0f ms)",
                meta.index,
                len(snapshot.data),
                (time.monotonic() - started) * 1000,
            )
            self._wake()

        written.add_done_callback(done)

    def _arm_timer(self) -> None:
        interval = self.params.snapshot_interval
        if interval <= 0:
            return
        delay = interval * (1 + self.rng.random())  # [interval, 2 * interval)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._stopped():
            return
        self.counters["snapshot_checks"] += 1
        self._due = True
        self._wake()  # the loop task checks; only it may read the store
        self._arm_timer()
