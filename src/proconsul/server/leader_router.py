"""The one way to the leader: serve here when leading (or when stale is allowed), else forward.

Job: `LeaderRouter` is what every leader-only call on a server goes through:
- `read`: a catalog/health/KV read, routed by Consul's consistency modes
  (server/read_route.py), forwarded to the leader over RPC when needed;
- `apply`: a write (the `Log` that `ServerEndpoints` and `ACLEndpoints` write
  through): authorized and applied through Raft on the leader, else sent
  with the caller's token to the leader's "Raft.Apply";
- `call`: any other leader-only RPC (operator calls): run `serve_here` on the
  leader, else pass the same payload to the leader.

Rules:
- A write is authorized exactly once, on the server that applies it: the
  caller passes `authorize(command, token)`, run here only when this server
  leads; a forwarded write is authorized by the leader's "Raft.Apply"
  handler (server/raft_rpc.py), never by the forwarding server.
- "No leader known" is waited out for up to `hold_timeout_s` (the agent's
  `performance { rpc_hold_timeout }`, Consul's 7s) and then the call is
  routed again from scratch; past the hold it is "No cluster leader".
- A forwarded write is sent once: a transport failure on the way to the
  leader is the caller's error (the write may or may not have happened),
  as an `RPCError` naming the hop that failed, never a bare transport error.
- A forwarded write that the other server refuses because it no longer
  leads (`ErrorCode.NOT_LEADER`: nothing was applied) is routed again,
  within the hold.
- A forwarded request is not waited for forever: once this server no longer
  sees the leader it went to (another was elected, as when that one froze; or
  this server lost contact with it for an election timeout, as when this
  server is cut off) and it has not answered, it is given
  LEADER_MOVED_GRACE_S more, then abandoned. A read is then routed again
  (reads are safe to repeat); a write or an operator call fails with
  `LeaderMovedError`: its outcome is unknown,
  and repeating it could apply it twice (a CAS would then answer false for a
  write that happened).
- Every wait is bounded by the smaller of the call's own budget and the time
  the RPC caller (if any) has left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proconsul.rpc.codec import DEFAULT_CALL_TIMEOUT_S, EndpointsClient
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.rpc.server import remaining_s
from proconsul.server.endpoints import Authorize
from proconsul.server.raft_errors import NotLeaderError
from proconsul.server.raft_log import RaftLog
from proconsul.server.read_route import ReadStep, route_read
from proconsul.structs.commands import ApplyResult, Command
from proconsul.structs.requests import ReadRequest, ReadResponse

# Consul's default performance.rpc_hold_timeout; the agent passes its configured value.
DEFAULT_HOLD_TIMEOUT_S = 7.0
# How long a forwarded request may still take once another leader is known
# (a leadership transfer answers well within it; a frozen leader never does).
LEADER_MOVED_GRACE_S = 0.5


class LeaderMovedError(RPCError):
    """The leader a request was forwarded to stopped answering and is no longer
    this server's leader: the request may or may not have taken effect."""

    def __init__(self, method: str, address: str) -> None:
        super().__init__(
            f"rpc: {method}: the leader at {address} did not answer and is no longer "
            "the leader here; the outcome is unknown"
        )


T = TypeVar("T")


