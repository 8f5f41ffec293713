"""`proconsul config write|read|list|delete`: config entries from the command line.

Job: map each verb onto `/v1/config` and print Consul's texts:
`Config entry written: <kind>/<name>`, `Config entry not updated: ...` (a
CAS write that lost), the entry as indented JSON for `read`, one name per
line for `list`, `Config entry deleted: <kind>/<name>`.

Rules:
- `write FILE` takes HCL or JSON (`-` reads stdin), keys in CamelCase or
  snake_case, decoded as Consul decodes them (structs/config_entries.py):
  a file that does not decode is refused here, before any request, with
  `Failed to decode config entry input: ...`. The server normalizes and
  validates; its 400 text is shown in `Error writing config entry ...`.
- `-cas` with `-modify-index=N` (0: only if absent) on write; on delete
  `-cas` needs an index above 0 and `-modify-index` needs `-cas`.
- Every failure goes to stderr with exit code 1, as Consul's verbs do.
- Reading the input (`entry_from_text`) is pure and unit-tested.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from proconsul.cli.api_client import (
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    command,
    parse_args,
    parse_json_or_hcl,
    quote_path,
    uint64_flag,
)
from proconsul.config.flags import FlagSet
from proconsul.structs.config_entries import (
    ConfigEntry,
    ConfigEntryError,
    decode_config_entry,
    encode_config_entry,
)


def entry_from_text(text: str) -> ConfigEntry:
    """One config entry from HCL or JSON text, or CliError with Consul's wording."""
    try:
        parsed = parse_json_or_hcl(text)
    except ValueError as exc:
        raise CliError(f"Failed to decode config entry input: {exc}") from None
    try:
        return decode_config_entry(parsed)
    except ConfigEntryError as exc:
        raise CliError(f"Failed to decode config entry input: {exc}") from None


def _read_source(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = source[1:] if source.startswith("@") else source
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        reason = str(exc.strerror or exc)
        # Go's wording: "open <path>: no such file or directory".
        reason = reason[:1].lower() + reason[1:]
        raise CliError(f"Failed to load data: Failed to read file: open {path}: {reason}") from None


def _entry_path(kind: str, name: str = "") -> str:
    path = f"/v1/config/{quote_path(kind)}"
    return f"{path}/{quote_path(name)}" if name else path


def _kind_and_name(values: dict[str, Any], *, name: bool) -> tuple[str, str]:
    if not values["kind"]:
        raise CliError("Must specify the -kind parameter")
    if name and not values.get("name"):
        raise CliError("Must specify the -name parameter")
    return values["kind"], values.get("name") or ""


@command
def write(argv: list[str]) -> int:
    flags = FlagSet("config write")
    add_api_flags(flags)
    flags.boolean("cas", False, "Check-and-set: write only if -modify-index still matches.")
    flags.custom("modify-index", uint64_flag, 0, "ModifyIndex the entry must have (with -cas).")
    values, args = parse_args(flags, argv, max_args=1)
    if len(args) != 1:
        raise CliError(
            "Must provide exactly one positional argument to specify the config entry to write"
        )
    entry = entry_from_text(_read_source(args[0]))
    where = f"{entry.kind}/{entry.name}"
    params: list[tuple[str, str]] = []
    if values["cas"]:
        params.append(("cas", str(values["modify-index"])))
    try:
        written = client_from(values).put("/v1/config", params, encode_config_entry(entry))
    except ApiError as exc:
        raise CliError(f"Error writing config entry {where}: {exc}") from None
    if written is not True:
        raise CliError(f"Config entry not updated: {where}")
    print(f"Config entry written: {where}")
    return 0


def _kind_flags(verb: str, *, name: bool) -> FlagSet:
    flags = FlagSet(f"config {verb}")
    add_api_flags(flags)
    flags.string("kind", None, "The kind of config entry.")
    if name:
        flags.string("name", None, "The name of the config entry.")
    return flags


@command
def read(argv: list[str]) -> int:
    values, _ = parse_args(_kind_flags("read", name=True), argv, max_args=0)
    kind, name = _kind_and_name(values, name=True)
    try:
        entry = client_from(values).get_json(_entry_path(kind, name))
    except ApiError as exc:
        raise CliError(f"Error reading config entry {kind}/{name}: {exc}") from None
    print(json.dumps(entry, indent=4, ensure_ascii=False))
    return 0


@command
def list_entries(argv: list[str]) -> int:
    values, _ = parse_args(_kind_flags("list", name=False), argv, max_args=0)
    kind, _ = _kind_and_name(values, name=False)
    try:
        entries = client_from(values).get_json(_entry_path(kind)) or []
    except ApiError as exc:
        raise CliError(f'Error listing config entries for kind "{kind}": {exc}') from None
    for entry in entries:
        print(entry.get("Name", ""))
    return 0


@command
def delete(argv: list[str]) -> int:
    flags = _kind_flags("delete", name=True)
    flags.boolean("cas", False, "Check-and-set: delete only if -modify-index still matches.")
    flags.custom("modify-index", uint64_flag, 0, "ModifyIndex the entry must have (with -cas).")
    values, _ = parse_args(flags, argv, max_args=0)
    kind, name = _kind_and_name(values, name=True)
    if values["modify-index"] and not values["cas"]:
        raise CliError("Cannot specify -modify-index without -cas")
    if values["cas"] and not values["modify-index"]:
        raise CliError("Must specify a -modify-index greater than 0 with -cas")
    params = [("cas", str(values["modify-index"]))] if values["cas"] else []
    try:
        deleted = client_from(values).request("DELETE", _entry_path(kind, name), params).json()
    except ApiError as exc:
        raise CliError(f"Error deleting config entry {kind}/{name}: {exc}") from None
    if values["cas"] and deleted is not True:
        raise CliError(f"Config entry not deleted: {kind}/{name}")
    print(f"Config entry deleted: {kind}/{name}")
    return 0
