"""`proconsul intention create|check|get|delete|list|match`: Consul's intention verbs.

Job: map each verb onto `/v1/connect/intentions` and print Consul's texts:
`Created: web => api (allow)`; `Allowed`/`Denied` from check (exit 0/1, 2 on
any error); get's key/value table (`Source:`, `Destination:`, `Action:`,
`ID:`, `Description:`, `Meta[k]:`, `Created At:`, then the L7 permissions as
JSON); `Intention deleted.`; list's `ID  Source  Action  Destination
Precedence` columns; one `src => dst (action)` line per match, in evaluation
order.

Rules (Consul 1.16's verbs):
- `create SRC DST` makes an allow intention unless `-deny` (both is an
  error); `-meta k=v` may repeat. Without `-replace` it is the legacy create
  (POST), which fails when the pair exists; with `-replace` an existing
  intention is updated in place (by its ID, or by name when it has none) and,
  as in Consul, nothing is printed for it.
- `-file` reads one intention per file argument (JSON, or HCL; `-` is stdin)
  in the API's shape (`SourceName`, `DestinationName`, `Action`, ...).
- `get` and `delete` take `SRC DST`, or the ID of a legacy intention.
- Failures go to stderr; exit 1, except `check` (2) and `list` with no
  intentions (2, "There are no intentions.").
- The formatting helpers are pure and unit-tested.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec

from proconsul.cli.acl_policy import gq
from proconsul.cli.api_client import (
    ApiClient,
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    columnize,
    command,
    parse_args,
    parse_json_or_hcl,
    quote_path,
)
from proconsul.config.flags import FlagSet
from proconsul.connect.intentions import check_text, describe
from proconsul.structs.config_entries import GO_ZERO_TIME, Intention

BASE = "/v1/connect/intentions"
# Go's time.RFC850, which `intention get` prints its Created At in.
RFC850 = "%A, %d-%b-%y %H:%M:%S %Z"


# ----- pure helpers --------------------------------------------------------------


def intention_of(raw: dict[str, Any]) -> Intention:
    """An intention as the API returned (or a file gave) it."""
    try:
        return msgspec.convert(raw, Intention)
    except msgspec.ValidationError as exc:
        raise CliError(f"Error: invalid intention: {exc}") from None


def created_at_text(text: str) -> str:
    """`Created At:` as Consul prints it: RFC 850, in local time."""
    if not text or text == GO_ZERO_TIME:
        return datetime(1, 1, 1, tzinfo=UTC).strftime(RFC850)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return when.astimezone().strftime(RFC850)


def get_text(ixn: Intention) -> str:
    """The key/value table of `intention get`, then any permissions as JSON."""
    rows = [["Source:", ixn.source_name], ["Destination:", ixn.destination_name]]
    if ixn.action:
        rows.append(["Action:", ixn.action])
    if ixn.id:
        rows.append(["ID:", ixn.id])
    if ixn.description:
        rows.append(["Description:", ixn.description])
    rows += [[f"Meta[{key}]:", ixn.meta[key]] for key in sorted(ixn.meta)]
    rows.append(["Created At:", created_at_text(ixn.created_at)])
    text = columnize(rows)
    if ixn.permissions:
        permissions = msgspec.to_builtins(ixn.permissions)
        text += "\nPermissions:\n" + json.dumps(permissions, indent=2)
    return text


def list_text(rows: list[Intention]) -> str:
    """`intention list`: Consul's columns."""
    table = [["ID", "Source", "Action", "Destination", "Precedence"]]
    table += [
        [ixn.id, ixn.source_name, ixn.action, ixn.destination_name, str(ixn.precedence)]
        for ixn in rows
    ]
    return columnize(table)


def _service(text: str) -> str:
    """`name` or `namespace/name`; the open-source edition has one namespace."""
    parts = text.split("/")
    if len(parts) > 3:
        raise CliError("Error: input can contain at most two '/'")
    return parts[-1]


# ----- create --------------------------------------------------------------------------


def _read_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise CliError(f"Error: open {path}: {exc.strerror or exc}") from None


def intention_from_text(text: str) -> dict[str, Any]:
    """One intention from a file's JSON (or HCL) text."""
    try:
        parsed = parse_json_or_hcl(text)
    except ValueError as exc:
        raise CliError(f"Error: {exc}") from None
    if not isinstance(parsed, dict):
        raise CliError("Error: an intention file holds one JSON object")
    return parsed


def _from_args(values: dict[str, Any], args: list[str]) -> list[dict[str, Any]]:
    if values["file"]:
        return [intention_from_text(_read_file(path)) for path in args]
    if len(args) != 2:
        raise CliError("Error: Must specify two arguments: source and destination")
    return [
        {
            "SourceName": _service(args[0]),
            "DestinationName": _service(args[1]),
            "SourceType": "consul",
            "Action": "deny" if values["deny"] else "allow",
            "Meta": dict(values["meta"]),
        }
    ]


def _replace(client: ApiClient, body: dict[str, Any]) -> bool:
    """Update the intention `body` names, if there is one; whether there was."""
    source, destination = body.get("SourceName", ""), body.get("DestinationName", "")
    pair = [("source", source), ("destination", destination)]
    where = f"with source {gq(source)} and destination {gq(destination)}"
    try:
        old = client.get_json(f"{BASE}/exact", pair, allow_404=True)
    except ApiError as exc:
        raise CliError(f"Error looking up intention for replacement {where}: {exc}") from None
    if old is None:
        return False
    try:
        if old.get("ID"):
            client.put(f"{BASE}/{quote_path(old['ID'])}", body={**body, "ID": old["ID"]})
        else:
            upsert = {k: v for k, v in body.items() if k not in ("SourceName", "DestinationName")}
            if not upsert.get("Meta"):
                upsert.pop("Meta", None)
            client.put(f"{BASE}/exact", pair, upsert)
    except ApiError as exc:
        raise CliError(f"Error replacing intention {where}: {exc}") from None
    return True


