"""The pure check-status core: thresholds, HTTP code mapping, output wording."""

from __future__ import annotations

import pytest

from proconsul.checks.status import (
    CRITICAL,
    OUTPUT_MAX_SIZE,
    PASSING,
    WARNING,
    StatusThresholds,
    go_url_op,
    http_output,
    is_valid_status,
    keep_tail,
    status_for_http_code,
    truncate_ttl_output,
    ttl_expired_output,
)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (200, PASSING),
        (201, PASSING),
        (204, PASSING),
        (299, PASSING),
        (199, CRITICAL),
        (300, CRITICAL),
        (302, CRITICAL),
        (404, CRITICAL),
        (428, CRITICAL),
        (429, WARNING),
        (430, CRITICAL),
        (500, CRITICAL),
        (503, CRITICAL),
    ],
)
def test_status_for_http_code(code: int, expected: str) -> None:
    assert status_for_http_code(code) == expected


P, W, C = PASSING, WARNING, CRITICAL

# (success_before_passing, failures_before_warning, failures_before_critical, primed,
#  results fed in, statuses reported (None = nothing reported))
THRESHOLD_CASES = [
    # No thresholds: every result is reported as itself.
    (0, 0, 0, True, [P, C, W, C, P], [P, C, W, C, P]),
    # Default (documented rule): thresholds apply from the first result.
    (3, 0, 0, False, [P, P, P, P], [None, None, P, P]),
    (0, 0, 3, False, [C, C, C], [None, None, C]),
    (3, 0, 3, False, [C, P, P, P], [None, None, None, P]),
    (1, 0, 1, False, [P, C], [P, C]),
    # Primed (Consul's code): the first result is reported whatever the thresholds.
    (3, 0, 0, True, [P], [P]),
    (0, 0, 3, True, [C], [C]),
    (3, 0, 3, True, [C], [C]),
    # success_before_passing=3: three successes in a row after a failure.
    (3, 0, 0, True, [C, P, P, P, P], [C, None, None, P, P]),
    (3, 0, 0, True, [C, P, P, C, P, P, P], [C, None, None, C, None, None, P]),
    # failures_before_critical=3; warning threshold defaults to it.
    (0, 0, 3, True, [P, C, C, C, C], [P, None, None, C, C]),
    (0, 0, 3, True, [P, C, C, P, C, C, C], [P, None, None, P, None, None, C]),
    # failures_before_warning below failures_before_critical: warn first.
    (0, 1, 3, True, [P, C, C, C, P], [P, W, W, C, P]),
    (0, 2, 3, True, [P, C, C, C], [P, None, W, C]),
    # A warning threshold above the critical one never fires.
    (0, 5, 2, True, [P, C, C], [P, None, C]),
    # A warning result is a success: it resets the failure run...
    (0, 0, 2, True, [P, C, W, C, C], [P, None, W, None, C]),
    # ...and counts towards success_before_passing, reported as warning.
    (2, 0, 0, True, [C, W, W], [C, None, W]),
    (2, 0, 0, True, [C, P, W], [C, None, W]),
    (0, 0, 2, False, [C, C], [None, C]),
    (0, 0, 0, False, [P, C], [P, C]),
    (0, 1, 3, False, [C, C, C], [W, W, C]),
]


@pytest.mark.parametrize(("sbp", "fbw", "fbc", "primed", "results", "expected"), THRESHOLD_CASES)
def test_thresholds(
    sbp: int,
    fbw: int,
    fbc: int,
    primed: bool,
    results: list[str],
    expected: list[str | None],
) -> None:
    thresholds = StatusThresholds(sbp, fbw, fbc, primed=primed)
    reported = []
    for index, status in enumerate(results):
        decided = thresholds.observe(status, f"out{index}")
        reported.append(None if decided is None else decided[0])
        if decided is not None:
            # The output is always the probe's own, even when reported as warning.
            assert decided[1] == f"out{index}"
    assert reported == expected


def test_default_is_unprimed() -> None:
    thresholds = StatusThresholds(3, 0, 3)
    assert (thresholds.successes, thresholds.failures) == (0, 0)
    assert thresholds.observe(P, "") is None


def test_warning_threshold_defaults_to_critical_threshold() -> None:
    assert StatusThresholds(0, 0, 4).failures_before_warning == 4
    assert StatusThresholds(0, 2, 4).failures_before_warning == 2


def test_valid_statuses() -> None:
    assert all(is_valid_status(s) for s in (P, W, C))
    assert not is_valid_status("maintenance")
    assert not is_valid_status("PASSING")


def test_http_output_wording() -> None:
    out = http_output("GET", "http://localhost:8080/health", 200, "OK", "fine")
    assert out == "HTTP GET http://localhost:8080/health: 200 OK Output: fine"
    assert http_output("GET", "http://x/", 599, "", "") == "HTTP GET http://x/: 599 Output: "


@pytest.mark.parametrize(
    ("method", "op"), [("GET", "Get"), ("POST", "Post"), ("delete", "Delete"), ("", "")]
)
def test_go_url_op(method: str, op: str) -> None:
    assert go_url_op(method) == op


def test_keep_tail_keeps_last_bytes() -> None:
    assert keep_tail(b"abc", 5) == b"abc"
    assert keep_tail(b"abcdef", 3) == b"def"
    big = bytes(range(256)) * 40
    assert keep_tail(big) == big[-OUTPUT_MAX_SIZE:]


def test_ttl_output_truncation() -> None:
    assert truncate_ttl_output("short", 10) == "short"
    assert truncate_ttl_output("x" * 12, 10) == "x" * 10 + " ... (captured 10 of 12 bytes)"


def test_ttl_expired_output() -> None:
    assert ttl_expired_output("") == "TTL expired"
    assert ttl_expired_output("all good") == (
        "TTL expired (last output before timeout follows): all good"
    )
