"""What the answer to a fuzzed input must be, where the input alone decides it.

Written from the specification (Go's `strconv.ParseUint(s, 10, 64)`, JSON's
grammar), not from the agent's code, so a test comparing the two checks one
against the other.
"""

from __future__ import annotations

_DIGITS = frozenset("0123456789")


def is_uint64(text: str) -> bool:
    """Whether Go's ParseUint(text, 10, 64) accepts `text`: ASCII digits only, below 2**64."""
    if not text or not set(text) <= _DIGITS:
        return False
    return len(text.lstrip("0")) <= 20 and int(text) < 2**64


def nesting_depth(body: bytes) -> int:
    """The deepest nesting of JSON arrays and objects in `body`, brackets inside
    strings excluded (for any bytes, valid JSON or not)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest
