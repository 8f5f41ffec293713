"""Check definitions: kind, validation messages, timings, address parsing."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest

from proconsul.checks.kinds import (
    DEFAULT_TIMEOUT,
    MIN_INTERVAL,
    check_kind,
    effective_interval,
    effective_timeout,
    thresholds_for,
    validate_definition,
)
from proconsul.checks.probes import HttpProbe
from proconsul.checks.runner import make_monitor
from proconsul.structs.definitions import CheckDefinition
from proconsul.structs.duration import dec_hook
from proconsul.structs.hostport import split_host_port


def definition(**fields: Any) -> CheckDefinition:
    """Build a definition the way config files arrive: Go duration strings."""
    return msgspec.convert(fields, CheckDefinition, dec_hook=dec_hook)


def _ignore(check_id: str, status: str, output: str) -> None:
    pass


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"http": "http://localhost:8080/health", "interval": "10s"}, "http"),
        ({"tcp": "127.0.0.1:20000", "interval": "10s", "timeout": "1s"}, "tcp"),
        ({"ttl": "30s"}, "ttl"),
        ({"alias_service": "web"}, "alias"),
        ({"alias_node": "n1"}, "alias"),
        # HTTP wins over TCP when both are set, as in Consul's dispatch order.
        ({"http": "http://x/", "tcp": "x:1", "interval": "5s"}, "http"),
    ],
)
def test_check_kind(fields: dict[str, Any], kind: str) -> None:
    assert check_kind(definition(**fields)) == kind


INTERVAL_MSG = "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"http": "http://x/"}, INTERVAL_MSG),
        ({"tcp": "x:1"}, INTERVAL_MSG),
        ({"tcp": "x:1", "interval": "0s"}, INTERVAL_MSG),
        ({"http": "http://x/", "interval": "-1s"}, INTERVAL_MSG),
        ({"ttl": "10s", "interval": "10s"}, "Interval and TTL cannot both be specified"),
        ({}, "TTL must be > 0 for TTL checks"),
        ({"name": "nothing to run"}, "TTL must be > 0 for TTL checks"),
        ({"ttl": "0s"}, "TTL must be > 0 for TTL checks"),
        ({"ttl": "-5s"}, "TTL must be > 0 for TTL checks"),
        ({"alias_service": "web", "http": "http://x/", "interval": "1s"}, "Interval cannot"),
        ({"alias_service": "web", "ttl": "5s"}, "TTL must not be set for Alias checks"),
    ],
)
def test_invalid_definitions(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        validate_definition(definition(**fields))
    with pytest.raises(ValueError):
        make_monitor("c1", definition(**fields), _ignore)


def test_walkthrough_check_is_valid() -> None:
    check = definition(
        id="api_check",
        name="Check API health 8080",
        service_id="api",
        http="http://localhost:8080/health",
        method="GET",
        interval="10s",
        timeout="1s",
        success_before_passing=3,
        failures_before_critical=3,
    )
    assert check_kind(check) == "http"
    assert effective_interval(check) == (10.0, False)
    assert effective_timeout(check) == 1.0
    thresholds = thresholds_for(check)
    assert (
        thresholds.success_before_passing,
        thresholds.failures_before_warning,
        thresholds.failures_before_critical,
    ) == (3, 3, 3)


@pytest.mark.parametrize(
    ("interval", "floor", "expected"),
    [
        ("10s", MIN_INTERVAL, (10.0, False)),
        ("1s", MIN_INTERVAL, (1.0, False)),
        ("500ms", MIN_INTERVAL, (1.0, True)),
        ("50ms", 0.01, (0.05, False)),
        ("5ms", 0.01, (0.01, True)),
    ],
)
def test_effective_interval(interval: str, floor: float, expected: tuple[float, bool]) -> None:
    got = effective_interval(definition(tcp="x:1", interval=interval), floor)
    assert got == pytest.approx(expected)


def test_effective_timeout_defaults_to_10s_and_is_not_capped() -> None:
    assert effective_timeout(definition(tcp="x:1", interval="1s")) == DEFAULT_TIMEOUT
    assert effective_timeout(definition(tcp="x:1", interval="1s", timeout="30s")) == 30.0


def test_interval_below_minimum_is_raised_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="proconsul.checks"):
        monitor = make_monitor("c1", definition(tcp="x:1", interval="100ms"), _ignore)
    assert monitor.interval == MIN_INTERVAL  # type: ignore[attr-defined]
    assert "below minimum" in caplog.text


def test_probe_headers_are_multi_valued_with_consul_defaults() -> None:
    probe = HttpProbe(url="http://x/", header={"X-A": ["1", "2"], "accept": ["application/json"]})
    headers = probe.headers()
    assert headers.getall("X-A") == ["1", "2"]
    assert headers.getall("Accept") == ["application/json"]
    assert headers["User-Agent"] == "Consul Health Check"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:22", ("localhost", 22)),
        ("[::1]:8500", ("::1", 8500)),
        (":80", ("", 80)),
    ],
)
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("localhost", "missing port in address"),
        ("::1:80", "too many colons in address"),
        ("[::1]", "missing port in address"),
        ("[::1:80", "missing ']' in address"),
        ("host:http", "invalid port"),
        ("host:70000", "invalid port"),
    ],
)
def test_split_host_port_errors(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_host_port(address)
