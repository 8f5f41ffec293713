"""The authorizer: a token's parsed policies -> fast allow/deny decisions.

Job: merge every policy a token carries (in the current datacenter) into one
table per resource, then answer questions such as `service_write("web")` in a
dict lookup or two. `decide()` answers the same questions slowly but with a
reason, for error text and logs.

Rules (Consul 1.16, as documented):
- Merging: the same label from several policies resolves deny > write > list >
  read; `intentions` merge the same way, and an unset one then defaults to read
  when the merged service level is read or write, else deny.
- Matching: an exact rule beats every prefix rule; among prefix rules the
  longest wins; with no rule the `default_policy` decides.
- Levels: write grants list and read, list grants read (list only on keys).
- `key_list` checks `list` only with `enable_key_list_policy`; otherwise it is
  `key_read`, as in Consul.
- `key_write_prefix` (recursive delete) needs write from the governing prefix
  rule and from every exact or prefix rule at or under the prefix.
- `mesh` and `peering`, when unset, take the `operator` rule.
- `acl` (and so `snapshot`) is never granted by `default_policy = "allow"`:
  only an `acl` rule (e.g. global-management) grants it, as in Consul.
- Results are cached per resource and name, with a bound (`CACHE_MAX`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from proconsul.acl.errors import ACLDenied
from proconsul.acl.identity import ScopedPolicy, token_policies
from proconsul.acl.rules import (
    LABELLED_RESOURCES,
    UNLABELLED_RESOURCES,
    Access,
    ParsedPolicy,
    merge_level,
    parse_rules,
    stronger,
)
from proconsul.structs.acl import ACLPolicy, ACLRole, ACLToken

DefaultPolicy = Literal["allow", "deny"]
# Names remembered per resource table before the cache starts over. Small on purpose:
# a resolver may keep many authorizers (one per token), each with eight tables.
CACHE_MAX = 1024

# Plain ints in the tables: comparing them is cheaper than comparing enum members.
_DENY, _READ, _LIST, _WRITE = (
    int(level) for level in (Access.DENY, Access.READ, Access.LIST, Access.WRITE)
)
_LEVEL_OF = {"read": _READ, "list": _LIST, "write": _WRITE}
_NAME_OF = {int(level): level.name.lower() for level in Access}
RESOURCES = (*LABELLED_RESOURCES, "intention", *UNLABELLED_RESOURCES)


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer with its reason; `error_text` is Consul's 403 wording."""

    allowed: bool
    resource: str
    access: str
    name: str | None
    reason: str

    @property
    def permission(self) -> str:
        return f"{self.resource}:{self.access}"

    def error_text(self, accessor_id: str = "") -> str:
        who = f"token with AccessorID '{accessor_id}'" if accessor_id else "provided token"
        text = f"Permission denied: {who} lacks permission '{self.permission}'"
        if self.name is not None:
            text += f' on "{self.name}"'
        return text


class PermissionDenied(ACLDenied):
    """The refusal of one decision (`Authorizer.require`, `ResolvedToken.deny`):
    its message is the decision's 403 text, and the decision says why."""

    def __init__(self, decision: Decision, accessor_id: str = "") -> None:
        super().__init__(decision.error_text(accessor_id))
        self.decision = decision


class _Levels(dict[str, int]):
    """name -> governing level, filled on demand: a hit is a single C-level dict lookup."""

    __slots__ = ("_table",)

    def __init__(self, table: _Table) -> None:
        super().__init__()
        self._table = table

    def __missing__(self, name: str) -> int:
        return self._table.resolve(name)


