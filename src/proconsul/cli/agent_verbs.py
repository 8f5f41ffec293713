"""`proconsul reload`, `leave` and `members`: verbs that act on one agent.

Job: call the agent's `/v1/agent/...` endpoints and print what Consul prints.

Rules:
- Text output matches Consul's: `Configuration reload triggered`,
  `Graceful leave complete`, and the members table (`Node  Address  Status
  Type  Build  Protocol  DC  Partition  Segment`), servers first, then by name.
- These verbs take only the client API flags (no -datacenter/-stale), as in
  Consul; errors go to stderr with Consul's prefixes and exit 1.
- `members` exits 2 when no member matches (Consul does, and scripts rely on it).
- The table formatting is pure (`members_rows`) so it is unit-tested without
  an agent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from proconsul.cli.api_client import (
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    columnize,
    command,
    parse_args,
)
from proconsul.config.flags import FlagSet

# Serf member status numbers as the agent reports them.
MEMBER_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}


@command
def reload(argv: list[str]) -> int:
    flags = FlagSet("reload")
    add_api_flags(flags)
    values, _ = parse_args(flags, argv, max_args=0)
    try:
        client_from(values).request("PUT", "/v1/agent/reload")
    except ApiError as exc:
        raise CliError(f"Error reloading: {exc}") from None
    print("Configuration reload triggered")
    return 0


@command
def leave(argv: list[str]) -> int:
    flags = FlagSet("leave")
    add_api_flags(flags)
    values, _ = parse_args(flags, argv, max_args=0)
    try:
        client_from(values).request("PUT", "/v1/agent/leave")
    except ApiError as exc:
        raise CliError(f"Error leaving: {exc}") from None
    print("Graceful leave complete")
    return 0


@command
def members(argv: list[str]) -> int:
    flags = FlagSet("members")
    add_api_flags(flags)
    flags.boolean("detailed", False, "Show every gossip tag of each member.")
    flags.string("status", ".*", "Only show members whose status matches this regexp.")
    flags.boolean("wan", False, "List the WAN gossip pool (servers of every datacenter).")
    flags.string("segment", None, "Only list members of this network segment.")
    flags.string("filter", None, "Filter expression, as for the /v1/agent/members API.")
    values, _ = parse_args(flags, argv, max_args=0)
    try:
        status_re = re.compile(values["status"])
    except re.error as exc:
        raise CliError(f"Failed to compile status regexp: {exc}") from None
    params: list[tuple[str, str]] = []
    if values["wan"]:
        params.append(("wan", "1"))
    if values["segment"]:
        params.append(("segment", values["segment"]))
    if values["filter"]:
        params.append(("filter", values["filter"]))
    try:
        found = client_from(values).get_json("/v1/agent/members", params) or []
    except ApiError as exc:
        raise CliError(f"Error retrieving members: {exc}") from None
    chosen = [m for m in found if status_re.search(member_status(m))]
    if not chosen:
        return 2
    print(columnize(members_rows(chosen, detailed=values["detailed"])))
    return 0


# --------------------------------------------------------------------------- formatting


def member_status(member: Mapping[str, Any]) -> str:
    return MEMBER_STATUS.get(int(member.get("Status") or 0), "unknown")


def member_address(member: Mapping[str, Any]) -> str:
    addr = str(member.get("Addr") or "")
    host = f"[{addr}]" if ":" in addr else addr
    return f"{host}:{member.get('Port', 0)}"


def member_type(tags: Mapping[str, str]) -> str:
    role = tags.get("role")
    if role == "consul":
        return "server"
    if role == "node":
        return "client"
    return "unknown"


def _sort_key(member: Mapping[str, Any]) -> tuple[int, str]:
    is_server = (member.get("Tags") or {}).get("role") == "consul"
    return (0 if is_server else 1, str(member.get("Name", "")))


def members_rows(found: Sequence[Mapping[str, Any]], *, detailed: bool) -> list[list[str]]:
    """Header plus one row per member, servers first and then by name."""
    ordered = sorted(found, key=_sort_key)
    if detailed:
        rows = [["Node", "Address", "Status", "Tags"]]
        for m in ordered:
            tags = m.get("Tags") or {}
            tag_text = ",".join(f"{k}={tags[k]}" for k in sorted(tags))
            rows.append([str(m.get("Name", "")), member_address(m), member_status(m), tag_text])
        return rows
    rows = [
        ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]
    ]
    for m in ordered:
        tags = m.get("Tags") or {}
        kind = member_type(tags)
        # Servers serve every segment; clients belong to one (named, or the default).
        segment = "<all>" if kind == "server" else (tags.get("segment") or "<default>")
        rows.append(
            [
                str(m.get("Name", "")),
                member_address(m),
                member_status(m),
                kind,
                str(tags.get("build", "")).split(":", 1)[0],
                str(tags.get("vsn", "")),
                str(tags.get("dc", "")),
                str(tags.get("ap") or "default"),
                segment,
            ]
        )
    return rows
