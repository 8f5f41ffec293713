"""`proconsul acl bootstrap` and `proconsul acl policy|role ...`.

Job: map each verb onto `/v1/acl/...` and print Consul's text
(acl_format.py) or, with `-format=json`, the API's JSON.

Rules:
- Errors go to stderr with Consul's prefix (`Failed ACL bootstrapping: `,
  `Failed to create new policy: `, ...) and exit 1.
- `-rules` takes literal text, `@file` or `-` (stdin).
- Policies and roles are named by `-id` or `-name`; deletes print
  `Policy "<id>" deleted successfully` (roles alike).
- An `-id` may be a unique prefix of one (`full_id`); as in Consul,
  `anonymous` names the anonymous token and `global-management` the built-in
  policy. A bad prefix is `Error determining <kind> ID: No such <kind> ID
  with prefix: X` or `...: Partial <kind> ID is not unique`.
- Quoted values in messages use Go's `%q` form (`"..."`).
- `-meta` adds the Hash, Create Index and Modify Index lines.
- `role update` merges into the role (names and IDs already linked are kept,
  a service identity replaces the one of the same name) unless `-no-merge`,
  which replaces the role with what the flags give.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from proconsul.cli.acl_format import (
    FORMATS,
    as_json,
    format_policy,
    format_policy_list,
    format_role,
    format_role_list,
    format_token,
)
from proconsul.cli.api_client import (
    ApiClient,
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    command,
    parse_args,
    quote_path,
)
from proconsul.config.flags import FlagSet
from proconsul.structs.acl import (
    ANONYMOUS_TOKEN_ACCESSOR_ID,
    GLOBAL_MANAGEMENT_POLICY_ID,
    parse_node_identity,
    parse_service_identity,
)


def acl_flags(name: str, *, meta: bool = True) -> FlagSet:
    flags = FlagSet(name)
    add_api_flags(flags)
    flags.string("format", "pretty", "Output format: pretty or json.")
    if meta:
        flags.boolean("meta", False, "Show the hash and Raft indexes of each entry.")
    return flags


def gq(text: str) -> str:
    """`text` quoted as Go's `%q` prints it (close enough: JSON string rules)."""
    return json.dumps(text, ensure_ascii=False)


def parse(flags: FlagSet, argv: list[str], max_args: int = 0) -> tuple[dict[str, Any], list[str]]:
    values, args = parse_args(flags, argv, max_args=max_args)
    if values["format"] not in FORMATS:
        raise CliError(f"Invalid format, valid formats are: {', '.join(FORMATS)}")
    return values, args


def emit(values: dict[str, Any], data: Any, pretty: Callable[..., str]) -> int:
    if values["format"] == "json":
        print(as_json(data))
    elif values.get("meta"):
        print(pretty(data, meta=True))  # one more newline, as Go's Ui.Info adds
    else:
        print(pretty(data))
    return 0


def call(prefix: str, func: Callable[[], Any]) -> Any:
    try:
        return func()
    except ApiError as exc:
        raise CliError(f"{prefix}: {exc}") from None


def read_text_arg(arg: str) -> str:
    """`@file`, `-` (stdin) or the literal text, as Consul's helpers read rules."""
    if arg == "-":
        return sys.stdin.read()
    if arg.startswith("@"):
        try:
            with open(arg[1:], encoding="utf-8") as handle:
                return handle.read()
        except OSError as exc:
            raise CliError(f"Failed to read file: {exc}") from None
    return arg


def identities(values: dict[str, Any]) -> dict[str, Any]:
    """Request fields for -service-identity and -node-identity flags."""
    body: dict[str, Any] = {}
    try:
        if values["service-identity"]:
            body["ServiceIdentities"] = [
                {"ServiceName": s.service_name, "Datacenters": s.datacenters}
                for s in map(parse_service_identity, values["service-identity"])
            ]
        if values["node-identity"]:
            body["NodeIdentities"] = [
                {"NodeName": n.node_name, "Datacenter": n.datacenter}
                for n in map(parse_node_identity, values["node-identity"])
            ]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return body


