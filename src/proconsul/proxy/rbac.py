"""Envoy RBAC rules evaluated in Python: who may connect, which request may pass.

Job: `compile_rbac` turns an `envoy.config.rbac.v3.RBAC` value into an
`RBACRules` whose `allows(principal, request)` answers for one caller. The
network filter (L4) passes `request=None`; the HTTP filter (L7) passes the
request.

Rules (Envoy's):
- ALLOW: allowed when some policy matches; DENY: allowed when none does.
  A policy matches when one of its permissions and one of its principals do.
- Principals we carry out: `any`, `authenticated` (its `principal_name`
  against the peer's URI SAN; no name: any authenticated peer), `and_ids`,
  `or_ids`, `not_id`. Permissions: `any`, `and_rules`, `or_rules`,
  `not_rule`, `header`, `url_path`. Anything else is `Unsupported`.
- At L4 a header or path permission does not match (there is no request),
  as in Envoy's network filter.
- Pure: compiled once per configuration version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proconsul.proxy.matchers import RequestView, Unsupported, header_matcher, string_matcher

PrincipalMatch = Callable[[str | None], bool]
PermissionMatch = Callable[[RequestView | None], bool]


@dataclass(frozen=True)
class Policy:
    name: str
    permissions: tuple[PermissionMatch, ...]
    principals: tuple[PrincipalMatch, ...]

    def matches(self, principal: str | None, request: RequestView | None) -> bool:
        return any(p(principal) for p in self.principals) and any(
            p(request) for p in self.permissions
        )


@dataclass(frozen=True)
class RBACRules:
    allow_action: bool  # True: ALLOW list, False: DENY list
    policies: tuple[Policy, ...]

    def allows(self, principal: str | None, request: RequestView | None = None) -> bool:
        matched = any(p.matches(principal, request) for p in self.policies)
        return matched if self.allow_action else not matched


ALLOW, DENY = 0, 1  # envoy.config.rbac.v3.RBAC.Action


def compile_rbac(rules: Any) -> RBACRules:
    if rules.action not in (ALLOW, DENY):
        raise Unsupported(f"RBAC action {rules.action} is not supported")
    policies = tuple(
        Policy(
            name,
            tuple(_permission(p) for p in policy.permissions),
            tuple(_principal(p) for p in policy.principals),
        )
        for name, policy in sorted(rules.policies.items())
    )
    return RBACRules(allow_action=rules.action == ALLOW, policies=policies)


def _principal(principal: Any) -> PrincipalMatch:
    kind = principal.WhichOneof("identifier")
    if kind == "any":
        return lambda _: True
    if kind == "authenticated":
        auth = principal.authenticated
        if not auth.HasField("principal_name"):
            return lambda peer: peer is not None
        match = string_matcher(auth.principal_name)
        return lambda peer: peer is not None and match(peer)
    if kind == "and_ids":
        parts = tuple(_principal(p) for p in principal.and_ids.ids)
        return lambda peer: all(p(peer) for p in parts)
    if kind == "or_ids":
        parts = tuple(_principal(p) for p in principal.or_ids.ids)
        return lambda peer: any(p(peer) for p in parts)
    if kind == "not_id":
        inner = _principal(principal.not_id)
        return lambda peer: not inner(peer)
    raise Unsupported(f"RBAC principal {kind or 'empty'!r} is not supported")


def _permission(permission: Any) -> PermissionMatch:
    kind = permission.WhichOneof("rule")
    if kind == "any":
        return lambda _: True
    if kind == "and_rules":
        parts = tuple(_permission(p) for p in permission.and_rules.rules)
        return lambda req: all(p(req) for p in parts)
    if kind == "or_rules":
        parts = tuple(_permission(p) for p in permission.or_rules.rules)
        return lambda req: any(p(req) for p in parts)
    if kind == "not_rule":
        inner = _permission(permission.not_rule)
        return lambda req: not inner(req)
    if kind == "header":
        header = header_matcher(permission.header)
        return lambda req: req is not None and header(req)
    if kind == "url_path":
        if permission.url_path.WhichOneof("rule") != "path":
            raise Unsupported("RBAC url_path without a path matcher is not supported")
        path = string_matcher(permission.url_path.path)
        return lambda req: req is not None and path(req.path)
    raise Unsupported(f"RBAC permission {kind or 'empty'!r} is not supported")