@command
def create(argv: list[str]) -> int:
    flags = FlagSet("intention create")
    add_api_flags(flags)
    flags.boolean("allow", False, "Create an intention that allows when matched.")
    flags.boolean("deny", False, "Create an intention that denies when matched.")
    flags.boolean("file", False, "Read intention data from one or more files.")
    flags.boolean("replace", False, "Replace matching intentions.")
    flags.mapping("meta", "Metadata to set on the intention, formatted as key=value.")
    values, args = parse_args(flags, argv, max_args=sys.maxsize)
    if values["allow"] and values["deny"]:
        raise CliError("Only one of -allow or -deny may be specified.")
    bodies = _from_args(values, args)
    client = client_from(values)
    for body in bodies:
        if values["replace"] and _replace(client, body):
            continue
        shown = describe(intention_of(body))
        try:
            client.request("POST", BASE, body=json.dumps(body).encode())
        except ApiError as exc:
            raise CliError(f"Error creating intention {gq(shown)}: {exc}") from None
        print(f"Created: {shown}")
    return 0


# ----- check, get, delete, list, match ----------------------------------------------------


def _parse_exit_2(flags: FlagSet, argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Flags for verbs whose every error exits 2."""
    try:
        return parse_args(flags, argv, max_args=sys.maxsize)
    except CliError as exc:
        raise CliError(exc.message, 2) from None


@command
def check(argv: list[str]) -> int:
    flags = FlagSet("intention check")
    add_api_flags(flags)
    values, args = _parse_exit_2(flags, argv)
    if len(args) != 2:
        raise CliError("Error: command requires exactly two arguments: src and dst", 2)
    params = [("source", args[0]), ("destination", args[1])]
    try:
        client = client_from(values)
    except CliError as exc:
        raise CliError(exc.message, 2) from None
    try:
        answer = client.get_json(f"{BASE}/check", params)
    except ApiError as exc:
        raise CliError(f"Error checking the connection: {exc}", 2) from None
    allowed = bool(answer and answer.get("Allowed"))
    print(check_text(allowed))
    return 0 if allowed else 1


def _get(client: ApiClient, args: list[str]) -> Intention:
    if len(args) == 1:
        path, params = f"{BASE}/{quote_path(args[0])}", []
        missing = f"Intention not found with ID {gq(args[0])}"
    elif len(args) == 2:
        path, params = f"{BASE}/exact", [("source", args[0]), ("destination", args[1])]
        missing = f"Intention not found with source {gq(args[0])} and destination {gq(args[1])}"
    else:
        raise CliError("command requires exactly 1 or 2 arguments")
    try:
        raw = client.get_json(path, params, allow_404=True)
    except ApiError as exc:
        raise CliError(f"Error reading the intention: {exc}") from None
    if raw is None:
        raise CliError(missing)
    return intention_of(raw)


@command
def get(argv: list[str]) -> int:
    flags = FlagSet("intention get")
    add_api_flags(flags)
    values, args = parse_args(flags, argv, max_args=sys.maxsize)
    print(get_text(_get(client_from(values), args)))
    return 0


@command
def delete(argv: list[str]) -> int:
    flags = FlagSet("intention delete")
    add_api_flags(flags)
    values, args = parse_args(flags, argv, max_args=sys.maxsize)
    client = client_from(values)
    try:
        if len(args) == 1:
            client.request("DELETE", f"{BASE}/{quote_path(args[0])}")
        elif len(args) == 2:
            params = [("source", args[0]), ("destination", args[1])]
            client.request("DELETE", f"{BASE}/exact", params)
        else:
            raise CliError("command requires exactly 1 or 2 arguments")
    except ApiError as exc:
        raise CliError(f"Error deleting the intention: {exc}") from None
    print("Intention deleted.")
    return 0


@command
def list_intentions(argv: list[str]) -> int:
    flags = FlagSet("intention list")
    add_api_flags(flags)
    values, _ = parse_args(flags, argv, max_args=0)
    try:
        raw = client_from(values).get_json(BASE) or []
    except ApiError as exc:
        raise CliError(f"Failed to retrieve the intentions list: {exc}") from None
    if not raw:
        raise CliError("There are no intentions.", 2)
    print(list_text([intention_of(row) for row in raw]))
    return 0


@command
def match(argv: list[str]) -> int:
    flags = FlagSet("intention match")
    add_api_flags(flags)
    flags.boolean("source", False, "Match intentions with the given source.")
    flags.boolean("destination", False, "Match intentions with the given destination.")
    values, args = _parse_exit_2(flags, argv)
    if len(args) != 1:
        raise CliError("Error: command requires exactly one argument: src or dst")
    if values["source"] and values["destination"]:
        raise CliError("Error: only one of -source or -destination may be specified")
    by = "source" if values["source"] else "destination"
    try:
        found = client_from(values).get_json(f"{BASE}/match", [("by", by), ("name", args[0])])
    except ApiError as exc:
        raise CliError(f"Error matching the connection: {exc}") from None
    for raw in (found or {}).get(args[0], []):
        print(describe(intention_of(raw)))
    return 0
