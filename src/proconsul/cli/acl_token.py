"""`proconsul acl token create|list|read|update|delete|clone`.

Job: map each verb onto `/v1/acl/token...` and print Consul's text
(acl_format.py) or, with `-format=json`, the API's JSON.

Rules:
- Policies are linked by `-policy-id`/`-policy-name`, roles by
  `-role-id`/`-role-name`; identities use `NAME[:DC1,DC2]` and `NODE:DC`.
- `update` changes only what its flags name; `-policy-*`, `-role-*` and the
  identity flags replace the token's lists, `-append-policy-*`,
  `-append-role-*`, `-append-service-identity` and `-append-node-identity`
  add to them (a link already there is not added twice; an appended service
  identity replaces the one of the same service).
- `-id` may be a unique accessor prefix, or `anonymous` (acl_policy.full_id).
- Errors go to stderr with Consul's prefix and exit 1; quoted IDs use Go's
  `%q` form (`Error reading token "<id>": ...`).
- `-meta` adds the Hash, Create Index and Modify Index lines.
- Secrets are printed only where Consul prints them (the token blocks).
"""

from __future__ import annotations

from typing import Any

from proconsul.cli.acl_format import format_token, format_token_list
from proconsul.cli.acl_policy import (
    acl_flags,
    call,
    emit,
    full_id,
    gq,
    identities,
    parse,
    policy_links,
)
from proconsul.cli.api_client import ApiClient, CliError, client_from, command, quote_path
from proconsul.config.flags import FlagSet


def _link_flags(flags: FlagSet) -> None:
    flags.repeated("policy-id", "ID of a policy to use for this token (repeatable).")
    flags.repeated("policy-name", "Name of a policy to use for this token (repeatable).")
    flags.repeated("role-id", "ID of a role to use for this token (repeatable).")
    flags.repeated("role-name", "Name of a role to use for this token (repeatable).")
    flags.repeated("service-identity", "NAME[:DC1,DC2] service identity (repeatable).")
    flags.repeated("node-identity", "NODENAME:DATACENTER node identity (repeatable).")


def _role_links(values: dict[str, Any], client: ApiClient) -> list[dict[str, str]]:
    return [{"ID": full_id(client, "role", i)} for i in values["role-id"]] + [
        {"Name": n} for n in values["role-name"]
    ]


@command
def create(argv: list[str]) -> int:
    flags = acl_flags("acl token create")
    flags.string("description", "", "A description of the token.")
    flags.string("accessor", "", "Create the token with this Accessor ID (a UUID).")
    flags.string("secret", "", "Create the token with this Secret ID (a UUID).")
    flags.string("expires-ttl", "", "Duration this token is valid for (e.g. 10m).")
    flags.boolean("local", False, "Create a datacenter-local token.")
    _link_flags(flags)
    values, _ = parse(flags, argv)
    client = client_from(values)
    body: dict[str, Any] = {
        "Description": values["description"],
        "Policies": policy_links(values, client),
        "Roles": _role_links(values, client),
        "Local": values["local"],
        **identities(values),
    }
    if values["accessor"]:
        body["AccessorID"] = values["accessor"]
    if values["secret"]:
        body["SecretID"] = values["secret"]
    if values["expires-ttl"]:
        body["ExpirationTTL"] = values["expires-ttl"]
    token = call("Failed to create new token", lambda: client.put("/v1/acl/token", body=body))
    return emit(values, token, format_token)


@command
def list_tokens(argv: list[str]) -> int:
    values, _ = parse(acl_flags("acl token list"), argv)
    client = client_from(values)
    tokens = call("Failed to retrieve the token list", lambda: client.get_json("/v1/acl/tokens"))
    return emit(values, tokens, format_token_list)


@command
def read(argv: list[str]) -> int:
    flags = acl_flags("acl token read")
    flags.string("id", "", "The Accessor ID of the token to read.")
    flags.boolean("self", False, "Read the token used by this request.")
    values, _ = parse(flags, argv)
    client = client_from(values)
    accessor = ""
    if values["self"]:
        path = "/v1/acl/token/self"
    elif values["id"]:
        accessor = full_id(client, "token", values["id"])
        path = f"/v1/acl/token/{quote_path(accessor)}"
    else:
        raise CliError("Must specify the -id parameter")
    token = call(f"Error reading token {gq(accessor)}", lambda: client.get_json(path))
    return emit(values, token, format_token)


