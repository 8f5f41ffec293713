"""`proconsul keygen`: print a new gossip encryption key.

Job: 32 random bytes (an AES-256 key) from the OS's secure source, printed as
one line of standard base64, as `consul keygen` does. The key is only
printed, never stored or logged. Takes no flags or arguments.
"""

from __future__ import annotations

import base64
import secrets

from proconsul.cli.offline import run_offline
from proconsul.config.flags import FlagSet

KEY_BYTES = 32


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def run(argv: list[str]) -> int:
    return run_offline(FlagSet("keygen"), argv, lambda _: print(new_key()))
