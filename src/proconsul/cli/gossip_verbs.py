"""`proconsul join`, `force-leave` and `event`: verbs that act on the gossip pool.

Job: call `/v1/agent/join/:address`, `/v1/agent/force-leave/:node` and
`/v1/event/fire/:name` on one agent and print what Consul prints.

Rules (Consul's text and exit codes):
- `join ADDR…`: each address is tried; `Successfully joined cluster by
  contacting N nodes.`, or `Failed to join any nodes.` and exit 1. Errors per
  address go to stderr as `Error joining address 'X': …`.
- `force-leave NODE`: silent on success; `Error force leaving: …` and exit 1.
- `event -name NAME [payload]`: filters are checked as regular expressions
  before anything is sent; prints `Event ID: <id>`.
"""

from __future__ import annotations

import re
import sys

from proconsul.cli.api_client import (
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    command,
    parse_args,
    quote_path,
)
from proconsul.config.flags import FlagSet


@command
def join(argv: list[str]) -> int:
    flags = FlagSet("join")
    add_api_flags(flags)
    flags.boolean("wan", False, "Joins a server to another server in the WAN pool.")
    values, addresses = parse_args(flags, argv, max_args=1 << 16)
    if not addresses:
        raise CliError(f"At least one address to join must be specified.\n\n{flags.usage()}")
    client = client_from(values)
    params = [("wan", "1")] if values["wan"] else []
    joins = 0
    for address in addresses:
        try:
            client.request("PUT", "/v1/agent/join/" + quote_path(address), params)
        except ApiError as exc:
            print(f"Error joining address '{address}': {exc}", file=sys.stderr)
        else:
            joins += 1
    if joins == 0:
        raise CliError("Failed to join any nodes.")
    print(f"Successfully joined cluster by contacting {joins} nodes.")
    return 0


@command
def force_leave(argv: list[str]) -> int:
    flags = FlagSet("force-leave")
    add_api_flags(flags)
    flags.boolean("prune", False, "Remove agent completely from list of members.")
    flags.boolean("wan", False, "Exclusively leave the agent from the WAN serf pool.")
    values, nodes = parse_args(flags, argv, max_args=1 << 16)
    if len(nodes) != 1:
        raise CliError(f"A single node name must be specified to force leave.\n\n{flags.usage()}")
    params: list[tuple[str, str]] = []
    if values["prune"]:
        params.append(("prune", "1"))
    if values["wan"]:
        params.append(("wan", "1"))
    try:
        client_from(values).request("PUT", "/v1/agent/force-leave/" + quote_path(nodes[0]), params)
    except ApiError as exc:
        raise CliError(f"Error force leaving: {exc}") from None
    return 0


@command
def event(argv: list[str]) -> int:
    flags = FlagSet("event")
    add_api_flags(flags)
    flags.string("name", "", "Name of the event.")
    flags.string("node", "", "Regular expression to filter on node names.")
    flags.string("service", "", "Regular expression to filter on service instances.")
    flags.string("tag", "", "Regular expression to filter on service tags. Needs -service.")
    values, args = parse_args(flags, argv, max_args=1 << 16)
    name = values["name"] or ""
    if not name:
        raise CliError(f"Event name must be specified\n\n{flags.usage()}")
    for what in ("node", "service", "tag"):
        if values[what]:
            try:
                re.compile(values[what])
            except re.error as exc:
                raise CliError(f"Failed to compile {what} filter regexp: {exc}") from None
    if values["tag"] and not values["service"]:
        raise CliError("Cannot provide tag filter without service filter.")
    if len(args) > 1:
        raise CliError(f"Too many command line arguments.\n\n{flags.usage()}")
    payload = args[0].encode() if args else b""
    client = client_from(values)
    try:
        client.get_json("/v1/agent/self")
    except ApiError as exc:
        raise CliError(f"Error querying Consul agent: {exc}") from None
    params = [(what, values[what]) for what in ("node", "service", "tag") if values[what]]
    try:
        reply = client.request("PUT", "/v1/event/fire/" + quote_path(name), params, payload).json()
    except ApiError as exc:
        raise CliError(f"Error firing event: {exc}") from None
    event_id = reply.get("ID", "") if isinstance(reply, dict) else ""
    print(f"Event ID: {event_id}")
    return 0
