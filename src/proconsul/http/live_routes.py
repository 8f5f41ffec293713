"""`GET /v1/agent/live`: this agent's gossip and Raft, streamed (the UI's Live page).

Routes:
- `GET /v1/agent/live` answers with Server-Sent Events (`text/event-stream`): one
  `data:` line of JSON per change, `{"State": <picture>, "Events": [...]}` (the
  picture and events of `http/live.py`). The agent looks every `LOOK_INTERVAL_S`
  and sends only when the picture changed, so a change shows within a second; a
  comment line every `KEEPALIVE_S` keeps proxies from closing a quiet stream.
  `?once` answers the current picture as plain JSON instead.
- On a client agent (no Raft of its own) the picture's `Raft` is a server's,
  asked over RPC (`Operator.RaftLive`) at most every `SERVERS_RAFT_S`, with
  `RaftRemote: true`; a refusal (that needs `operator:read`) leaves `Raft`
  null and says why in `RaftError`.

ACLs: the stream needs `agent:read` on this agent's node, the rule of
`/v1/agent/self` and `/v1/agent/metrics`, which carry the same counters
(Consul's closest analogue). How the UI is laid out: DESIGN.md, "The web UI".
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from proconsul.http.api import AgentAPI, agent_of, caller_token
from proconsul.http.common import error_answer, json_response
from proconsul.http.live import live_events

LOOK_INTERVAL_S = 0.2
KEEPALIVE_S = 10.0
SERVERS_RAFT_S = 1.0

log = logging.getLogger("proconsul.http.live")


async def open_event_stream(request: web.Request) -> web.StreamResponse:
    """Start a Server-Sent Events answer (also `/v1/agent/watch`'s)."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    # A viewer whose stream broke reconnects after half a second (EventSource).
    await response.write(b"retry: 500\n\n")
    return response


class ServersRaft:
    """A client agent's view of the servers' Raft, asked of a server over RPC
    (operator:read, checked there) at most every `SERVERS_RAFT_S`, in the
    background so the stream's 0.2 s look never waits on it."""

    def __init__(self, agent: AgentAPI, token: str) -> None:
        self.agent, self.token = agent, token
        self.view: dict[str, Any] | None = None
        self.error = ""
        self._asked_at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    async def ask(self) -> None:
        try:
            self.view, self.error = await self.agent.servers_raft_view(self.token), ""
        except Exception as exc:
            answer = error_answer(exc)
            if answer is None:
                log.exception("live: asking a server for its Raft view failed")
                answer = (500, "Internal error")
            self.view, self.error = None, answer[1]

    def refresh(self, now: float) -> None:
        if self._task is not None and not self._task.done():
            return
        if now - self._asked_at >= SERVERS_RAFT_S:
            self._asked_at = now
            self._task = asyncio.create_task(self.ask())

    def add_to(self, state: dict[str, Any]) -> dict[str, Any]:
        """`state` with the servers' Raft in place of the client's none."""
        if state["Raft"] is not None:
            return state
        extra: dict[str, Any] = {"Raft": self.view, "RaftRemote": True}
        if self.error:
            extra["RaftError"] = self.error
        return {**state, **extra}

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def agent_live(request: web.Request) -> web.StreamResponse:
    agent = agent_of(request)
    servers = ServersRaft(agent, caller_token(request))
    if "once" in request.query:
        state = agent.live_state()
        if state["Raft"] is None:
            await servers.ask()
        return json_response(request, servers.add_to(state))
    response = await open_event_stream(request)
    loop = asyncio.get_running_loop()
    before = None
    sent = ""
    last_write = loop.time()
    try:
        while True:
            state = agent.live_state()
            if state["Raft"] is None:
                servers.refresh(loop.time())
                state = servers.add_to(state)
            text = json.dumps(state, sort_keys=True)
            if text != sent:
                events = live_events(before, state)
                payload = json.dumps({"State": state, "Events": events})
                await response.write(f"data: {payload}\n\n".encode())
                before, sent, last_write = state, text, loop.time()
            elif loop.time() - last_write >= KEEPALIVE_S:
                await response.write(b": keepalive\n\n")
                last_write = loop.time()
            await asyncio.sleep(LOOK_INTERVAL_S)
    finally:
        servers.stop()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/agent/live", agent_live)
