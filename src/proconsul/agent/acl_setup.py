"""The agent's ACL side: its own tokens, token resolution and the ACL endpoints.

Job: `AgentACL` is built with the agent and answers, for every layer above,
"who is asking and what may they do" (`resolve`) and "which token does this
request act with" (`effective_token`); it also hands the ACL HTTP API its
endpoints: local ones over the state store on servers, RPC ones on clients.

Rules:
- With ACLs disabled `resolve` answers None (everything allowed) and
  `endpoints` None (the API answers 401).
- A request without a token acts with the agent's `default` token, then the
  anonymous token, as in Consul; the agent's own writes use `agent`.
- Servers resolve from their own store (server/acl_resolver.py); clients ask a
  server and cache the answer (agent/acl_client.py, with `down_policy`).
- On the leader, `leader_duties` creates the built-in rows and the
  `initial_management` token once per term and reaps expired tokens.
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
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from proconsul.acl.authorizer import Authorizer, DefaultPolicy
from proconsul.acl.resolved import ResolvedToken
from proconsul.acl.rules import parse_rules
from proconsul.acl.service import ACLService
from proconsul.agent.acl_client import ClientACLResolver, acl_leader_duties
from proconsul.agent.agent_tokens import AgentTokens
from proconsul.agent.client_rpc import NoServersError
from proconsul.rpc.acl_codec import RemoteACLEndpoints
from proconsul.server.acl_endpoints import ACLEndpoints
from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.server.acl_rpc import acl_handlers
from proconsul.structs.acl import ANONYMOUS_TOKEN_SECRET_ID

if TYPE_CHECKING:
    from proconsul.agent.agent import Agent

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
    def __init__(self, agent: Agent) -> None:
        config = agent.config
        acl = config.acl
        self.agent = agent
        self.enabled = acl.enabled
        self.default_policy: DefaultPolicy = "deny" if acl.default_policy == "deny" else "allow"
        self.tokens = AgentTokens(
            acl.tokens,
            config.data_dir,
            persist=acl.enable_token_persistence and not config.dev_mode,
        )
        self._local: ACLEndpoints | None = None
        self._recovery: ResolvedToken | None = None
        # Client agents: token resolution and the ACL API over RPC.
        self.client: ClientACLResolver | None = None
        self.remote: RemoteACLEndpoints | None = None
        if agent.client_rpc is not None and self.enabled:
            self.client = ClientACLResolver(
                agent.client_rpc.call_raw,
                config.datacenter,
                default_policy=self.default_policy,
                enable_key_list_policy=acl.enable_key_list_policy,
                down_policy=acl.down_policy,
                ttl_s=min(acl.token_ttl, acl.policy_ttl, acl.role_ttl),
            )
            self.remote = RemoteACLEndpoints(agent.client_rpc.call_raw)

    def start_server_side(self) -> None:
        """Once the agent has its server endpoints: resolve there, serve ACL RPCs."""
        endpoints = self.agent.endpoints
        if not self.enabled or endpoints is None:
            return
        endpoints.acl = ServerACLResolver(
            endpoints.store,
            self.agent.datacenter,
            default_policy=self.default_policy,
            enable_key_list_policy=self.agent.config.acl.enable_key_list_policy,
        )
        local = self.endpoints()
        server = self.agent.server
        if server is not None and isinstance(local, ACLEndpoints):
            # Handlers are looked up per call, so clients reach the ACL API from now on.
            server.handlers.update(acl_handlers(local))

    def endpoints(self) -> ACLService | None:
        """ACL reads and writes: local on servers, over RPC on clients."""
        if not self.enabled:
            return None
        endpoints = self.agent.endpoints
        if endpoints is None:
            if self.remote is not None:
                return self.remote
            raise NoServersError("No known Consul servers")
        if self._local is None or self._local.store is not endpoints.store:
            self._local = ACLEndpoints(
                endpoints.store,
                endpoints.log,
                self.agent.datacenter,
                self.agent.config.data_dir,
                resolver=endpoints.acl,
            )
        return self._local

    async def establish(self) -> None:
        """Leader duty: built-in rows and the initial management token."""
        local = self.endpoints()
        if isinstance(local, ACLEndpoints):
            await local.establish(self.agent.config.acl.tokens.initial_management)

    def leader_duties(self) -> Coroutine[Any, Any, None] | None:
        """The leader's ACL loop on agents with a store, else None."""
        local = self.endpoints() if self.enabled and self.agent.endpoints is not None else None
        if not isinstance(local, ACLEndpoints):
            return None
        return acl_leader_duties(self.agent.leads_catalog, self.establish, local.reap_expired)

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
        endpoints = self.agent.endpoints
        if endpoints is not None and endpoints.acl is not None:
            return endpoints.acl.resolve(secret)
        if self.client is not None:
            return await self.client.resolve(secret)
        raise NoServersError("No known Consul servers")

    def recovery(self, secret: str) -> ResolvedToken | None:
        """The agent recovery token's rights if `secret` is that token, else None.

        Answered locally, so it works while no server does."""
        expected = self.tokens.agent_recovery
        if not expected or not secret:
            return None
        if not hmac.compare_digest(secret.encode(), expected.encode()):
            return None
        if self._recovery is None:
            authorizer = agent_recovery_authorizer(self.agent.node_name)
            self._recovery = ResolvedToken(AGENT_RECOVERY_ACCESSOR, authorizer)
        return self._recovery

    def stats(self) -> dict[str, float]:
        endpoints = self.agent.endpoints
        resolver = endpoints.acl if endpoints is not None else self.client
        if resolver is None:
            return {}
        return {f"consul.acl.resolve.{name}": value for name, value in resolver.stats().items()}
