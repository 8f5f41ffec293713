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
  operations that may be linearized next are the calls before the first
  return still in the list (that operation must take effect before anything
  called after its return); the search tries each in turn, and when none
  leads anywhere it backtracks. Linearizing removes the call and its return
  from the list (`lift`), backtracking puts them back (`unlift`).
- An operation whose outcome is unknown (the client timed out) has return time
  +inf and output UNKNOWN: it may take effect anywhere after its call, or never
  (taking effect after everything else is indistinguishable from never). Such
  an *optional* operation (a put, or anything with output UNKNOWN: every state
  accepts it) can always be moved to the very end of a linearization without
  making it illegal. That gives four sound prunings, without which every
  place the search backtracks would try every subset of them again:
  1. once only optional operations are left, the history is linearizable;
  2. an optional operation that leaves the state as it is is never tried;
  3. right after an optional operation the next one is never a put (the put
     would hide its effect, so it might as well come last);
  4. Lowe's cache of explored (linearized set, state) configurations is kept
     by the returned operations, the state and whether rule 3 applies, and a
     configuration is skipped when one with the same three and a subset of
     its optional operations was explored (that one could do all this one
     can, and leave the rest for the end).
- Returned operations are tried before optional ones; either order is
  complete, this one finds the usual answer (the unknown write happened late,
  or never) first.

Rules: pure Python, deterministic, no dependency on the simulator or on agents.
"""

from __future__ import annotations

import itertools
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


def is_optional(op: Op) -> bool:
    """An operation that never returned and that any state accepts: it may be
    placed after everything else, which is the same as never happening."""
    return math.isinf(op.ret) and (op.kind == "put" or op.output is UNKNOWN)


def _candidates(head: _Node, ops: Sequence[Op], optional: int, after_optional: bool) -> list[_Node]:
    """The calls that may be linearized next: every call before the first
    pending return, returned operations first, optional ones last; right after
    an optional operation, no put (module docstring, rule 3)."""
    known: list[_Node] = []
    unknown: list[_Node] = []
    entry = head.next
    while entry is not None and entry.is_call:
        if not (after_optional and ops[entry.op_id].kind == "put"):
            (unknown if optional >> entry.op_id & 1 else known).append(entry)
        entry = entry.next
    return known + unknown


def _only_optional_left(head: _Node, optional: int) -> bool:
    entry = head.next
    while entry is not None:
        if not optional >> entry.op_id & 1:
            return False
        entry = entry.next
    return True


def check_register(ops: Sequence[Op], initial: Hashable = None, budget: int = 5_000_000) -> Result:
    """Is this one-key history linearizable? Raises RuntimeError past `budget` steps."""
    head = _build(ops)
    state: Hashable = initial
    linearized = 0
    optional = sum(1 << i for i, op in enumerate(ops) if is_optional(op))
    # (returned ops linearized, state, rule 3 applies) -> the sets of optional
    # ops linearized with them, as bitmasks, of the configurations explored.
    seen: dict[tuple[int, Hashable, bool], list[int]] = {}
    # One frame per linearized operation: what to resume with when backtracking.
    stack: list[tuple[list[_Node], int, _Node, Hashable]] = []
    explored = 0
    best: list[int] = []
    candidates, i = _candidates(head, ops, optional, False), 0
    while not _only_optional_left(head, optional):  # rule 1
        advanced = False
        while i < len(candidates):
            explored += 1
            if explored > budget:
                raise RuntimeError("linearizability search budget exhausted")
            entry = candidates[i]
            i += 1
            op = ops[entry.op_id]
            ok, new_state = step(state, op)
            is_opt = bool(optional >> entry.op_id & 1)
            if not ok or (is_opt and new_state == state):  # rule 2
                continue
            new_linearized = linearized | (1 << entry.op_id)
            used = new_linearized & optional
            config = (new_linearized & ~optional, new_state, is_opt)
            explored_with = seen.setdefault(config, [])
            if any(earlier & ~used == 0 for earlier in explored_with):
                continue  # subsumed (rule 4)
            explored_with.append(used)
            stack.append((candidates, i, entry, state))
            if len(stack) > len(best):
                best = [frame[2].op_id for frame in stack]
            state, linearized = new_state, new_linearized
            _lift(entry)
            candidates, i = _candidates(head, ops, optional, is_opt), 0
            advanced = True
            break
        if advanced:
            continue
        # Every candidate here failed: undo the last choice and try its successors.
        if not stack:
            return Result(False, explored=explored, partial=[ops[i] for i in best])
        candidates, i, entry, state = stack.pop()
        linearized &= ~(1 << entry.op_id)
        _unlift(entry)
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


def lock_safety(ops: Sequence[Op], key: str) -> str | None:
    """Mutual exclusion of a KV lock on `key` (acquire: cas absent -> holder
    value; release: cas holder -> absent), from the clients' side: a client
    holds the lock from the return of an acknowledged acquire until it calls
    the release of that value (after which it no longer relies on holding
    it). No two such holds may overlap. Returns a description of the first
    overlap, or None. (Linearizability of the key implies this; checking it
    directly names the property a lock user relies on.)"""
    releases: dict[tuple[int, Any], float] = {}
    for op in ops:
        if op.key == key and op.kind == "cas" and op.input[1] is None:
            owner = (op.client, op.input[0])
            releases[owner] = min(releases.get(owner, math.inf), op.call)
    holds = sorted(
        (op.ret, releases.get((op.client, op.input[1]), math.inf), op.client, op.input[1])
        for op in ops
        if op.key == key and op.kind == "cas" and op.input[0] is None and op.output is True
    )
    for (start, end, client, value), (next_start, _, other, other_value) in itertools.pairwise(
        holds
    ):
        if next_start < end:
            return (
                f"client {other} acquired {key!r} (holder {other_value}) at {next_start:.3f} "
                f"while client {client} held it (holder {value}) from {start:.3f} to {end:.3f}"
            )
    return None