@command
def update(argv: list[str]) -> int:
    flags = acl_flags("acl token update")
    flags.string("id", "", "The Accessor ID of the token to update.")
    flags.string("description", "", "A new description of the token.")
    flags.repeated("append-policy-id", "ID of a policy to add (repeatable).")
    flags.repeated("append-policy-name", "Name of a policy to add (repeatable).")
    flags.repeated("append-role-id", "ID of a role to add (repeatable).")
    flags.repeated("append-role-name", "Name of a role to add (repeatable).")
    flags.repeated("append-service-identity", "NAME[:DC1,DC2] identity to add (repeatable).")
    flags.repeated("append-node-identity", "NODENAME:DATACENTER identity to add (repeatable).")
    _link_flags(flags)
    for merge, names in _MERGEABLE.items():
        flags.boolean(
            merge,
            False,
            f"Add the given -{'/-'.join(names)} to the token's instead of replacing "
            "them (deprecated in Consul: use the -append-* flags).",
        )
    values, _ = parse(flags, argv)
    if not values["id"]:
        raise CliError("Cannot update a token without specifying the -id parameter")
    _merge_as_append(values)
    client = client_from(values)
    accessor = full_id(client, "token", values["id"])
    path = f"/v1/acl/token/{quote_path(accessor)}"
    current = call("Error when retrieving current token", lambda: client.get_json(path))
    given = values["set"]
    body = dict(current)
    if "description" in given:
        body["Description"] = values["description"]
    if given & {"policy-id", "policy-name"}:
        body["Policies"] = policy_links(values, client)
    extra = [{"ID": full_id(client, "policy", i)} for i in values["append-policy-id"]]
    extra += [{"Name": n} for n in values["append-policy-name"]]
    body["Policies"] = _add_links(body.get("Policies"), extra)
    if given & {"role-id", "role-name"}:
        body["Roles"] = _role_links(values, client)
    extra = [{"ID": full_id(client, "role", i)} for i in values["append-role-id"]]
    extra += [{"Name": n} for n in values["append-role-name"]]
    body["Roles"] = _add_links(body.get("Roles"), extra)
    body.update(identities(values))
    appended = identities(
        {
            "service-identity": values["append-service-identity"],
            "node-identity": values["append-node-identity"],
        }
    )
    services = list(body.get("ServiceIdentities") or [])
    for row in appended.get("ServiceIdentities", []):
        # One identity per service: a new one replaces the old one's datacenters.
        services = [s for s in services if s.get("ServiceName") != row["ServiceName"]] + [row]
    body["ServiceIdentities"] = services
    nodes = list(body.get("NodeIdentities") or [])
    for row in appended.get("NodeIdentities", []):
        if row not in nodes:
            nodes.append(row)
    body["NodeIdentities"] = nodes
    token = call(f"Failed to update token {accessor}", lambda: client.put(path, body=body))
    return emit(values, token, format_token)


# Each -merge-* flag and the link flags it turns into their -append-* forms.
_MERGEABLE: dict[str, tuple[str, ...]] = {
    "merge-policies": ("policy-id", "policy-name"),
    "merge-roles": ("role-id", "role-name"),
    "merge-service-identities": ("service-identity",),
    "merge-node-identities": ("node-identity",),
}


def _merge_as_append(values: dict[str, Any]) -> None:
    """Under `-merge-policies` (etc.) the plain link flags add, as `-append-*` do."""
    for merge, names in _MERGEABLE.items():
        if not values[merge]:
            continue
        for name in names:
            values[f"append-{name}"] = list(values[f"append-{name}"]) + list(values[name])
            values[name] = []
            values["set"] = values["set"] - {name}


def _add_links(
    links: list[dict[str, str]] | None, extra: list[dict[str, str]]
) -> list[dict[str, str]]:
    """`links` plus each of `extra` not already linked (by ID or by name)."""
    out = list(links or [])
    for link in extra:
        key, value = next(iter(link.items()))
        if not any(existing.get(key) == value for existing in out):
            out.append(link)
    return out


@command
def clone(argv: list[str]) -> int:
    flags = acl_flags("acl token clone")
    flags.string("id", "", "The Accessor ID of the token to clone.")
    flags.string("description", "", "A description of the new cloned token.")
    values, _ = parse(flags, argv)
    if not values["id"]:
        raise CliError("Cannot clone a token without specifying the -id parameter")
    client = client_from(values)
    path = f"/v1/acl/token/{quote_path(full_id(client, 'token', values['id']))}/clone"
    body = {"Description": values["description"]}
    token = call("Failed to clone token", lambda: client.put(path, body=body))
    return emit(values, token, format_token)


@command
def delete(argv: list[str]) -> int:
    flags = acl_flags("acl token delete", meta=False)
    flags.string("id", "", "The Accessor ID of the token to delete.")
    values, _ = parse(flags, argv)
    if not values["id"]:
        raise CliError("Must specify the -id parameter")
    client = client_from(values)
    accessor = full_id(client, "token", values["id"])
    call(
        f"Error deleting token {gq(accessor)}",
        lambda: client.request("DELETE", f"/v1/acl/token/{quote_path(accessor)}"),
    )
    print(f"Token {gq(accessor)} deleted successfully")
    return 0
