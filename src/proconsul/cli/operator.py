"""`proconsul operator raft list-peers|remove-peer|transfer-leader` and
`operator autopilot get-config|set-config|state`: clients of the HTTP API.

Output as Consul's: list-peers prints a column table (Node, ID, Address,
State, Voter, RaftProtocol) of `/v1/operator/raft/configuration`;
remove-peer sends `DELETE /v1/operator/raft/peer` with `?id=` or `?address=`
and says which peer it removed; get-config prints
`/v1/operator/autopilot/configuration` as `Key = value` lines; set-config
reads it, changes what its flags name and writes it back with `?cas=` on the
ModifyIndex read (`Configuration updated!`, or exit 1 when another writer got
there first); transfer-leader prints `Success`; state prints
`/v1/operator/autopilot/state` as labelled lines (servers sorted by ID) or,
with `-format=json`, as indented JSON.
"""

from __future__ import annotations

import json
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


@command
def list_peers(argv: list[str]) -> int:
    flags = FlagSet("operator raft list-peers")
    add_api_flags(flags)
    flags.boolean("stale", False, "Read the configuration from any server, not only the leader.")
    values, _ = parse_args(flags, argv, max_args=0)
    params = [("stale", "")] if values["stale"] else []
    try:
        found = client_from(values).get_json("/v1/operator/raft/configuration", params)
    except ApiError as exc:
        raise CliError(f"Error getting peers: {exc}") from None
    rows = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]]
    for server in found.get("Servers") or []:
        rows.append(
            [
                str(server.get("Node", "")),
                str(server.get("ID", "")),
                str(server.get("Address", "")),
                "leader" if server.get("Leader") else "follower",
                "true" if server.get("Voter") else "false",
                str(server.get("ProtocolVersion", "")),
            ]
        )
    print(columnize(rows))
    return 0


@command
def remove_peer(argv: list[str]) -> int:
    flags = FlagSet("operator raft remove-peer")
    add_api_flags(flags)
    flags.string("address", "", "The address (IP:port) of the server to remove.")
    flags.string("id", "", "The ID of the server to remove.")
    values, _ = parse_args(flags, argv, max_args=0)
    address, server_id = values["address"], values["id"]
    if bool(address) == bool(server_id):
        raise CliError("Error removing peer: Exactly one of -address or -id must be given")
    param = ("id", server_id) if server_id else ("address", address)
    try:
        client_from(values).request("DELETE", "/v1/operator/raft/peer", [param])
    except ApiError as exc:
        raise CliError(f"Error removing peer: {exc}") from None
    print(f'Removed peer with {param[0]} "{param[1]}"')
    return 0


# Consul's text, its spelling included.
_TRANSFER_FAILED = "Error transfering leadership: Failed to transfer leadership"


@command
def transfer_leader(argv: list[str]) -> int:
    flags = FlagSet("operator raft transfer-leader")
    add_api_flags(flags, server_options=False)
    flags.string("id", "", "The ID of the node to transfer leadership to.")
    values, _ = parse_args(flags, argv, max_args=0)
    params = [("id", values["id"])] if values["id"] else []
    try:
        found = (
            client_from(values).request("POST", "/v1/operator/raft/transfer-leader", params).json()
        )
    except ApiError as exc:
        raise CliError(
            f"Error transfering leadership: Failed to transfer leadership {exc}"
        ) from None
    if not (isinstance(found, dict) and found.get("Success")):
        raise CliError("Error transfering leadership: Failed to transfer leadership")
    print("Success")
    return 0


@command
def autopilot_get_config(argv: list[str]) -> int:
    flags = FlagSet("operator autopilot get-config")
    add_api_flags(flags)
    values, _ = parse_args(flags, argv, max_args=0)
    try:
        found = client_from(values).get_json("/v1/operator/autopilot/configuration")
    except ApiError as exc:
        raise CliError(f"Error querying Autopilot configuration: {exc}") from None
    print(f"CleanupDeadServers = {_go_bool(found.get('CleanupDeadServers'))}")
    print(f"LastContactThreshold = {found.get('LastContactThreshold', '')}")
    print(f"MaxTrailingLogs = {found.get('MaxTrailingLogs', 0)}")
    print(f"MinQuorum = {found.get('MinQuorum', 0)}")
    print(f"ServerStabilizationTime = {found.get('ServerStabilizationTime', '')}")
    print(f'RedundancyZoneTag = "{found.get("RedundancyZoneTag", "")}"')
    print(f"DisableUpgradeMigration = {_go_bool(found.get('DisableUpgradeMigration'))}")
    print(f'UpgradeVersionTag = "{found.get("UpgradeVersionTag", "")}"')
    return 0


