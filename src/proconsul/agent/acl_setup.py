"""The agent's ACL side: its own tokens, token resolution and the ACL endpoints.

Job: `AgentACL` is built with the agent and answers, for every layer above,
"who is asking and what may they do" (`resolve`) and "which token does this
request act with" (`effective_token`); it also hands the ACL HTTP API its
endpoints (the delegate's: local over the store on servers, RPC on clients).

Rules:
- With ACLs disabled `resolve` answers None (everything allowed) and
  `endpoints` None (the API answers 401).
- A request without a token acts with the agent's `default` token, then the
  anonymous token, as in Consul; the agent's own writes use `agent`.
- Servers resolve from their own store (server/acl_resolver.py); clients ask a
  server and cache the answer (agent/acl_client.py, with `down_policy`).
- The leader's ACL chores (built-in rows, `initial_management`, reaping) are
  leader duties (server/delegate.py).
- The agent recovery token (`acl.tokens.agent_recovery`, or set at run time)
  is resolved here, before any server is asked, so it works while no server
  answers. As in Consul it grants `agent "<this node>"` write and
  `node_prefix ""` read, over a deny-all default: enough for the agent
  endpoints (self, members, maintenance, leave, ...) and nothing else.
  Secrets are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable

from proconsul.acl.authorizer import Authorizer
from proconsul.acl.resolved import ResolvedToken
from proconsul.acl.rules import parse_rules
from proconsul.acl.service import ACLService
from proconsul.agent.agent_tokens import AgentTokens
from proconsul.agent.delegate import Delegate
from proconsul.structs.acl import ANONYMOUS_TOKEN_SECRET_ID

# Stands for the recovery token where an accessor is shown (errors, logs);
# the token has no row in the state store.
AGENT_RECOVERY_ACCESSOR = "agent-recovery"


def agent_recovery_rules(node_name: str) -> str:
    """The recovery token's policy: write on this agent, read on every node."""
    # A JSON string literal is a valid HCL string literal for any node name.
    return (
        f'agent {json.dumps(node_name)} {{\n  policy = "write"\n}}\n'
        'node_prefix "" {\n  policy = "read"\n}\n'
    )


def agent_recovery_authorizer(node_name: str) -> Authorizer:
    """Consul's agent recovery authorizer: its policy over a deny-all default."""
    return Authorizer([parse_rules(agent_recovery_rules(node_name))], default_policy="deny")


class AgentACL:
    def __init__(
        self,
        enabled: bool,
        node_name: str,
        tokens: AgentTokens,
        delegate: Callable[[], Delegate],
    ) -> None:
        self.enabled = enabled
        self.node_name = node_name
        self.tokens = tokens
        self.delegate = delegate
        self._recovery: ResolvedToken | None = None

    def endpoints(self) -> ACLService | None:
        """ACL reads and writes: local on servers, over RPC on clients."""
        return self.delegate().acl_service() if self.enabled else None

    def effective_token(self, secret: str) -> str:
        """The token a request acts with: its own, else `default`, else anonymous."""
        return secret or self.tokens.default or ANONYMOUS_TOKEN_SECRET_ID

    async def resolve(self, secret: str) -> ResolvedToken | None:
        """The caller's rights, or None while ACLs are disabled (everything allowed).

        An empty secret means the agent's `default` token, then anonymous.
        Raises ACLNotFound for an unknown or expired secret.
        """
        if not self.enabled:
            return None
        secret = secret or self.tokens.default
        recovery = self.recovery(secret)
        if recovery is not None:
            return recovery
        return await self.delegate().resolve_token(secret)

    def recovery(self, secret: str) -> ResolvedToken | None:
        """The agent recovery token's rights if `secret` is that token, else None.

        Answered locally, so it works while no server does."""
        expected = self.tokens.agent_recovery
        if not expected or not secret:
            return None
        if not hmac.compare_digest(secret.encode(), expected.encode()):
            return None
        if self._recovery is None:
            authorizer = agent_recovery_authorizer(self.node_name)
            self._recovery = ResolvedToken(AGENT_RECOVERY_ACCESSOR, authorizer)
        return self._recovery
