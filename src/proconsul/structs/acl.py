"""ACL rows: tokens, policies and roles, one definition for the HTTP JSON and the log.

Job: the data types of Consul's ACL system, its built-in IDs, the content hash
each row carries, and the pure helpers around them (expiry, names, the
`-node-identity`/`-service-identity` argument syntax).

Rules:
- Field names are snake_case here and Consul's PascalCase on the wire
  (`rename=pascal`): `AccessorID`, `SecretID`, `ExpirationTTL`, `ServiceName`.
- Every field is always encoded so msgpack round-trips exactly; `api_dict`
  drops the fields Consul marks `omitempty` when they are empty, for HTTP.
- Hashes are blake2b-256 over a canonical msgpack encoding of the fields that
  define a row's meaning (never its secret, indexes or hash); Consul's exact
  bytes differ, but the property is the same: equal content, equal hash.
- Times are passed in (`now`); nothing here reads a clock.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

from proconsul.structs.duration import Duration, format_duration
from proconsul.structs.naming import pascal

GLOBAL_MANAGEMENT_POLICY_ID = "00000000-0000-0000-0000-000000000001"
GLOBAL_MANAGEMENT_POLICY_NAME = "global-management"
GLOBAL_MANAGEMENT_POLICY_DESCRIPTION = "Builtin Policy that grants unlimited access"
# Consul's built-in rules: write on everything, intentions included.
GLOBAL_MANAGEMENT_RULES = """\
acl = "write"
agent_prefix "" {
  policy = "write"
}
event_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
keyring = "write"
node_prefix "" {
  policy = "write"
}
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" {
  policy = "write"
}
"""

ANONYMOUS_TOKEN_ACCESSOR_ID = "00000000-0000-0000-0000-000000000002"
ANONYMOUS_TOKEN_SECRET_ID = "anonymous"
ANONYMOUS_TOKEN_DESCRIPTION = "Anonymous Token"
BOOTSTRAP_TOKEN_DESCRIPTION = "Bootstrap Token (Global Management)"
INITIAL_MANAGEMENT_TOKEN_DESCRIPTION = "Initial Management Token"

# Go's zero time, which Consul writes for an unset CreateTime.
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)

# Consul's defaults for acl.token_min/max_expiration_ttl.
TOKEN_MIN_EXPIRATION_TTL = 60.0
TOKEN_MAX_EXPIRATION_TTL = 24 * 3600.0


class ACLLink(msgspec.Struct, rename=pascal):
    """A reference from a token or role to a policy or role: `{"ID": ..., "Name": ...}`."""

    id: str = ""
    name: str = ""


ACLTokenPolicyLink = ACLLink
ACLTokenRoleLink = ACLLink
ACLRolePolicyLink = ACLLink


class ACLServiceIdentity(msgspec.Struct, rename=pascal):
    """`-service-identity web[:dc1,dc2]`; no datacenters means all of them."""

    service_name: str
    datacenters: list[str] = []


class ACLNodeIdentity(msgspec.Struct, rename=pascal):
    """`-node-identity n1:dc1`; a node identity always names its one datacenter."""

    node_name: str
    datacenter: str


class ACLToken(msgspec.Struct, rename=pascal):
    accessor_id: str = ""
    secret_id: str = ""
    description: str = ""
    policies: list[ACLLink] = []
    roles: list[ACLLink] = []
    service_identities: list[ACLServiceIdentity] = []
    node_identities: list[ACLNodeIdentity] = []
    local: bool = False
    auth_method: str = ""
    expiration_time: datetime | None = None
    # Only meaningful on create: the server turns it into expiration_time.
    expiration_ttl: Duration | None = None
    create_time: datetime = ZERO_TIME
    hash: bytes = b""
    legacy: bool = False
    create_index: int = 0
    modify_index: int = 0


class ACLPolicy(msgspec.Struct, rename=pascal):
    id: str = ""
    name: str = ""
    description: str = ""
    rules: str = ""
    datacenters: list[str] = []  # empty: valid in every datacenter
    hash: bytes = b""
    create_index: int = 0
    modify_index: int = 0


class ACLPolicyListStub(msgspec.Struct, rename=pascal):
    """What `/v1/acl/policies` lists: a policy without its rules."""

    id: str = ""
    name: str = ""
    description: str = ""
    datacenters: list[str] = []
    hash: bytes = b""
    create_index: int = 0
    modify_index: int = 0


class ACLRole(msgspec.Struct, rename=pascal):
    id: str = ""
    name: str = ""
    description: str = ""
    policies: list[ACLLink] = []
    service_identities: list[ACLServiceIdentity] = []
    node_identities: list[ACLNodeIdentity] = []
    hash: bytes = b""
    create_index: int = 0
    modify_index: int = 0


def global_management_policy() -> ACLPolicy:
    """The built-in policy row, as the state store seeds it."""
    return with_hash(
        ACLPolicy(
            id=GLOBAL_MANAGEMENT_POLICY_ID,
            name=GLOBAL_MANAGEMENT_POLICY_NAME,
            description=GLOBAL_MANAGEMENT_POLICY_DESCRIPTION,
            rules=GLOBAL_MANAGEMENT_RULES,
        )
    )


def anonymous_token(create_time: datetime = ZERO_TIME) -> ACLToken:
    """The built-in anonymous token, with no policies (it gets only the default policy)."""
    return with_hash(
        ACLToken(
            accessor_id=ANONYMOUS_TOKEN_ACCESSOR_ID,
            secret_id=ANONYMOUS_TOKEN_SECRET_ID,
            description=ANONYMOUS_TOKEN_DESCRIPTION,
            create_time=create_time,
        )
    )


def policy_list_stub(policy: ACLPolicy) -> ACLPolicyListStub:
    return ACLPolicyListStub(
        id=policy.id,
        name=policy.name,
        description=policy.description,
        datacenters=list(policy.datacenters),
        hash=policy.hash,
        create_index=policy.create_index,
        modify_index=policy.modify_index,
    )


# --- hashes ----------------------------------------------------------------------

_Row = TypeVar("_Row", ACLToken, ACLPolicy, ACLRole)


def _digest(parts: tuple[Any, ...]) -> bytes:
    # msgpack of a tuple is unambiguous (lengths are framed), unlike concatenation.
    return hashlib.blake2b(msgspec.msgpack.encode(parts), digest_size=32).digest()


def _identities(
    services: list[ACLServiceIdentity], nodes: list[ACLNodeIdentity]
) -> tuple[Any, ...]:
    return (
        [(s.service_name, list(s.datacenters)) for s in services],
        [(n.node_name, n.datacenter) for n in nodes],
    )


def token_hash(token: ACLToken) -> bytes:
    """What the token grants and says about itself; not its secret, times or indexes."""
    return _digest(
        (
            "token",
            token.description,
            [p.id for p in token.policies],
            [r.id for r in token.roles],
            *_identities(token.service_identities, token.node_identities),
            token.local,
            token.auth_method,
        )
    )


def policy_hash(policy: ACLPolicy) -> bytes:
    return _digest(
        ("policy", policy.name, policy.description, policy.rules, list(policy.datacenters))
    )


def role_hash(role: ACLRole) -> bytes:
    return _digest(
        (
            "role",
            role.name,
            role.description,
            [p.id for p in role.policies],
            *_identities(role.service_identities, role.node_identities),
        )
    )


def with_hash(row: _Row) -> _Row:
    """A copy of `row` with its Hash set from its content."""
    if isinstance(row, ACLToken):
        return msgspec.structs.replace(row, hash=token_hash(row))
    if isinstance(row, ACLPolicy):
        return msgspec.structs.replace(row, hash=policy_hash(row))
    return msgspec.structs.replace(row, hash=role_hash(row))


# --- HTTP shape --------------------------------------------------------------------

# Consul's `json:",omitempty"` fields: left out of HTTP answers when empty.
_OMITEMPTY: dict[type, frozenset[str]] = {
    ACLToken: frozenset(
        {
            "Policies",
            "Roles",
            "ServiceIdentities",
            "NodeIdentities",
            "AuthMethod",
            "ExpirationTime",
            "ExpirationTTL",
        }
    ),
    ACLRole: frozenset({"Policies", "ServiceIdentities", "NodeIdentities"}),
    ACLServiceIdentity: frozenset({"Datacenters"}),
}


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Duration):
        return format_duration(obj)
    raise NotImplementedError(f"cannot encode {type(obj)!r}")


def api_dict(row: msgspec.Struct) -> dict[str, Any]:
    """`row` as Consul's HTTP API writes it: PascalCase, omitempty fields dropped."""
    out = msgspec.to_builtins(row, enc_hook=_enc_hook)
    _drop_empty(row, out)
    return out  # type: ignore[no-any-return]


