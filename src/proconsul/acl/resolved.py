"""A resolved token: who is asking (the accessor, never the secret) and what they may do.

Token resolvers make it (server/acl_resolver.py from the state store,
agent/acl_client.py from a server's answer); every layer that checks a right
takes it, and refuses with `require` (check and raise) or `deny` (the refusal
to raise after a fast check of its own failed): both give Consul's 403 text
naming the token's AccessorID, as a `PermissionDenied` (an `ACLDenied`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from proconsul.acl.authorizer import Authorizer, PermissionDenied


@dataclass(frozen=True, slots=True)
class ResolvedToken:
    accessor_id: str
    authorizer: Authorizer
    expiration_time: datetime | None = None

    def require(
        self, resource: str, access: str, name: str | None = None, *, recursive: bool = False
    ) -> None:
        """Raise `PermissionDenied` unless this token may do `access` on `resource`."""
        self.authorizer.require(
            resource, access, name, accessor_id=self.accessor_id, recursive=recursive
        )

    def deny(
        self, resource: str, access: str, name: str | None = None, *, recursive: bool = False
    ) -> PermissionDenied:
        """The refusal of `access` on `resource` (`name`) to this token, to raise."""
        decision = self.authorizer.decide(resource, access, name, recursive=recursive)
        return PermissionDenied(decision, self.accessor_id)
