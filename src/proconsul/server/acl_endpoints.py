"""ACL endpoints: Consul's ACL.* RPC methods over the state store and the log.

Job: validate ACL writes, choose everything non-deterministic (accessor and
secret IDs, CreateTime, ExpirationTime from ExpirationTTL) and only then put a
command in the log, so `fsm.apply` stays deterministic on every replica; answer
ACL reads from the store with policy and role links resolved to current names.

Rules:
- Refusals raise `ACLDenied` (403) with Consul's wording: `ACL not found`
  (`ACLNotFound`) for a missing row, `Permission denied: ...` for a second
  bootstrap; bad input raises `ACLError(400, message)`, a failed write
  `ACLError(500, message)`.
- Bootstrapping is allowed once; `<data_dir>/acl-bootstrap-reset` holding the
  reset index (the index of the last bootstrap) allows one more, and is removed
  once used.
- `establish()` is the leader's duty: stamp the anonymous token's CreateTime
  and create the `tokens.initial_management` token (which also counts as the
  bootstrap).
- Expired tokens read as missing; the leader deletes them (`reap_expired`).
- Enforcement (when a resolver is set, i.e. ACLs are on): every method takes
  the caller's secret as `caller`. Reads need `acl:read`, writes `acl:write`;
  `token_self` needs only a valid token; `bootstrap` needs none. An unknown
  or expired caller secret is `ACLNotFound`; a missing right an `ACLDenied`
  with Consul's `Permission denied: token with AccessorID ... lacks
  permission 'acl:write'`. A caller with `acl:read` but not `acl:write`
  reads tokens with their SecretID shown as `<hidden>`, as in Consul.
- The methods are the operations of `ACLService` (acl/service.py), each
  async, so the client-side `RemoteACLEndpoints` (rpc/acl_codec.py) has the
  same shape.
- Writes go into the log with the caller's secret: on a follower the leader
  authorizes the forwarded command again (server/raft_rpc.py). The leader's
  own duties (`establish`, `reap_expired`) and `bootstrap` pass none.
- Writes answer rows read back from this store, so on a follower (whose
  writes go to the leader) they first wait, bounded, until it applied them.
- Secrets are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from proconsul.acl.errors import ACLDenied, ACLError, ACLNotFound
from proconsul.acl.resolved import ResolvedToken
from proconsul.acl.rules import RuleError, parse_rules
from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.server.endpoints import Log
from proconsul.state.acl_tables import POLICIES_KEY, ROLES_KEY, TOKENS_KEY
from proconsul.state.store import StateStore
from proconsul.structs.acl import (
    ANONYMOUS_TOKEN_ACCESSOR_ID,
    ANONYMOUS_TOKEN_SECRET_ID,
    BOOTSTRAP_TOKEN_DESCRIPTION,
    GLOBAL_MANAGEMENT_POLICY_ID,
    GLOBAL_MANAGEMENT_POLICY_NAME,
    INITIAL_MANAGEMENT_TOKEN_DESCRIPTION,
    ZERO_TIME,
    ACLLink,
    ACLPolicy,
    ACLRole,
    ACLToken,
    resolve_expiration,
    token_expired,
    valid_identity_name,
    valid_policy_name,
    valid_role_name,
    with_hash,
)
from proconsul.structs.commands import (
    ACLBootstrapRequest,
    ACLCommand,
    ACLPolicyDeleteRequest,
    ACLPolicySetRequest,
    ACLRoleDeleteRequest,
    ACLRoleSetRequest,
    ACLTokenDeleteRequest,
    ACLTokenSetRequest,
    ApplyError,
)
from proconsul.structs.rpc import ResolveReply

log = logging.getLogger("proconsul.acl")

RESET_FILE = "acl-bootstrap-reset"
REDACTED_SECRET = "<hidden>"
APPLIED_WAIT_S = 10.0  # how long a follower waits to see its forwarded write
_RESERVED_IDS = frozenset({ANONYMOUS_TOKEN_ACCESSOR_ID, ANONYMOUS_TOKEN_SECRET_ID})


def read_reset_index(data_dir: str) -> tuple[int, str]:
    """The index in `<data_dir>/acl-bootstrap-reset` (0 when absent or unreadable)
    and the file's path ("" when it does not exist)."""
    if not data_dir:
        return 0, ""
    path = os.path.join(data_dir, RESET_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return 0, ""
    except OSError:
        return 0, path
    try:
        return int(text), path
    except ValueError:
        return 0, path


def _bad(message: str) -> ACLError:
    return ACLError(400, message)


def bootstrap_denied(bootstrap_index: int) -> ACLDenied:
    """Consul's refusal of a second bootstrap (without the reset file's index)."""
    return ACLDenied(
        f"Permission denied: ACL bootstrap no longer allowed (reset index: {bootstrap_index})"
    )


def _valid_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower() and len(text) == 36
    except ValueError:
        return False


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


class ACLEndpoints:
    def __init__(
        self,
        store: StateStore,
        log_: Log,
        datacenter: str,
        data_dir: str = "",
        *,
        now: Callable[[], datetime] = _now,
        new_id: Callable[[], str] = _new_id,
        resolver: ServerACLResolver | None = None,
    ) -> None:
        self.store = store
        self.log = log_
        self.datacenter = datacenter
        self.data_dir = data_dir
        self.now = now
        self.new_id = new_id
        # None: no enforcement (every caller may do anything).
        self.resolver = resolver

    # ----- enforcement ---------------------------------------------------------------

    def caller(self, token: str) -> ResolvedToken | None:
        """The caller's rights; None without a resolver. Unknown secret: ACLNotFound."""
        if self.resolver is None:
            return None
        return self.resolver.resolve(token)

    def _require(self, token: str, access: str) -> ResolvedToken | None:
        resolved = self.caller(token)
        if resolved is None:
            return None
        authz = resolved.authorizer
        if not (authz.acl_write() if access == "write" else authz.acl_read()):
            raise resolved.deny("acl", access)
        return resolved

    def _redact(self, resolved: ResolvedToken | None, token: ACLToken) -> ACLToken:
        if resolved is None or resolved.authorizer.acl_write():
            return token
        return msgspec.structs.replace(token, secret_id=REDACTED_SECRET)

    async def reap_expired(self) -> int:
        """Delete tokens past their ExpirationTime (the leader's duty); how many."""
        now = self.now()
        expired = [t.accessor_id for t in self.store.acl.token_list() if token_expired(t, now)]
        for accessor_id in expired:
            if accessor_id in self.store.acl.tokens:
                await self._apply(ACLTokenDeleteRequest(accessor_id=accessor_id))
        if expired:
            log.info("acl: deleted %d expired token(s)", len(expired))
        return len(expired)

    async def _apply(self, command: ACLCommand, caller: str = "") -> int:
        """Put `command` in the log for `caller` ("" for the leader's own duties);
        on a follower the leader checks `caller`'s acl:write again."""
        index, result = await self.log.apply(command, caller)
        if isinstance(result, ApplyError):
            raise ACLError(500, result.message)
        await self._applied_here(index)
        return index

    async def _applied_here(self, index: int) -> None:
        """Wait until this store has applied `index`: on a follower the write was
        forwarded to the leader and arrives here a moment later, and writes answer
        the stored row read back from this store."""
        store = self.store
        if store.last_index >= index:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + APPLIED_WAIT_S
        while store.last_index < index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ACLError(500, f"timed out waiting for index {index} to be applied")
            changed: asyncio.Future[None] = loop.create_future()

            def wake(fut: asyncio.Future[None] = changed) -> None:
                if not fut.done():
                    fut.set_result(None)

            handle = store.watches.subscribe((TOKENS_KEY, POLICIES_KEY, ROLES_KEY), wake)
            try:
                await asyncio.wait_for(changed, remaining)
            except TimeoutError:
                pass
            finally:
                store.watches.unsubscribe(handle)

    # ----- leader duties and bootstrap ----------------------------------------------

    async def establish(self, initial_management: str = "") -> None:
        acl = self.store.acl
        anonymous = acl.tokens.get(ANONYMOUS_TOKEN_ACCESSOR_ID)
        if anonymous is not None and anonymous.create_time == ZERO_TIME:
            stamped = msgspec.structs.replace(anonymous, create_time=self.now())
            await self._apply(ACLTokenSetRequest(token=with_hash(stamped)))
        if initial_management and acl.token_by_secret(initial_management) is None:
            token = self._management_token(INITIAL_MANAGEMENT_TOKEN_DESCRIPTION)
            token.secret_id = initial_management
            token = with_hash(token)
            if not acl.bootstrapped:
                await self._apply(ACLBootstrapRequest(token=token))
            else:
                await self._apply(ACLTokenSetRequest(token=token))
            log.info("acl: created the initial management token")

    def _management_token(self, description: str) -> ACLToken:
        return ACLToken(
            accessor_id=self.new_id(),
            secret_id=self.new_id(),
            description=description,
            policies=[ACLLink(id=GLOBAL_MANAGEMENT_POLICY_ID, name=GLOBAL_MANAGEMENT_POLICY_NAME)],
            create_time=self.now(),
        )

    def _reset_index(self) -> tuple[int, str]:
        return read_reset_index(self.data_dir)

    async def bootstrap(self) -> ACLToken:
        acl = self.store.acl
        reset, reset_path = self._reset_index()
        if acl.bootstrapped and reset != acl.bootstrap_index:
            raise bootstrap_denied(acl.bootstrap_index)
        token = with_hash(self._management_token(BOOTSTRAP_TOKEN_DESCRIPTION))
        index, result = await self.log.apply(ACLBootstrapRequest(token=token, reset_index=reset))
        if isinstance(result, ApplyError):
            raise ACLDenied(f"Permission denied: {result.message}")
        await self._applied_here(index)
        if reset_path:
            try:
                os.remove(reset_path)
            except OSError:
                log.warning("acl: could not remove the bootstrap reset file")
        log.info("acl: bootstrapped at index %d", index)
        stored = acl.tokens[token.accessor_id]
        return self._resolved(stored)

    # ----- reads -----------------------------------------------------------------

    def _index(self, key: str) -> int:
        return max(self.store.index(key), 1)

    def _resolve_links(self, links: list[ACLLink], table: str) -> list[ACLLink]:
        acl = self.store.acl
        rows: dict[str, ACLPolicy] | dict[str, ACLRole] = (
            acl.policies if table == "policy" else acl.roles
        )
        out = []
        for link in links:
            row = rows.get(link.id)
            if row is not None:
                out.append(ACLLink(id=row.id, name=row.name))
        return out

    def _resolved(self, token: ACLToken) -> ACLToken:
        return msgspec.structs.replace(
            token,
            policies=self._resolve_links(token.policies, "policy"),
            roles=self._resolve_links(token.roles, "role"),
        )

    def _live(self, token: ACLToken | None) -> ACLToken | None:
        """Expired tokens read as missing until they are reaped."""
        if token is None or token_expired(token, self.now()):
            return None
        return token

    async def token_read(self, accessor_id: str, *, caller: str = "") -> tuple[int, ACLToken]:
        resolved = self._require(caller, "read")
        row = self._live(self.store.acl.tokens.get(accessor_id))
        if row is None:
            raise ACLNotFound()
        return self._index(TOKENS_KEY), self._redact(resolved, self._resolved(row))

    async def token_self(self, secret: str) -> tuple[int, ACLToken]:
        """The caller's own token: any valid secret may read itself."""
        token = self._live(self.store.acl.token_by_secret(secret or ANONYMOUS_TOKEN_SECRET_ID))
        if token is None:
            raise ACLNotFound()
        return self._index(TOKENS_KEY), self._resolved(token)

    async def token_resolve(self, secret: str) -> ResolveReply:
        """The token behind `secret` (its SecretID blanked: the caller holds it)
        with every policy and role it links, roles' policies included: what a
        client agent needs to build the authorizer itself (identities expand
        there, acl/identity.py). Unknown or expired: `ACLNotFound`."""
        acl = self.store.acl
        token = self._live(acl.token_by_secret(secret or ANONYMOUS_TOKEN_SECRET_ID))
        if token is None:
            raise ACLNotFound()
        roles = [role for link in token.roles if (role := acl.roles.get(link.id)) is not None]
        policy_ids = dict.fromkeys(
            [link.id for link in token.policies]
            + [link.id for role in roles for link in role.policies]
        )
        policies = [policy for pid in policy_ids if (policy := acl.policies.get(pid)) is not None]
        blank = msgspec.structs.replace(token, secret_id="")
        return ResolveReply(token=blank, policies=policies, roles=roles)

    async def token_list(
        self, policy: str = "", role: str = "", service: str = "", *, caller: str = ""
    ) -> tuple[int, list[ACLToken]]:
        resolved = self._require(caller, "read")
        rows = []
        now = self.now()
        for row in self.store.acl.token_list():
            if token_expired(row, now):
                continue
            if policy and all(link.id != policy for link in row.policies):
                continue
            if role and all(link.id != role for link in row.roles):
                continue
            if service and all(s.service_name != service for s in row.service_identities):
                continue
            rows.append(self._redact(resolved, self._resolved(row)))
        return self._index(TOKENS_KEY), rows

    async def policy_read(self, policy_id: str, *, caller: str = "") -> tuple[int, ACLPolicy]:
        self._require(caller, "read")
        policy = self.store.acl.policies.get(policy_id)
        if policy is None:
            raise ACLNotFound()
        return self._index(POLICIES_KEY), policy

    async def policy_read_by_name(self, name: str, *, caller: str = "") -> tuple[int, ACLPolicy]:
        self._require(caller, "read")
        policy = self.store.acl.policy_by_name(name)
        if policy is None:
            raise ACLNotFound()
        return self._index(POLICIES_KEY), policy

    async def policy_list(self, *, caller: str = "") -> tuple[int, list[ACLPolicy]]:
        self._require(caller, "read")
        return self._index(POLICIES_KEY), self.store.acl.policy_list()

    async def role_read(self, role_id: str, *, caller: str = "") -> tuple[int, ACLRole | None]:
        """A missing role is None (Consul answers it with a bare 404, unlike
        tokens and policies, which are `ACL not found`)."""
        self._require(caller, "read")
        role = self.store.acl.roles.get(role_id)
        return self._index(ROLES_KEY), None if role is None else self._resolved_role(role)

    async def role_read_by_name(self, name: str, *, caller: str = "") -> tuple[int, ACLRole | None]:
        self._require(caller, "read")
        role = self.store.acl.role_by_name(name)
        return self._index(ROLES_KEY), None if role is None else self._resolved_role(role)

    async def role_list(self, policy: str = "", *, caller: str = "") -> tuple[int, list[ACLRole]]:
        self._require(caller, "read")
        rows = [
            self._resolved_role(r)
            for r in self.store.acl.role_list()
            if not policy or any(link.id == policy for link in r.policies)
        ]
        return self._index(ROLES_KEY), rows

    def _resolved_role(self, role: ACLRole) -> ACLRole:
        return msgspec.structs.replace(role, policies=self._resolve_links(role.policies, "policy"))

    # ----- link and identity validation -------------------------------------------------

    def _policy_links(self, links: list[ACLLink]) -> list[ACLLink]:
        acl = self.store.acl
        out: list[ACLLink] = []
        for link in links:
            if link.id:
                found = acl.policies.get(link.id)
                if found is None:
                    raise _bad(f"cannot find policy {link.id}")
            else:
                found = acl.policy_by_name(link.name)
                if found is None:
                    raise _bad(f"cannot find policy {link.name}")
            if all(existing.id != found.id for existing in out):
                out.append(ACLLink(id=found.id, name=found.name))
        return out

    def _role_links(self, links: list[ACLLink]) -> list[ACLLink]:
        acl = self.store.acl
        out: list[ACLLink] = []
        for link in links:
            if link.id:
                found = acl.roles.get(link.id)
                if found is None:
                    raise _bad(f"cannot find role {link.id}")
            else:
                found = acl.role_by_name(link.name)
                if found is None:
                    raise _bad(f"cannot find role {link.name}")
            if all(existing.id != found.id for existing in out):
                out.append(ACLLink(id=found.id, name=found.name))
        return out

    def _check_identities(self, row: ACLToken | ACLRole) -> None:
        for service in row.service_identities:
            if not service.service_name or not valid_identity_name(service.service_name):
                raise _bad(f"Service identity {service.service_name!r} has an invalid name")
        for node in row.node_identities:
            if not valid_identity_name(node.node_name):
                raise _bad(f"Node identity {node.node_name!r} has an invalid name")
            if not node.datacenter:
                raise _bad(f"Node identity {node.node_name!r} requires a Datacenter")

    # ----- token writes -------------------------------------------------------------

    async def token_create(self, token: ACLToken, *, caller: str = "") -> ACLToken:
        self._require(caller, "write")
        acl = self.store.acl
        if token.accessor_id:
            if not _valid_uuid(token.accessor_id) or token.accessor_id in _RESERVED_IDS:
                raise _bad("Invalid Token: AccessorID must be a valid UUID")
            if token.accessor_id in acl.tokens:
                raise _bad("Invalid Token: AccessorID is already in use")
        else:
            token.accessor_id = self.new_id()
        if token.secret_id:
            if not _valid_uuid(token.secret_id) or token.secret_id in _RESERVED_IDS:
                raise _bad("Invalid Token: SecretID must be a valid UUID")
            if acl.token_by_secret(token.secret_id) is not None:
                raise _bad("Invalid Token: SecretID is already in use")
        else:
            token.secret_id = self.new_id()
        now = self.now()
        try:
            token.expiration_time = resolve_expiration(token, now)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        token.expiration_ttl = None
        token.create_time = now
        return await self._write_token(token, caller)

    async def _write_token(self, token: ACLToken, caller: str) -> ACLToken:
        token.policies = self._policy_links(token.policies)
        token.roles = self._role_links(token.roles)
        self._check_identities(token)
        token.legacy = False
        token.hash = b""
        token = with_hash(token)
        await self._apply(ACLTokenSetRequest(token=token), caller)
        return self._resolved(self.store.acl.tokens[token.accessor_id])

    async def token_update(
        self, accessor_id: str, update: ACLToken, *, caller: str = ""
    ) -> ACLToken:
        self._require(caller, "write")
        if update.accessor_id and update.accessor_id != accessor_id:
            raise _bad("Token Accessor ID in URL and payload do not match")
        existing = self.store.acl.tokens.get(accessor_id)
        if existing is None:
            raise _bad(f"Cannot find token {accessor_id!r}")
        if update.secret_id and update.secret_id != existing.secret_id:
            raise _bad("Changing a token's SecretID is not permitted")
        if update.local != existing.local:
            raise _bad("Cannot toggle local mode of a token")
        if update.expiration_ttl or (
            update.expiration_time is not None
            and update.expiration_time != existing.expiration_time
        ):
            raise _bad("Cannot change expiration time")
        token = msgspec.structs.replace(
            existing,
            description=update.description,
            policies=list(update.policies),
            roles=list(update.roles),
            service_identities=list(update.service_identities),
            node_identities=list(update.node_identities),
        )
        return await self._write_token(token, caller)

    async def token_clone(
        self, accessor_id: str, description: str, *, caller: str = ""
    ) -> ACLToken:
        self._require(caller, "write")
        existing = self.store.acl.tokens.get(accessor_id)
        if existing is None:
            raise ACLNotFound()
        if accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID:
            raise _bad("Cannot clone the anonymous token")
        clone = msgspec.structs.replace(
            existing,
            accessor_id=self.new_id(),
            secret_id=self.new_id(),
            description=description or existing.description,
            create_time=self.now(),
            create_index=0,
            modify_index=0,
        )
        return await self._write_token(clone, caller)

    async def token_delete(self, accessor_id: str, *, caller: str = "") -> None:
        self._require(caller, "write")
        if accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID:
            raise _bad("Delete operation not permitted on the anonymous token")
        if accessor_id not in self.store.acl.tokens:
            raise ACLNotFound()
        await self._apply(ACLTokenDeleteRequest(accessor_id=accessor_id), caller)

    # ----- policy writes ---------------------------------------------------------------

    async def policy_set(
        self, policy: ACLPolicy, policy_id: str = "", *, caller: str = ""
    ) -> ACLPolicy:
        self._require(caller, "write")
        acl = self.store.acl
        if policy_id:
            if policy.id and policy.id != policy_id:
                raise _bad("Policy ID in URL and payload do not match")
            if policy_id not in acl.policies:
                raise _bad(f"Cannot find policy {policy_id!r}")
            policy.id = policy_id
        elif policy.id:
            raise _bad("Policy ID must be empty when creating a policy")
        else:
            policy.id = self.new_id()
        if not valid_policy_name(policy.name):
            raise _bad(f"Invalid Policy: invalid Name {policy.name!r}")
        other = acl.policy_by_name(policy.name)
        if other is not None and other.id != policy.id:
            raise _bad(f"Invalid Policy: A Policy with Name {policy.name!r} already exists")
        if policy.id == GLOBAL_MANAGEMENT_POLICY_ID:
            builtin = acl.policies[GLOBAL_MANAGEMENT_POLICY_ID]
            if policy.rules != builtin.rules or policy.datacenters != builtin.datacenters:
                raise _bad(
                    "Changing the Rules for the builtin global-management policy is not permitted"
                )
        try:
            parse_rules(policy.rules)
        except RuleError as exc:
            raise _bad(f"Invalid Policy: failed to parse rules: {exc}") from None
        policy.hash = b""
        policy = with_hash(policy)
        await self._apply(ACLPolicySetRequest(policy=policy), caller)
        return acl.policies[policy.id]

    async def policy_delete(self, policy_id: str, *, caller: str = "") -> None:
        self._require(caller, "write")
        if policy_id == GLOBAL_MANAGEMENT_POLICY_ID:
            raise _bad("Delete operation not permitted on the builtin global-management policy")
        if policy_id not in self.store.acl.policies:
            raise ACLNotFound()
        await self._apply(ACLPolicyDeleteRequest(policy_id=policy_id), caller)

    # ----- role writes -----------------------------------------------------------------

    async def role_set(self, role: ACLRole, role_id: str = "", *, caller: str = "") -> ACLRole:
        self._require(caller, "write")
        acl = self.store.acl
        if role_id:
            if role.id and role.id != role_id:
                raise _bad("Role ID in URL and payload do not match")
            if role_id not in acl.roles:
                raise _bad(f"Cannot find role {role_id!r}")
            role.id = role_id
        elif role.id:
            raise _bad("Role ID must be empty when creating a role")
        else:
            role.id = self.new_id()
        if not valid_role_name(role.name):
            raise _bad(f"Invalid Role: invalid Name {role.name!r}")
        other = acl.role_by_name(role.name)
        if other is not None and other.id != role.id:
            raise _bad(f"Invalid Role: A Role with Name {role.name!r} already exists")
        role.policies = self._policy_links(role.policies)
        self._check_identities(role)
        role.hash = b""
        role = with_hash(role)
        await self._apply(ACLRoleSetRequest(role=role), caller)
        return self._resolved_role(acl.roles[role.id])

    async def role_delete(self, role_id: str, *, caller: str = "") -> None:
        self._require(caller, "write")
        if role_id not in self.store.acl.roles:
            raise ACLNotFound()
        await self._apply(ACLRoleDeleteRequest(role_id=role_id), caller)