class _Table:
    """Exact and prefix rules of one labelled resource, with a bounded answer cache."""

    __slots__ = ("_default", "_entries", "_exact", "_labels", "_lengths", "_prefixes", "levels")

    def __init__(self, exact: dict[str, int], prefixes: dict[str, int], default: int) -> None:
        self._exact = exact
        self._prefixes = prefixes
        # Longest prefix first: the first hit is the winner.
        self._lengths = tuple(sorted({len(p) for p in prefixes}, reverse=True))
        self._default = default
        self.levels = _Levels(self)
        entries = sorted([*exact.items(), *prefixes.items()])
        self._entries = entries
        self._labels = [label for label, _ in entries]

    def resolve(self, name: str) -> int:
        """The level that governs `name`: exact, else longest prefix, else the default."""
        level = self._exact.get(name)
        if level is None:
            level = self._default
            size = len(name)
            prefixes = self._prefixes
            for length in self._lengths:
                if length <= size:
                    hit = prefixes.get(name[:length])
                    if hit is not None:
                        level = hit
                        break
        levels = self.levels
        if len(levels) >= CACHE_MAX:
            # Start over rather than evict one by one: popping a dict's oldest key
            # repeatedly makes iteration skip ever more dead slots (quadratic).
            levels.clear()
        levels[name] = level
        return level

    def explain(self, name: str) -> tuple[str | None, int]:
        """Which rule governs `name` ("exact", the prefix, or None) and its level."""
        if name in self._exact:
            return "exact", self._exact[name]
        for length in self._lengths:
            if length <= len(name) and name[:length] in self._prefixes:
                return name[:length], self._prefixes[name[:length]]
        return None, self._default

    def governing_prefix(self, prefix: str) -> str | None:
        for length in self._lengths:
            if length <= len(prefix) and prefix[:length] in self._prefixes:
                return prefix[:length]
        return None

    def first_non_write_under(self, prefix: str) -> str | None:
        """A rule label at or under `prefix` that does not grant write, if any."""
        index = bisect.bisect_left(self._labels, prefix)
        while index < len(self._entries):
            label, level = self._entries[index]
            if not label.startswith(prefix):
                break
            if level != _WRITE:
                return label
            index += 1
        return None

    def write_prefix(self, prefix: str) -> bool:
        governing = self.governing_prefix(prefix)
        if governing is not None and self._prefixes[governing] != _WRITE:
            return False
        if self.first_non_write_under(prefix) is not None:
            return False
        return governing is not None or self._default >= _WRITE

    def all_allowed(self, level: int) -> bool:
        """Every rule grants `level` and a catch-all prefix rule (or the default) does too."""
        if any(value < level for _, value in self._entries):
            return False
        return "" in self._prefixes or self._default >= level

    def any_allowed(self, level: int) -> bool:
        """Some rule grants `level`; else a catch-all prefix rule denies; else the default."""
        if any(value >= level for _, value in self._entries):
            return True
        return "" not in self._prefixes and self._default >= level

    def size(self) -> int:
        return len(self.levels)