@command
def autopilot_set_config(argv: list[str]) -> int:
    flags = FlagSet("operator autopilot set-config")
    add_api_flags(flags, server_options=False)
    flags.boolean("cleanup-dead-servers", False, "Remove dead servers when a new one joins.")
    flags.string("last-contact-threshold", None, "Longest time a server may go without contact.")
    flags.integer("max-trailing-logs", None, "Most log entries a healthy server may trail by.")
    flags.integer("min-quorum", None, "Fewest servers autopilot prunes down to.")
    flags.string("server-stabilization-time", None, "How long a new server must be healthy.")
    flags.string("redundancy-zone-tag", None, "Node meta key naming a server's zone.")
    flags.boolean("disable-upgrade-migration", False, "Do not migrate to upgraded servers.")
    flags.string("upgrade-version-tag", None, "Node meta key naming a server's version.")
    values, _ = parse_args(flags, argv, max_args=0)
    given: set[str] = values["set"]
    client = client_from(values)
    try:
        config = client.get_json("/v1/operator/autopilot/configuration")
    except ApiError as exc:
        raise CliError(f"Error querying Autopilot configuration: {exc}") from None
    for flag, key in _SET_CONFIG_FLAGS.items():
        if flag in given:
            config[key] = values[flag]
    cas = str(config.get("ModifyIndex", 0))
    try:
        written = client.put("/v1/operator/autopilot/configuration", [("cas", cas)], config)
    except ApiError as exc:
        raise CliError(f"Error setting Autopilot configuration: {exc}") from None
    if not written:
        raise CliError("Configuration could not be atomically updated, please try again")
    print("Configuration updated!")
    return 0


# set-config's flags and the configuration keys they set.
_SET_CONFIG_FLAGS = {
    "cleanup-dead-servers": "CleanupDeadServers",
    "last-contact-threshold": "LastContactThreshold",
    "max-trailing-logs": "MaxTrailingLogs",
    "min-quorum": "MinQuorum",
    "server-stabilization-time": "ServerStabilizationTime",
    "redundancy-zone-tag": "RedundancyZoneTag",
    "disable-upgrade-migration": "DisableUpgradeMigration",
    "upgrade-version-tag": "UpgradeVersionTag",
}


def _go_bool(value: object) -> str:
    return "true" if value else "false"


@command
def autopilot_state(argv: list[str]) -> int:
    flags = FlagSet("operator autopilot state")
    add_api_flags(flags)
    flags.string("format", "pretty", "Output format: pretty or json.")
    values, _ = parse_args(flags, argv, max_args=0)
    if values["format"] not in ("pretty", "json"):
        raise CliError(f"Error: Unknown format: {values['format']}")
    try:
        found = client_from(values).get_json("/v1/operator/autopilot/state")
    except ApiError as exc:
        raise CliError(f"Error querying Autopilot state: {exc}") from None
    if values["format"] == "json":
        print(json.dumps(found, indent=4))
    else:
        print(_pretty_state(found), end="")
    return 0


def _pretty_state(state: dict[str, Any]) -> str:
    lines = [
        f"Healthy:                      {_go_bool(state.get('Healthy'))}",
        f"Failure Tolerance:            {state.get('FailureTolerance', 0)}",
        f"Optimistic Failure Tolerance: {state.get('OptimisticFailureTolerance', 0)}",
        f"Leader:                       {state.get('Leader', '')}",
        "Voters:",
        *(f"   {voter}" for voter in state.get("Voters") or []),
        "Servers:",
    ]
    servers: dict[str, dict[str, Any]] = state.get("Servers") or {}
    for server_id in sorted(servers):
        server = servers[server_id]
        lines += [
            f"   {server.get('ID', server_id)}",
            f"      Name:            {server.get('Name', '')}",
            f"      Address:         {server.get('Address', '')}",
            f"      Version:         {server.get('Version', '')}",
            f"      Status:          {server.get('Status', '')}",
            f"      Node Type:       {server.get('NodeType', '')}",
            f"      Node Status:     {server.get('NodeStatus', '')}",
            f"      Healthy:         {_go_bool(server.get('Healthy'))}",
            f"      Last Contact:    {server.get('LastContact', '')}",
            f"      Last Term:       {server.get('LastTerm', 0)}",
            f"      Last Index:      {server.get('LastIndex', 0)}",
        ]
        meta: dict[str, str] = server.get("Meta") or {}
        if meta:
            lines.append("      Meta")
            lines += [f"         {json.dumps(k)}: {json.dumps(meta[k])}" for k in sorted(meta)]
    return "\n".join(lines) + "\n"
