"""What the FSM does for sessions and locks: create, destroy, invalidate, lock, unlock.

Job: the state changes behind `SessionRequest` and the KV `lock`/`unlock`
ops, and the invalidation that catalog writes cause (a node deregistered,
a check of a session turning critical or going away). Called only by
state/fsm.py, inside `apply`, so every replica does the same.

Rules (Consul's, see DESIGN.md, "Sessions and locks"):
- Create: the node must be registered and each of the session's checks
  registered on it and not critical (Consul's texts: `Missing node
  registration`, `Missing check '<id>' registration`, `Check '<id>' is in
  critical state`).
- Destroy (the client's, the leader's TTL expiry, or an invalidation): each
  key the session holds is released (Session cleared, LockIndex kept) or,
  with Behavior `delete`, deleted; each such key may not be locked again
  until `now_ms + LockDelay`, `now_ms` being the leader's clock written in
  the command (a command without a clock sets no lock-delay).
- Lock: refused (false) while the key's lock-delay runs or another session
  holds it; the same session may lock again (the value is updated, LockIndex
  not); otherwise LockIndex + 1 and Session set. A missing or unknown
  session is an error (`missing session`, `invalid session "<id>"`).
- Unlock: only by the holding session (else false); clears Session, keeps
  LockIndex, writes the value.
"""

from __future__ import annotations

from proconsul.state.store import StateError, StateStore
from proconsul.structs.catalog import KVEntry
from proconsul.structs.session import Session


def create_session(store: StateStore, index: int, session: Session) -> None:
    if session.node not in store.nodes:
        raise StateError("Missing node registration")
    checks = store.checks.get(session.node, {})
    for check_id in session.check_keys():
        check = checks.get(check_id)
        if check is None:
            raise StateError(f"Missing check '{check_id}' registration")
        if check.status == "critical":
            raise StateError(f"Check '{check_id}' is in critical state")
    if session.id in store.sessions.sessions:
        raise StateError(f"Session ID '{session.id}' already exists")
    store.sessions.add(index, session)


def destroy_session(store: StateStore, index: int, session_id: str, now_ms: int) -> None:
    """Remove the session and release or delete its locks (no-op when it is gone)."""
    tables = store.sessions
    session = tables.remove(index, session_id)
    if session is None:
        return
    store.queries.drop_session(index, session_id)  # its prepared queries go with it
    delay_ms = session.lock_delay // 1_000_000
    for key in tables.keys_of(session_id):
        tables.forget(session_id, key)
        entry = store.kvs.get(key)
        if entry is None:
            continue
        if session.behavior == "delete":
            store.kv_delete(index, key)
        else:
            store.kv_set(index, KVEntry(key=key, value=entry.value, flags=entry.flags))
            store.kvs[key].session = ""
        if delay_ms > 0 and now_ms > 0:
            tables.delay_lock(key, now_ms + delay_ms)


def invalidate_node(store: StateStore, index: int, node: str, now_ms: int) -> None:
    for session_id in store.sessions.on_node(node):
        destroy_session(store, index, session_id, now_ms)


def invalidate_check(store: StateStore, index: int, node: str, check_id: str, now_ms: int) -> None:
    for session_id in store.sessions.on_check(node, check_id):
        destroy_session(store, index, session_id, now_ms)


def kv_lock(store: StateStore, index: int, entry: KVEntry, now_ms: int) -> bool:
    session_id = entry.session
    if not session_id:
        raise StateError("missing session")
    if store.sessions.get(session_id) is None:
        raise StateError(f'invalid session "{session_id}"')
    if store.sessions.lock_delayed(entry.key, now_ms):
        return False
    existing = store.kvs.get(entry.key)
    if existing is not None and existing.session and existing.session != session_id:
        return False
    relock = existing is not None and existing.session == session_id
    store.kv_set(index, KVEntry(key=entry.key, value=entry.value, flags=entry.flags))
    row = store.kvs[entry.key]
    if not relock:
        row.lock_index += 1
    row.session = session_id
    store.sessions.hold(session_id, entry.key)
    return True


def kv_unlock(store: StateStore, index: int, entry: KVEntry) -> bool:
    session_id = entry.session
    if not session_id:
        raise StateError("missing session")
    existing = store.kvs.get(entry.key)
    if existing is None or existing.session != session_id:
        return False
    store.kv_set(index, KVEntry(key=entry.key, value=entry.value, flags=entry.flags))
    store.kvs[entry.key].session = ""
    store.sessions.forget(session_id, entry.key)
    return True
