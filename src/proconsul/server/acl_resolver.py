"""Token resolution on servers: a secret -> the token's accessor and authorizer.

Job: look a secret up in this server's ACL tables, expand its policies, roles
and identities (acl/identity.py) and compile them into an `Authorizer` for this
datacenter, once per secret until an ACL table changes.

Rules:
- An empty secret is the anonymous token; callers substitute the agent's
  `default` token before asking, as Consul does.
- A secret with no token, or a token past its ExpirationTime, raises
  `ACLNotFound` (Consul's 403 "ACL not found").
- The cache is dropped whenever the token, policy or role table's index moves,
  so an edit is seen by the next request; an entry also dies at its token's
  expiry. The cache is bounded.
- Secrets are never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from proconsul.acl.authorizer import DefaultPolicy, token_authorizer
from proconsul.acl.errors import ACLNotFound
from proconsul.acl.resolved import ResolvedToken
from proconsul.state.acl_tables import POLICIES_KEY, ROLES_KEY, TOKENS_KEY
from proconsul.state.store import StateStore
from proconsul.structs.acl import ANONYMOUS_TOKEN_SECRET_ID, ACLToken, token_expired

CACHE_MAX = 4096


def _now() -> datetime:
    return datetime.now(UTC)


class ServerACLResolver:
    def __init__(
        self,
        store: StateStore,
        datacenter: str,
        *,
        default_policy: DefaultPolicy = "deny",
        enable_key_list_policy: bool = False,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.store = store
        self.datacenter = datacenter
        self.default_policy: DefaultPolicy = default_policy
        self.enable_key_list_policy = enable_key_list_policy
        self.now = now
        self._version: tuple[int, int, int, int] = (-1, -1, -1, -1)
        self._cache: dict[str, ResolvedToken] = {}
        self.hits = 0
        self.misses = 0

    def _tables_version(self) -> tuple[int, int, int, int]:
        # A restore may bring back lower indexes: its count is part of the version.
        index = self.store.index
        return index(TOKENS_KEY), index(POLICIES_KEY), index(ROLES_KEY), self.store.restores

    def resolve(self, secret: str) -> ResolvedToken:
        secret = secret or ANONYMOUS_TOKEN_SECRET_ID
        version = self._tables_version()
        if version != self._version:
            self._cache.clear()
            self._version = version
        cached = self._cache.get(secret)
        if cached is not None:
            expires = cached.expiration_time
            if expires is None or expires >= self.now():
                self.hits += 1
                return cached
        self.misses += 1
        token = self.store.acl.token_by_secret(secret)
        if token is None or token_expired(token, self.now()):
            raise ACLNotFound()
        resolved = self.compile(token)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[secret] = resolved
        return resolved

    def compile(self, token: ACLToken) -> ResolvedToken:
        acl = self.store.acl
        authorizer = token_authorizer(
            token,
            acl.policies.get,
            acl.roles.get,
            self.datacenter,
            default_policy=self.default_policy,
            enable_key_list_policy=self.enable_key_list_policy,
        )
        return ResolvedToken(token.accessor_id, authorizer, token.expiration_time)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "cached": len(self._cache)}
