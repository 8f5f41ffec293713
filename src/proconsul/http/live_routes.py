"""`GET /v1/agent/live`: this agent's gossip and Raft, streamed (the UI's Live page).

Routes:
- `GET /v1/agent/live` answers with Server-Sent Events (`text/event-stream`): one
  `data:` line of JSON per change, `{"State": <picture>, "Events": [...]}` (the
  picture and events of `http/live.py`). The agent looks every `LOOK_INTERVAL_S`
  and sends only when the picture changed, so a change shows within a second; a
  comment line every `KEEPALIVE_S` keeps proxies from closing a quiet stream.
  `?once` answers the current picture as plain JSON instead.

ACLs: the stream needs `agent:read` on this agent's node, the rule of
`/v1/agent/self` and `/v1/agent/metrics`, which carry the same counters
(Consul's closest analogue). How the UI is laid out: DESIGN.md, "The web UI".
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from proconsul.http.api import agent_of
from proconsul.http.common import json_response
from proconsul.http.live import live_events

LOOK_INTERVAL_S = 0.2
KEEPALIVE_S = 10.0


async def agent_live(request: web.Request) -> web.StreamResponse:
    agent = agent_of(request)
    if "once" in request.query:
        return json_response(request, agent.live_state())
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
    loop = asyncio.get_running_loop()
    before = None
    sent = ""
    last_write = loop.time()
    while True:
        state = agent.live_state()
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


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/agent/live", agent_live)
