"""The agent's delegate: the one object that differs between a server and a client agent.

Job: `Delegate` is what the Agent holds, as Consul's agent holds a server or
a client behind one `delegate` field. Every call the Agent makes that
depends on the mode goes through it, so the Agent itself never branches on
server, client or dev:
- `ServerDelegate` (server/delegate.py): the replicated state, Raft, the RPC
  port, the leader duties; a dev agent is one with a lone in-memory voter;
- `ClientDelegate` (agent/client_delegate.py): RPC to servers found through
  gossip, auto_encrypt, the cached ACL resolver.

Rules:
- Start order: `start()` (ports, Raft), then `attach_gossip(pool)` once the
  LAN pool runs (bootstrap, leader duties, auto_encrypt), then `ready()`
  before the agent serves HTTP and DNS.
- ACL refusals, "No cluster leader" and "No known Consul servers" arrive as
  the same errors from both sides.
"""

from __future__ import annotations

from typing import Any, Protocol

from proconsul.acl.resolved import ResolvedToken
from proconsul.acl.service import ACLService
from proconsul.server.delegate import GossipPool
from proconsul.state.store import StateStore
from proconsul.structs.commands import ApplyResult, Command
from proconsul.structs.requests import ReadRequest, ReadResponse
from proconsul.structs.rpc import OperatorRequest


class Delegate(Protocol):
    @property
    def store(self) -> StateStore | None:
        """The replicated store on servers (DNS cache keys, metrics); None on clients."""

    async def start(self) -> None: ...

    def attach_gossip(self, gossip: GossipPool) -> None: ...

    async def ready(self) -> None: ...

    async def stop(self) -> None: ...

    async def leave(self) -> None:
        """A server's graceful leave (hand over, drain); nothing on a client."""

    async def read(self, method: str, request: ReadRequest) -> ReadResponse: ...

    async def write(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        """A write on behalf of the holder of `token` (authorized by the server
        that applies it; "" is the anonymous token)."""

    async def operator_call(self, method: str, request: OperatorRequest) -> Any:
        """One `Operator.*` call (server/operator.py), answered by a server."""

    async def call_raw(self, method: str, payload: bytes, timeout_s: float = 10.0) -> bytes:
        """One server RPC by name with an encoded payload (the Connect CA's
        "ConnectCA.Sign" and "ConnectCA.ConfigurationSet"): a server answers
        it with its own handler, a client sends it to a server. The payload
        carries the caller's token; the server that answers checks it."""

    async def leader_address(self) -> str: ...

    async def peer_addresses(self) -> list[str]: ...

    async def resolve_token(self, secret: str) -> ResolvedToken | None:
        """The rights of `secret`; None while ACLs are disabled."""

    def acl_service(self) -> ACLService | None:
        """The ACL API; None while ACLs are disabled."""

    def on_member_change(self, name: str) -> None:
        """Gossip saw `name` change (servers reconcile it into the catalog)."""

    def stats(self) -> dict[str, float]: ...

    def self_stats(self) -> dict[str, dict[str, str]]:
        """The `consul` (and, on servers, `raft`) sections of `/v1/agent/self` Stats,
        Consul's keys with string values."""
