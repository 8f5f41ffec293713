"""The sessions table, its lookups, and the lock-delays of keys.

Job: hold every session (by ID, with lookups by node and by check), which
keys each session holds locked, and until when a key may not be locked again
after its session was invalidated (`lock_delays`, key -> ms since the epoch).
The operations that change them, together with the KV rows, are in
state/session_ops.py; only the FSM calls those.

Rules:
- Index key "sessions", bumped by every create and destroy.
- Lock-delay deadlines are data: they are computed from the `now_ms` the
  leader wrote into the command that released the lock, never from a local
  clock, so every replica holds the same deadlines and a snapshot carries
  them (see DESIGN.md, "Sessions and locks").
- Lookups iterate in sorted order, so every replica invalidates, releases
  and deletes in the same order (and its tombstones and snapshots match).
- `held` is derived from the KV rows' `Session` field: not in snapshots,
  rebuilt on restore.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import msgspec

from proconsul.structs.catalog import KVEntry
from proconsul.structs.session import Session

SESSIONS_KEY = "sessions"
K = TypeVar("K")


class SessionSnapshot(msgspec.Struct, array_like=True):
    """APPEND-ONLY: new fields at the end with a default."""

    sessions: list[Session]
    lock_delays: dict[str, int] = {}


class SessionTables:
    def __init__(self, bump: Callable[..., None]) -> None:
        self._bump = bump
        self.sessions: dict[str, Session] = {}
        self._by_node: dict[str, set[str]] = {}
        self._by_check: dict[tuple[str, str], set[str]] = {}
        self.held: dict[str, set[str]] = {}  # session ID -> keys it holds locked
        self.lock_delays: dict[str, int] = {}  # key -> no lock before this (ms)

    # ----- rows -------------------------------------------------------------------

    def add(self, index: int, session: Session) -> None:
        session.create_index = session.modify_index = index
        self.sessions[session.id] = session
        self._by_node.setdefault(session.node, set()).add(session.id)
        for check_id in session.check_keys():
            self._by_check.setdefault((session.node, check_id), set()).add(session.id)
        self._bump(index, SESSIONS_KEY)

    def remove(self, index: int, session_id: str) -> Session | None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return None
        _discard(self._by_node, session.node, session_id)
        for check_id in session.check_keys():
            _discard(self._by_check, (session.node, check_id), session_id)
        self._bump(index, SESSIONS_KEY)
        return session

    def on_node(self, node: str) -> list[str]:
        return sorted(self._by_node.get(node, ()))

    def on_check(self, node: str, check_id: str) -> list[str]:
        return sorted(self._by_check.get((node, check_id), ()))

    # ----- locks ------------------------------------------------------------------

    def hold(self, session_id: str, key: str) -> None:
        self.held.setdefault(session_id, set()).add(key)

    def forget(self, session_id: str, key: str) -> None:
        """`key` is no longer locked by `session_id` (released, or deleted)."""
        _discard(self.held, session_id, key)

    def keys_of(self, session_id: str) -> list[str]:
        return sorted(self.held.get(session_id, ()))

    def delay_lock(self, key: str, until_ms: int) -> None:
        self.lock_delays[key] = max(until_ms, self.lock_delays.get(key, 0))

    def lock_delayed(self, key: str, now_ms: int) -> bool:
        """Whether `key` is still in its lock-delay at the leader's `now_ms`
        (a passed deadline is dropped, on every replica alike)."""
        until = self.lock_delays.get(key)
        if until is None:
            return False
        if now_ms >= until:
            del self.lock_delays[key]
            return False
        return True

    # ----- reads ------------------------------------------------------------------

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def all(self) -> list[Session]:
        return [self.sessions[sid] for sid in sorted(self.sessions)]

    def of_node(self, node: str) -> list[Session]:
        return [self.sessions[sid] for sid in self.on_node(node)]

    # ----- snapshot -----------------------------------------------------------------

    def snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(list(self.sessions.values()), dict(self.lock_delays))

    def restore(self, snap: SessionSnapshot | None, kvs: Iterable[KVEntry]) -> None:
        self.sessions = {}
        self._by_node = {}
        self._by_check = {}
        self.held = {}
        self.lock_delays = {}
        if snap is not None:
            for session in snap.sessions:
                self.sessions[session.id] = session
                self._by_node.setdefault(session.node, set()).add(session.id)
                for check_id in session.check_keys():
                    self._by_check.setdefault((session.node, check_id), set()).add(session.id)
            self.lock_delays = dict(snap.lock_delays)
        for entry in kvs:
            if entry.session:
                self.hold(entry.session, entry.key)


def _discard(table: dict[K, set[str]], key: K, member: str) -> None:
    members = table.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del table[key]
