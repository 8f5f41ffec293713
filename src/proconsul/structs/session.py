"""Sessions: Consul's `structs.Session` row and the rules a new one must meet.

A session ties locks in the KV store to a node and some of its health checks:
when the node goes, a check turns critical, the session is destroyed or its
TTL runs out, the session is invalidated and its locks are released (or the
keys deleted, per `Behavior`). See DESIGN.md, "Sessions and locks".

JSON (Consul 1.16): `ID`, `Name`, `Node`, `LockDelay` (nanoseconds), `Behavior`
(`release` or `delete`), `TTL` (a Go duration string, "" for none),
`NodeChecks`, `ServiceChecks` (`[{ID, Namespace}]`), `CreateIndex`,
`ModifyIndex`. The deprecated `Checks` is accepted on create and folded into
`NodeChecks`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from proconsul.structs.duration import format_duration, parse_duration
from proconsul.structs.naming import pascal

SessionBehavior = Literal["release", "delete"]
BEHAVIORS = ("release", "delete")

DEFAULT_LOCK_DELAY_NS = 15_000_000_000  # Consul's 15s
SESSION_TTL_MIN_S = 10.0  # Consul's session_ttl_min default
SESSION_TTL_MAX_S = 86_400.0  # 24h
SESSION_TTL_MULTIPLIER = 2  # the leader's grace: a session expires after 2 x TTL
# A bare number below this in a request's LockDelay means seconds (Consul's
# lockDelayMinThreshold), at or above it nanoseconds.
LOCK_DELAY_SECONDS_BELOW = 1000
# Consul's KV lock delay cap: a session's LockDelay is at most 60s.
MAX_LOCK_DELAY_NS = 60_000_000_000


class SessionError(ValueError):
    """A session request Consul refuses; the message is Consul's text."""


class ServiceCheck(msgspec.Struct, rename=pascal):
    id: str
    namespace: str = ""


class Session(msgspec.Struct, rename=pascal):
    id: str = ""
    name: str = ""
    node: str = ""
    lock_delay: int = 0  # nanoseconds, as Consul's JSON carries it
    behavior: str = "release"
    ttl: str = ""
    node_checks: list[str] | None = None
    service_checks: list[ServiceCheck] | None = None
    create_index: int = 0
    modify_index: int = 0

    def check_keys(self) -> list[str]:
        """The ids of the checks whose critical state invalidates this session."""
        ids = list(self.node_checks or [])
        ids.extend(check.id for check in self.service_checks or [])
        return ids


def ttl_seconds(ttl: str) -> float:
    """The TTL in seconds (0: none); SessionError with Consul's text when invalid."""
    if not ttl:
        return 0.0
    try:
        seconds = float(parse_duration(ttl))
    except ValueError as exc:
        raise SessionError(f"Session TTL '{ttl}' invalid: {exc}") from None
    if seconds != 0 and not SESSION_TTL_MIN_S <= seconds <= SESSION_TTL_MAX_S:
        raise SessionError(
            f"Invalid Session TTL '{int(seconds * 1e9)}', must be between "
            f"[{format_duration(SESSION_TTL_MIN_S)}={format_duration(SESSION_TTL_MAX_S)}]"
        )
    return seconds


def validate_session(session: Session) -> None:
    """Consul's checks of a new session before it enters the log."""
    if not session.node:
        raise SessionError("Must provide Node")
    if session.behavior not in BEHAVIORS:
        raise SessionError(f"Invalid Behavior setting '{session.behavior}'")
    if session.lock_delay < 0:
        raise SessionError("Invalid LockDelay: must not be negative")
    ttl_seconds(session.ttl)
