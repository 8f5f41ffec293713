"""Check status rules: thresholds and the mapping from probe results to statuses.

This is a pure core (DESIGN.md, "Health checks"): no asyncio, sockets, clocks or randomness.
The runners in `runner.py` feed it each probe result and report only what it
returns.

Threshold rules, as Consul's agent applies them to HTTP and TCP checks:

- A result is a *success* when it is `passing` or `warning` (an HTTP 429 is a
  warning, and still a success for the counters); anything else is a failure.
- A success adds one to the success counter and zeroes the failure counter; a
  failure does the opposite. Each outcome resets the other's run.
- A success is reported (with its own status, passing or warning) once the
  success counter reaches `success_before_passing`.
- A failure is reported as itself once the failure counter reaches
  `failures_before_critical`; before that, once it reaches
  `failures_before_warning` it is reported as `warning`; before that nothing
  is reported and the check keeps its last status.
- `failures_before_warning` left at 0 means "same as failures_before_critical".
- Counters start at zero, so the thresholds apply from the first result, as
  Consul's documentation describes (`success_before_passing = 3`: passing only
  after three successes). Consul's own code instead starts each counter at its
  threshold, which reports the very first result at once whatever it is;
  `primed=True` gives that behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
STATUSES = frozenset({PASSING, WARNING, CRITICAL})

# Consul keeps at most this much of a check's output (its DefaultBufSize).
OUTPUT_MAX_SIZE = 4 * 1024


def is_valid_status(status: str) -> bool:
    return status in STATUSES


def status_for_http_code(code: int) -> str:
    """2xx is passing, 429 (Too Many Requests) is warning, anything else critical."""
    if 200 <= code <= 299:
        return PASSING
    if code == 429:
        return WARNING
    return CRITICAL


@dataclass
class StatusThresholds:
    """Consecutive-result counters for one check; `observe` says what to report."""

    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0
    primed: bool = False
    successes: int = field(init=False)
    failures: int = field(init=False)

    def __post_init__(self) -> None:
        if self.failures_before_warning <= 0:
            self.failures_before_warning = self.failures_before_critical
        self.successes = self.success_before_passing if self.primed else 0
        self.failures = self.failures_before_critical if self.primed else 0

    def observe(self, status: str, output: str) -> tuple[str, str] | None:
        """Count one probe result; return (status, output) to report, or None."""
        if status in (PASSING, WARNING):
            self.successes += 1
            self.failures = 0
            if self.successes >= self.success_before_passing:
                return status, output
            return None
        self.failures += 1
        self.successes = 0
        if self.failures >= self.failures_before_critical:
            return status, output
        if self.failures >= self.failures_before_warning:
            return WARNING, output
        return None


def keep_tail(data: bytes, limit: int = OUTPUT_MAX_SIZE) -> bytes:
    """The last `limit` bytes: Consul buffers HTTP check bodies in a ring buffer."""
    return data[-limit:] if len(data) > limit else data


def truncate_ttl_output(output: str, limit: int = OUTPUT_MAX_SIZE) -> str:
    """Cut a TTL update's output to `limit` characters, saying how much was kept."""
    total = len(output)
    if total <= limit:
        return output
    return f"{output[:limit]} ... (captured {limit} of {total} bytes)"


def ttl_expired_output(last_output: str) -> str:
    """Output of a TTL check whose time ran out, keeping the last update's output."""
    if not last_output:
        return "TTL expired"
    return f"TTL expired (last output before timeout follows): {last_output}"


def http_output(method: str, url: str, code: int, reason: str, body: str) -> str:
    """Output of a completed HTTP check, as Consul words it."""
    status_line = f"{code} {reason}".rstrip()
    return f"HTTP {method} {url}: {status_line} Output: {body}"


def go_url_op(method: str) -> str:
    """Go names a failed request by its method in title case: `Get`, `Post`."""
    return method[:1].upper() + method[1:].lower()
