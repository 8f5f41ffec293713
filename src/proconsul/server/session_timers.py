"""Session TTLs on the leader: when each session expires unless renewed (pure).

Job: `SessionTimers` keeps, for every session with a TTL, the time (the
caller's monotonic `now`, seconds) after which the leader destroys it:
`now + 2 x TTL` from its creation, its last renewal or the start of this
leader's term, as Consul's leader grants (SESSION_TTL_MULTIPLIER). Nothing
here writes: the duty in server/session_endpoints.py asks `expired(now)` and
writes a destroy command for each, so the FSM stays deterministic.

Rules:
- A new term starts from `clear()`: a new leader knows no renewals, so every
  TTL session gets a full grace from the moment it is first seen (Consul's
  leader does the same on establishing leadership).
- `sync` adds sessions it has not seen and forgets those gone from the state.
"""

from __future__ import annotations

from collections.abc import Iterable

from proconsul.structs.session import SESSION_TTL_MULTIPLIER, Session, ttl_seconds


class SessionTimers:
    def __init__(self) -> None:
        self._deadline: dict[str, float] = {}

    def clear(self) -> None:
        self._deadline.clear()

    def renew(self, session: Session, now: float) -> None:
        ttl = _ttl(session)
        if ttl > 0:
            self._deadline[session.id] = now + SESSION_TTL_MULTIPLIER * ttl

    def sync(self, sessions: Iterable[Session], now: float) -> None:
        seen: set[str] = set()
        for session in sessions:
            seen.add(session.id)
            if session.id not in self._deadline:
                self.renew(session, now)
        for gone in [sid for sid in self._deadline if sid not in seen]:
            del self._deadline[gone]

    def expired(self, now: float) -> list[str]:
        return sorted(sid for sid, deadline in self._deadline.items() if now >= deadline)

    def forget(self, session_id: str) -> None:
        self._deadline.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._deadline)


def _ttl(session: Session) -> float:
    try:
        return ttl_seconds(session.ttl)
    except ValueError:
        return 0.0  # validated before the log; never here
