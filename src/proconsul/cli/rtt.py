"""`proconsul rtt node1 [node2]`: the estimated round trip between two nodes.

Job: read `/v1/coordinate/nodes` (and, with one node named, the agent's own
name from `/v1/agent/self`) and print Consul's line:
`Estimated node1 <-> node2 rtt: 0.610 ms (using LAN coordinates)`.

Rules (Consul's texts, exit 1 on any failure): `One or two node names must be
specified`; `Could not find a coordinate for node "x"`; `Coordinates are not
compatible`. `-wan` is refused: there is one datacenter and no WAN pool.
The distance is Serf's (structs/coordinate.py), truncated to whole
nanoseconds as Go's Duration is, then shown in ms with three decimals.
"""

from __future__ import annotations

import msgspec

from proconsul.cli.api_client import (
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    command,
    parse_args,
)
from proconsul.config.flags import FlagSet
from proconsul.structs.coordinate import Coordinate, CoordinateEntry


def _find(entries: list[CoordinateEntry], node: str) -> Coordinate:
    for entry in entries:
        if entry.node == node:
            return entry.coord
    raise CliError(f'Could not find a coordinate for node "{node}"')


def format_rtt(a: str, b: str, first: Coordinate, second: Coordinate) -> str:
    nanoseconds = int(first.distance_s(second) * 1e9)
    return f"Estimated {a} <-> {b} rtt: {nanoseconds / 1e6:.3f} ms (using LAN coordinates)"


@command
def run(argv: list[str]) -> int:
    flags = FlagSet("rtt")
    add_api_flags(flags, server_options=False)
    flags.boolean("wan", False, "Use WAN coordinates instead of LAN coordinates.")
    values, nodes = parse_args(flags, argv, max_args=1 << 16)
    if not 1 <= len(nodes) <= 2:
        raise CliError(f"One or two node names must be specified\n\n{flags.usage()}")
    if values["wan"]:
        raise CliError("Error getting coordinates: no WAN coordinates (one datacenter)")
    client = client_from(values)
    if len(nodes) == 1:
        try:
            nodes.append(str(client.get_json("/v1/agent/self")["Config"]["NodeName"]))
        except (ApiError, KeyError, TypeError) as exc:
            raise CliError(f"Unable to look up agent info: {exc}") from None
    try:
        raw = client.get_json("/v1/coordinate/nodes")
        entries = msgspec.convert(raw or [], list[CoordinateEntry])
    except (ApiError, msgspec.ValidationError) as exc:
        raise CliError(f"Error getting coordinates: {exc}") from None
    first, second = _find(entries, nodes[0]), _find(entries, nodes[1])
    if not first.compatible(second):
        raise CliError("Coordinates are not compatible")
    print(format_rtt(nodes[0], nodes[1], first, second))
    return 0
