"""`proconsul kv put|get|delete`: the key/value store from the command line.

Job: map each verb onto `/v1/kv/:key` and print Consul's text:
`Success! Data written to: K`, `Error! No key exists at: K`, `key:value`
lines for `-recurse`, the aligned `-detailed` block, and so on.

Rules:
- Values are bytes end to end: `@file`, `-` (stdin) and stored binary values
  pass through unchanged; only `-base64` transforms them.
- A leading `/` on a key is dropped, as Consul does (keys never start with one).
- Check-and-set failures and missing keys are errors: stderr, exit 1.
- Output building is pure (`detailed_block`, `recurse_lines`) and unit-tested.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from proconsul.cli.api_client import (
    ApiClient,
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    command,
    parse_args,
    quote_path,
    uint64_flag,
    write_out,
)
from proconsul.config.flags import FlagSet

# Consul aligns `-detailed` with a tab writer padding cells by 6 past the
# longest label ("CreateIndex"/"ModifyIndex"), so values start in column 17.
_LABEL_WIDTH = len("CreateIndex") + 6


def _clean_key(key: str) -> str:
    # Keys never begin with "/", but people type "/foo"; Consul strips it too.
    return key[1:] if key.startswith("/") else key


def _kv_path(key: str) -> str:
    return f"/v1/kv/{quote_path(key)}"


# --------------------------------------------------------------------------- put


@command
def put(argv: list[str]) -> int:
    flags = FlagSet("kv put")
    add_api_flags(flags)
    flags.boolean("acquire", False, "Obtain a lock on the key (needs -session).")
    flags.boolean("base64", False, "Treat the data as base 64 encoded.")
    flags.boolean("cas", False, "Check-and-set: write only if -modify-index still matches.")
    flags.custom("flags", uint64_flag, 0, "Unsigned integer stored with the key.")
    flags.custom("modify-index", uint64_flag, 0, "ModifyIndex the key must have (with -cas).")
    flags.boolean("release", False, "Forfeit the lock on the key (needs -session).")
    flags.string("session", None, "Session ID for -acquire and -release.")
    values, args = parse_args(flags, argv, max_args=2, expected="1 or 2")
    if not args:
        raise CliError("Error! Missing KEY argument")
    key = _clean_key(args[0])
    if not key:
        raise CliError("Error! Missing KEY argument")
    data = _data_from_arg(args[1] if len(args) > 1 else None)
    if values["base64"]:
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CliError(f"Error! Cannot base 64 decode data: {exc}") from None
    if (values["acquire"] or values["release"]) and not values["session"]:
        raise CliError("Error! Missing -session (required with -acquire and -release)")
    if values["acquire"] and values["release"]:
        raise CliError("Error! Cannot specify both -acquire and -release")
    if values["cas"] and "modify-index" not in values["set"]:
        raise CliError("Must specify -modify-index with -cas!")
    params: list[tuple[str, str]] = []
    if values["flags"]:
        params.append(("flags", str(values["flags"])))
    if values["cas"]:
        params.append(("cas", str(values["modify-index"])))
    if values["acquire"]:
        params.append(("acquire", values["session"]))
    elif values["release"]:
        params.append(("release", values["session"]))
    try:
        written = client_from(values).request("PUT", _kv_path(key), params, data).json()
    except ApiError as exc:
        raise CliError(f"Error! Failed writing data: {exc}") from None
    if values["acquire"]:
        if written is not True:
            raise CliError("Error! Did not acquire lock")
        print(f"Success! Lock acquired on: {key}")
    elif values["release"]:
        if written is not True:
            raise CliError("Error! Did not release lock")
        print(f"Success! Lock released on: {key}")
    elif written is not True:
        raise CliError(f"Error! Did not write to {key}: CAS failed")
    else:
        print(f"Success! Data written to: {key}")
    return 0


def _data_from_arg(arg: str | None) -> bytes:
    """The value to store: none, `@file`, `-` for stdin, or the literal text."""
    if arg is None:
        return b""
    if arg.startswith("@"):
        try:
            with open(arg[1:], "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise CliError(f"Failed to read file: {exc.strerror or exc}: {arg[1:]}") from None
    if arg == "-":
        return sys.stdin.buffer.read()
    # fsencode keeps any undecodable bytes the shell passed us as they were.
    return os.fsencode(arg)


# --------------------------------------------------------------------------- get


@command
def get(argv: list[str]) -> int:
    flags = FlagSet("kv get")
    add_api_flags(flags)
    flags.boolean("base64", False, "Base 64 encode the value.")
    flags.boolean("detailed", False, "Show the key's metadata as well as its value.")
    flags.boolean("keys", False, "List keys starting with the prefix, not their values.")
    flags.boolean("recurse", False, "Read every key starting with the prefix.")
    flags.string("separator", "/", "With -keys, list only up to this separator.")
    values, args = parse_args(flags, argv, max_args=1)
    key = _clean_key(args[0] if args else "")
    if not key and not (values["recurse"] or values["keys"]):
        raise CliError("Error! Missing KEY argument")
    client = client_from(values)
    try:
        if values["keys"]:
            _print_keys(client, key, values["separator"])
        elif values["recurse"]:
            entries = client.get_json(_kv_path(key), [("recurse", "")], allow_404=True) or []
            write_out(recurse_output(entries, detailed=values["detailed"], b64=values["base64"]))
        else:
            found = client.get_json(_kv_path(key), allow_404=True)
            if not found:
                raise CliError(f"Error! No key exists at: {key}")
            entry = found[0]
            if values["detailed"]:
                write_out(detailed_block(entry, b64=values["base64"]))
            else:
                write_out(shown_value(entry, b64=values["base64"]) + b"\n")
    except ApiError as exc:
        raise CliError(f"Error querying Consul agent: {exc}") from None
    return 0


def _print_keys(client: ApiClient, prefix: str, separator: str) -> None:
    params = [("keys", "")]
    if separator:
        params.append(("separator", separator))
    for name in client.get_json(_kv_path(prefix), params, allow_404=True) or []:
        print(name)


def entry_value(entry: Mapping[str, Any]) -> bytes:
    """The stored bytes of a KV entry (the API sends them base64, or null)."""
    encoded = entry.get("Value")
    return base64.b64decode(encoded) if encoded else b""


def shown_value(entry: Mapping[str, Any], *, b64: bool) -> bytes:
    value = entry_value(entry)
    return base64.b64encode(value) if b64 else value


def detailed_block(entry: Mapping[str, Any], *, b64: bool) -> bytes:
    """The `-detailed` lines for one entry: label, padding, value; Session `-` if none."""
    fields = [
        ("CreateIndex", str(entry.get("CreateIndex", 0))),
        ("Flags", str(entry.get("Flags", 0))),
        ("Key", str(entry.get("Key", ""))),
        ("LockIndex", str(entry.get("LockIndex", 0))),
        ("ModifyIndex", str(entry.get("ModifyIndex", 0))),
        ("Session", str(entry.get("Session") or "-")),
    ]
    head = "".join(f"{label.ljust(_LABEL_WIDTH)}{text}\n" for label, text in fields)
    return (
        head.encode() + "Value".ljust(_LABEL_WIDTH).encode() + shown_value(entry, b64=b64) + b"\n"
    )


def recurse_output(entries: Sequence[Mapping[str, Any]], *, detailed: bool, b64: bool) -> bytes:
    """`key:value` per line, or `-detailed` blocks separated by blank lines."""
    if detailed:
        return b"\n".join(detailed_block(entry, b64=b64) for entry in entries)
    return b"".join(
        str(entry.get("Key", "")).encode() + b":" + shown_value(entry, b64=b64) + b"\n"
        for entry in entries
    )


# --------------------------------------------------------------------------- delete


@command
def delete(argv: list[str]) -> int:
    flags = FlagSet("kv delete")
    add_api_flags(flags)
    flags.boolean("cas", False, "Check-and-set: delete only if -modify-index still matches.")
    flags.custom("modify-index", uint64_flag, 0, "ModifyIndex the key must have (with -cas).")
    flags.boolean("recurse", False, "Delete every key starting with the prefix.")
    values, args = parse_args(flags, argv, max_args=1)
    key = _clean_key(args[0] if args else "")
    if not key and not values["recurse"]:
        raise CliError("Error! Missing KEY argument")
    if values["cas"] and "modify-index" not in values["set"]:
        raise CliError("Must specify -modify-index with -cas!")
    if values["cas"] and values["recurse"]:
        raise CliError("Cannot specify both -cas and -recurse!")
    params: list[tuple[str, str]] = []
    if values["recurse"]:
        params.append(("recurse", ""))
    if values["cas"]:
        params.append(("cas", str(values["modify-index"])))
    try:
        deleted = client_from(values).request("DELETE", _kv_path(key), params).json()
    except ApiError as exc:
        what = "prefix" if values["recurse"] else "key"
        raise CliError(f"Error! Did not delete {what} {key}: {exc}") from None
    if values["recurse"]:
        print(f"Success! Deleted keys with prefix: {key}")
    elif deleted is False:
        # Only a check-and-set delete can answer false.
        raise CliError(f"Error! Did not delete key {key}: CAS failed")
    else:
        print(f"Success! Deleted key: {key}")
    return 0
