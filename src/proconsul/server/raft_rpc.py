"""The server's Raft log on the RPC port: the `Raft.Step` handler and write forwarding.

Job: `raft_handlers` gives the handlers a server adds to its `RPCServer`;
`ForwardingLog` is the `Log` a server's `ServerEndpoints` uses, so a write
that lands on a follower (HTTP on that server, or its "Apply" RPC) reaches
the leader through "Raft.Apply".

Rules:
- Under verify_incoming, `Raft.Step` and `Raft.Apply` only accept peers whose
  verified certificate names `server.<dc>.<domain>`: a client certificate from
  the same CA must not be able to vote or append entries.
- "Raft.Apply" carries the command and the secret of the caller it is applied
  for, and the leader authorizes it again before it enters the log, as Consul's
  leader checks the RPCs forwarded to it (`authorize_forwarded`): catalog and
  KV commands get the vetting "Apply" makes (`vet_write`); ACL commands need
  `acl:write` (and ACLs on); a bootstrap is allowed while none happened, or
  when this leader's own `acl-bootstrap-reset` file holds its reset index;
  anything else (the CA roots: only the leader writes them) is refused, ACLs
  on or off. Refusals are `ACLDenied` (`ACLNotFound` for an unknown
  secret), which the caller gets as an "acl_denied" error. The first server's check is not
  trusted: a peer reaching port 8300 without a server certificate (when
  verify_incoming is off) is just another caller.
- The leader's own writes (`Agent.leader_write`: reconcile, its registration,
  the CA roots; ACL establish and reaping) apply locally and never come
  through here.
- Forwarding sends the command once. Only "no leader known" is waited out
  (up to `hold_timeout_s`: the agent passes its `performance {
  rpc_hold_timeout }`, Consul's 7s by default) and retried,
  because then nothing was sent; a transport failure on the way to a leader is
  the caller's error (the write may or may not have happened).
- Every wait is bounded by the smaller of `timeout_s` and the time the RPC
  caller (if any) has left.
"""

from __future__ import annotations

import asyncio

from proconsul.acl.errors import ACLDenied
from proconsul.rpc.codec import (
    DEFAULT_CALL_TIMEOUT_S,
    FORWARD_METHOD,
    EndpointsClient,
    decode_apply_request,
    encode,
)
from proconsul.rpc.errors import NO_LEADER, ErrorCode, RPCError
from proconsul.rpc.server import Handler, remaining_s
from proconsul.rpc.tls import PeerInfo
from proconsul.server.acl_endpoints import bootstrap_denied, read_reset_index
from proconsul.server.endpoints import ServerEndpoints, vet_write
from proconsul.server.raft_errors import NotLeaderError
from proconsul.server.raft_log import RaftLog
from proconsul.server.raft_transport import STEP_METHOD
from proconsul.structs.commands import (
    ACLBootstrapRequest,
    ACLCommand,
    ApplyResult,
    Command,
    DeregisterRequest,
    KVSRequest,
    RegisterRequest,
)
from proconsul.tls.agent import server_name

# Consul's default performance.rpc_hold_timeout; the agent passes its configured value.
DEFAULT_HOLD_TIMEOUT_S = 7.0
ACL_DISABLED = "ACL support disabled"
UNKNOWN_COMMAND = "Permission denied: this command cannot be forwarded"


