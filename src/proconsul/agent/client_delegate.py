"""The client side of the agent's delegate: every read and write goes to a server.

Job: `ClientDelegate` is what an agent with `server = false` holds as its
delegate (agent/delegate.py): the RPC pool over the servers gossip knows
(agent/client_rpc.py, with auto_encrypt), and, with ACLs on, the cached token
resolver and the ACL API over RPC (agent/acl_client.py).

Rules:
- Operator calls are the same `Operator.*` RPCs a server serves itself, sent
  with the caller's token; the server checks it.
- `leader_address` / `peer_addresses` ask a server (`Status.Leader`,
  `Status.Peers`); "" / [] when none answers, Consul's 500 "No known Consul
  servers" when none is known at all.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from proconsul.acl.resolved import ResolvedToken
from proconsul.acl.service import ACLService
from proconsul.agent.acl_client import ClientACLResolver
from proconsul.agent.client_rpc import ClientRPC
from proconsul.gossip import Member, State
from proconsul.rpc.acl_codec import RemoteACLEndpoints
from proconsul.rpc.codec import ANY_DECODER, decode_reply
from proconsul.rpc.server import metrics_from_stats
from proconsul.server.delegate import GossipPool
from proconsul.state.store import StateStore
from proconsul.structs.commands import ApplyResult, Command
from proconsul.structs.requests import ReadRequest, ReadResponse
from proconsul.structs.rpc import OperatorRequest

if TYPE_CHECKING:
    from proconsul.config.schema import RuntimeConfig


class ClientDelegate:
    store: StateStore | None = None

    def __init__(
        self,
        config: RuntimeConfig,
        rng: random.Random,
        *,
        node_name: str,
        agent_token: Callable[[], str],
    ) -> None:
        self._gossip: GossipPool | None = None
        self.rpc = ClientRPC(
            config,
            rng,
            members=self._members,
            # Read per fetch: the agent token may be set at run time.
            credentials=lambda: (node_name, agent_token()),
        )
        self.acl_resolver: ClientACLResolver | None = None
        self.remote_acl: RemoteACLEndpoints | None = None
        acl = config.acl
        if acl.enabled:
            self.acl_resolver = ClientACLResolver(
                self.rpc.call_raw,
                config.datacenter,
                default_policy="deny" if acl.default_policy == "deny" else "allow",
                enable_key_list_policy=acl.enable_key_list_policy,
                down_policy=acl.down_policy,
                ttl_s=min(acl.token_ttl, acl.policy_ttl, acl.role_ttl),
            )
            self.remote_acl = RemoteACLEndpoints(self.rpc.call_raw)

    def _members(self) -> Sequence[Member]:
        core = self._gossip.core if self._gossip is not None else None
        return core.members() if core is not None else ()

    async def start(self) -> None:
        return None

    def attach_gossip(self, gossip: GossipPool) -> None:
        self._gossip = gossip
        self.rpc.start()

    async def ready(self) -> None:
        return None

    async def stop(self) -> None:
        await self.rpc.close()

    async def leave(self) -> None:
        return None

    async def read(self, method: str, request: ReadRequest) -> ReadResponse:
        return await self.rpc.read(method, request)

    async def write(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        return await self.rpc.write(command, token)

    async def operator_call(self, method: str, request: OperatorRequest) -> Any:
        data = await self.rpc.call_raw(method, msgspec.msgpack.encode(request))
        return decode_reply(ANY_DECODER, data, method)

    async def call_raw(self, method: str, payload: bytes, timeout_s: float = 10.0) -> bytes:
        """A server RPC (e.g. "ConnectCA.Sign"), answered by any server (which
        routes it to the leader); the payload carries the caller's token."""
        return await self.rpc.call_raw(method, payload, timeout_s)

    async def leader_address(self) -> str:
        found = await self.rpc.status("Status.Leader")
        return found if isinstance(found, str) else ""

    async def peer_addresses(self) -> list[str]:
        found = await self.rpc.status("Status.Peers")
        return [str(p) for p in found] if isinstance(found, list) else []

    async def resolve_token(self, secret: str) -> ResolvedToken | None:
        if self.acl_resolver is None:
            return None
        return await self.acl_resolver.resolve(secret)

    def acl_service(self) -> ACLService | None:
        return self.remote_acl

    def on_member_change(self, name: str) -> None:
        """A server that gossip declares failed will not answer what we sent it."""
        core = self._gossip.core if self._gossip is not None else None
        member = core.member(name) if core is not None else None
        if member is None or member.state is not State.DEAD:
            return
        port = member.tags.get("port", "")
        if member.tags.get("role") == "consul" and port.isdigit():
            self.rpc.server_failed(f"{member.addr[0]}:{port}")

    def self_stats(self) -> dict[str, dict[str, str]]:
        return {
            "consul": {
                "acl": "enabled" if self.acl_resolver is not None else "disabled",
                "known_servers": str(len(self.rpc.servers())),
                "server": "false",
            }
        }

    def stats(self) -> dict[str, float]:
        stats = metrics_from_stats("consul.client.rpc", self.rpc.client.stats())
        if self.acl_resolver is not None:
            for name, value in self.acl_resolver.stats().items():
                stats[f"consul.acl.resolve.{name}"] = value
        return stats
