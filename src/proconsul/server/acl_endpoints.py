"""ACL endpoints: Consul's ACL.* RPC methods over the state store and the log.

Job: validate ACL writes, choose everything non-deterministic (accessor and
secret IDs, CreateTime, ExpirationTime from ExpirationTTL) and only then put a
command in the log, so `fsm.apply` stays deterministic on every replica; answer
ACL reads from the store with policy and role links resolved to current names.

Rules:
- Refusals raise `ACLError(status, message)` with Consul's status and wording:
  400 for bad input, 403 `ACL not found` for a missing row, 403 `Permission
  denied: ...` for a second bootstrap.
- Bootstrapping is allowed once; `<data_dir>/acl-bootstrap-reset` holding the
  reset index (the index of the last bootstrap) allows one more, and is removed
  once used.
- `establish()` is the leader's duty: stamp the anonymous token's CreateTime
  and create the `tokens.initial_management` token (which also counts as the
  bootstrap).
- Expired tokens read as missing (reaping them is not built yet).
- No enforcement here yet: callers decide who may call what.
- Secrets are never logged.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from proconsul.acl.rules import RuleError, parse_rules
from proconsul.acl.structs import (
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
from proconsul.server.endpoints import Log
from proconsul.state.acl_tables import POLICIES_KEY, ROLES_KEY, TOKENS_KEY
from proconsul.state.fsm import ApplyError
from proconsul.state.store import StateStore
from proconsul.structs.commands import (
    ACLBootstrapRequest,
    ACLCommand,
    ACLPolicyDeleteRequest,
    ACLPolicySetRequest,
    ACLRoleDeleteRequest,
    ACLRoleSetRequest,
    ACLTokenDeleteRequest,
    ACLTokenSetRequest,
)

log = logging.getLogger("proconsul.acl")

RESET_FILE = "acl-bootstrap-reset"
_NOT_FOUND = "ACL not found"
_RESERVED_IDS = frozenset({ANONYMOUS_TOKEN_ACCESSOR_ID, ANONYMOUS_TOKEN_SECRET_ID})


class ACLError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> ACLError:
    return ACLError(400, message)


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
    ) -> None:
        self.store = store
        self.log = log_
        self.datacenter = datacenter
        self.data_dir = data_dir
        self.now = now
        self.new_id = new_id

    async def _apply(self, command: ACLCommand) -> int:
        index, result = await self.log.apply(command)
        if isinstance(result, ApplyError):
            raise ACLError(500, result.message)
        return index

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
        if not self.data_dir:
            return 0, ""
        path = os.path.join(self.data_dir, RESET_FILE)
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read().strip()
        except FileNotFoundError:
            return 0, ""
        try:
            return int(text), path
        except ValueError:
            return 0, path

    async def bootstrap(self) -> ACLToken:
        acl = self.store.acl
        reset, reset_path = self._reset_index()
        if acl.bootstrapped and reset != acl.bootstrap_index:
            raise ACLError(
                403,
                "Permission denied: ACL bootstrap no longer allowed "
                f"(reset index: {acl.bootstrap_index})",
            )
        token = with_hash(self._management_token(BOOTSTRAP_TOKEN_DESCRIPTION))
        index, result = await self.log.apply(ACLBootstrapRequest(token=token, reset_index=reset))
        if isinstance(result, ApplyError):
            raise ACLError(403, f"Permission denied: {result.message}")
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

    def token_read(self, accessor_id: str) -> tuple[int, ACLToken]:
        token = self._live(self.store.acl.tokens.get(accessor_id))
        if token is None:
            raise ACLError(403, _NOT_FOUND)
        return self._index(TOKENS_KEY), self._resolved(token)

    def token_self(self, secret: str) -> tuple[int, ACLToken]:
        token = self._live(self.store.acl.token_by_secret(secret or ANONYMOUS_TOKEN_SECRET_ID))
        if token is None:
            raise ACLError(403, _NOT_FOUND)
        return self._index(TOKENS_KEY), self._resolved(token)

    def token_list(
        self, policy: str = "", role: str = "", service: str = ""
    ) -> tuple[int, list[ACLToken]]:
        rows = []
        now = self.now()
        for token in self.store.acl.token_list():
            if token_expired(token, now):
                continue
            if policy and all(link.id != policy for link in token.policies):
                continue
            if role and all(link.id != role for link in token.roles):
                continue
            if service and all(s.service_name != service for s in token.service_identities):
                continue
            rows.append(self._resolved(token))
        return self._index(TOKENS_KEY), rows

    def policy_read(self, policy_id: str) -> tuple[int, ACLPolicy]:
        policy = self.store.acl.policies.get(policy_id)
        if policy is None:
            raise ACLError(403, _NOT_FOUND)
        return self._index(POLICIES_KEY), policy

    def policy_read_by_name(self, name: str) -> tuple[int, ACLPolicy]:
        policy = self.store.acl.policy_by_name(name)
        if policy is None:
            raise ACLError(403, _NOT_FOUND)
        return self._index(POLICIES_KEY), policy

    def policy_list(self) -> tuple[int, list[ACLPolicy]]:
        return self._index(POLICIES_KEY), self.store.acl.policy_list()

    def role_read(self, role_id: str) -> tuple[int, ACLRole]:
        role = self.store.acl.roles.get(role_id)
        if role is None:
            raise ACLError(403, _NOT_FOUND)
        return self._index(ROLES_KEY), self._resolved_role(role)

    def role_read_by_name(self, name: str) -> tuple[int, ACLRole]:
        role = self.store.acl.role_by_name(name)
        if role is None:
            raise ACLError(403, _NOT_FOUND)
        return self._index(ROLES_KEY), self._resolved_role(role)

    def role_list(self, policy: str = "") -> tuple[int, list[ACLRole]]:
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

    async def token_create(self, token: ACLToken) -> ACLToken:
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
        return await self._write_token(token)

    async def _write_token(self, token: ACLToken) -> ACLToken:
        token.policies = self._policy_links(token.policies)
        token.roles = self._role_links(token.roles)
        self._check_identities(token)
        token.legacy = False
        token.hash = b""
        token = with_hash(token)
        await self._apply(ACLTokenSetRequest(token=token))
        return self._resolved(self.store.acl.tokens[token.accessor_id])

    async def token_update(self, accessor_id: str, update: ACLToken) -> ACLToken:
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
        return await self._write_token(token)

    async def token_clone(self, accessor_id: str, description: str) -> ACLToken:
        existing = self.store.acl.tokens.get(accessor_id)
        if existing is None:
            raise ACLError(403, _NOT_FOUND)
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
        return await self._write_token(clone)

    async def token_delete(self, accessor_id: str) -> None:
        if accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID:
            raise _bad("Delete operation not permitted on the anonymous token")
        if accessor_id not in self.store.acl.tokens:
            raise ACLError(403, _NOT_FOUND)
        await self._apply(ACLTokenDeleteRequest(accessor_id=accessor_id))

    # ----- policy writes ---------------------------------------------------------------

    async def policy_set(self, policy: ACLPolicy, policy_id: str = "") -> ACLPolicy:
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
                raise _bad("Changing the Rules for the builtin global-management policy")
        try:
            parse_rules(policy.rules)
        except RuleError as exc:
            raise _bad(f"Invalid Policy: failed to parse rules: {exc}") from None
        policy.hash = b""
        policy = with_hash(policy)
        await self._apply(ACLPolicySetRequest(policy=policy))
        return acl.policies[policy.id]

    async def policy_delete(self, policy_id: str) -> None:
        if policy_id == GLOBAL_MANAGEMENT_POLICY_ID:
            raise _bad("Delete operation not permitted on the builtin global-management policy")
        if policy_id not in self.store.acl.policies:
            raise ACLError(403, _NOT_FOUND)
        await self._apply(ACLPolicyDeleteRequest(policy_id=policy_id))

    # ----- role writes -----------------------------------------------------------------

    async def role_set(self, role: ACLRole, role_id: str = "") -> ACLRole:
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
        await self._apply(ACLRoleSetRequest(role=role))
        return self._resolved_role(acl.roles[role.id])

    async def role_delete(self, role_id: str) -> None:
        if role_id not in self.store.acl.roles:
            raise ACLError(403, _NOT_FOUND)
        await self._apply(ACLRoleDeleteRequest(role_id=role_id))
