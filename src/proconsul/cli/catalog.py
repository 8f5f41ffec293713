"""`proconsul catalog datacenters|nodes|services`: read the service catalog.

Job: query `/v1/catalog/...` and print Consul's text: one datacenter per
line; a `Node  ID  Address  DC` table (IDs cut to 8 characters unless
`-detailed`, which adds `TaggedAddresses` and `Meta`); service names one per
line, sorted, with a comma-joined tags column under `-tags`.

Rules:
- Text and exit codes match Consul's; errors go to stderr, exit 1.
- `-service` filters nodes through `/v1/catalog/service/:name`; `-node` lists
  one node's services through `/v1/catalog/node-services/:node`.
- Row building is pure (`nodes_rows`, `services_rows`) and unit-tested.
"""

from __future__ import annotations

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
    quote_path,
)
from proconsul.config.flags import FlagSet


def _node_meta_params(meta: Mapping[str, str]) -> list[tuple[str, str]]:
    # The API spells a node-meta filter `node-meta=key:value`, once per pair.
    return [("node-meta", f"{key}:{value}") for key, value in meta.items()]


@command
def datacenters(argv: list[str]) -> int:
    flags = FlagSet("catalog datacenters")
    add_api_flags(flags)
    values, _ = parse_args(flags, argv, max_args=0)
    try:
        names = client_from(values).get_json("/v1/catalog/datacenters") or []
    except ApiError as exc:
        raise CliError(f"Error listing datacenters: {exc}") from None
    if not names:
        raise CliError("No datacenters found")
    for name in names:
        print(name)
    return 0


@command
def nodes(argv: list[str]) -> int:
    flags = FlagSet("catalog nodes")
    add_api_flags(flags)
    flags.boolean("detailed", False, "Show full node IDs, tagged addresses and metadata.")
    flags.string("near", None, "Sort by estimated round-trip time from this node.")
    flags.mapping("node-meta", "Only nodes with this key=value metadata (repeatable).")
    flags.string("service", None, "Only nodes providing this service (id or name).")
    flags.string("filter", None, "Filter expression, as for the /v1/catalog/nodes API.")
    values, _ = parse_args(flags, argv, max_args=0)
    params = _node_meta_params(values["node-meta"])
    if values["near"]:
        params.append(("near", values["near"]))
    if values["filter"]:
        params.append(("filter", values["filter"]))
    client = client_from(values)
    try:
        if values["service"]:
            path = f"/v1/catalog/service/{quote_path(values['service'])}"
            found = service_nodes(client.get_json(path, params) or [])
        else:
            found = client.get_json("/v1/catalog/nodes", params) or []
    except ApiError as exc:
        raise CliError(f"Error listing nodes: {exc}") from None
    if not found:
        raise CliError("No nodes match the given query - try expanding your search.", code=0)
    print(columnize(nodes_rows(found, detailed=values["detailed"])))
    return 0


@command
def services(argv: list[str]) -> int:
    flags = FlagSet("catalog services")
    add_api_flags(flags)
    flags.string("node", None, "List the services of this node (id or name).")
    flags.mapping("node-meta", "Only services on nodes with this key=value metadata.")
    flags.boolean("tags", False, "Show each service's tags, comma-separated.")
    flags.string("filter", None, "Filter expression (with -node), as for the API.")
    values, _ = parse_args(flags, argv, max_args=0)
    client = client_from(values)
    params = _node_meta_params(values["node-meta"])
    try:
        if values["node"]:
            if values["filter"]:
                params.append(("filter", values["filter"]))
            path = f"/v1/catalog/node-services/{quote_path(values['node'])}"
            catalog = node_services(client.get_json(path, params, allow_404=True))
        else:
            catalog = client.get_json("/v1/catalog/services", params) or {}
    except ApiError as exc:
        raise CliError(f"Error listing services: {exc}") from None
    if not catalog:
        raise CliError("No services match the given query - try expanding your search.", code=0)
    print(columnize(services_rows(catalog, tags=values["tags"])))
    return 0


# --------------------------------------------------------------------------- formatting


def service_nodes(instances: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Catalog service entries -> node records, one per node, in answer order."""
    seen: dict[str, dict[str, Any]] = {}
    for entry in instances:
        name = str(entry.get("Node", ""))
        seen.setdefault(
            name,
            {
                "ID": entry.get("ID", ""),
                "Node": name,
                "Address": entry.get("Address", ""),
                "Datacenter": entry.get("Datacenter", ""),
                "TaggedAddresses": entry.get("TaggedAddresses") or {},
                "Meta": entry.get("NodeMeta") or {},
            },
        )
    return list(seen.values())


def node_services(answer: Any) -> dict[str, list[str]]:
    """A node-services answer (`{Node, Services: [...]}`) -> {name: tags}."""
    if not answer:
        return {}
    listed = answer.get("Services") or []
    # `/v1/catalog/node/:node` returns a map by ID; accept it too.
    entries = listed.values() if isinstance(listed, dict) else listed
    catalog: dict[str, list[str]] = {}
    for entry in entries:
        tags = catalog.setdefault(str(entry.get("Service", "")), [])
        tags.extend(tag for tag in entry.get("Tags") or [] if tag not in tags)
    return catalog


def _pairs(mapping: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{key}={(mapping or {})[key]}" for key in sorted(mapping or {}))


def nodes_rows(found: Sequence[Mapping[str, Any]], *, detailed: bool) -> list[list[str]]:
    """Header plus one row per node, in the order the agent gave them."""
    if detailed:
        rows = [["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"]]
    else:
        rows = [["Node", "ID", "Address", "DC"]]
    for node in found:
        node_id = str(node.get("ID") or "")
        row = [
            str(node.get("Node", "")),
            node_id if detailed else node_id[:8],
            str(node.get("Address", "")),
            str(node.get("Datacenter", "")),
        ]
        if detailed:
            row += [_pairs(node.get("TaggedAddresses")), _pairs(node.get("Meta"))]
        rows.append(row)
    return rows


def services_rows(catalog: Mapping[str, Sequence[str]], *, tags: bool) -> list[list[str]]:
    """One row per service name, sorted; with `tags`, a second column of sorted tags."""
    if tags:
        return [[name, ",".join(sorted(catalog[name] or []))] for name in sorted(catalog)]
    return [[name] for name in sorted(catalog)]
