"""The server's Raft log on the RPC port: the `Raft.Step` handler and write forwarding.

Job: `raft_handlers` gives the handlers a server adds to its `RPCServer`;
`ForwardingLog` is the `Log` a server's `ServerEndpoints` uses, so a write
that lands on a follower (HTTP on that server, or its "Apply" RPC) reaches
the leader through "Raft.Apply".

Rules:
- Under verify_incoming, `Raft.Step` and `Raft.Apply` only accept peers whose
  verified certificate names `server.<dc>.<domain>`: a client certificate from
  the same CA must not be able to vote, append entries or skip the ACL check
  that "Apply" makes (the first server authorizes, the leader trusts it).
- Forwarding sends the command once. Only "no leader known" is waited out
  (up to `hold_timeout_s`, like Consul's rpc_hold_timeout) and retried,
  because then nothing was sent; a transport failure on the way to a leader is
  the caller's error (the write may or may not have happened).
- Every wait is bounded by the smaller of `timeout_s` and the time the RPC
  caller (if any) has left.
"""

from __future__ import annotations

import asyncio

from proconsul.rpc.codec import (
    DEFAULT_CALL_TIMEOUT_S,
    FORWARD_METHOD,
    EndpointsClient,
    decode_command,
    encode,
)
from proconsul.rpc.errors import RPCError
from proconsul.rpc.forward import NO_LEADER, only_servers
from proconsul.rpc.server import Handler, remaining_s
from proconsul.rpc.tls import PeerInfo
from proconsul.server.raft_errors import NotLeaderError
from proconsul.server.raft_log import RaftLog
from proconsul.server.raft_transport import STEP_METHOD
from proconsul.state.fsm import ApplyResult
from proconsul.structs.commands import Command

DEFAULT_HOLD_TIMEOUT_S = 7.0  # Consul's rpc_hold_timeout


def raft_handlers(
    raft_log: RaftLog,
    *,
    require_server_cert: bool = False,
    datacenter: str = "dc1",
    domain: str = "consul",
) -> dict[str, Handler]:
    """Handlers to add to the server's RPCServer. Pass `require_server_cert=True`
    when the server runs with verify_incoming."""

    async def forwarded_apply(payload: bytes, peer: PeerInfo) -> bytes:
        # One hop only: if leadership moved on meanwhile, the sender hears "not
        # the leader" and the write is the caller's to retry.
        command = decode_command(payload, FORWARD_METHOD)
        try:
            return encode(await raft_log.apply(command))
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

    async def apply(self, command: Command) -> tuple[int, ApplyResult]:
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
                    return await self.endpoints.forward(address, command, timeout_s=timeout)
                wait = hold_until - loop.time()
                if wait <= 0:
                    raise
                try:
                    # A leader appears (or the election settles) within the hold.
                    await self.raft.wait_for_leader(wait)
                except TimeoutError:
                    raise exc from None
