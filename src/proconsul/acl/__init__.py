"""ACLs: the rule language, identities and the authorizer (pure, no I/O).

The rows (ACLToken / ACLPolicy / ACLRole, built-in IDs, hashes, expiry) are
plain data in `structs/acl.py`.

- `rules`: policy text -> `ParsedPolicy` (`parse_rules`, `RuleError`).
- `identity`: service and node identities as synthetic policies; a token's policies.
- `authorizer`: parsed policies -> `Authorizer` decisions and Consul's 403 text.
- `resolved`: `ResolvedToken`, a token's accessor with its authorizer.
- `errors`: `ACLNotFound` and the ACL API's `ACLError`, with Consul's texts.
- `service`: `ACLService`, the ACL API (tokens, policies, roles) as a protocol.
"""

from proconsul.acl.authorizer import (
    Authorizer,
    Decision,
    PermissionDenied,
    token_authorizer,
)
from proconsul.acl.errors import ACLDenied, ACLNotFound
from proconsul.acl.identity import (
    ScopedPolicy,
    node_identity_policy,
    service_identity_policy,
    token_policies,
)
from proconsul.acl.rules import MAX_RULES_BYTES, Access, ParsedPolicy, RuleError, parse_rules

__all__ = [
    "MAX_RULES_BYTES",
    "ACLDenied",
    "ACLNotFound",
    "Access",
    "Authorizer",
    "Decision",
    "ParsedPolicy",
    "PermissionDenied",
    "RuleError",
    "ScopedPolicy",
    "node_identity_policy",
    "parse_rules",
    "service_identity_policy",
    "token_authorizer",
    "token_policies",
]
