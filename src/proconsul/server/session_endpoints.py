"""Sessions on the leader: renewals ("Session.Renew") and TTL expiry.

Job: `SessionService` serves the leader-only "Session.Renew" (through the
`LeaderRouter`: a follower passes the payload on as it came, token and all)
and runs the `session-ttl` leader duty, which destroys each session not
renewed within 2 x TTL by writing a `SessionRequest` destroy: the leader
decides expiry, the FSM only applies it (DESIGN.md, "Sessions and locks").
Reads, write checks and ACL rules are in server/session_rules.py.

Rules:
- Renewal needs session:write on the session's node; an unknown session
  answers an empty list (HTTP 404).
- The timers are the leader's alone and start afresh each term.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec

from proconsul.acl.resolved import ResolvedToken
from proconsul.rpc import Handler, PeerInfo
from proconsul.rpc.codec import decode_payload, decode_reply
from proconsul.server.leader_router import LeaderRouter
from proconsul.server.session_timers import SessionTimers
from proconsul.state.store import StateStore
from proconsul.structs.commands import ApplyResult, Command, SessionRequest
from proconsul.structs.rpc import SessionRenewRequest
from proconsul.structs.session import Session

log = logging.getLogger("proconsul.agent")

RENEW_METHOD = "Session.Renew"
# How often the leader looks for sessions past their TTL grace.
TTL_CHECK_INTERVAL_S = 1.0

Resolve = Callable[[str], ResolvedToken | None]
LogApply = Callable[[Command], Awaitable[tuple[int, ApplyResult]]]

_renew_decoder = msgspec.msgpack.Decoder(SessionRenewRequest)
_sessions_decoder = msgspec.msgpack.Decoder(list[Session])


class SessionService:
    """The leader's side of sessions: renewals and TTL expiry (module docstring)."""

    def __init__(
        self,
        store: StateStore,
        router: LeaderRouter,
        *,
        resolve: Resolve,
        leader_write: LogApply,
    ) -> None:
        self.store = store
        self.router = router
        self.resolve = resolve
        self.leader_write = leader_write
        self.timers = SessionTimers()
        self.expired = 0  # sessions this server destroyed for their TTL

    def handlers(self) -> dict[str, Handler]:
        return {RENEW_METHOD: self._handle_renew}

    def stats(self) -> dict[str, float]:
        """Consul's `consul.session_ttl.active` (TTL sessions this leader times),
        and how many it destroyed for their TTL."""
        return {
            "consul.session_ttl.active": float(len(self.timers)),
            "consul.session_ttl.expired": float(self.expired),
        }

    async def _handle_renew(self, payload: bytes, peer: PeerInfo) -> bytes:
        request: SessionRenewRequest = decode_payload(_renew_decoder, payload, RENEW_METHOD)

        async def here() -> bytes:
            return msgspec.msgpack.encode(self.renew(request))

        answer = await self.router.call(RENEW_METHOD, payload, here)
        return answer

    def renew(self, request: SessionRenewRequest) -> list[Session]:
        """On the leader: restart the session's TTL grace; [] when it is unknown."""
        resolved = self.resolve(request.token)  # an unknown secret: ACL not found
        session = self.store.sessions.get(request.id)
        if session is None:
            return []
        if resolved is not None and not resolved.authorizer.session_write(session.node):
            raise resolved.deny("session", "write", session.node)
        self.timers.renew(session, asyncio.get_running_loop().time())
        return [session]

    async def run_ttl_duty(self) -> None:
        """The `session-ttl` leader duty: from a clean slate each term, destroy
        every session whose TTL grace passed without a renewal."""
        loop = asyncio.get_running_loop()
        self.timers.clear()
        while True:
            now = loop.time()
            self.timers.sync(self.store.sessions.sessions.values(), now)
            for session_id in self.timers.expired(now):
                try:
                    await self.leader_write(
                        SessionRequest(op="destroy", session=Session(id=session_id))
                    )
                except Exception as exc:
                    log.warning("agent: session %s: TTL expiry failed: %s", session_id, exc)
                    break  # leadership moving or no quorum: try again next round
                self.timers.forget(session_id)
                self.expired += 1
                log.info("agent: session %s expired (TTL not renewed)", session_id)
            await asyncio.sleep(TTL_CHECK_INTERVAL_S)


def renew_payload(session_id: str, token: str) -> bytes:
    """The "Session.Renew" request for `session_id` on behalf of `token`."""
    return msgspec.msgpack.encode(SessionRenewRequest(id=session_id, token=token))


def decode_renew_reply(data: bytes) -> list[Session]:
    sessions: list[Session] = decode_reply(_sessions_decoder, data, RENEW_METHOD)
    return sessions