class Authorizer:
    """Decisions for one token in one datacenter. Build once, ask many times."""

    def __init__(
        self,
        policies: Iterable[ParsedPolicy] = (),
        *,
        default_policy: DefaultPolicy = "deny",
        enable_key_list_policy: bool = False,
    ) -> None:
        if default_policy not in ("allow", "deny"):
            raise ValueError(f'default_policy must be "allow" or "deny", not {default_policy!r}')
        self.default_policy: DefaultPolicy = default_policy
        self.enable_key_list_policy = enable_key_list_policy
        default = _WRITE if default_policy == "allow" else _DENY
        merged = _merge(policies)
        self._tables: dict[str, _Table] = {
            resource: _Table(merged.exact[resource], merged.prefix[resource], default)
            for resource in (*LABELLED_RESOURCES, "intention")
        }
        self._unlabelled_source: dict[str, str] = {}
        self._unlabelled: dict[str, int] = {}
        for resource in UNLABELLED_RESOURCES:
            explicit, source = merged.unlabelled[resource], resource
            if explicit is None and resource in ("mesh", "peering"):
                explicit, source = merged.unlabelled["operator"], "operator"
            if explicit is None:
                # Consul's allow-all default never includes ACL management.
                level, source = (_DENY if resource == "acl" else default), ""
            else:
                level = int(explicit)
            self._unlabelled[resource] = level
            self._unlabelled_source[resource] = source
        # The hot path indexes these caches directly; a miss computes and stores.
        self._service = self._tables["service"].levels
        self._node = self._tables["node"].levels
        self._key = self._tables["key"].levels
        self._agent = self._tables["agent"].levels
        self._event = self._tables["event"].levels
        self._query = self._tables["query"].levels
        self._session = self._tables["session"].levels
        self._intention = self._tables["intention"].levels

    @classmethod
    def for_datacenter(
        cls,
        policies: Iterable[ScopedPolicy],
        datacenter: str,
        *,
        default_policy: DefaultPolicy = "deny",
        enable_key_list_policy: bool = False,
    ) -> Authorizer:
        """Compile the policies that apply in `datacenter` (see identity.token_policies)."""
        return cls(
            (p.rules for p in policies if p.applies_in(datacenter)),
            default_policy=default_policy,
            enable_key_list_policy=enable_key_list_policy,
        )

    # --- labelled resources (hot path: one cached dict lookup) -----------------------

    def service_read(self, name: str) -> bool:
        return self._service[name] >= _READ

    def service_write(self, name: str) -> bool:
        return self._service[name] >= _WRITE

    def node_read(self, name: str) -> bool:
        return self._node[name] >= _READ

    def node_write(self, name: str) -> bool:
        return self._node[name] >= _WRITE

    def key_read(self, key: str) -> bool:
        return self._key[key] >= _READ

    def key_write(self, key: str) -> bool:
        return self._key[key] >= _WRITE

    def key_list(self, prefix: str) -> bool:
        if not self.enable_key_list_policy:
            return self._key[prefix] >= _READ
        return self._key[prefix] >= _LIST

    def key_write_prefix(self, prefix: str) -> bool:
        """May every key under `prefix` be deleted at once (`?recurse` delete)?"""
        return self._tables["key"].write_prefix(prefix)

    def agent_read(self, node: str) -> bool:
        return self._agent[node] >= _READ

    def agent_write(self, node: str) -> bool:
        return self._agent[node] >= _WRITE

    def event_read(self, name: str) -> bool:
        return self._event[name] >= _READ

    def event_write(self, name: str) -> bool:
        return self._event[name] >= _WRITE

    def query_read(self, name: str) -> bool:
        return self._query[name] >= _READ

    def query_write(self, name: str) -> bool:
        return self._query[name] >= _WRITE

    def session_read(self, node: str) -> bool:
        return self._session[node] >= _READ

    def session_write(self, node: str) -> bool:
        return self._session[node] >= _WRITE

    def intention_read(self, service: str) -> bool:
        return self._intention[service] >= _READ

    def intention_write(self, service: str) -> bool:
        return self._intention[service] >= _WRITE

    # --- whole-resource questions ------------------------------------------------------

    def node_read_all(self) -> bool:
        """May every node be read (no node rule denies, and a catch-all grants)?"""
        return self._tables["node"].all_allowed(_READ)

    def service_read_all(self) -> bool:
        return self._tables["service"].all_allowed(_READ)

    def service_write_any(self) -> bool:
        """May at least one service be written (e.g. to fetch Connect CA roots)?"""
        return self._tables["service"].any_allowed(_WRITE)

    # --- unlabelled resources ------------------------------------------------------------

    def acl_read(self) -> bool:
        return self._unlabelled["acl"] >= _READ

    def acl_write(self) -> bool:
        return self._unlabelled["acl"] >= _WRITE

    def snapshot(self) -> bool:
        """Snapshots hold every token secret, so they need acl write."""
        return self._unlabelled["acl"] >= _WRITE

    def operator_read(self) -> bool:
        return self._unlabelled["operator"] >= _READ

    def operator_write(self) -> bool:
        return self._unlabelled["operator"] >= _WRITE

    def keyring_read(self) -> bool:
        return self._unlabelled["keyring"] >= _READ

    def keyring_write(self) -> bool:
        return self._unlabelled["keyring"] >= _WRITE

    def mesh_read(self) -> bool:
        return self._unlabelled["mesh"] >= _READ

    def mesh_write(self) -> bool:
        return self._unlabelled["mesh"] >= _WRITE

    def peering_read(self) -> bool:
        return self._unlabelled["peering"] >= _READ

    def peering_write(self) -> bool:
        return self._unlabelled["peering"] >= _WRITE

    # --- generic and explained ---------------------------------------------------------

    def allowed(self, resource: str, access: str, name: str | None = None) -> bool:
        """Generic form of the methods above: `allowed("service", "write", "web")`."""
        return self.decide(resource, access, name).allowed

    def decide(
        self, resource: str, access: str, name: str | None = None, *, recursive: bool = False
    ) -> Decision:
        """The decision with its reason. `recursive` asks key_write_prefix for keys."""
        if access not in _LEVEL_OF:
            raise ValueError(f"unknown access {access!r}: use read, list or write")
        if resource in UNLABELLED_RESOURCES:
            return self._decide_unlabelled(resource, access)
        table = self._tables.get(resource)
        if table is None:
            raise ValueError(f"unknown ACL resource {resource!r}")
        if name is None:
            raise ValueError(f"{resource} decisions need a name")
        if recursive:
            if resource != "key" or access != "write":
                raise ValueError("recursive decisions are only for key write")
            return self._decide_write_prefix(name)
        wanted = _LEVEL_OF[access]
        if wanted == _LIST and (resource != "key" or not self.enable_key_list_policy):
            wanted = _READ  # only key_prefix rules know list, and only when enabled
        origin, level = table.explain(name)
        keyword = "service" if resource == "intention" else resource
        what = " intentions" if resource == "intention" else ""
        if origin is None:
            reason = f"no {keyword} rule matches; default policy {self.default_policy}"
        elif origin == "exact":
            reason = f'{keyword} "{name}"{what} is {_NAME_OF[level]}'
        else:
            reason = f'{keyword}_prefix "{origin}"{what} is {_NAME_OF[level]}'
        return Decision(level >= wanted, resource, access, name, reason)

    def _decide_unlabelled(self, resource: str, access: str) -> Decision:
        level = self._unlabelled[resource]
        source = self._unlabelled_source[resource]
        if not source:
            if resource == "acl" and self.default_policy == "allow":
                reason = "no acl rule; default policy allow never grants acl"
            else:
                reason = f"no {resource} rule; default policy {self.default_policy}"
        elif source != resource:
            reason = f"no {resource} rule; {source} is {_NAME_OF[level]}"
        else:
            reason = f"{resource} is {_NAME_OF[level]}"
        wanted = _READ if access == "list" else _LEVEL_OF[access]  # list is for keys only
        return Decision(level >= wanted, resource, access, None, reason)

    def _decide_write_prefix(self, prefix: str) -> Decision:
        table = self._tables["key"]
        allowed = table.write_prefix(prefix)
        governing = table.governing_prefix(prefix)
        blocker = table.first_non_write_under(prefix)
        if governing is not None and not allowed and blocker is None:
            reason = f'key_prefix "{governing}" does not grant write'
        elif blocker is not None:
            reason = f'rule for "{blocker}" under the prefix does not grant write'
        elif governing is not None:
            reason = f'key_prefix "{governing}" grants write to the whole prefix'
        else:
            reason = f"no key_prefix rule covers it; default policy {self.default_policy}"
        return Decision(allowed, "key", "write", prefix, reason)

    def require(
        self,
        resource: str,
        access: str,
        name: str | None = None,
        *,
        accessor_id: str = "",
        recursive: bool = False,
    ) -> None:
        """Raise PermissionDenied (Consul's 403 text) unless the action is allowed."""
        decision = self.decide(resource, access, name, recursive=recursive)
        if not decision.allowed:
            raise PermissionDenied(decision, accessor_id)

    def stats(self) -> dict[str, int]:
        return {f"cache_{resource}": table.size() for resource, table in self._tables.items()}


