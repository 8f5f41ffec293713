"""Go-style durations (`10s`, `1m30s`, `500ms`) as float seconds.

`Duration` is a float subclass so structs can say which fields are durations;
`dec_hook`/`enc_hook` let msgspec read them from strings (or nanosecond
integers, as Consul's JSON API accepts) and write them back as Go strings.
A duration is at most what Go's int64 of nanoseconds holds (about 292 years);
more is refused as Go refuses it, so no infinite or overflowing value gets in.
"""

from __future__ import annotations

import re
from typing import Any

_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Go's time.Duration is an int64 of nanoseconds.
MAX_DURATION_S = (2**63 - 1) / 1e9
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class Duration(float):
    """Seconds, written and read the way Go writes durations."""

    def __repr__(self) -> str:
        return f"Duration({format_duration(self)!r})"


def parse_duration(text: str) -> Duration:
    """Parse a Go duration string; raise ValueError with Go's wording on bad input."""
    raw = text
    text = text.strip()
    if text in ("0", "+0", "-0"):
        return Duration(0.0)
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if not text:
        raise ValueError(f'time: invalid duration "{raw}"')
    pos = 0
    total = 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            if re.match(r"\d", text[pos:]) and not re.search(r"[a-zµμ]", text[pos:]):
                raise ValueError(f'time: missing unit in duration "{raw}"')
            raise ValueError(f'time: invalid duration "{raw}"')
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if not total <= MAX_DURATION_S:  # also inf, from hundreds of digits
        raise ValueError(f'time: invalid duration "{raw}"')
    return Duration(sign * total)


def format_duration(seconds: float) -> str:
    """Format seconds as Go's time.Duration.String() does (`1m30s`, `500ms`, `0s`)."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    nanos = round(abs(seconds) * 1e9)
    if nanos < 1_000:
        return f"{sign}{nanos}ns"
    if nanos < 1_000_000:
        return f"{sign}{_trim(nanos / 1e3)}µs"
    if nanos < 1_000_000_000:
        return f"{sign}{_trim(nanos / 1e6)}ms"
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(rest / 1e9)
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return f"{sign}{out}{secs}s"


def _trim(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def dec_hook(kind: type, obj: Any) -> Any:
    """msgspec decode hook: Duration from a Go string or from nanoseconds."""
    if kind is Duration:
        if isinstance(obj, bool):
            raise ValueError("expected a duration such as 10s")
        if isinstance(obj, int | float):
            try:
                seconds = obj / 1e9
            except OverflowError:  # an int too large for a float
                seconds = float("inf")
            if not abs(seconds) <= MAX_DURATION_S:  # also NaN
                raise ValueError("duration out of range")
            return Duration(seconds)
        if isinstance(obj, str):
            return parse_duration(obj)
        raise ValueError("expected a duration such as 10s")
    raise NotImplementedError(f"no decoder for {kind!r}")


def enc_hook(obj: Any) -> Any:
    """msgspec encode hook: Duration as a Go string."""
    if isinstance(obj, Duration):
        return format_duration(obj)
    raise NotImplementedError(f"cannot encode {type(obj)!r}")
