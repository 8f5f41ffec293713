"""Consul's ACL.* RPC methods: what client agents call, since they hold no store.

Job: `acl_handlers` gives a server's `RPCServer` one handler per operation in
`ACL_OPERATIONS` (acl/service.py: "ACL.TokenRead", "ACL.PolicySet", ...,
"ACL.Resolve"), each calling the `ACLEndpoints` method of that operation
with the arguments its `ACLCall` carries, the caller's secret included. The
wire shapes and the calling side are in rpc/acl_codec.py.

Rules:
- A write (`ACLOperation.write`) is served whole on the leader: a follower
  passes the call on as it came (server/leader_router.py), so its checks and
  validation run once, where it is applied.
- A refusal is an `ACLDenied`, carried by the RPC layer as every refusal is;
  an `ACLError` leaves as an `RPCError` with the code of its status
  (`rpc_error_from`).
- Secrets are never logged.
"""

from __future__ import annotations

from proconsul.acl.errors import ACLError
from proconsul.acl.service import ACL_OPERATIONS, ACLOperation
from proconsul.rpc.acl_codec import decode_call, encode_result, rpc_error_from
from proconsul.rpc.server import Handler
from proconsul.rpc.tls import PeerInfo
from proconsul.server.acl_endpoints import ACLEndpoints
from proconsul.server.leader_router import LeaderRouter


def _handler(endpoints: ACLEndpoints, op: ACLOperation, router: LeaderRouter | None) -> Handler:
    method = getattr(endpoints, op.name)

    async def serve(payload: bytes) -> bytes:
        try:
            args, kwargs = op.decode(decode_call(payload, op.rpc))
            result = await method(*args, **kwargs)
        except ACLError as exc:
            raise rpc_error_from(exc) from None
        return encode_result(result)

    async def handle(payload: bytes, peer: PeerInfo) -> bytes:
        if router is None or not op.write:
            return await serve(payload)
        return await router.call(op.rpc, payload, lambda: serve(payload))

    return handle


def acl_handlers(endpoints: ACLEndpoints, router: LeaderRouter | None = None) -> dict[str, Handler]:
    """Handlers to add to a server's RPCServer when ACLs are enabled; with a
    `router`, writes are served on the leader only (module rules)."""
    return {rpc: _handler(endpoints, op, router) for rpc, op in ACL_OPERATIONS.items()}