def token_authorizer(
    token: ACLToken,
    get_policy: Callable[[str], ACLPolicy | None],
    get_role: Callable[[str], ACLRole | None],
    datacenter: str,
    *,
    default_policy: DefaultPolicy = "deny",
    enable_key_list_policy: bool = False,
    parse: Callable[[str], ParsedPolicy] = parse_rules,
) -> Authorizer:
    """The authorizer for `token` in `datacenter`. Expiry is the caller's check
    (`structs.acl.token_expired`): an expired token is "ACL not found", not an authorizer.
    """
    return Authorizer.for_datacenter(
        token_policies(token, get_policy, get_role, parse),
        datacenter,
        default_policy=default_policy,
        enable_key_list_policy=enable_key_list_policy,
    )


@dataclass
class _Merged:
    exact: dict[str, dict[str, int]]
    prefix: dict[str, dict[str, int]]
    unlabelled: dict[str, Access | None]


def _merge(policies: Iterable[ParsedPolicy]) -> _Merged:
    levels: dict[tuple[str, str, bool], Access] = {}
    intentions: dict[tuple[str, bool], Access | None] = {}
    unlabelled: dict[str, Access | None] = dict.fromkeys(UNLABELLED_RESOURCES)
    for policy in policies:
        for rule in policy.rules:
            key = (rule.resource, rule.label, rule.prefix)
            levels[key] = merge_level(levels.get(key), rule.access)
            if rule.resource == "service":
                spot = (rule.label, rule.prefix)
                intentions[spot] = stronger(intentions.get(spot), rule.intentions)
        for resource in UNLABELLED_RESOURCES:
            unlabelled[resource] = stronger(unlabelled[resource], policy.unlabelled(resource))
    out = _Merged(
        exact={r: {} for r in (*LABELLED_RESOURCES, "intention")},
        prefix={r: {} for r in (*LABELLED_RESOURCES, "intention")},
        unlabelled=unlabelled,
    )
    for (resource, label, prefix), level in levels.items():
        (out.prefix if prefix else out.exact)[resource][label] = int(level)
    for (label, prefix), explicit in intentions.items():
        if explicit is not None:
            level = explicit
        else:
            # Consul: a service rule without `intentions` lets its holder read them
            # when it may read or write the service, and nothing otherwise.
            service = levels[("service", label, prefix)]
            level = Access.READ if service in (Access.READ, Access.WRITE) else Access.DENY
        (out.prefix if prefix else out.exact)["intention"][label] = int(level)
    return out
