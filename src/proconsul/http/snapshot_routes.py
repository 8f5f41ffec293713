"""GET and PUT /v1/snapshot: save the servers' state as an archive, restore one.

`GET /v1/snapshot` answers the archive (`application/x-gzip`) with
`X-Consul-Index` set to the index it was taken at; `?stale` lets any server
answer, otherwise the leader does. `PUT /v1/snapshot` takes an archive as the
raw body and restores it on every server through Raft; a corrupt or
truncated archive is refused (400, saying what failed) before anything
changes. Both need a management token (acl:write), as in Consul
(http/acl_rules.py; a client agent's server checks again).

The body of a restore is read from the stream with its own bound
(MAX_SNAPSHOT_BYTES), not the agent's request body limit, which is sized for
KV values.
"""

from __future__ import annotations

from aiohttp import web

from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import HTTPError, bad_request

MAX_SNAPSHOT_BYTES = 1 << 30


async def snapshot_save(request: web.Request) -> web.Response:
    if "stale" in request.query and "consistent" in request.query:
        bad_request("Cannot specify ?stale with ?consistent, conflicting semantics.")
    stale = "stale" in request.query
    index, archive = await agent_of(request).snapshot_save(caller_token(request), stale)
    response = web.Response(body=archive, content_type="application/x-gzip")
    response.headers["X-Consul-Index"] = str(index)
    return response


async def snapshot_restore(request: web.Request) -> web.Response:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > MAX_SNAPSHOT_BYTES:
            raise HTTPError(413, f"snapshot is larger than {MAX_SNAPSHOT_BYTES} bytes")
        chunks.append(chunk)
    archive = b"".join(chunks)
    if not archive:
        bad_request("snapshot restore failed: empty body")
    await agent_of(request).snapshot_restore(archive, caller_token(request))
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/snapshot", snapshot_save)
    app.router.add_put("/v1/snapshot", snapshot_restore)
