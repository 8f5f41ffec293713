"""The ACL API as the HTTP layer sees it: `ACLService`.

Job: one typed interface for the ACL operations (bootstrap, tokens, policies,
roles), served in process on servers and over RPC on client agents, so the
HTTP routes (http/acl_routes.py) call one thing either way.

Rules:
- Every method takes the caller's secret as `caller` ("" is the anonymous
  token), except `bootstrap` (no token needed) and `token_self` (the secret
  is what it reads).
- Failures are `ACLError` (acl/errors.py) with Consul's status and text.
- Reads answer `(index, rows)`; writes the stored row; deletes nothing.
"""

from __future__ import annotations

from typing import Protocol

from proconsul.structs.acl import ACLPolicy, ACLRole, ACLToken


class ACLService(Protocol):
    """`ACLEndpoints` (server/acl_endpoints.py) on servers, `RemoteACLEndpoints`
    (agent/acl_client.py) on clients. `caller` is the caller's secret."""

    async def bootstrap(self) -> ACLToken: ...

    async def token_read(self, accessor_id: str, *, caller: str = "") -> tuple[int, ACLToken]: ...

    async def token_self(self, secret: str) -> tuple[int, ACLToken]: ...

    async def token_list(
        self, policy: str = "", role: str = "", service: str = "", *, caller: str = ""
    ) -> tuple[int, list[ACLToken]]: ...

    async def token_create(self, token: ACLToken, *, caller: str = "") -> ACLToken: ...

    async def token_update(
        self, accessor_id: str, update: ACLToken, *, caller: str = ""
    ) -> ACLToken: ...

    async def token_clone(
        self, accessor_id: str, description: str, *, caller: str = ""
    ) -> ACLToken: ...

    async def token_delete(self, accessor_id: str, *, caller: str = "") -> None: ...

    async def policy_set(
        self, policy: ACLPolicy, policy_id: str = "", *, caller: str = ""
    ) -> ACLPolicy: ...

    async def policy_read(self, policy_id: str, *, caller: str = "") -> tuple[int, ACLPolicy]: ...

    async def policy_read_by_name(
        self, name: str, *, caller: str = ""
    ) -> tuple[int, ACLPolicy]: ...

    async def policy_list(self, *, caller: str = "") -> tuple[int, list[ACLPolicy]]: ...

    async def policy_delete(self, policy_id: str, *, caller: str = "") -> None: ...

    async def role_set(self, role: ACLRole, role_id: str = "", *, caller: str = "") -> ACLRole: ...

    async def role_read(self, role_id: str, *, caller: str = "") -> tuple[int, ACLRole]: ...

    async def role_read_by_name(self, name: str, *, caller: str = "") -> tuple[int, ACLRole]: ...

    async def role_list(
        self, policy: str = "", *, caller: str = ""
    ) -> tuple[int, list[ACLRole]]: ...

    async def role_delete(self, role_id: str, *, caller: str = "") -> None: ...
