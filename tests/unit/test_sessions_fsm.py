"""Sessions and locks through the FSM: acquire, release, invalidation, lock-delay.

Every change goes through `FSM.apply`, as on a server; the lock-delay tests
check that the outcome depends only on the commands (the leader's `now_ms`),
so two replicas fed the same log agree whatever their own clocks say.
"""

from __future__ import annotations

from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import HealthCheck, KVEntry
from proconsul.structs.commands import (
    ApplyError,
    Command,
    DeregisterRequest,
    KVSRequest,
    RegisterRequest,
    SessionRequest,
)
from proconsul.structs.session import Session

T0 = 1_700_000_000_000  # a leader's clock, ms


class Log:
    """One replica: an FSM and the next index."""

    def __init__(self) -> None:
        self.fsm = FSM(StateStore())
        self.index = 0

    def apply(self, command: Command) -> object:
        self.index += 1
        return self.fsm.apply(self.index, command)

    @property
    def store(self) -> StateStore:
        return self.fsm.store


def register(node: str, status: str = "passing", check_id: str = "serfHealth") -> RegisterRequest:
    return RegisterRequest(
        node=node,
        address="10.0.0.1",
        checks=[HealthCheck(check_id=check_id, name=check_id, status=status)],
    )


def create(sid: str, node: str = "n1", **fields: object) -> SessionRequest:
    session = Session(id=sid, node=node, node_checks=["serfHealth"], lock_delay=15_000_000_000)
    for name, value in fields.items():
        setattr(session, name, value)
    return SessionRequest(op="create", session=session)


def lock(key: str, sid: str, now_ms: int = T0, value: bytes = b"v") -> KVSRequest:
    return KVSRequest(op="lock", dir_ent=KVEntry(key=key, value=value, session=sid), now_ms=now_ms)


def unlock(key: str, sid: str) -> KVSRequest:
    return KVSRequest(op="unlock", dir_ent=KVEntry(key=key, value=b"", session=sid), now_ms=T0)


def fresh() -> Log:
    log = Log()
    log.apply(register("n1"))
    log.apply(register("n2"))
    return log


def test_acquire_is_exclusive_and_counts_lock_index() -> None:
    log = fresh()
    log.apply(create("s1"))
    log.apply(create("s2", node="n2"))
    assert log.apply(lock("k", "s1")) is True
    assert log.apply(lock("k", "s2")) is False
    row = log.store.kvs["k"]
    assert (row.session, row.lock_index) == ("s1", 1)
    # The holder may lock again: the value changes, LockIndex does not.
    assert log.apply(lock("k", "s1", value=b"again")) is True
    assert (log.store.kvs["k"].value, log.store.kvs["k"].lock_index) == (b"again", 1)
    # Only the holder releases; a release keeps LockIndex.
    assert log.apply(unlock("k", "s2")) is False
    assert log.apply(unlock("k", "s1")) is True
    assert (log.store.kvs["k"].session, log.store.kvs["k"].lock_index) == ("", 1)
    assert log.apply(lock("k", "s2")) is True
    assert log.store.kvs["k"].lock_index == 2


def test_lock_needs_a_live_session() -> None:
    log = fresh()
    assert log.apply(lock("k", "nope")) == ApplyError('invalid session "nope"')
    assert log.apply(lock("k", "")) == ApplyError("missing session")
    assert "k" not in log.store.kvs


def test_create_refuses_unknown_node_missing_or_critical_check() -> None:
    log = fresh()
    assert log.apply(create("s1", node="ghost")) == ApplyError("Missing node registration")
    assert log.apply(create("s1", node_checks=["nope"])) == ApplyError(
        "Missing check 'nope' registration"
    )
    log.apply(register("n3", status="critical"))
    assert log.apply(create("s1", node="n3")) == ApplyError(
        "Check 'serfHealth' is in critical state"
    )
    assert log.store.sessions.sessions == {}


def test_check_turning_critical_releases_locks_then_lock_delay_holds() -> None:
    log = fresh()
    log.apply(create("s1"))
    log.apply(create("s2", node="n2"))
    log.apply(lock("k", "s1"))
    failed = register("n1", status="critical")
    failed.now_ms = T0 + 1000
    log.apply(failed)
    assert "s1" not in log.store.sessions.sessions
    assert log.store.kvs["k"].session == ""
    # Within 15 s of the release (by the leader's clock in the commands): refused.
    assert log.apply(lock("k", "s2", now_ms=T0 + 1000 + 14_999)) is False
    assert log.apply(lock("k", "s2", now_ms=T0 + 1000 + 15_000)) is True


def test_lock_delay_depends_only_on_the_log() -> None:
    commands: list[Command] = [
        register("n1"),
        register("n2"),
        create("s1"),
        create("s2", node="n2"),
        lock("k", "s1"),
        SessionRequest(op="destroy", session=Session(id="s1"), now_ms=T0 + 500),
        lock("k", "s2", now_ms=T0 + 10_000),
        lock("k", "s2", now_ms=T0 + 16_000),
    ]
    replicas = [Log(), Log()]
    results = [[r.apply(c) for c in commands] for r in replicas]
    assert results[0] == results[1]
    assert results[0][-2:] == [False, True]
    assert replicas[0].store.snapshot() == replicas[1].store.snapshot()


def test_behavior_delete_removes_keys_and_node_deregister_invalidates() -> None:
    log = fresh()
    log.apply(create("s1", behavior="delete"))
    log.apply(lock("a", "s1"))
    log.apply(lock("b", "s1"))
    log.apply(DeregisterRequest(node="n1", now_ms=T0))
    assert log.store.sessions.sessions == {}
    assert "a" not in log.store.kvs and "b" not in log.store.kvs


def test_deleting_a_check_invalidates_its_sessions() -> None:
    log = fresh()
    log.apply(create("s1"))
    log.apply(lock("k", "s1"))
    log.apply(DeregisterRequest(node="n1", check_id="serfHealth", now_ms=T0))
    assert log.store.sessions.sessions == {}
    assert log.store.kvs["k"].session == ""


def test_snapshot_restores_sessions_locks_and_delays() -> None:
    log = fresh()
    log.apply(create("s1"))
    log.apply(create("s2", node="n2"))
    log.apply(lock("k", "s2"))
    log.apply(lock("d", "s1"))
    log.apply(SessionRequest(op="destroy", session=Session(id="s1"), now_ms=T0))
    other = Log()
    other.fsm.restore(log.store.snapshot())
    other.index = log.index
    assert sorted(other.store.sessions.sessions) == ["s2"]
    assert other.store.sessions.keys_of("s2") == ["k"]
    assert other.apply(lock("d", "s2", now_ms=T0 + 1)) is False
    # Destroying the restored holder releases the restored lock.
    other.apply(SessionRequest(op="destroy", session=Session(id="s2"), now_ms=T0))
    assert other.store.kvs["k"].session == ""


def test_plain_set_keeps_the_lock_and_delete_forgets_it() -> None:
    log = fresh()
    log.apply(create("s1"))
    log.apply(lock("k", "s1"))
    log.apply(KVSRequest(op="set", dir_ent=KVEntry(key="k", value=b"x")))
    assert log.store.kvs["k"].session == "s1"
    log.apply(KVSRequest(op="delete", dir_ent=KVEntry(key="k")))
    assert log.store.sessions.keys_of("s1") == []
