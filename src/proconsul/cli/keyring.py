"""`proconsul keyring`: list, install, use and remove gossip encryption keys pool-wide.

Job: exactly one of `-list`, `-list-primary`, `-install KEY`, `-use KEY`,
`-remove KEY` against `/v1/operator/keyring`, printed as Consul prints it.

Rules (Consul's output):
- Info lines start with `==> ` (`==> Gathering installed encryption keys...`,
  `==> Installing new gossip encryption key...`, ...).
- `-list` prints, per pool, a blank line, `dc1 (LAN):` (`WAN:` for the WAN
  pool), any per-node messages as `  ===> node: message`, then one line per
  key: `  <key> [n/total]`, n being how many members hold it.
- Errors print `error: <cause>` on stderr and exit 1, also when any member
  failed. A key that is not base64 of 16, 24 or 32 bytes is refused before
  anything is sent. Removing the primary key is refused by every member with
  Consul's message, which reaches the user through the error.
- The key given on the command line is never echoed back.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

from proconsul.cli.api_client import (
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    command,
    parse_args,
)
from proconsul.config.flags import FlagSet

INFO = "==> "
# AES-128/192/256, as the agent's keyring accepts (checked here without importing it,
# so the CLI starts fast).
KEY_SIZES = (16, 24, 32)


def pool_name(response: Mapping[str, Any]) -> str:
    name = "WAN" if response.get("WAN") else f"{response.get('Datacenter', '')} (LAN)"
    segment = response.get("Segment") or ""
    partition = response.get("Partition") or ""
    if segment:
        name += f" [{segment}]"
    elif partition and partition != "default":
        name += f" [partition: {partition}]"
    return name + ":"


def format_response(response: Mapping[str, Any], keys: Mapping[str, int]) -> str:
    """One pool's block: blank line, pool name, messages, keys (most held first)."""
    total = int(response.get("NumNodes") or 0)
    lines = ["", pool_name(response)]
    messages = response.get("Messages") or {}
    lines += [f"  ===> {node}: {text}" for node, text in sorted(messages.items())]
    ordered = sorted(keys.items(), key=lambda item: (-int(item[1]), item[0]))
    lines += [f"  {key} [{count}/{total}]" for key, count in ordered]
    return "\n".join(lines)


def format_list(responses: Sequence[Mapping[str, Any]], primary: bool) -> str:
    field = "PrimaryKeys" if primary else "Keys"
    return "\n".join(format_response(r, r.get(field) or {}) for r in responses)


def key_problem(text: str) -> str | None:
    """Why `text` is not a gossip key, in the agent's words; None if it is one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "Invalid key: not valid base64"
    if len(raw) not in KEY_SIZES:
        return f"Invalid key: key size must be 16, 24 or 32 bytes, got {len(raw)}"
    return None


def _check_key(text: str) -> None:
    problem = key_problem(text)
    if problem is not None:
        raise CliError(f"error: {problem}")


@command
def run(argv: list[str]) -> int:
    flags = FlagSet("keyring")
    add_api_flags(flags)
    flags.string("install", "", "Install a new encryption key on every member.")
    flags.string("use", "", "Change the primary encryption key (it must be installed).")
    flags.string("remove", "", "Remove a key from every member (never the primary).")
    flags.boolean("list", False, "List all keys currently in use within the cluster.")
    flags.boolean("list-primary", False, "List the primary keys in use within the cluster.")
    flags.integer("relay-factor", 0, "Relay each reply through this many other members (0-5).")
    flags.boolean("local-only", False, "Only query the local datacenter (list only).")
    values, _ = parse_args(flags, argv, max_args=0)
    actions = [a for a in ("list", "list-primary") if values[a]]
    actions += [a for a in ("install", "use", "remove") if values[a]]
    if not actions:
        raise CliError(flags.usage())
    if len(actions) > 1:
        raise CliError("Only a single action is allowed")
    relay = values["relay-factor"] or 0
    if not 0 <= relay <= 5:
        raise CliError("Error parsing relay factor: Relay factor must be in range: [0, 5]")
    if values["local-only"] and not values["list"]:
        raise CliError("Error validating local-only: local-only can only be set for list requests")
    action = actions[0]
    params: list[tuple[str, str]] = [("relay-factor", str(relay))] if relay else []
    client = client_from(values)
    if action in ("list", "list-primary"):
        primary = action == "list-primary"
        what = "primary encryption keys" if primary else "encryption keys"
        print(f"{INFO}Gathering installed {what}...", flush=True)
        if values["local-only"]:
            params.append(("local-only", "1"))
        try:
            responses = client.get_json("/v1/operator/keyring", params) or []
        except ApiError as exc:
            raise CliError(f"error: {exc}") from None
        print(format_list(responses, primary))
        return 0
    key = values[action]
    _check_key(key)
    method, text = {
        "install": ("POST", "Installing new gossip encryption key..."),
        "use": ("PUT", "Changing primary gossip encryption key..."),
        "remove": ("DELETE", "Removing gossip encryption key..."),
    }[action]
    print(f"{INFO}{text}", flush=True)
    body = json.dumps({"Key": key}).encode()
    try:
        client.request(method, "/v1/operator/keyring", params, body)
    except ApiError as exc:
        raise CliError(f"error: {exc}") from None
    return 0
