"""Transactions in the FSM: all operations or none, Consul's verbs and texts."""

from __future__ import annotations

from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import HealthCheck, KVEntry, Node, NodeService
from proconsul.structs.commands import KVSRequest, RegisterRequest, SessionRequest, TxnRequest
from proconsul.structs.session import Session
from proconsul.structs.txn import (
    TxnCheckOp,
    TxnError,
    TxnKVOp,
    TxnNodeOp,
    TxnReply,
    TxnServiceOp,
    is_read_only,
)


def _fsm() -> FSM:
    fsm = FSM(StateStore())
    fsm.apply(1, KVSRequest(op="set", dir_ent=KVEntry(key="a", value=b"1")))
    fsm.apply(2, RegisterRequest(node="n1", address="10.0.0.1"))
    return fsm


def _txn(fsm: FSM, index: int, *ops: object) -> TxnReply:
    reply = fsm.apply(index, TxnRequest(ops=list(ops)))  # type: ignore[arg-type]
    assert isinstance(reply, TxnReply)
    return reply


def test_all_ops_apply_at_one_index_with_consul_results() -> None:
    fsm = _fsm()
    reply = _txn(
        fsm,
        5,
        TxnKVOp(verb="set", key="b", value=b"2", flags=7),
        TxnKVOp(verb="cas", key="a", value=b"x", index=1),
        TxnKVOp(verb="get", key="a"),
        TxnKVOp(verb="delete", key="zzz"),
        TxnServiceOp(verb="set", node="n1", service=NodeService(service="web", port=80)),
        TxnCheckOp(verb="set", check=HealthCheck(node="n1", check_id="c", service_id="web")),
    )
    assert reply.errors == []
    kinds = [("kv" if r.kv else "service" if r.service else "check") for r in reply.results]
    assert kinds == ["kv", "kv", "kv", "service", "check"]
    set_result = reply.results[0].kv
    assert set_result is not None and set_result.value is None and set_result.flags == 7
    got = reply.results[2].kv
    assert got is not None and got.value == b"x" and got.modify_index == 5
    store = fsm.store
    assert store.kvs["b"].create_index == 5 and store.kvs["a"].create_index == 1
    assert store.services["n1"]["web"].modify_index == 5
    assert store.checks["n1"]["c"].service_name == "web"


def test_a_failing_op_leaves_nothing_and_names_its_index() -> None:
    fsm = _fsm()
    before = fsm.store.snapshot()
    reply = _txn(
        fsm,
        5,
        TxnKVOp(verb="set", key="b", value=b"2"),
        TxnKVOp(verb="delete-tree", key=""),
        TxnNodeOp(verb="delete", node=Node(node="n1", address="")),
        TxnKVOp(verb="cas", key="a", value=b"x", index=1),  # a was deleted above
    )
    assert reply.results == []
    assert reply.errors == [TxnError(op_index=3, what='failed to set key "a", index is stale')]
    after = fsm.store.snapshot()
    # last_index moves (the entry was applied), the tables do not.
    restored = StateStore()
    restored.restore(after)
    assert restored.kvs == {"a": fsm.store.kvs["a"]} and "n1" in restored.nodes
    assert len(before) == len(after)


def test_verbs_refuse_with_consul_texts() -> None:
    fsm = _fsm()
    cases = [
        (TxnKVOp(verb="get", key="nope"), 'key "nope" doesn\'t exist'),
        (TxnKVOp(verb="check-index", key="a", index=9), "current modify index 1 != 9"),
        (TxnKVOp(verb="check-not-exists", key="a"), 'key "a" exists'),
        (TxnKVOp(verb="delete-cas", key="a", index=9), 'failed to delete key "a", index is stale'),
        (TxnKVOp(verb="cas", key="a", index=0), 'failed to set key "a", index is stale'),
        (TxnNodeOp(verb="get", node=Node(node="n2", address="")), 'node "n2" doesn\'t exist'),
        (
            TxnServiceOp(verb="set", node="n2", service=NodeService(service="w")),
            'Missing node registration for "n2"',
        ),
        (
            TxnCheckOp(verb="set", check=HealthCheck(node="n1", check_id="c", service_id="x")),
            'Unknown service ID "x" for check ID "c"',
        ),
        (TxnKVOp(verb="lock", key="a", session="s"), 'invalid session "s"'),
        (
            TxnKVOp(verb="unlock", key="a", session="s"),
            'failed to unlock key "a", lock isn\'t held, or is held by another session',
        ),
        (
            TxnKVOp(verb="check-session", key="a", session="s"),
            'failed session check for key "a", current session "" != "s"',
        ),
    ]
    for op, text in cases:
        reply = _txn(fsm, 9, TxnKVOp(verb="set", key="first", value=b""), op)
        assert reply.errors == [TxnError(op_index=1, what=text)], op
        assert "first" not in fsm.store.kvs


def test_ops_see_the_ops_before_them() -> None:
    fsm = _fsm()
    reply = _txn(
        fsm,
        7,
        TxnNodeOp(verb="set", node=Node(node="n2", address="10.0.0.2")),
        TxnServiceOp(verb="set", node="n2", service=NodeService(service="db")),
        TxnKVOp(verb="check-not-exists", key="new"),
        TxnKVOp(verb="set", key="new", value=b"v"),
        TxnKVOp(verb="check-index", key="new", index=7),
        TxnServiceOp(verb="delete", node="n2", service=NodeService(id="db")),
        TxnServiceOp(verb="cas", node="n2", service=NodeService(service="db", modify_index=0)),
    )
    assert reply.errors == []
    assert fsm.store.services["n2"]["db"].create_index == 7


def test_read_only_and_watchers_woken_once() -> None:
    fsm = _fsm()
    assert is_read_only([TxnKVOp(verb="get", key="a"), TxnNodeOp(verb="get", node=Node("n", ""))])
    assert not is_read_only([TxnKVOp(verb="get", key="a"), TxnKVOp(verb="delete", key="a")])
    woken: list[int] = []
    fsm.store.watches.subscribe(["kvs"], lambda: woken.append(fsm.store.kvs["x1"].modify_index))
    _txn(fsm, 8, *(TxnKVOp(verb="set", key=f"x{i}", value=b"") for i in range(1, 4)))
    assert woken == [8]


T0 = 1_700_000_000_000  # the leader's clock in the commands, ms


def _with_session(fsm: FSM) -> None:
    fsm.apply(3, RegisterRequest(node="n1", address="10.0.0.1", checks=[
        HealthCheck(check_id="serfHealth", name="serfHealth", status="passing")
    ]))  # fmt: skip
    session = Session(id="s1", node="n1", node_checks=["serfHealth"], lock_delay=15_000_000_000)
    fsm.apply(4, SessionRequest(op="create", session=session))


def _clocked(fsm: FSM, index: int, now_ms: int, *ops: object) -> TxnReply:
    reply = fsm.apply(index, TxnRequest(ops=list(ops), now_ms=now_ms))  # type: ignore[arg-type]
    assert isinstance(reply, TxnReply)
    return reply


def test_lock_unlock_and_check_session_as_consul() -> None:
    fsm = _fsm()
    _with_session(fsm)
    reply = _clocked(
        fsm,
        5,
        T0,
        TxnKVOp(verb="lock", key="leader", value=b"me", session="s1"),
        TxnKVOp(verb="check-session", key="leader", session="s1"),
    )
    assert reply.errors == [], reply
    row = fsm.store.kvs["leader"]
    assert (row.session, row.lock_index, row.value) == ("s1", 1, b"me")
    # A second lock by another session, in one transaction with a write: none of it lands.
    other = Session(id="s2", node="n1", node_checks=["serfHealth"])
    fsm.apply(6, SessionRequest(op="create", session=other))
    reply = _clocked(
        fsm,
        7,
        T0,
        TxnKVOp(verb="set", key="side", value=b"x"),
        TxnKVOp(verb="lock", key="leader", session="s2"),
    )
    assert reply.errors == [
        TxnError(op_index=1, what='failed to lock key "leader", lock is already held')
    ]
    assert "side" not in fsm.store.kvs
    reply = _clocked(fsm, 8, T0, TxnKVOp(verb="unlock", key="leader", session="s1"))
    assert reply.errors == [] and fsm.store.kvs["leader"].session == ""


def test_a_txn_deleting_the_node_invalidates_its_sessions_with_lock_delay() -> None:
    fsm = _fsm()
    _with_session(fsm)
    _clocked(fsm, 5, T0, TxnKVOp(verb="lock", key="leader", session="s1"))
    reply = _clocked(fsm, 6, T0, TxnNodeOp(verb="delete", node=Node(node="n1", address="")))
    assert reply.errors == []
    assert fsm.store.sessions.get("s1") is None
    assert fsm.store.kvs["leader"].session == ""  # released, per Behavior "release"
    fsm.apply(7, RegisterRequest(node="n2", address="10.0.0.2"))
    fsm.apply(8, SessionRequest(op="create", session=Session(id="s3", node="n2", node_checks=[])))
    early = _clocked(fsm, 9, T0 + 1_000, TxnKVOp(verb="lock", key="leader", session="s3"))
    assert early.errors[0].what == 'failed to lock key "leader", lock is already held'
    late = _clocked(fsm, 10, T0 + 15_001, TxnKVOp(verb="lock", key="leader", session="s3"))
    assert late.errors == []


def test_check_session_is_a_read() -> None:
    assert is_read_only([TxnKVOp(verb="check-session", key="k", session="s")])
    assert not is_read_only([TxnKVOp(verb="lock", key="k", session="s")])
