"""A linearizability checker for single-register-per-key KV histories.

Shared by the Raft simulator (tests/sim/raft/raft_harness.py, its KV client)
and the fault suite on real agents (tests/chaos/, whose CAS on ModifyIndex is
expressed as a CAS on values, see tests/chaos/history.py); its own tests are
tests/unit/test_lincheck.py.

Job: decide whether a concurrent history of put/get/cas operations on a map
could have come from one atomic map, i.e. whether every operation can be given
a single instant between its call and its return so that the sequence is
legal. This is the Wing & Gong search with Lowe's memoization, organised like
Porcupine:

- The history is split by key (a map is linearizable iff each key's history
  is: P-compositionality), so each search only sees one register.
- Call and return events are sorted by time into a doubly linked list. The
  search walks it: at a call, try to linearize that operation now (the model
  accepts it from the current state); at a return whose operation is not yet
  linearized, backtrack. Linearizing removes the call and its return from the
  list (`lift`), backtracking puts them back (`unlift`).
- A (set of linearized ops, state) pair already explored is never explored
  again; this cache is what makes the search practical.
- An operation whose outcome is unknown (the client timed out) has return time
  +inf and output UNKNOWN: it may take effect anywhere after its call, or never
  (taking effect after everything else is indistinguishable from never).

Rules: pure Python, deterministic, no dependency on the simulator or on agents.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

UNKNOWN: Any = object()  # the output of an operation that never returned


@dataclass(frozen=True)
class Op:
    """One client operation. For `cas` the input is (expected, new) and output a bool."""

    client: int
    kind: str  # "put" | "get" | "cas"
    key: str
    input: Any
    output: Any
    call: float
    ret: float = math.inf


def step(state: Hashable, op: Op) -> tuple[bool, Hashable]:
    """The sequential model of one key: may `op` run in `state`, and the state after it."""
    if op.kind == "put":
        return True, op.input
    if op.kind == "get":
        return (op.output is UNKNOWN or op.output == state), state
    if op.kind == "cas":
        expected, new = op.input
        swapped = state == expected
        if op.output is not UNKNOWN and op.output != swapped:
            return False, state
        return True, (new if swapped else state)
    raise ValueError(f"unknown operation kind {op.kind!r}")


@dataclass(eq=False)
class _Node:
    op_id: int
    is_call: bool
    time: float
    match: _Node | None = None
    prev: _Node | None = None
    next: _Node | None = None


@dataclass
class Result:
    ok: bool
    key: str | None = None  # the first key whose history is not linearizable
    explored: int = 0
    partial: list[Op] = field(default_factory=list)  # longest linearizable prefix found


def _build(ops: Sequence[Op]) -> _Node:
    events: list[_Node] = []
    for i, op in enumerate(ops):
        if op.ret < op.call:
            raise ValueError(f"operation returns before it is called: {op}")
        call = _Node(i, True, op.call)
        ret = _Node(i, False, op.ret)
        call.match = ret
        events += [call, ret]
    # At equal times calls sort first: touching operations count as concurrent,
    # which can only make the checker more permissive, never report a false bug.
    events.sort(key=lambda n: (n.time, 0 if n.is_call else 1))
    head = _Node(-1, False, -math.inf)
    prev = head
    for node in events:
        prev.next = node
        node.prev = prev
        prev = node
    return head


def _lift(call: _Node) -> None:
    assert call.prev is not None and call.match is not None
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    ret = call.match
    assert ret.prev is not None
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Node) -> None:
    ret = call.match
    assert ret is not None and ret.prev is not None and call.prev is not None
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


def check_register(ops: Sequence[Op], initial: Hashable = None, budget: int = 5_000_000) -> Result:
    """Is this one-key history linearizable? Raises RuntimeError past `budget` steps."""
    head = _build(ops)
    state: Hashable = initial
    linearized = 0
    cache: set[tuple[int, Hashable]] = set()
    stack: list[tuple[_Node, Hashable]] = []
    explored = 0
    best: list[int] = []
    entry = head.next
    while head.next is not None:
        explored += 1
        if explored > budget:
            raise RuntimeError("linearizability search budget exhausted")
        assert entry is not None
        if entry.is_call:
            ok, new_state = step(state, ops[entry.op_id])
            if ok:
                new_linearized = linearized | (1 << entry.op_id)
                key = (new_linearized, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    if len(stack) > len(best):
                        best = [e.op_id for e, _ in stack]
                    state, linearized = new_state, new_linearized
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return Result(False, explored=explored, partial=[ops[i] for i in best])
            entry, state = stack.pop()
            linearized &= ~(1 << entry.op_id)
            _unlift(entry)
            entry = entry.next
    return Result(True, explored=explored)


def check(ops: Iterable[Op], initial: Hashable = None) -> Result:
    """Check a whole KV history, key by key."""
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    explored = 0
    for key in sorted(by_key):
        result = check_register(by_key[key], initial)
        explored += result.explored
        if not result.ok:
            result.key = key
            return result
    return Result(True, explored=explored)
