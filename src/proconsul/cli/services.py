"""`proconsul services register|deregister`: manage services on one agent.

Job: register services from definition files (HCL or JSON, holding a
`service {}` block or a `services [...]` list, as in agent config files) or
from flags (`-name -id -address -port -socket -tag -meta`), through
`/v1/agent/service/register`; deregister by `-id` or by the same files.
Prints `Registered service: <name>` / `Deregistered service: <id>`.

Rules:
- Files are read with pyhcl, which parses HCL1 and JSON alike; keys are
  normalised to snake_case, then sent in Consul's PascalCase API spelling.
  User data (meta, tagged addresses, proxy config) keeps its own keys.
- Service flags and file arguments are exclusive, as in Consul.
- Errors go to stderr with Consul's prefixes, exit 1; the first failure stops.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

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
from proconsul.structs.naming import OPAQUE_KEYS, pascal, snake_keys

_SERVICE_FLAGS = ("name", "id", "address", "port", "socket", "tag", "meta")


@command
def register(argv: list[str]) -> int:
    flags = FlagSet("services register")
    add_api_flags(flags)
    flags.string("name", None, "Name of the service to register.")
    flags.string("id", None, "ID of the service; defaults to -name.")
    flags.string("address", None, "Address of the service; defaults to the node's.")
    flags.integer("port", None, "Port of the service.")
    flags.string("socket", None, "Unix socket of the service (instead of address and port).")
    flags.repeated("tag", "Tag for the service (repeatable).")
    flags.mapping("meta", "Metadata key=value for the service (repeatable).")
    values, files = parse_args(flags, argv, max_args=sys.maxsize)
    if files:
        _reject_service_flags(values)
        definitions = [svc for path in files for svc in load_service_file(path)]
    else:
        definitions = [_definition_from_flags(values)]
    client = client_from(values)
    for definition in definitions:
        body = pascal_keys(definition)
        name = str(definition.get("name", ""))
        try:
            client.put("/v1/agent/service/register", body=body)
        except ApiError as exc:
            raise CliError(f'Error registering service "{name}": {exc}') from None
        print(f"Registered service: {name}")
    return 0


@command
def deregister(argv: list[str]) -> int:
    flags = FlagSet("services deregister")
    add_api_flags(flags)
    flags.string("id", None, "ID of the service to deregister.")
    values, files = parse_args(flags, argv, max_args=sys.maxsize)
    if files and values["id"]:
        raise CliError("Error! -id cannot be used together with file arguments")
    if files:
        ids = [service_id(svc) for path in files for svc in load_service_file(path)]
    elif values["id"]:
        ids = [values["id"]]
    else:
        raise CliError("Error! Missing -id flag or service definition file argument")
    client = client_from(values)
    for sid in ids:
        try:
            client.request("PUT", f"/v1/agent/service/deregister/{quote_path(sid)}")
        except ApiError as exc:
            raise CliError(f'Error deregistering service "{sid}": {exc}') from None
        print(f"Deregistered service: {sid}")
    return 0


# --------------------------------------------------------------------------- definitions


def _reject_service_flags(values: Mapping[str, Any]) -> None:
    given = [f"-{name}" for name in _SERVICE_FLAGS if name in values["set"]]
    if given:
        raise CliError(
            f"Error! Service flags ({', '.join(given)}) cannot be used together with file arguments"
        )


def _definition_from_flags(values: Mapping[str, Any]) -> dict[str, Any]:
    if not values["name"]:
        raise CliError("Error! Missing -name flag or service definition file argument")
    definition: dict[str, Any] = {"name": values["name"]}
    if values["id"]:
        definition["id"] = values["id"]
    if values["address"]:
        definition["address"] = values["address"]
    if values["port"] is not None:
        definition["port"] = values["port"]
    if values["socket"]:
        definition["socket_path"] = values["socket"]
    if values["tag"]:
        definition["tags"] = list(values["tag"])
    if values["meta"]:
        definition["meta"] = dict(values["meta"])
    return definition


def load_service_file(path: str) -> list[dict[str, Any]]:
    """The service definitions in one HCL or JSON file, with snake_case keys."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise CliError(f"Error! Failed to read file {path}: {exc.strerror or exc}") from None
    return parse_service_definitions(text, path)


def parse_service_definitions(text: str, source: str) -> list[dict[str, Any]]:
    """Find `service {}` blocks and `services [...]` lists in HCL or JSON text."""
    import hcl  # imported here: only these verbs pay for the parser

    try:
        parsed = hcl.loads(text)
    # pyhcl reports bad input with several exception types; all mean the same.
    except Exception as exc:
        raise CliError(f"Error! Failed to decode {source}: {exc}") from None
    parsed = snake_keys(parsed) if isinstance(parsed, dict) else {}
    found: list[dict[str, Any]] = []
    for key in ("service", "services"):
        block = parsed.get(key)
        blocks = block if isinstance(block, list) else [block] if block is not None else []
        for item in blocks:
            if not isinstance(item, dict):
                raise CliError(f"Error! {source}: `{key}` must hold service definitions")
            found.append(item)
    if not found:
        raise CliError(f"Error! No service definitions found in {source}")
    for definition in found:
        if not definition.get("name"):
            raise CliError(f"Error! {source}: a service definition has no name")
    return found


def service_id(definition: Mapping[str, Any]) -> str:
    """A definition's service ID: `id`, else its name (the agent's default)."""
    return str(definition.get("id") or definition.get("name") or "")


def pascal_keys(obj: Any) -> Any:
    """snake_case keys -> Consul's PascalCase API keys, leaving user data alone."""
    if isinstance(obj, dict):
        return {
            pascal(key) if isinstance(key, str) else key: (
                value if key in OPAQUE_KEYS else pascal_keys(value)
            )
            for key, value in obj.items()
        }
    if isinstance(obj, list):
        return [pascal_keys(item) for item in obj]
    return obj
