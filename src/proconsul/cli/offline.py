"""Running the offline verbs (`keygen`, `tls …`): no agent, just flags and a body.

One place decides how they fail, as Consul's offline commands do: `-h` prints
usage and exits 0; a flag error or a stray argument prints `Failed to parse
args: …` and exits 1; an `OfflineError` (or one of the caller's `errors`) from
the body prints its message and exits 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from proconsul.config.flags import FlagError, FlagSet


class OfflineError(Exception):
    """A failure the user caused or can fix; the message is printed as is."""


def run_offline(
    flags: FlagSet,
    argv: list[str],
    body: Callable[[dict[str, Any]], None],
    errors: tuple[type[Exception], ...] = (),
) -> int:
    try:
        values, rest = flags.parse(argv)
    except FlagError as exc:
        if str(exc) == flags.usage():  # -h / -help
            print(exc)
            return 0
        print(f"Failed to parse args: {exc}", file=sys.stderr)
        return 1
    if rest:
        print(f"Failed to parse args: unexpected argument: {rest[0]}", file=sys.stderr)
        return 1
    caught: tuple[type[Exception], ...] = (OfflineError, *errors)
    try:
        body(values)
    except caught as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0
