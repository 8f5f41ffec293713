"""A resolved token: who is asking (the accessor, never the secret) and what they may do.

Token resolvers make it (server/acl_resolver.py from the state store,
agent/acl_client.py from a server's answer); every layer that checks a right
takes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from proconsul.acl.authorizer import Authorizer


@dataclass(frozen=True, slots=True)
class ResolvedToken:
    accessor_id: str
    authorizer: Authorizer
    expiration_time: datetime | None = None