def _drop_empty(row: Any, out: Any) -> None:
    if isinstance(row, msgspec.Struct) and isinstance(out, dict):
        omit = _OMITEMPTY.get(type(row), frozenset())
        for name in msgspec.structs.fields(row):
            key = name.encode_name
            value = getattr(row, name.name)
            if key in omit and (value is None or value == [] or value == "" or value == 0):
                out.pop(key, None)
            elif key in out:
                _drop_empty(value, out[key])
    elif isinstance(row, list) and isinstance(out, list):
        for item, item_out in zip(row, out, strict=True):
            _drop_empty(item, item_out)


# --- expiry ------------------------------------------------------------------------


def token_expired(token: ACLToken, now: datetime) -> bool:
    """True once `now` is past the token's ExpirationTime; never for tokens without one."""
    return token.expiration_time is not None and token.expiration_time < now


def resolve_expiration(
    token: ACLToken,
    now: datetime,
    *,
    min_ttl: float = TOKEN_MIN_EXPIRATION_TTL,
    max_ttl: float = TOKEN_MAX_EXPIRATION_TTL,
) -> datetime | None:
    """The ExpirationTime a new token should get, checking its TTL or time against bounds.

    Raises ValueError with a message for the API caller.
    """
    ttl = token.expiration_ttl or None  # Duration(0) means "not set", as in Consul
    when = token.expiration_time
    if ttl is not None and when is not None:
        raise ValueError("Expiration TTL and Expiration Time cannot both be set")
    if ttl is not None:
        if ttl < 0:
            raise ValueError(f"Token Expiration TTL '{format_duration(ttl)}' should be > 0")
        if ttl < min_ttl or ttl > max_ttl:
            raise ValueError(
                f"Token Expiration TTL '{format_duration(ttl)}' should be between "
                f"{format_duration(min_ttl)} and {format_duration(max_ttl)}"
            )
        return now + timedelta(seconds=float(ttl))
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError("Token Expiration Time must carry a time zone")
    if when < now:
        raise ValueError("Token Expiration Time cannot be in the past")
    span = (when - now).total_seconds()
    if span < min_ttl or span > max_ttl:
        raise ValueError(
            f"Token Expiration Time must be between {format_duration(min_ttl)} and "
            f"{format_duration(max_ttl)} from now"
        )
    return when