_LIST_PATHS = {
    "policy": ("/v1/acl/policies", "ID"),
    "role": ("/v1/acl/roles", "ID"),
    "token": ("/v1/acl/tokens", "AccessorID"),
}
# Names Consul's CLI takes in place of a built-in's ID.
_BUILTIN_IDS = {
    ("token", "anonymous"): ANONYMOUS_TOKEN_ACCESSOR_ID,
    ("policy", "global-management"): GLOBAL_MANAGEMENT_POLICY_ID,
}


def full_id(client: ApiClient, kind: str, text: str) -> str:
    """A full ID from a unique prefix of one, as Consul's CLI accepts (`-id 8431`)."""
    builtin = _BUILTIN_IDS.get((kind, text))
    if builtin is not None:
        return builtin
    if len(text) == 36 or not text:
        return text
    path, field = _LIST_PATHS[kind]
    prefix = f"Error determining {kind} ID"
    rows = call(prefix, lambda: client.get_json(path))
    found = [str(r[field]) for r in rows or [] if str(r[field]).startswith(text)]
    if not found:
        raise CliError(f"{prefix}: No such {kind} ID with prefix: {text}")
    if len(found) > 1:
        raise CliError(f"{prefix}: Partial {kind} ID is not unique")
    return found[0]


def policy_links(values: dict[str, Any], client: ApiClient) -> list[dict[str, str]]:
    return [{"ID": full_id(client, "policy", i)} for i in values["policy-id"]] + [
        {"Name": n} for n in values["policy-name"]
    ]


# --------------------------------------------------------------------------- bootstrap


@command
def bootstrap(argv: list[str]) -> int:
    flags = acl_flags("acl bootstrap", meta=False)
    values, _ = parse(flags, argv)
    client = client_from(values)
    token = call("Failed ACL bootstrapping", lambda: client.put("/v1/acl/bootstrap"))
    return emit(values, token, format_token)


# --------------------------------------------------------------------------- policies


def _policy_flags(name: str) -> FlagSet:
    flags = acl_flags(name)
    flags.string("name", "", "The policy's name.")
    flags.string("description", "", "A description of the policy.")
    flags.string("rules", "", "The rules: literal text, @file or - for stdin.")
    flags.repeated("valid-datacenter", "Datacenter the policy is valid in (repeatable).")
    return flags


def _find_policy_id(client: ApiClient, pid: str, name: str) -> str:
    if pid:
        return full_id(client, "policy", pid)
    if not name:
        raise CliError("Must specify either the -id or -name parameters")
    found = call(
        f"Error reading policy {gq(name)}",
        lambda: client.get_json(f"/v1/acl/policy/name/{quote_path(name)}"),
    )
    return str(found["ID"])


@command
def policy_create(argv: list[str]) -> int:
    flags = _policy_flags("acl policy create")
    values, _ = parse(flags, argv)
    if not values["name"]:
        raise CliError("Missing require '-name' flag")
    body = {
        "Name": values["name"],
        "Description": values["description"],
        "Rules": read_text_arg(values["rules"]),
        "Datacenters": values["valid-datacenter"],
    }
    client = client_from(values)
    policy = call("Failed to create new policy", lambda: client.put("/v1/acl/policy", body=body))
    return emit(values, policy, format_policy)


@command
def policy_update(argv: list[str]) -> int:
    flags = _policy_flags("acl policy update")
    flags.string("id", "", "The ID of the policy to update.")
    values, _ = parse(flags, argv)
    client = client_from(values)
    pid = _find_policy_id(client, values["id"], "" if values["id"] else values["name"])
    current = call(
        f"Error reading policy {gq(pid)}", lambda: client.get_json(f"/v1/acl/policy/{pid}")
    )
    given = values["set"]
    body = {
        "ID": pid,
        "Name": values["name"] if "name" in given else current["Name"],
        "Description": values["description"]
        if "description" in given
        else current.get("Description", ""),
        "Rules": read_text_arg(values["rules"]) if "rules" in given else current.get("Rules", ""),
        "Datacenters": values["valid-datacenter"]
        if "valid-datacenter" in given
        else current.get("Datacenters") or [],
    }
    policy = call(
        f"Error updating policy {gq(pid)}",
        lambda: client.put(f"/v1/acl/policy/{pid}", body=body),
    )
    return emit(values, policy, format_policy)


