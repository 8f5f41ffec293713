"""ACL tables of the state store: tokens, policies, roles and the bootstrap marker.

Job: hold the replicated ACL rows and apply the ACL commands to them, stamping
raft indexes and bumping the index keys "acl-tokens", "acl-policies" and
"acl-roles" through the store's bump function.

Rules:
- Only `fsm.apply` calls the `apply_*`/`delete_*` methods; they are
  deterministic (IDs, secrets and times arrive in the command) and refuse a
  write by raising StateError with Consul's wording.
- Built-ins are always present: the global-management policy and the anonymous
  token. The anonymous token cannot be deleted; the built-in policy can only be
  renamed.
- Bootstrapping is allowed once; `bootstrap_index` is the index it happened at,
  and a later bootstrap must present exactly that index (the reset file).
- A write that changes nothing but indexes bumps nothing.
- Snapshots carry every row (`ACLSnapshot`) in insertion order.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from proconsul.structs.acl import (
    ANONYMOUS_TOKEN_ACCESSOR_ID,
    GLOBAL_MANAGEMENT_POLICY_ID,
    ACLPolicy,
    ACLRole,
    ACLToken,
    anonymous_token,
    global_management_policy,
)
from proconsul.structs.commands import (
    ACLBootstrapRequest,
    ACLCommand,
    ACLPolicyDeleteRequest,
    ACLPolicySetRequest,
    ACLRoleSetRequest,
    ACLTokenDeleteRequest,
    ACLTokenSetRequest,
)

TOKENS_KEY = "acl-tokens"
POLICIES_KEY = "acl-policies"
ROLES_KEY = "acl-roles"


class ACLStateError(Exception):
    """A refused ACL write; the FSM turns it into an ApplyError."""


class ACLSnapshot(msgspec.Struct, array_like=True):
    """Every ACL row plus the bootstrap marker. APPEND-ONLY fields."""

    tokens: list[ACLToken]
    policies: list[ACLPolicy]
    roles: list[ACLRole]
    bootstrapped: bool
    bootstrap_index: int


def _same(a: msgspec.Struct, b: msgspec.Struct) -> bool:
    return msgspec.structs.replace(a, create_index=0, modify_index=0) == msgspec.structs.replace(
        b, create_index=0, modify_index=0
    )


class ACLTables:
    def __init__(self, bump: Callable[[int, str], None]) -> None:
        self._bump = bump
        self.tokens: dict[str, ACLToken] = {}  # accessor -> row
        self.secrets: dict[str, str] = {}  # secret -> accessor
        self.policies: dict[str, ACLPolicy] = {}  # id -> row
        self.policy_names: dict[str, str] = {}  # name -> id
        self.roles: dict[str, ACLRole] = {}  # id -> row
        self.role_names: dict[str, str] = {}  # name -> id
        self.bootstrapped = False
        self.bootstrap_index = 0
        self._seed()

    def _seed(self) -> None:
        policy = global_management_policy()
        self.policies[policy.id] = policy
        self.policy_names[policy.name] = policy.id
        token = anonymous_token()
        self.tokens[token.accessor_id] = token
        self.secrets[token.secret_id] = token.accessor_id

    # ----- snapshot ------------------------------------------------------------

    def snapshot(self) -> ACLSnapshot:
        return ACLSnapshot(
            tokens=list(self.tokens.values()),
            policies=list(self.policies.values()),
            roles=list(self.roles.values()),
            bootstrapped=self.bootstrapped,
            bootstrap_index=self.bootstrap_index,
        )

    def restore(self, snap: ACLSnapshot | None) -> None:
        self.tokens, self.secrets = {}, {}
        self.policies, self.policy_names = {}, {}
        self.roles, self.role_names = {}, {}
        self.bootstrapped, self.bootstrap_index = False, 0
        if snap is None:  # a snapshot from before ACL state existed
            self._seed()
            return
        for token in snap.tokens:
            self.tokens[token.accessor_id] = token
            self.secrets[token.secret_id] = token.accessor_id
        for policy in snap.policies:
            self.policies[policy.id] = policy
            self.policy_names[policy.name] = policy.id
        for role in snap.roles:
            self.roles[role.id] = role
            self.role_names[role.name] = role.id
        self.bootstrapped = snap.bootstrapped
        self.bootstrap_index = snap.bootstrap_index

    # ----- reads -----------------------------------------------------------------

    def token_by_secret(self, secret: str) -> ACLToken | None:
        accessor = self.secrets.get(secret)
        return None if accessor is None else self.tokens.get(accessor)

    def policy_by_name(self, name: str) -> ACLPolicy | None:
        pid = self.policy_names.get(name)
        return None if pid is None else self.policies.get(pid)

    def role_by_name(self, name: str) -> ACLRole | None:
        rid = self.role_names.get(name)
        return None if rid is None else self.roles.get(rid)

    def token_list(self) -> list[ACLToken]:
        """User tokens in creation order, then the anonymous token (as Consul's CLI shows)."""
        rows = [t for t in self.tokens.values() if t.accessor_id != ANONYMOUS_TOKEN_ACCESSOR_ID]
        rows.sort(key=lambda t: (t.create_index, t.accessor_id))
        anonymous = self.tokens.get(ANONYMOUS_TOKEN_ACCESSOR_ID)
        return rows + ([anonymous] if anonymous is not None else [])

    def policy_list(self) -> list[ACLPolicy]:
        return sorted(self.policies.values(), key=lambda p: p.id)

    def role_list(self) -> list[ACLRole]:
        return sorted(self.roles.values(), key=lambda r: r.id)

    # ----- writes ----------------------------------------------------------------

    def bootstrap(self, index: int, token: ACLToken, reset_index: int) -> None:
        if self.bootstrapped and reset_index != self.bootstrap_index:
            raise ACLStateError(
                f"ACL bootstrap no longer allowed (reset index: {self.bootstrap_index})"
            )
        self.set_token(index, token)
        self.bootstrapped = True
        self.bootstrap_index = index

    def set_token(self, index: int, token: ACLToken) -> None:
        if not token.accessor_id or not token.secret_id:
            raise ACLStateError("Missing token AccessorID or SecretID")
        owner = self.secrets.get(token.secret_id)
        if owner is not None and owner != token.accessor_id:
            raise ACLStateError("Invalid Token: SecretID is already in use")
        existing = self.tokens.get(token.accessor_id)
        if existing is not None:
            if existing.secret_id != token.secret_id:
                raise ACLStateError("Changing a token's SecretID is not permitted")
            if _same(existing, token):
                return
            token.create_index = existing.create_index or index
        else:
            token.create_index = index
        token.modify_index = index
        self.tokens[token.accessor_id] = token
        self.secrets[token.secret_id] = token.accessor_id
        self._bump(index, TOKENS_KEY)

    def delete_token(self, index: int, accessor_id: str) -> None:
        if accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID:
            raise ACLStateError("Delete operation not permitted on the anonymous token")
        token = self.tokens.pop(accessor_id, None)
        if token is None:
            return
        self.secrets.pop(token.secret_id, None)
        self._bump(index, TOKENS_KEY)

    def set_policy(self, index: int, policy: ACLPolicy) -> None:
        if not policy.id or not policy.name:
            raise ACLStateError("Missing policy ID or Name")
        other = self.policy_names.get(policy.name)
        if other is not None and other != policy.id:
            raise ACLStateError(
                f"Invalid Policy: A Policy with Name {policy.name!r} already exists"
            )
        existing = self.policies.get(policy.id)
        if (
            policy.id == GLOBAL_MANAGEMENT_POLICY_ID
            and existing is not None
            and (policy.rules, policy.datacenters) != (existing.rules, existing.datacenters)
        ):
            raise ACLStateError(
                "Changing the Rules for the builtin global-management policy is not permitted"
            )
        if existing is not None:
            if _same(existing, policy):
                return
            policy.create_index = existing.create_index or index
            self.policy_names.pop(existing.name, None)
        else:
            policy.create_index = index
        policy.modify_index = index
        self.policies[policy.id] = policy
        self.policy_names[policy.name] = policy.id
        self._bump(index, POLICIES_KEY)

    def delete_policy(self, index: int, policy_id: str) -> None:
        if policy_id == GLOBAL_MANAGEMENT_POLICY_ID:
            raise ACLStateError("Deletion of the builtin global-management policy is not permitted")
        policy = self.policies.pop(policy_id, None)
        if policy is None:
            return
        self.policy_names.pop(policy.name, None)
        self._bump(index, POLICIES_KEY)

    def set_role(self, index: int, role: ACLRole) -> None:
        if not role.id or not role.name:
            raise ACLStateError("Missing role ID or Name")
        other = self.role_names.get(role.name)
        if other is not None and other != role.id:
            raise ACLStateError(f"Invalid Role: A Role with Name {role.name!r} already exists")
        existing = self.roles.get(role.id)
        if existing is not None:
            if _same(existing, role):
                return
            role.create_index = existing.create_index
            self.role_names.pop(existing.name, None)
        else:
            role.create_index = index
        role.modify_index = index
        self.roles[role.id] = role
        self.role_names[role.name] = role.id
        self._bump(index, ROLES_KEY)

    def delete_role(self, index: int, role_id: str) -> None:
        role = self.roles.pop(role_id, None)
        if role is None:
            return
        self.role_names.pop(role.name, None)
        self._bump(index, ROLES_KEY)


def apply_acl(tables: ACLTables, index: int, command: ACLCommand) -> None:
    """Apply one ACL command (the FSM's dispatch); raises ACLStateError when refused."""
    if isinstance(command, ACLBootstrapRequest):
        tables.bootstrap(index, command.token, command.reset_index)
    elif isinstance(command, ACLTokenSetRequest):
        tables.set_token(index, command.token)
    elif isinstance(command, ACLTokenDeleteRequest):
        tables.delete_token(index, command.accessor_id)
    elif isinstance(command, ACLPolicySetRequest):
        tables.set_policy(index, command.policy)
    elif isinstance(command, ACLPolicyDeleteRequest):
        tables.delete_policy(index, command.policy_id)
    elif isinstance(command, ACLRoleSetRequest):
        tables.set_role(index, command.role)
    else:
        tables.delete_role(index, command.role_id)
