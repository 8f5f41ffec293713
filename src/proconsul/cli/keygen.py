"""`proconsul keygen`: print a new gossip encryption key.

Job: 32 random bytes (an AES-256 key) from the OS's secure source, printed as
one line of standard base64, as `consul keygen` does. The key is only
printed, never stored or logged. Takes no flags or arguments.
"""

from __future__ import annotations

import base64
import secrets
import sys

from proconsul.cli.flags import FlagError, FlagSet

KEY_BYTES = 32


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def run(argv: list[str]) -> int:
    flags = FlagSet("keygen")
    try:
        _, rest = flags.parse(argv)
    except FlagError as exc:
        if str(exc) == flags.usage():  # -h / -help
            print(exc)
            return 0
        print(f"Failed to parse args: {exc}", file=sys.stderr)
        return 1
    if rest:
        print(f"Failed to parse args: unexpected argument: {rest[0]}", file=sys.stderr)
        return 1
    print(new_key())
    return 0