@command
def policy_read(argv: list[str]) -> int:
    flags = acl_flags("acl policy read")
    flags.string("id", "", "The ID of the policy to read.")
    flags.string("name", "", "The name of the policy to read.")
    values, _ = parse(flags, argv)
    client = client_from(values)
    if values["id"]:
        shown = full_id(client, "policy", values["id"])
        path = f"/v1/acl/policy/{quote_path(shown)}"
    elif values["name"]:
        shown = values["name"]
        path = f"/v1/acl/policy/name/{quote_path(shown)}"
    else:
        raise CliError("Must specify either the -id or -name parameters")
    policy = call(f"Error reading policy {gq(shown)}", lambda: client.get_json(path))
    return emit(values, policy, format_policy)


@command
def policy_list(argv: list[str]) -> int:
    values, _ = parse(acl_flags("acl policy list"), argv)
    client = client_from(values)
    policies = call(
        "Failed to retrieve the policy list", lambda: client.get_json("/v1/acl/policies")
    )
    return emit(values, policies, format_policy_list)


@command
def policy_delete(argv: list[str]) -> int:
    flags = acl_flags("acl policy delete", meta=False)
    flags.string("id", "", "The ID of the policy to delete.")
    flags.string("name", "", "The name of the policy to delete.")
    values, _ = parse(flags, argv)
    client = client_from(values)
    pid = _find_policy_id(client, values["id"], values["name"])
    call(
        f"Error deleting policy {gq(pid)}",
        lambda: client.request("DELETE", f"/v1/acl/policy/{quote_path(pid)}"),
    )
    print(f"Policy {gq(pid)} deleted successfully")
    return 0


# --------------------------------------------------------------------------- roles


def _role_link_flags(flags: FlagSet) -> None:
    flags.repeated("policy-id", "ID of a policy for the role (repeatable).")
    flags.repeated("policy-name", "Name of a policy for the role (repeatable).")
    flags.repeated("service-identity", "NAME[:DC1,DC2] service identity (repeatable).")
    flags.repeated("node-identity", "NODENAME:DATACENTER node identity (repeatable).")


@command
def role_create(argv: list[str]) -> int:
    flags = acl_flags("acl role create")
    flags.string("name", "", "The role's name.")
    flags.string("description", "", "A description of the role.")
    _role_link_flags(flags)
    values, _ = parse(flags, argv)
    if not values["name"]:
        raise CliError("Missing required '-name' flag")
    client = client_from(values)
    body: dict[str, Any] = {
        "Name": values["name"],
        "Description": values["description"],
        "Policies": policy_links(values, client),
        **identities(values),
    }
    role = call("Failed to create new role", lambda: client.put("/v1/acl/role", body=body))
    return emit(values, role, format_role)


def _role_path(values: dict[str, Any], client: ApiClient) -> tuple[str, str]:
    """(path, what the user named) for `-id` or `-name`."""
    if values["id"]:
        rid = full_id(client, "role", values["id"])
        return f"/v1/acl/role/{quote_path(rid)}", rid
    if values["name"]:
        return f"/v1/acl/role/name/{quote_path(values['name'])}", values["name"]
    raise CliError("Must specify either the -id or -name parameters")


def _read_role(client: ApiClient, values: dict[str, Any], path: str, shown: str) -> Any:
    """The role, or Consul's words for one that is not there (the API's bare 404)."""
    try:
        return client.get_json(path)
    except ApiError as exc:
        if exc.status == 404:
            how = "ID" if values["id"] else "name"
            raise CliError(f"Role not found with {how} {gq(shown)}") from None
        raise CliError(f"Error reading role {gq(shown)}: {exc}") from None


