"""The HTTP layer's shared parsers (http/common.py): the nesting bound on JSON bodies."""

from __future__ import annotations

from proconsul.http.common import MAX_BODY_DEPTH, json_depth_exceeds


def nested(depth: int) -> object:
    value: object = 0
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_depth_bound_is_exact() -> None:
    assert not json_depth_exceeds(nested(MAX_BODY_DEPTH), MAX_BODY_DEPTH)
    assert json_depth_exceeds(nested(MAX_BODY_DEPTH + 1), MAX_BODY_DEPTH)
    assert not json_depth_exceeds(0, MAX_BODY_DEPTH)
    assert not json_depth_exceeds([[]] * 10_000, MAX_BODY_DEPTH)


def test_depth_check_survives_what_recursion_would_not() -> None:
    assert json_depth_exceeds(nested(100_000), MAX_BODY_DEPTH)
