"""Sessions on the servers: their reads, the check of a write, and their ACL rules.

Job:
- Reads `ServerEndpoints` serves ("Session.Get": `ReadRequest.name` the ID,
  answering a list of zero or one; "Session.List"; "Session.NodeSessions":
  `name` the node), blocking on the index key "sessions".
- `prepare_session_write`: on the server that takes a create, validate it
  and choose its ID (a random UUID) unless the caller chose one (the HTTP
  API does, to answer with it; the state refuses a duplicate) with Consul's texts (a bad
  TTL or Behavior is `BAD_QUERY`, HTTP 400), before the command enters the log.
- `vet_session`: the ACL check, run where the command is applied.
Renewal and TTL expiry, the leader's part, are in server/session_endpoints.py.

ACL rules (Consul's): reads are filtered by session:read on the session's
node; create, destroy and renew need session:write on the session's node.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from proconsul.acl.authorizer import Authorizer
from proconsul.acl.resolved import ResolvedToken
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.state.session_tables import SESSIONS_KEY
from proconsul.state.store import StateStore
from proconsul.structs.commands import SessionRequest
from proconsul.structs.requests import ReadRequest
from proconsul.structs.session import (
    MAX_LOCK_DELAY_NS,
    Session,
    SessionError,
    validate_session,
)

GET_METHOD = "Session.Get"
LIST_METHOD = "Session.List"
NODE_METHOD = "Session.NodeSessions"
SESSION_READS = frozenset({GET_METHOD, LIST_METHOD, NODE_METHOD})

Read = Callable[[ReadRequest], tuple[Sequence[str], Callable[[], Any]]]


def session_reads(store: StateStore) -> dict[str, Read]:
    def get(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[Session]]:
            index, found = store.session_get(req.name)
            return index, [] if found is None else [found]

        return (SESSIONS_KEY,), run

    def listing(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return (SESSIONS_KEY,), store.session_list

    def of_node(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return (SESSIONS_KEY,), lambda: store.node_sessions(req.name)

    return {GET_METHOD: get, LIST_METHOD: listing, NODE_METHOD: of_node}


def filter_sessions(authz: Authorizer, rows: list[Session]) -> tuple[list[Session], bool]:
    kept = [row for row in rows if authz.session_read(row.node)]
    return (rows, False) if len(kept) == len(rows) else (kept, True)


def prepare_session_write(command: SessionRequest) -> SessionRequest:
    """A create with its new ID, validated; a destroy must name a session."""
    session = command.session
    if command.op == "destroy":
        if not session.id:
            raise RPCError("Must provide ID", ErrorCode.BAD_QUERY)
        return command
    try:
        validate_session(session)
    except SessionError as exc:
        raise RPCError(str(exc), ErrorCode.BAD_QUERY) from None
    # Consul's cap on LockDelay; an ID unless the caller chose one.
    fresh = msgspec.structs.replace(
        session,
        id=session.id or str(uuid.uuid4()),
        lock_delay=min(session.lock_delay, MAX_LOCK_DELAY_NS),
    )
    return msgspec.structs.replace(command, session=fresh)


def vet_session(store: StateStore, resolved: ResolvedToken, command: SessionRequest) -> None:
    node = command.session.node
    if command.op == "destroy":
        existing = store.sessions.get(command.session.id)
        if existing is None:
            return  # nothing to destroy: the FSM answers as for any gone session
        node = existing.node
    if not resolved.authorizer.session_write(node):
        raise resolved.deny("session", "write", node)