# --- names and identity arguments ----------------------------------------------------

_POLICY_NAME = re.compile(r"[A-Za-z0-9\-_]{1,128}")
_ROLE_NAME = re.compile(r"[A-Za-z0-9\-_]{1,256}")
_IDENTITY_NAME = re.compile(r"[a-z0-9]([a-z0-9\-_]*[a-z0-9])?")
_IDENTITY_NAME_MAX = 256


def valid_policy_name(name: str) -> bool:
    return _POLICY_NAME.fullmatch(name) is not None


def valid_role_name(name: str) -> bool:
    return _ROLE_NAME.fullmatch(name) is not None


def valid_identity_name(name: str) -> bool:
    """Service and node identity names: lowercase letters, digits, '-' and '_'."""
    return len(name) <= _IDENTITY_NAME_MAX and _IDENTITY_NAME.fullmatch(name) is not None


def parse_service_identity(arg: str) -> ACLServiceIdentity:
    """`web` or `web:dc1,dc2` (the CLI's -service-identity). Raises ValueError."""
    name, sep, dcs = arg.partition(":")
    datacenters = [dc.strip() for dc in dcs.split(",")] if sep else []
    if not valid_identity_name(name):
        raise ValueError(
            f"Service identity {name!r} has an invalid name: use lowercase letters, "
            "digits, '-' and '_'"
        )
    if sep and (not datacenters or any(not dc for dc in datacenters)):
        raise ValueError(f"Malformed -service-identity argument: {arg!r}")
    return ACLServiceIdentity(service_name=name, datacenters=datacenters)


def parse_node_identity(arg: str) -> ACLNodeIdentity:
    """`node:dc` (the CLI's -node-identity); both parts are required. Raises ValueError."""
    name, sep, datacenter = arg.partition(":")
    if not sep or not name or not datacenter or ":" in datacenter:
        raise ValueError(f"Malformed -node-identity argument: {arg!r}")
    if not valid_identity_name(name):
        raise ValueError(
            f"Node identity {name!r} has an invalid name: use lowercase letters, "
            "digits, '-' and '_'"
        )
    return ACLNodeIdentity(node_name=name, datacenter=datacenter)
