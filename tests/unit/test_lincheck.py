"""The linearizability checker (tests/lincheck.py) itself, on histories whose answer is known."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from tests.lincheck import UNKNOWN, Op, check, check_register, lock_safety, step

INF = math.inf


def put(c: int, v: int, call: float, ret: float, key: str = "k") -> Op:
    return Op(c, "put", key, v, None, call, ret)


def get(c: int, v: int | None, call: float, ret: float, key: str = "k") -> Op:
    return Op(c, "get", key, None, v, call, ret)


def cas(c: int, old: int | None, new: int, ok: bool, call: float, ret: float, key: str = "k") -> Op:
    return Op(c, "cas", key, (old, new), ok, call, ret)


GOOD = {
    "sequential": [put(0, 1, 0, 1), get(1, 1, 2, 3), cas(0, 1, 2, True, 4, 5), get(1, 2, 6, 7)],
    "initial value is None": [get(0, None, 0, 1), put(1, 5, 2, 3)],
    "read concurrent with write sees old": [put(0, 1, 0, 1), put(0, 2, 2, 6), get(1, 1, 3, 4)],
    "read concurrent with write sees new": [put(0, 1, 0, 1), put(0, 2, 2, 6), get(1, 2, 3, 4)],
    "reordered concurrent writes": [put(0, 1, 0, 5), put(1, 2, 1, 4), get(2, 1, 6, 7)],
    "failed cas": [put(0, 1, 0, 1), cas(1, 7, 9, False, 2, 3), get(0, 1, 4, 5)],
    "cas race, one wins": [
        put(0, 1, 0, 1),
        cas(1, 1, 2, True, 2, 5),
        cas(2, 1, 3, False, 2, 5),
        get(0, 2, 6, 7),
    ],
    "unknown write took effect": [put(0, 1, 0, 1), put(1, 2, 2, INF), get(0, 2, 5, 6)],
    "unknown write never took effect": [put(0, 1, 0, 1), put(1, 2, 2, INF), get(0, 1, 5, 6)],
    "unknown cas": [put(0, 1, 0, 1), Op(1, "cas", "k", (1, 5), UNKNOWN, 2, INF), get(0, 5, 3, 4)],
    "keys are independent": [
        put(0, 1, 0, 1, "a"),
        put(0, 2, 0, 1, "b"),
        get(1, 1, 2, 3, "a"),
        get(1, 2, 2, 3, "b"),
    ],
}

BAD = {
    "stale read": [put(0, 1, 0, 1), put(0, 2, 2, 3), get(1, 1, 4, 5)],
    "read from the future": [get(1, 2, 0, 1), put(0, 2, 2, 3)],
    "lost write": [put(0, 1, 0, 1), get(1, None, 2, 3)],
    "cas said yes but value unchanged": [
        put(0, 1, 0, 1),
        cas(1, 1, 2, True, 2, 3),
        get(0, 1, 4, 5),
    ],
    "cas said no wrongly": [put(0, 1, 0, 1), cas(1, 1, 2, False, 2, 3)],
    "two readers disagree on order": [
        put(0, 1, 0, 10),
        put(1, 2, 0, 10),
        get(2, 1, 1, 2),
        get(2, 2, 3, 4),
        get(3, 2, 1, 2),
        get(3, 1, 3, 4),
    ],
    "value never written": [put(0, 1, 0, 1), get(1, 9, 2, 3)],
    "unknown write seen then unseen": [
        put(0, 1, 0, 1),
        put(1, 2, 2, INF),
        get(0, 2, 3, 4),
        get(0, 1, 5, 6),
    ],
    "bad key among good": [put(0, 1, 0, 1, "a"), get(0, 1, 2, 3, "a"), get(1, 7, 2, 3, "b")],
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_linearizable_histories_pass(name: str) -> None:
    assert check(GOOD[name]).ok


@pytest.mark.parametrize("name", sorted(BAD))
def test_non_linearizable_histories_fail(name: str) -> None:
    result = check(BAD[name])
    assert not result.ok
    if name == "bad key among good":
        assert result.key == "b"


def _real_history(rng: random.Random, clients: int, ops: int) -> tuple[list[Op], int | None]:
    """A history produced by a real register with random real-time overlap, and its end value."""
    value: int | None = None
    history: list[Op] = []
    t = 0.0
    for i in range(1, ops + 1):
        t += 1.0
        # The operation takes effect at t; its call and return straddle t.
        call, ret = t - rng.uniform(0, 3), t + rng.uniform(0, 3)
        c = rng.randrange(clients)
        roll = rng.random()
        if roll < 0.4:
            history.append(put(c, i, call, ret))
            value = i
        elif roll < 0.7:
            history.append(get(c, value, call, ret))
        else:
            expected = rng.choice([value, i - 1, None])
            ok = value == expected
            history.append(cas(c, expected, i, ok, call, ret))
            if ok:
                value = i
    return history, value


def test_random_real_histories_pass_and_a_wrong_final_read_fails() -> None:
    rng = random.Random(11)
    for _ in range(40):
        history, final = _real_history(rng, 4, 60)
        end = max(o.ret for o in history)
        assert check_register([*history, get(9, final, end + 1, end + 2)]).ok
        wrong = -1 if final is None else final + 1000
        assert not check_register([*history, get(9, wrong, end + 1, end + 2)]).ok


def test_search_budget_is_enforced() -> None:
    # Many fully concurrent writes and one impossible read: a wide search.
    ops = [put(i, i, 0, 100) for i in range(12)] + [get(99, 42, 101, 102)]
    with pytest.raises(RuntimeError):
        check_register(ops, budget=1000)


def _naive(ops: list[Op]) -> bool:
    """Linearizable by brute force: some order respecting real time is legal
    (an operation that never returned may go last, which covers "never")."""
    for order in itertools.permutations(ops):
        if any(b.ret < a.call for i, a in enumerate(order) for b in order[i + 1 :]):
            continue  # b returned before a was called, yet comes after it
        state = None
        for op in order:
            ok, state = step(state, op)
            if not ok:
                break
        else:
            return True
    return False


def _random_history(rng: random.Random, n: int) -> list[Op]:
    """Small histories over few values, outcomes drawn at random (often illegal),
    with some operations that never returned."""
    ops: list[Op] = []
    for c in range(n):
        call = rng.uniform(0, 10)
        ret = INF if rng.random() < 0.3 else call + rng.uniform(0, 4)
        kind = rng.choice(["put", "get", "cas"])
        if kind == "put":
            ops.append(put(c, rng.randrange(3), call, ret))
        elif kind == "get":
            if math.isinf(ret):
                continue  # an unanswered read is left out of a history
            ops.append(get(c, rng.choice([None, 0, 1, 2]), call, ret))
        else:
            output = UNKNOWN if math.isinf(ret) else rng.random() < 0.5
            ops.append(
                Op(c, "cas", "k", (rng.choice([None, 0, 1]), rng.randrange(3)), output, call, ret)
            )
    return ops


def test_the_search_agrees_with_brute_force_on_random_small_histories() -> None:
    # The prunings for unknown outcomes (module docstring) must change no verdict.
    rng = random.Random(5)
    verdicts = {True: 0, False: 0}
    for _ in range(1500):
        ops = _random_history(rng, rng.randrange(2, 8))
        expected = _naive(ops)
        assert check_register(ops).ok == expected, ops
        verdicts[expected] += 1
    assert min(verdicts.values()) > 200  # both kinds were exercised


def test_many_unknown_writes_do_not_blow_up_the_search() -> None:
    # A dozen writes whose outcome is unknown, then a local reordering the
    # search has to backtrack over: without the prunings, every subset of the
    # unknown writes is tried at each backtrack.
    ops = [put(0, 1, 0, 1)]
    ops += [put(10 + i, 100 + i, 2 + i * 0.1, INF) for i in range(14)]
    ops += [cas(1, 1, 2, True, 4, 5), get(2, 2, 6, 7)]
    ops += [put(3, 3, 8, 9.5), put(4, 4, 8.1, 9.4), get(5, 3, 10, 11), get(6, 104, 12, 13)]
    result = check_register(ops, budget=20_000)
    assert result.ok and result.explored < 20_000
    assert not check_register([*ops, get(7, 3, 14, 15)], budget=200_000).ok


def test_lock_safety_finds_overlapping_holds() -> None:
    acquire_a = Op(1, "cas", "lock", (None, 10), True, call=0.0, ret=1.0)
    release_a = Op(1, "cas", "lock", (10, None), True, call=5.0, ret=6.0)
    early_b = Op(2, "cas", "lock", (None, 11), True, call=2.0, ret=3.0)
    late_b = Op(2, "cas", "lock", (None, 11), True, call=5.5, ret=6.5)
    assert lock_safety([acquire_a, release_a, late_b], "lock") is None
    found = lock_safety([acquire_a, release_a, early_b], "lock")
    assert found is not None and "client 2 acquired 'lock'" in found
    # A hold whose release never came lasts for ever; a failed acquire is no hold.
    refused = Op(2, "cas", "lock", (None, 12), False, call=7.0, ret=8.0)
    assert lock_safety([acquire_a, refused], "lock") is None
