"""What kind of check a definition is, whether it is valid, and its timings.

Pure: the agent calls these when a check is registered (config file or
`/v1/agent/check/register`) and the runners call them when they start.

Rules follow Consul's check validation:
- `interval` and `ttl` cannot both be set;
- script (`args`), HTTP, TCP, gRPC and H2PING checks need `interval > 0`;
- alias checks take neither `interval` nor `ttl`;
- anything else is a TTL check and needs `ttl > 0` (so a definition with none
  of http/tcp/ttl/alias fails with Consul's "TTL must be > 0" message).

Intervals below `MIN_INTERVAL` (1s) are raised to it, with a warning, as
Consul does. Tests and labs that want faster checks pass a smaller
`min_interval` to the runner instead of changing the rule.
"""

from __future__ import annotations

from typing import Literal

from proconsul.checks.status import StatusThresholds
from proconsul.structs.definitions import CheckDefinition

CheckKind = Literal["http", "tcp", "ttl", "alias", "script", "grpc", "h2ping"]

MIN_INTERVAL = 1.0
DEFAULT_TIMEOUT = 10.0


def _positive(value: float | None) -> bool:
    return value is not None and value > 0


def is_alias(definition: CheckDefinition) -> bool:
    return bool(definition.alias_service or definition.alias_node)


def validate_definition(definition: CheckDefinition) -> None:
    """Raise ValueError, worded as Consul words it, if the check cannot run."""
    interval_check = bool(
        definition.script_args
        or definition.http
        or definition.tcp
        or definition.grpc
        or definition.h2ping
    )
    has_interval = _positive(definition.interval)
    has_ttl = _positive(definition.ttl)
    if has_interval and has_ttl:
        raise ValueError("Interval and TTL cannot both be specified")
    if interval_check and not has_interval:
        raise ValueError(
            "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
        )
    if interval_check and is_alias(definition):
        raise ValueError("Interval cannot be set for Alias checks")
    if is_alias(definition) and has_ttl:
        raise ValueError("TTL must not be set for Alias checks")
    if not interval_check and not is_alias(definition) and not has_ttl:
        raise ValueError("TTL must be > 0 for TTL checks")


def check_kind(definition: CheckDefinition) -> CheckKind:
    """The runner a valid definition needs (Consul's order: TTL, script, HTTP,
    TCP, gRPC, H2PING, alias)."""
    validate_definition(definition)
    if _positive(definition.ttl):
        return "ttl"
    if definition.script_args:
        return "script"
    if definition.http:
        return "http"
    if definition.tcp:
        return "tcp"
    if definition.grpc:
        return "grpc"
    if definition.h2ping:
        return "h2ping"
    return "alias"


def effective_interval(
    definition: CheckDefinition, min_interval: float = MIN_INTERVAL
) -> tuple[float, bool]:
    """(interval to use, whether it was raised to `min_interval`)."""
    interval = float(definition.interval or 0.0)
    if interval < min_interval:
        return min_interval, True
    return interval, False


SCRIPT_DEFAULT_TIMEOUT = 30.0


def effective_timeout(definition: CheckDefinition) -> float:
    """`timeout` when set, else 10s (30s for scripts). Consul 1.16 does not cap
    it at the interval."""
    if _positive(definition.timeout):
        return float(definition.timeout or 0.0)
    return SCRIPT_DEFAULT_TIMEOUT if definition.script_args else DEFAULT_TIMEOUT


def thresholds_for(definition: CheckDefinition, *, primed: bool = False) -> StatusThresholds:
    return StatusThresholds(
        success_before_passing=definition.success_before_passing,
        failures_before_warning=definition.failures_before_warning,
        failures_before_critical=definition.failures_before_critical,
        primed=primed,
    )
