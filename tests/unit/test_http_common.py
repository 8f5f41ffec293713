"""The HTTP layer's shared parsers (http/common.py): Consul's unsigned numbers
and Go durations in query strings, and the nesting bound on JSON bodies."""

from __future__ import annotations

import pytest

from proconsul.http.common import (
    MAX_BODY_DEPTH,
    json_depth_exceeds,
    parse_uint64,
    parse_wait,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("1", 1),
        ("007", 7),
        ("0" * 40 + "5", 5),  # Go accepts any number of leading zeros
        (str(2**64 - 1), 2**64 - 1),
    ],
)
def test_uint64_accepted(text: str, value: int) -> None:
    assert parse_uint64(text) == value


@pytest.mark.parametrize(
    "text",
    [
        *["", "-1", "+1", " 1", "1 ", "1_000", "0x10", "1e3", "1.0"],
        *["\u0663", "\uff11", "\u0661\u0662"],  # digits of other scripts
        *[str(2**64), str(2**70), "9" * 21, "1" * 5000],
    ],
)
def test_uint64_refused(text: str) -> None:
    assert parse_uint64(text) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        *[("0", 0.0), ("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("-0s", 0.0)],
        ("1000h", 3.6e6),  # accepted here; the server caps a wait at 10 minutes
        *[("5\u00b5s", 5e-6), ("5\u03bcs", 5e-6)],  # Go's two spellings of the micro sign
    ],
)
def test_wait_accepted(text: str, seconds: float) -> None:
    assert parse_wait(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["-1s", "-0.5ms", "abc", "10", "1e3s", "5 s", " 5s", "\u0663s", "9" * 30 + "h", "3000000h"],
)
def test_wait_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_wait(text)


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
