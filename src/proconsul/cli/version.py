"""`proconsul version`."""

from __future__ import annotations

from proconsul import CONSUL_COMPAT_VERSION, __version__
from proconsul.config.flags import FlagError, FlagSet


def run(argv: list[str]) -> int:
    flags = FlagSet("version")
    flags.string("format", "pretty", "Output format: pretty or json.")
    try:
        values, rest = flags.parse(argv)
    except FlagError as exc:
        print(exc)
        return 1
    if rest:
        print(f"This command takes no arguments, got: {' '.join(rest)}")
        return 1
    if values["format"] == "json":
        print(
            f'{{"Version": "{__version__}", "ConsulCompat": "{CONSUL_COMPAT_VERSION}",'
            ' "Revision": "", "Prerelease": ""}'
        )
    else:
        print(f"Proconsul v{__version__}")
        print(f"Compatible with Consul v{CONSUL_COMPAT_VERSION}")
    return 0
