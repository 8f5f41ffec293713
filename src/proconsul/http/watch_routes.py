"""`GET /v1/agent/watch`: one stream that says when any of a view's reads changed.

Job: a UI view names the public reads it shows (`?path=/v1/health/service/api
&path=/v1/catalog/services`, up to `MAX_PATHS`); the agent follows each one
with a blocking read loop through its normal read path (`rpc_read`, which a
client agent forwards to a server), and sends a Server-Sent Event
`{"Path": <path>}` whenever the answer that path gives to the caller's token
changed. The view then reads that path again with a plain request. So a view
holds one long-lived connection however many reads it shows.

Rules:
- Only the paths in `parse_watch_path` can be followed (the reads the UI
  shows); anything else is a 400 before the stream starts.
- ACLs: every read is made with the caller's token and checked where the plain
  read would be (the server endpoints, or the ACL endpoints for `/v1/acl/*`).
  An event is sent only when the answer *as this token sees it* changed (a
  digest of the filtered answer), so the stream never tells that an index
  moved for rows the token cannot read. A refused read sends
  `{"Path", "Status", "Error"}` once (the plain read's refusal) and is tried
  again every `RETRY_REFUSED_S`.
- Every path gets one event when the stream opens, so a (re)connecting view
  loads everything once.
- The ACL lists have no blocking form here: they are read again every
  `ACL_RECHECK_S`, inside the agent, still one connection for the browser.
- A stream whose viewer went away is noticed within `CLOSED_CHECK_S` and its
  read loops are cancelled.
How the UI uses it: DESIGN.md, "The web UI".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web
from yarl import URL

from proconsul.http.acl_routes import acl_service
from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import bad_request, error_answer, json_encoder
from proconsul.http.live_routes import open_event_stream
from proconsul.structs.intentions import IntentionQuery
from proconsul.structs.requests import QueryOptions, ReadRequest

log = logging.getLogger("proconsul.http.watch")

MAX_PATHS = 16
BLOCK_WAIT_S = 60.0
ACL_RECHECK_S = 2.0
RETRY_REFUSED_S = 5.0
RETRY_FAILED_S = 1.0
KEEPALIVE_S = 10.0
CLOSED_CHECK_S = 1.0

ACL_LISTS = ("tokens", "policies", "roles")


@dataclass(frozen=True)
class WatchedRead:
    """One followable read: an RPC read method and its request, or an ACL list."""

    path: str
    method: str = ""
    read: ReadRequest | None = None
    acl_list: str = ""


def parse_watch_path(path: str) -> WatchedRead | None:
    """The read a UI path stands for, or None when it cannot be followed."""
    url = URL(path)
    parts = url.path.split("/")
    if len(parts) < 3 or parts[:2] != ["", "v1"]:
        return None
    rest = url.path[len("/v1/") :]
    head, _, name = rest.partition("/")
    sub, _, tail = name.partition("/")

    def rpc(method: str, **fields: Any) -> WatchedRead:
        return WatchedRead(path, method, ReadRequest(**fields))

    if rest == "health/state/any":
        return rpc("Health.ChecksInState", state="any")
    if head == "health" and sub == "service" and tail:
        return rpc("Health.ServiceNodes", name=tail)
    if rest == "catalog/services":
        return rpc("Catalog.ListServices")
    if rest == "catalog/nodes":
        return rpc("Catalog.ListNodes")
    if head == "kv" and "recurse" in url.query:
        return rpc("KVS.List", name=name)
    if rest == "connect/intentions":
        return rpc("Intention.List", intention=IntentionQuery())
    if head == "config" and name and "/" not in name:
        return rpc("ConfigEntry.List", kind=name)
    if head == "acl" and name in ACL_LISTS:
        return WatchedRead(path, acl_list=name)
    return None


def digest(value: Any) -> str:
    try:
        body = json_encoder.encode(value)
    except (TypeError, msgspec.EncodeError):
        body = repr(value).encode()
    return hashlib.sha256(body).hexdigest()


Reader = Callable[[int], Awaitable[tuple[int, Any]]]


def reader_of(request: web.Request, watched: WatchedRead) -> Reader:
    """Read `watched` once, blocking while its index is not above `min_index`."""
    agent, token = agent_of(request), caller_token(request)

    async def rpc_read(min_index: int) -> tuple[int, Any]:
        assert watched.read is not None
        options = QueryOptions(token=token, min_index=min_index, max_query_time_s=BLOCK_WAIT_S)
        read = msgspec.structs.replace(watched.read, options=options)
        response = await agent.rpc_read(watched.method, read)
        return response.meta.index, response.value

    async def acl_read(min_index: int) -> tuple[int, Any]:
        if min_index:
            await asyncio.sleep(ACL_RECHECK_S)
        acl = acl_service(request)
        listed: tuple[int, Any]
        if watched.acl_list == "tokens":
            listed = await acl.token_list(caller=token)
        elif watched.acl_list == "policies":
            listed = await acl.policy_list(caller=token)
        else:
            listed = await acl.role_list(caller=token)
        return listed

    return rpc_read if watched.method else acl_read


async def follow(path: str, read: Reader, send: Callable[[dict[str, Any]], None]) -> None:
    """Read again and again; `send` an event when the answer this token sees changed."""
    index = 0
    seen: str | None = None
    refused: tuple[int, str] | None = None
    while True:
        try:
            new_index, value = await read(index)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            answer = error_answer(exc)
            if answer is None:
                log.exception("watch: reading %s failed", path)
                answer = (500, "Internal error")
            if answer != refused:
                send({"Path": path, "Status": answer[0], "Error": answer[1]})
            refused, seen, index = answer, None, 0
            await asyncio.sleep(RETRY_REFUSED_S if answer[0] == 403 else RETRY_FAILED_S)
            continue
        refused = None
        # An index that went back (a snapshot restored) starts over from 0.
        index = new_index if new_index >= index else 0
        now_seen = digest(value)
        if now_seen != seen:
            send({"Path": path})
            seen = now_seen


async def agent_watch(request: web.Request) -> web.StreamResponse:
    paths = request.query.getall("path", [])
    if not paths:
        bad_request("Missing path: name the reads to watch with ?path=")
    if len(paths) > MAX_PATHS:
        bad_request(f"Too many paths: at most {MAX_PATHS}")
    watched: list[WatchedRead] = []
    for path in dict.fromkeys(paths):
        found = parse_watch_path(path)
        if found is None:
            bad_request(f"Cannot watch {path!r}")
        watched.append(found)
    response = await open_event_stream(request)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    tasks = [
        asyncio.create_task(follow(w.path, reader_of(request, w), queue.put_nowait))
        for w in watched
    ]
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    try:
        while request.transport is not None and not request.transport.is_closing():
            try:
                event = await asyncio.wait_for(queue.get(), CLOSED_CHECK_S)
            except TimeoutError:
                if loop.time() - last_write >= KEEPALIVE_S:
                    await response.write(b": keepalive\n\n")
                    last_write = loop.time()
                continue
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
            last_write = loop.time()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/agent/watch", agent_watch)
