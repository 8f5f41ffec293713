"""`proconsul validate [options] FILE_OR_DIRECTORY...`: check config without starting.

It loads the given files and directories exactly as the agent would (same
parser, merge and rules, including the `data_dir` requirement, as Consul's
validate does), prints `Configuration is valid!` and exits 0, or prints
`Config validation failed: <error>` on stderr and exits 1. Warnings go to
stderr either way. `-quiet` drops the success line; `-config-format` reads
every file as HCL or JSON whatever its extension.
"""

from __future__ import annotations

import sys

from proconsul.config.errors import ConfigError
from proconsul.config.flags import FlagError, FlagSet
from proconsul.config.loader import load_paths


def run(argv: list[str]) -> int:
    flags = FlagSet("validate")
    flags.boolean("quiet", help="When given, a successful run will produce no output.")
    flags.string(
        "config-format",
        help="Config files are in this format irrespective of their extension: hcl or json.",
    )
    try:
        values, paths = flags.parse(argv)
    except FlagError as exc:
        print(exc, file=sys.stderr)
        return 1
    config_format = values["config-format"]
    if config_format is not None and config_format not in ("hcl", "json"):
        print("-config-format must be either 'hcl' or 'json'", file=sys.stderr)
        return 1
    if not paths:
        print("Must specify at least one config file or directory", file=sys.stderr)
        return 1
    try:
        loaded = load_paths(paths, config_format)
    except ConfigError as exc:
        print(f"Config validation failed: {exc}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    if not values["quiet"]:
        print("Configuration is valid!")
    return 0
