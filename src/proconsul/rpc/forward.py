"""Handler wrappers: forwarding to the leader, and authorizing by certificate.

Job: small pieces the agent composes around plain handlers, so the rules
live once.

- `forward_to_leader`: run locally on the leader (or for a stale-allowed
  read on any server), else pass the same bytes to the leader within the
  time the original caller has left. No leader known -> "No cluster leader"
  (Consul's words). A transport failure on the way is an `RPCError` for the
  original caller: it did reach a server, which could not reach the leader.
- `only_servers`: refuse unless the peer proved with a verified certificate
  that it is `server.<dc>.<domain>` (for Raft and other server-to-server
  methods under verify_incoming).
"""

from __future__ import annotations

from collections.abc import Callable

from proconsul.rpc.client import Address, RPCClient
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.rpc.server import Handler, remaining_s
from proconsul.rpc.tls import PeerInfo
from proconsul.tls.agent import server_name

NO_LEADER = "No cluster leader"
DEFAULT_FORWARD_TIMEOUT_S = 15.0


def forward_to_leader(
    local: Handler,
    *,
    method: str,
    client: RPCClient,
    is_leader: Callable[[], bool],
    leader_address: Callable[[], str | Address | None],
    allow_local: Callable[[bytes], bool] | None = None,
) -> Handler:
    """`allow_local(payload)` says when this server may answer itself, e.g.
    a read with `?stale`; it is asked before anything else."""

    async def handle(payload: bytes, peer: PeerInfo) -> bytes:
        if (allow_local is not None and allow_local(payload)) or is_leader():
            return await local(payload, peer)
        leader = leader_address()
        if leader is None:
            raise RPCError(NO_LEADER)
        # The caller's own deadline bounds the hop: it stops waiting then anyway.
        timeout = remaining_s()
        if timeout is None:
            timeout = DEFAULT_FORWARD_TIMEOUT_S
        try:
            return await client.call(leader, method, payload, timeout)
        except (ConnectionError, TimeoutError) as exc:
            raise RPCError(f"rpc: forwarding {method} to the leader failed: {exc}") from None

    return handle


def only_servers(handler: Handler, *, datacenter: str, domain: str) -> Handler:
    name = server_name(datacenter, domain)

    async def handle(payload: bytes, peer: PeerInfo) -> bytes:
        if not peer.has_dns_name(name):
            raise RPCError(
                f"Permission denied: {peer.describe()} is not {name}", ErrorCode.PERMISSION_DENIED
            )
        return await handler(payload, peer)

    return handle
