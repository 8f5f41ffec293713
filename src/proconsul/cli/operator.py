"""`proconsul operator raft list-peers` and `remove-peer`: clients of the HTTP API.

Output as Consul's: list-peers prints a column table (Node, ID, Address,
State, Voter, RaftProtocol) of `/v1/operator/raft/configuration`;
remove-peer sends `DELETE /v1/operator/raft/peer` with `?id=` or `?address=`
and says which peer it removed.
"""

from __future__ import annotations

from proconsul.cli.api_client import (
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    columnize,
    command,
    parse_args,
)
from proconsul.cli.flags import FlagSet


@command
def list_peers(argv: list[str]) -> int:
    flags = FlagSet("operator raft list-peers")
    add_api_flags(flags, server_options=False)
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
    add_api_flags(flags, server_options=False)
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
