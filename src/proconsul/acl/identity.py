"""What a token is allowed, as policies: identity expansion and token expansion.

Job: turn service and node identities into the synthetic policies Consul gives
them, and gather everything a token links to (its policies, its roles' policies,
its own and its roles' identities) into `ScopedPolicy` values, each knowing the
datacenters it applies in. authorizer.py compiles those for one datacenter.

Rules (Consul 1.16):
- Service identity `web`: `service "web"` and `service "web-sidecar-proxy"`
  write, `service_prefix ""` and `node_prefix ""` read; valid in the listed
  datacenters, or in all of them when none are listed.
- Node identity `n1:dc1`: `node "n1"` write and `service_prefix ""` read,
  valid only in dc1.
- A policy with Datacenters applies only there; with none, everywhere.
- Links to policies or roles that no longer exist are skipped, as Consul does.
- Pure: lookups are functions passed in; parsing may be cached by the caller.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proconsul.acl.rules import Access, LabelledRule, ParsedPolicy, parse_rules
from proconsul.structs.acl import (
    GLOBAL_MANAGEMENT_POLICY_ID,
    GLOBAL_MANAGEMENT_POLICY_NAME,
    GLOBAL_MANAGEMENT_RULES,
    ACLNodeIdentity,
    ACLPolicy,
    ACLRole,
    ACLServiceIdentity,
    ACLToken,
)
from proconsul.structs.catalog import SIDECAR_PROXY_SUFFIX


@dataclass(frozen=True, slots=True)
class ScopedPolicy:
    """Parsed rules plus where they apply. `datacenters` empty means everywhere."""

    id: str
    name: str
    rules: ParsedPolicy
    datacenters: tuple[str, ...] = ()
    text: str = ""  # the HCL, for display (`acl token read -expanded`)

    def applies_in(self, datacenter: str) -> bool:
        return not self.datacenters or datacenter in self.datacenters


def _synthetic_id(kind: str, *parts: str) -> str:
    # Stable per identity so callers can cache compiled results by policy ID.
    digest = hashlib.blake2b("\x00".join((kind, *parts)).encode(), digest_size=16).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def _block(keyword: str, label: str, level: str) -> str:
    # json-style escaping is also valid HCL string escaping for these labels.
    quoted = label.replace("\\", "\\\\").replace('"', '\\"')
    return f'{keyword} "{quoted}" {{\n  policy = "{level}"\n}}\n'


def service_identity_policy(name: str, datacenters: Iterable[str] = ()) -> ScopedPolicy:
    """The synthetic policy of service identity `name`."""
    dcs = tuple(datacenters)
    rules = ParsedPolicy(
        rules=(
            LabelledRule("service", name, False, Access.WRITE),
            LabelledRule("service", name + SIDECAR_PROXY_SUFFIX, False, Access.WRITE),
            LabelledRule("service", "", True, Access.READ),
            LabelledRule("node", "", True, Access.READ),
        )
    )
    text = (
        _block("service", name, "write")
        + _block("service", name + SIDECAR_PROXY_SUFFIX, "write")
        + _block("service_prefix", "", "read")
        + _block("node_prefix", "", "read")
    )
    policy_id = _synthetic_id("service", name)
    return ScopedPolicy(policy_id, f"synthetic-policy-{policy_id}", rules, dcs, text)


def node_identity_policy(name: str, datacenter: str) -> ScopedPolicy:
    """The synthetic policy of node identity `name:datacenter`."""
    rules = ParsedPolicy(
        rules=(
            LabelledRule("node", name, False, Access.WRITE),
            LabelledRule("service", "", True, Access.READ),
        )
    )
    text = _block("node", name, "write") + _block("service_prefix", "", "read")
    policy_id = _synthetic_id("node", name, datacenter)
    return ScopedPolicy(policy_id, f"synthetic-policy-{policy_id}", rules, (datacenter,), text)


@functools.cache
def global_management_rules() -> ParsedPolicy:
    """The built-in management policy's rules, parsed once."""
    return parse_rules(GLOBAL_MANAGEMENT_RULES)


def global_management_scoped() -> ScopedPolicy:
    return ScopedPolicy(
        GLOBAL_MANAGEMENT_POLICY_ID,
        GLOBAL_MANAGEMENT_POLICY_NAME,
        global_management_rules(),
        (),
        GLOBAL_MANAGEMENT_RULES,
    )


def scoped_policy(
    policy: ACLPolicy, parse: Callable[[str], ParsedPolicy] = parse_rules
) -> ScopedPolicy:
    """A stored policy, parsed. Raises RuleError if its stored rules are malformed."""
    if policy.id == GLOBAL_MANAGEMENT_POLICY_ID and policy.rules == GLOBAL_MANAGEMENT_RULES:
        rules = global_management_rules()
    else:
        rules = parse(policy.rules)
    return ScopedPolicy(policy.id, policy.name, rules, tuple(policy.datacenters), policy.rules)


def identity_policies(
    services: Iterable[ACLServiceIdentity], nodes: Iterable[ACLNodeIdentity]
) -> list[ScopedPolicy]:
    out = [service_identity_policy(s.service_name, s.datacenters) for s in services]
    out += [node_identity_policy(n.node_name, n.datacenter) for n in nodes]
    return out


def token_policies(
    token: ACLToken,
    get_policy: Callable[[str], ACLPolicy | None],
    get_role: Callable[[str], ACLRole | None],
    parse: Callable[[str], ParsedPolicy] = parse_rules,
) -> list[ScopedPolicy]:
    """Every policy a token carries, directly, through roles and through identities.

    Each linked policy appears once even when linked twice; datacenter filtering is
    left to the caller (`ScopedPolicy.applies_in`) so one expansion can serve many.
    """
    seen: set[str] = set()
    out: list[ScopedPolicy] = []

    def add_links(ids: Iterable[str]) -> None:
        for policy_id in ids:
            if policy_id in seen:
                continue
            seen.add(policy_id)
            policy = get_policy(policy_id)
            if policy is not None:
                out.append(scoped_policy(policy, parse))

    add_links(link.id for link in token.policies)
    out += identity_policies(token.service_identities, token.node_identities)
    for role_link in token.roles:
        role = get_role(role_link.id)
        if role is None:
            continue
        add_links(link.id for link in role.policies)
        out += identity_policies(role.service_identities, role.node_identities)
    return out
