"""ACLs on client agents.

Job:
- `ClientACLResolver`: a client agent has no state store, so it asks a server
  ("ACL.Resolve", server/acl_rpc.py) for a token's row with its policies and
  roles, compiles the `Authorizer` itself (identities expand locally) and
  caches the result.

Rules (Consul's, as documented):
- One combined TTL per token: the smallest of `acl.token_ttl`, `policy_ttl`
  and `role_ttl` (one reply carries all three kinds of row, so an edit of any
  of them is seen within its own TTL). A token past its ExpirationTime is
  never served from the cache.
- When no server answers (transport failure, timeout, or a server error other
  than "ACL not found"), `acl.down_policy` decides: `extend-cache` (default)
  serves the cached entry however old, else denies; `async-cache` serves a
  stale entry at once and refreshes it in the background (and on failure
  behaves as extend-cache); `allow` allows everything but ACL management;
  `deny` denies everything.
- An outage is logged once: a warning at the first lookup no server answers,
  then nothing until a lookup succeeds again, which logs at info that the
  servers are reachable again.
- "ACL not found" from a server drops the cached entry and raises
  `ACLNotFound` (403).
- Concurrent resolutions of one secret share one RPC. The cache is bounded.
- Secrets are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from proconsul.acl.authorizer import Authorizer, DefaultPolicy, token_authorizer
from proconsul.acl.errors import ACLDenied, ACLNotFound
from proconsul.acl.resolved import ResolvedToken
from proconsul.acl.service import RESOLVE_METHOD
from proconsul.rpc.acl_codec import CallRaw, decode_result, encode_call
from proconsul.rpc.errors import RPCError
from proconsul.structs.acl import ANONYMOUS_TOKEN_SECRET_ID
from proconsul.structs.rpc import ACLCall, ResolveReply

log = logging.getLogger("proconsul.acl")

RESOLVE_TIMEOUT_S = 5.0
CACHE_MAX = 4096
DOWN_POLICIES = ("extend-cache", "async-cache", "allow", "deny")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Entry:
    resolved: ResolvedToken
    fetched_at: float


class ClientACLResolver:
    def __init__(
        self,
        call_raw: CallRaw,
        datacenter: str,
        *,
        default_policy: DefaultPolicy = "deny",
        enable_key_list_policy: bool = False,
        down_policy: str = "extend-cache",
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.call_raw = call_raw
        self.datacenter = datacenter
        self.default_policy: DefaultPolicy = default_policy
        self.enable_key_list_policy = enable_key_list_policy
        self.down_policy = down_policy if down_policy in DOWN_POLICIES else "extend-cache"
        self.ttl_s = ttl_s
        self.clock = clock
        self.now = now
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[ResolvedToken]] = {}
        self.hits = 0
        self.fetches = 0
        self.down = 0  # resolutions decided by down_policy
        self.outage = False  # a lookup failed and none has succeeded since

    def _usable(self, entry: _Entry) -> bool:
        expires = entry.resolved.expiration_time
        return expires is None or expires >= self.now()

    async def resolve(self, secret: str) -> ResolvedToken:
        """The rights of `secret` ("" = anonymous); raises ACLNotFound."""
        secret = secret or ANONYMOUS_TOKEN_SECRET_ID
        entry = self._cache.get(secret)
        if entry is not None and self._usable(entry):
            if self.clock() - entry.fetched_at < self.ttl_s:
                self.hits += 1
                return entry.resolved
            if self.down_policy == "async-cache":
                self._start_fetch(secret)  # refresh behind the caller's back
                self.hits += 1
                return entry.resolved
        return await asyncio.shield(self._start_fetch(secret))

    def _start_fetch(self, secret: str) -> asyncio.Task[ResolvedToken]:
        task = self._inflight.get(secret)
        if task is None:
            task = asyncio.ensure_future(self._fetch(secret))
            self._inflight[secret] = task
            task.add_done_callback(lambda _t: self._inflight.pop(secret, None))
            # A background refresh nobody awaits must not log "never retrieved".
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _fetch(self, secret: str) -> ResolvedToken:
        self.fetches += 1
        try:
            data = await self.call_raw(
                RESOLVE_METHOD, encode_call(ACLCall(caller=secret)), RESOLVE_TIMEOUT_S
            )
            reply: ResolveReply = decode_result(RESOLVE_METHOD, data)
        except ACLDenied:
            self._cache.pop(secret, None)
            raise ACLNotFound() from None
        except RPCError as exc:
            return self._down(secret, exc)
        except (ConnectionError, TimeoutError) as exc:
            return self._down(secret, exc)
        if self.outage:
            self.outage = False
            log.info("acl: token lookups succeed again: servers reachable again")
        resolved = self.compile(reply)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[secret] = _Entry(resolved, self.clock())
        return resolved

    def compile(self, reply: ResolveReply) -> ResolvedToken:
        policies = {p.id: p for p in reply.policies}
        roles = {r.id: r for r in reply.roles}
        authorizer = token_authorizer(
            reply.token,
            policies.get,
            roles.get,
            self.datacenter,
            default_policy=self.default_policy,
            enable_key_list_policy=self.enable_key_list_policy,
        )
        return ResolvedToken(reply.token.accessor_id, authorizer, reply.token.expiration_time)

    def _down(self, secret: str, exc: Exception) -> ResolvedToken:
        self.down += 1
        if not self.outage:
            self.outage = True
            log.warning(
                "acl: no server resolved a token (%s); applying down_policy %s"
                " until servers are reachable again",
                exc,
                self.down_policy,
            )
        entry = self._cache.get(secret)
        if self.down_policy in ("extend-cache", "async-cache"):
            if entry is not None and self._usable(entry):
                return entry.resolved
            return ResolvedToken("", Authorizer(default_policy="deny"))
        if self.down_policy == "allow":
            return ResolvedToken("", Authorizer(default_policy="allow"))
        return ResolvedToken("", Authorizer(default_policy="deny"))

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "fetches": self.fetches,
            "down": self.down,
            "cached": len(self._cache),
        }