def authorize_forwarded(
    endpoints: ServerEndpoints, command: Command, token: str, *, data_dir: str = ""
) -> None:
    """Raise `ACLDenied` unless the caller holding `token` may have `command`
    applied (see the module rules). `data_dir` holds this server's
    `acl-bootstrap-reset` file."""
    if isinstance(command, ACLBootstrapRequest):
        if endpoints.acl is None:
            raise ACLDenied(ACL_DISABLED)
        tables = endpoints.store.acl
        if tables.bootstrapped:
            reset, _ = read_reset_index(data_dir)
            if not reset or command.reset_index != reset:
                raise bootstrap_denied(tables.bootstrap_index)
        return
    if isinstance(command, ACLCommand):
        if endpoints.acl is None:
            raise ACLDenied(ACL_DISABLED)
        resolved = endpoints.resolve(token)
        if resolved is not None and not resolved.authorizer.acl_write():
            raise resolved.deny("acl", "write")
        return
    if isinstance(command, RegisterRequest | DeregisterRequest | KVSRequest):
        resolved = endpoints.resolve(token)
        if resolved is not None:
            vet_write(endpoints.store, resolved, command)
        return
    raise ACLDenied(UNKNOWN_COMMAND)


def only_servers(handler: Handler, *, datacenter: str, domain: str) -> Handler:
    """`handler`, refusing peers that did not prove with a verified certificate
    that they are `server.<dc>.<domain>`."""
    name = server_name(datacenter, domain)

    async def handle(payload: bytes, peer: PeerInfo) -> bytes:
        if not peer.has_dns_name(name):
            raise RPCError(
                f"Permission denied: {peer.describe()} is not {name}", ErrorCode.PERMISSION_DENIED
            )
        return await handler(payload, peer)

    return handle


def raft_handlers(
    raft_log: RaftLog,
    endpoints: ServerEndpoints,
    *,
    data_dir: str = "",
    require_server_cert: bool = False,
    datacenter: str = "dc1",
    domain: str = "consul",
) -> dict[str, Handler]:
    """Handlers to add to the server's RPCServer. `endpoints` is the server's own
    (its store and, with ACLs on, its resolver authorize forwarded commands);
    `data_dir` its data directory. Pass `require_server_cert=True` when the
    server runs with verify_incoming."""

    async def forwarded_apply(payload: bytes, peer: PeerInfo) -> bytes:
        # One hop only: if leadership moved on meanwhile, the sender hears "not
        # the leader" and the write is the caller's to retry.
        request = decode_apply_request(payload, FORWARD_METHOD)
        authorize_forwarded(endpoints, request.command, request.token, data_dir=data_dir)
        try:
            return encode(await raft_log.apply(request.command))
        except NotLeaderError as exc:
            raise RPCError(str(exc) or NO_LEADER) from None

    handlers: dict[str, Handler] = {
        STEP_METHOD: raft_log.handle_step,
        FORWARD_METHOD: forwarded_apply,
    }
    if require_server_cert:
        handlers = {
            method: only_servers(handler, datacenter=datacenter, domain=domain)
            for method, handler in handlers.items()
        }
    return handlers


class ForwardingLog:
    """`Log` for ServerEndpoints on a server: apply on the leader, else forward to it."""

    def __init__(
        self,
        raft_log: RaftLog,
        endpoints: EndpointsClient,
        *,
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        hold_timeout_s: float = DEFAULT_HOLD_TIMEOUT_S,
    ) -> None:
        self.raft = raft_log
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self.hold_timeout_s = hold_timeout_s
        self.forwarded = 0

    async def apply(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        """Apply here when leading, else forward with `token` (the caller's secret)."""
        loop = asyncio.get_running_loop()
        caller_left = remaining_s()
        budget = self.timeout_s if caller_left is None else min(self.timeout_s, caller_left)
        deadline = loop.time() + budget
        hold_until = loop.time() + min(self.hold_timeout_s, budget)
        while True:
            try:
                return await self.raft.apply(command)
            except NotLeaderError as exc:
                address = exc.leader_address
                if address is not None and address != self.raft.address:
                    self.forwarded += 1
                    timeout = max(0.001, deadline - loop.time())
                    return await self.endpoints.forward(
                        address, command, timeout_s=timeout, token=token
                    )
                wait = hold_until - loop.time()
                if wait <= 0:
                    raise
                try:
                    # A leader appears (or the election settles) within the hold.
                    await self.raft.wait_for_leader(wait)
                except TimeoutError:
                    raise exc from None
