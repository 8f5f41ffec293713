"""Text output of `proconsul acl ...`: tokens, policies and roles as Consul prints them.

Job: pure functions from the API's JSON (dicts) to Consul's "pretty" text, and
the `-format=json` rendering.

Rules:
- Token labels are padded to 18 columns, policy and role labels to 14, as in
  Consul's formatters; lines are printed even when the value is empty.
- With `meta` (the verbs' `-meta` flag) the Hash (as hex, like Go's `%x` of
  the bytes the API sends as base64), Create Index and Modify Index lines
  follow the description (tokens: the times and `Legacy:`).
- Times print like Go's `time.Time` (`2021-12-24 02:43:28.638440363 +0000 UTC`):
  fractional seconds with trailing zeros trimmed.
- Token lists are blank-line-separated blocks and add `Legacy:`; policy and
  role lists are `<Name>:` blocks with nothing between them, as in Consul.
- Like Go's formatters, token blocks end in a newline and the caller prints
  the text with one more (Go's `Ui.Info`), so each output ends in a blank line;
  a policy's rules are printed as stored.
- A service identity without datacenters prints `(Datacenters: all)`.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

FORMATS = ("pretty", "json")


def go_time(text: str | None) -> str:
    """An RFC 3339 time from the API as Go's `%v` prints a UTC time."""
    if not text:
        return "0001-01-01 00:00:00 +0000 UTC"
    try:
        when = datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return text
    out = when.strftime("%Y-%m-%d %H:%M:%S")
    if when.microsecond:
        out += ("." + f"{when.microsecond:06d}").rstrip("0")
    return out + " +0000 UTC"


def as_json(value: Any) -> str:
    """`-format=json`: Go's MarshalIndent with four spaces."""
    return json.dumps(value, indent=4)


def _label(name: str, width: int) -> str:
    return f"{name}:".ljust(width)


def hash_hex(value: Any) -> str:
    """The API's base64 `Hash` as Go's `%x` prints the bytes."""
    if not value:
        return ""
    try:
        return base64.b64decode(str(value), validate=True).hex()
    except (binascii.Error, ValueError):
        return str(value)


def _meta(row: dict[str, Any], width: int, indent: str = "") -> list[str]:
    return [
        f"{indent}{_label('Hash', width)}{hash_hex(row.get('Hash'))}",
        f"{indent}{_label('Create Index', width)}{row.get('CreateIndex', 0)}",
        f"{indent}{_label('Modify Index', width)}{row.get('ModifyIndex', 0)}",
    ]


def _links(title: str, links: list[dict[str, Any]] | None, indent: str = "") -> list[str]:
    if not links:
        return []
    lines = [f"{indent}{title}:"]
    lines += [f"{indent}   {link.get('ID', '')} - {link.get('Name', '')}" for link in links]
    return lines


def _identities(row: dict[str, Any], indent: str = "") -> list[str]:
    lines: list[str] = []
    services = row.get("ServiceIdentities") or []
    if services:
        lines.append(f"{indent}Service Identities:")
        for service in services:
            dcs = ", ".join(service.get("Datacenters") or []) or "all"
            lines.append(f"{indent}   {service.get('ServiceName', '')} (Datacenters: {dcs})")
    nodes = row.get("NodeIdentities") or []
    if nodes:
        lines.append(f"{indent}Node Identities:")
        for node in nodes:
            lines.append(
                f"{indent}   {node.get('NodeName', '')} (Datacenter: {node.get('Datacenter', '')})"
            )
    return lines


def format_token(token: dict[str, Any], *, legacy: bool = False, meta: bool = False) -> str:
    """One token; `legacy` adds the `Legacy:` line that `token list` shows."""
    w = 18
    lines = [
        f"{_label('AccessorID', w)}{token.get('AccessorID', '')}",
        f"{_label('SecretID', w)}{token.get('SecretID', '')}",
        f"{_label('Description', w)}{token.get('Description', '')}",
        f"{_label('Local', w)}{str(bool(token.get('Local'))).lower()}",
    ]
    if token.get("AuthMethod"):
        lines.append(f"{_label('Auth Method', w)}{token['AuthMethod']}")
    lines.append(f"{_label('Create Time', w)}{go_time(token.get('CreateTime'))}")
    if token.get("ExpirationTime"):
        lines.append(f"{_label('Expiration Time', w)}{go_time(token['ExpirationTime'])}")
    if legacy:
        lines.append(f"{_label('Legacy', w)}{str(bool(token.get('Legacy'))).lower()}")
    if meta:
        lines += _meta(token, w)
    lines += _links("Policies", token.get("Policies"))
    lines += _links("Roles", token.get("Roles"))
    lines += _identities(token)
    return "\n".join(lines) + "\n"


def format_token_list(tokens: list[dict[str, Any]], *, meta: bool = False) -> str:
    return "\n".join(format_token(t, legacy=True, meta=meta) for t in tokens)


def format_policy(policy: dict[str, Any], *, meta: bool = False) -> str:
    w = 14
    lines = [
        f"{_label('ID', w)}{policy.get('ID', '')}",
        f"{_label('Name', w)}{policy.get('Name', '')}",
        f"{_label('Description', w)}{policy.get('Description', '')}",
        f"{_label('Datacenters', w)}{', '.join(policy.get('Datacenters') or [])}",
    ]
    if meta:
        lines += _meta(policy, w)
    lines.append("Rules:")
    return "\n".join(lines) + "\n" + str(policy.get("Rules", ""))


def format_policy_list(policies: list[dict[str, Any]], *, meta: bool = False) -> str:
    w = 14
    blocks = []
    for policy in policies:
        lines = [
            f"{policy.get('Name', '')}:",
            f"   {_label('ID', w)}{policy.get('ID', '')}",
            f"   {_label('Description', w)}{policy.get('Description', '')}",
            f"   {_label('Datacenters', w)}{', '.join(policy.get('Datacenters') or [])}",
        ]
        if meta:
            lines += _meta(policy, w, "   ")
        blocks.append("\n".join(lines) + "\n")
    return "".join(blocks)


def format_role(role: dict[str, Any], *, meta: bool = False) -> str:
    w = 14
    lines = [
        f"{_label('ID', w)}{role.get('ID', '')}",
        f"{_label('Name', w)}{role.get('Name', '')}",
        f"{_label('Description', w)}{role.get('Description', '')}",
    ]
    if meta:
        lines += _meta(role, w)
    lines += _links("Policies", role.get("Policies"))
    lines += _identities(role)
    return "\n".join(lines) + "\n"


def format_role_list(roles: list[dict[str, Any]], *, meta: bool = False) -> str:
    w = 14
    blocks = []
    for role in roles:
        lines = [
            f"{role.get('Name', '')}:",
            f"   {_label('ID', w)}{role.get('ID', '')}",
            f"   {_label('Description', w)}{role.get('Description', '')}",
        ]
        if meta:
            lines += _meta(role, w, "   ")
        lines += _links("Policies", role.get("Policies"), "   ")
        lines += _identities(role, "   ")
        blocks.append("\n".join(lines) + "\n")
    return "".join(blocks)