class LeaderRouter:
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
        self.forwarded = 0  # writes sent on to the leader
        self.abandoned = 0  # forwarded requests given up on (LeaderMovedError)

    # ----- writes ------------------------------------------------------------

    async def apply(
        self, command: Command, token: str = "", authorize: Authorize | None = None
    ) -> tuple[int, ApplyResult]:
        """Apply here when leading (after `authorize`), else forward with `token`."""
        loop = asyncio.get_running_loop()
        budget = self._budget_s()
        deadline = loop.time() + budget
        hold_until = loop.time() + min(self.hold_timeout_s, budget)
        while True:
            # No await between the check and the proposal: leadership cannot move between.
            if authorize is not None and self.raft.is_leader():
                authorize(command, token)
            try:
                return await self.raft.apply(command)
            except NotLeaderError as exc:
                leader = exc.leader_address
            if leader is not None and leader != self.raft.address:
                self.forwarded += 1
                timeout = max(0.001, deadline - loop.time())
                forward = self.endpoints.forward(leader, command, timeout_s=timeout, token=token)
                try:
                    return await self._hop("Apply", leader, forward)
                except RPCError as exc:
                    if exc.code != ErrorCode.NOT_LEADER:
                        raise
                    # It refused before applying anything (it no longer leads, as
                    # a resumed frozen leader finds): route again once another
                    # leader is known, within the hold.
                    wait = hold_until - loop.time()
                    if wait <= 0:
                        raise
                    try:
                        await self.raft.wait_leader_elsewhere(leader, wait)
                    except TimeoutError:
                        raise exc from None
                    continue
            await self._hold(hold_until)

    # ----- reads -------------------------------------------------------------

    async def read(
        self,
        method: str,
        request: ReadRequest,
        serve_here: Callable[[str, ReadRequest], Awaitable[ReadResponse]],
    ) -> ReadResponse:
        """Serve `request` here (`serve_here(method, request)`) or at the
        leader, as its options ask (read_route.py)."""
        options = request.options
        hold_until: float | None = None  # set on the first wait (the hot path has none)
        while True:
            # Decided afresh after every wait: that is what keeps a consistent
            # read that waited out an election from skipping the barrier.
            route = route_read(
                allow_stale=options.allow_stale,
                require_consistent=options.require_consistent,
                leading=self.raft.is_leader(),
                leader_address=self.raft.leader_address(),
            )
            step = route.step
            if step is ReadStep.LOCAL:
                return await serve_here(method, request)
            if step is ReadStep.WAIT:
                if hold_until is None:
                    now = asyncio.get_running_loop().time()
                    hold_until = now + min(self.hold_timeout_s, self._budget_s())
                await self._hold(hold_until)
                continue
            if step is ReadStep.FORWARD:
                assert route.address is not None
                forward = self.endpoints.read(route.address, method, request)
                try:
                    return await self._hop(method, route.address, forward)
                except LeaderMovedError:
                    continue  # a read is safe to send again, to the new leader
            await self.raft.read_barrier()
            return await serve_here(method, request)

    # ----- other leader-only calls -------------------------------------------

    async def call(
        self, method: str, payload: bytes, serve_here: Callable[[], Awaitable[T]]
    ) -> T | bytes:
        """`serve_here()` on the leader; elsewhere the leader's raw answer to
        `method` with the same `payload` (the caller decodes it)."""
        loop = asyncio.get_running_loop()
        budget = self._budget_s()
        deadline = loop.time() + budget
        hold_until = loop.time() + min(self.hold_timeout_s, budget)
        while True:
            if self.raft.is_leader():
                return await serve_here()
            leader = self.raft.leader_address()
            if leader is not None and leader != self.raft.address:
                timeout = max(0.001, deadline - loop.time())
                call = self.endpoints.client.call(leader, method, payload, timeout)
                return await self._hop(method, leader, call)
            await self._hold(hold_until)

    # ----- helpers -----------------------------------------------------------

    def _budget_s(self) -> float:
        caller_left = remaining_s()
        return self.timeout_s if caller_left is None else min(self.timeout_s, caller_left)

    async def _hold(self, hold_until: float) -> None:
        """Wait for a leader until `hold_until` (loop time); NotLeaderError after."""
        wait = hold_until - asyncio.get_running_loop().time()
        if wait <= 0:
            raise NotLeaderError(None, None)
        try:
            await self.raft.wait_for_leader(wait)
        except TimeoutError:
            raise NotLeaderError(None, None) from None

    async def _hop(self, method: str, leader: str, call: Awaitable[T]) -> T:
        """`call` to the leader at `leader`, bounded as the module rules say."""
        forward = asyncio.ensure_future(call)
        moved = asyncio.ensure_future(self.raft.wait_leader_gone(leader, self._budget_s()))
        try:
            await asyncio.wait({forward, moved}, return_when=asyncio.FIRST_COMPLETED)
            if not forward.done() and not moved.cancelled() and moved.exception() is None:
                # Another leader: the old one gets a moment (a transfer answers within it).
                await asyncio.wait({forward}, timeout=LEADER_MOVED_GRACE_S)
                if not forward.done():
                    self.abandoned += 1
                    raise LeaderMovedError(method, leader)
            return await forward
        except (ConnectionError, TimeoutError) as exc:
            # The caller reached this server; its hop to the leader failed.
            raise RPCError(f"rpc: forwarding {method} to the leader failed: {exc}") from None
        finally:
            for task in (forward, moved):
                if not task.done():
                    task.cancel()
            # Retrieve what nobody awaits, so it is not reported as never retrieved.
            for task in (forward, moved):
                if task.done() and not task.cancelled():
                    task.exception()