@command
def role_read(argv: list[str]) -> int:
    flags = acl_flags("acl role read")
    flags.string("id", "", "The ID of the role to read.")
    flags.string("name", "", "The name of the role to read.")
    values, _ = parse(flags, argv)
    client = client_from(values)
    path, shown = _role_path(values, client)
    return emit(values, _read_role(client, values, path, shown), format_role)


def _merge_role(current: dict[str, Any], values: dict[str, Any], client: ApiClient) -> None:
    """Add the flags' links and identities to `current` (role update without -no-merge)."""
    links = list(current.get("Policies") or [])
    have_ids = {str(link.get("ID", "")) for link in links}
    have_names = {str(link.get("Name", "")) for link in links}
    for pid in values["policy-id"]:
        full = full_id(client, "policy", pid)
        if full not in have_ids:
            links.append({"ID": full})
            have_ids.add(full)
    for name in values["policy-name"]:
        if name not in have_names:
            links.append({"Name": name})
            have_names.add(name)
    current["Policies"] = links
    found = identities(values)
    services = list(current.get("ServiceIdentities") or [])
    for new in found.get("ServiceIdentities", []):
        services = [s for s in services if s.get("ServiceName") != new["ServiceName"]]
        services.append(new)
    current["ServiceIdentities"] = services
    nodes = list(current.get("NodeIdentities") or [])
    for new in found.get("NodeIdentities", []):
        if not any(
            n.get("NodeName") == new["NodeName"] and n.get("Datacenter") == new["Datacenter"]
            for n in nodes
        ):
            nodes.append(new)
    current["NodeIdentities"] = nodes


@command
def role_update(argv: list[str]) -> int:
    flags = acl_flags("acl role update")
    flags.string("id", "", "The ID of the role to update (a unique prefix will do).")
    flags.string("name", "", "The role's new name.")
    flags.string("description", "", "The role's new description.")
    flags.boolean("no-merge", False, "Replace the role with what the flags give.")
    _role_link_flags(flags)
    values, _ = parse(flags, argv)
    if not values["id"]:
        raise CliError("Cannot update a role without specifying the -id parameter")
    client = client_from(values)
    rid = full_id(client, "role", values["id"])
    path = f"/v1/acl/role/{quote_path(rid)}"
    current = call("Error when retrieving current role", lambda: client.get_json(path))
    given = values["set"]
    if values["no-merge"]:
        body: dict[str, Any] = {
            "ID": rid,
            "Name": values["name"] or current.get("Name", ""),
            "Description": values["description"],
            "Policies": policy_links(values, client),
            **identities(values),
        }
    else:
        body = dict(current)
        if values["name"]:
            body["Name"] = values["name"]
        if "description" in given:
            body["Description"] = values["description"]
        _merge_role(body, values, client)
    role = call(f"Error updating role {gq(rid)}", lambda: client.put(path, body=body))
    return emit(values, role, format_role)


@command
def role_list(argv: list[str]) -> int:
    values, _ = parse(acl_flags("acl role list"), argv)
    client = client_from(values)
    roles = call("Failed to retrieve the role list", lambda: client.get_json("/v1/acl/roles"))
    return emit(values, roles, format_role_list)


@command
def role_delete(argv: list[str]) -> int:
    flags = acl_flags("acl role delete", meta=False)
    flags.string("id", "", "The ID of the role to delete.")
    flags.string("name", "", "The name of the role to delete.")
    values, _ = parse(flags, argv)
    client = client_from(values)
    path, shown = _role_path(values, client)
    rid = str(_read_role(client, values, path, shown)["ID"])
    call(
        f"Error deleting role {gq(rid)}",
        lambda: client.request("DELETE", f"/v1/acl/role/{quote_path(rid)}"),
    )
    print(f"Role {gq(rid)} deleted successfully")
    return 0
