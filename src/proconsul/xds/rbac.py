"""Intentions -> Envoy RBAC rules for the public listener.

Job: `rbac_rules` turns the intentions towards a service, and the default
that applies when none matches, into one Envoy `RBAC` value; `network_filter`
and `http_filter` wrap it as the network filter (tcp services) or the HTTP
filter (http services, where L7 permissions apply).

Rules (Consul's, so Envoy decides exactly what connect/intentions.py decides):
- Envoy applies one action to every policy, Consul's intentions mix allow and
  deny by precedence. So the RBAC action is the opposite of the default
  (default allow -> a DENY list, default deny -> an ALLOW list), and
  precedence is removed: each intention also excludes (AND NOT) the sources
  of the higher-precedence intentions it covers by wildcard; an intention
  whose action is the default adds nothing of its own and is dropped after
  it excluded itself from the lower ones.
- Of several intentions from one source only the highest counts. Sources
  from cluster peers are left out (no peering: no such identity exists),
  as connect/intentions.py `match` leaves them out.
- L4 intentions share one policy, `consul-intentions-layer4`, whose
  permission is "any". An intention with Permissions is L7 on an http
  service: one policy `consul-intentions-layer7-<i>` per intention, its
  permissions reduced the same way (each excludes the earlier ones; those
  with the default action dropped). On a tcp service such an intention
  counts as deny.
- A source is matched by its certificate's URI SAN with a regex:
  `^spiffe://<trust domain>/ns/<ns>/dc/[^/]+/svc/<name>$`, a wildcard being
  `[^/]+`; the datacenter is not checked.
- Path and header criteria become Envoy matchers; methods become a regex on
  the `:method` header (`GET|PUT`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import path_pb2, string_pb2

from proconsul.connect.intentions import ALLOW, WILDCARD, match_order
from proconsul.structs.config_entries import HTTPHeaderMatch, Intention, IntentionPermission
from proconsul.xds.common import filter_of, pack, quote_meta, regex, string_match

NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
HTTP_RBAC_FILTER = "envoy.filters.http.rbac"
STAT_PREFIX = "connect_authz"
L4_POLICY = "consul-intentions-layer4"
ANY_SEGMENT = "[^/]+"

_DENY, _ALLOW, _L7 = "deny", "allow", "l7"


@dataclass
class _Permission:
    action: str
    rule: Any
    excluded: list[Any] = field(default_factory=list)
    skip: bool = False


@dataclass
class _Source:
    namespace: str
    name: str

    @property
    def wild(self) -> int:
        """How wide the source is: 0 exact, 1 `*` name, 2 `*` namespace."""
        if self.namespace == WILDCARD:
            return 2
        return 1 if self.name == WILDCARD else 0

    def covers(self, other: _Source) -> bool:
        """`other` is one of the services this (strictly wider) source names."""
        if self.wild <= other.wild:
            return False
        same_ns = self.namespace in (WILDCARD, other.namespace)
        return same_ns and self.name in (WILDCARD, other.name)


@dataclass
class _Intention:
    source: _Source
    action: str
    permissions: list[_Permission]
    excluded: list[_Source] = field(default_factory=list)
    skip: bool = False


def rbac_rules(
    intentions: Iterable[Intention], *, default_allow: bool, is_http: bool, trust_domain: str
) -> Any:
    """The RBAC rules that enforce `intentions` over `default_allow`."""
    default = _ALLOW if default_allow else _DENY
    kept = _remove_precedence(_intermediate(intentions, is_http), default)
    policies: dict[str, Any] = {}
    l4_principals = []
    for i, ixn in enumerate(kept):
        principal = _principal(ixn, trust_domain)
        if ixn.action == _L7:
            policies[f"consul-intentions-layer7-{i}"] = rbac_pb2.Policy(
                principals=[principal],
                permissions=[_flatten(p) for p in ixn.permissions],
            )
        else:
            l4_principals.append(principal)
    if l4_principals:
        policies[L4_POLICY] = rbac_pb2.Policy(
            principals=l4_principals, permissions=[rbac_pb2.Permission(any=True)]
        )
    action = rbac_pb2.RBAC.DENY if default_allow else rbac_pb2.RBAC.ALLOW
    return rbac_pb2.RBAC(action=action, policies=policies)


def network_filter(
    intentions: Iterable[Intention], *, default_allow: bool, trust_domain: str
) -> Any:
    rules = rbac_rules(
        intentions, default_allow=default_allow, is_http=False, trust_domain=trust_domain
    )
    config = network_rbac_pb2.RBAC(rules=rules, stat_prefix=STAT_PREFIX)
    return filter_of(NETWORK_RBAC_FILTER, config)


def http_filter(intentions: Iterable[Intention], *, default_allow: bool, trust_domain: str) -> Any:
    rules = rbac_rules(
        intentions, default_allow=default_allow, is_http=True, trust_domain=trust_domain
    )
    return hcm_pb2.HttpFilter(
        name=HTTP_RBAC_FILTER, typed_config=pack(http_rbac_pb2.RBAC(rules=rules))
    )


# ------------------------------------------------------------ precedence


def _intermediate(intentions: Iterable[Intention], is_http: bool) -> list[_Intention]:
    """Highest precedence first, one intention per source."""
    out: list[_Intention] = []
    seen: set[tuple[str, str]] = set()
    for ixn in sorted(intentions, key=match_order):
        if ixn.source_peer:
            continue  # no cluster peering here: nothing presents such an identity
        key = (ixn.source_ns, ixn.source_name)
        if key in seen:
            continue
        seen.add(key)
        source = _Source(ixn.source_ns or "default", ixn.source_name)
        if ixn.permissions and is_http:
            perms = [_Permission(_action(p.action), convert_permission(p)) for p in ixn.permissions]
            out.append(_Intention(source, _L7, perms))
        elif ixn.permissions:
            out.append(_Intention(source, _DENY, []))  # L7 rules cannot apply to tcp
        else:
            out.append(_Intention(source, _action(ixn.action), []))
    return out


def _action(text: str) -> str:
    return _ALLOW if text == ALLOW else _DENY


def _remove_precedence(ixns: list[_Intention], default: str) -> list[_Intention]:
    for i in range(len(ixns) - 1, -1, -1):
        for lower in ixns[i + 1 :]:
            if not lower.skip and lower.source.covers(ixns[i].source):
                lower.excluded.append(ixns[i].source)
        if ixns[i].action == default:
            ixns[i].skip = True
    kept = [ixn for ixn in ixns if not ixn.skip]
    out = []
    for ixn in kept:
        ixn.permissions = _remove_permission_precedence(ixn.permissions, default)
        if ixn.action == _L7 and not ixn.permissions:
            continue  # every permission had the default action
        out.append(ixn)
    return out


def _remove_permission_precedence(perms: list[_Permission], default: str) -> list[_Permission]:
    for i in range(len(perms) - 1, -1, -1):
        for later in perms[i + 1 :]:
            if not later.skip:
                later.excluded.append(perms[i].rule)
        if perms[i].action == default:
            perms[i].skip = True
    return [p for p in perms if not p.skip]


# ------------------------------------------------------------- principals


def spiffe_pattern(source_ns: str, source_name: str, trust_domain: str) -> str:
    """The URI SAN regex of a source: any datacenter, `*` as any segment."""
    ns = ANY_SEGMENT if source_ns == WILDCARD else quote_meta(source_ns)
    name = ANY_SEGMENT if source_name == WILDCARD else quote_meta(source_name)
    host = quote_meta(trust_domain)
    return f"^spiffe://{host}/ns/{ns}/dc/{ANY_SEGMENT}/svc/{name}$"


def _id_principal(source: _Source, trust_domain: str) -> Any:
    pattern = spiffe_pattern(source.namespace, source.name, trust_domain)
    return rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(
            principal_name=string_pb2.StringMatcher(safe_regex=regex(pattern))
        )
    )


def _principal(ixn: _Intention, trust_domain: str) -> Any:
    excluded = _simplify(ixn.excluded)
    first = _id_principal(ixn.source, trust_domain)
    if not excluded:
        return first
    ids = [first] + [
        rbac_pb2.Principal(not_id=_id_principal(src, trust_domain)) for src in excluded
    ]
    return rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ids))


def _simplify(sources: Sequence[_Source]) -> list[_Source]:
    """Drop an excluded source that a wider excluded source already covers."""
    ordered = sorted(sources, key=lambda s: s.wild)
    return [s for i, s in enumerate(ordered) if not any(o.covers(s) for o in ordered[i + 1 :])]


# ------------------------------------------------------------ permissions


def _flatten(perm: _Permission) -> Any:
    if not perm.excluded:
        return perm.rule
    parts = [perm.rule] + [rbac_pb2.Permission(not_rule=rule) for rule in perm.excluded]
    return _and_permissions(parts)


def _and_permissions(parts: list[Any]) -> Any:
    if not parts:
        return rbac_pb2.Permission(any=True)
    if len(parts) == 1:
        return parts[0]
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=parts))


def header_matcher(criterion: HTTPHeaderMatch) -> Any | None:
    """One header criterion as Envoy's HeaderMatcher (None for an empty one)."""
    out = route_components_pb2.HeaderMatcher(name=criterion.name)
    if criterion.exact:
        out.string_match.CopyFrom(string_match(exact=criterion.exact))
    elif criterion.regex:
        out.string_match.CopyFrom(string_match(pattern=criterion.regex))
    elif criterion.prefix:
        out.string_match.CopyFrom(string_match(prefix=criterion.prefix))
    elif criterion.suffix:
        out.string_match.CopyFrom(string_match(suffix=criterion.suffix))
    elif criterion.present:
        out.present_match = True
    else:
        return None
    if criterion.invert:
        out.invert_match = True
    return out


def methods_matcher(methods: Sequence[str]) -> Any:
    return route_components_pb2.HeaderMatcher(
        name=":method", string_match=string_match(pattern="|".join(methods))
    )


def convert_permission(permission: IntentionPermission) -> Any:
    """An intention permission's HTTP criteria as one RBAC permission."""
    http = permission.http
    if http is None:
        return rbac_pb2.Permission(any=True)
    parts = []
    path = None
    if http.path_exact:
        path = string_match(exact=http.path_exact)
    elif http.path_prefix:
        path = string_match(prefix=http.path_prefix)
    elif http.path_regex:
        path = string_match(pattern=http.path_regex)
    if path is not None:
        parts.append(rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=path)))
    for criterion in http.header:
        matcher = header_matcher(criterion)
        if matcher is not None:
            parts.append(rbac_pb2.Permission(header=matcher))
    if http.methods:
        parts.append(rbac_pb2.Permission(header=methods_matcher(http.methods)))
    return _and_permissions(parts)
