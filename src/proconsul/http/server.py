"""The HTTP API server: routes, Consul-style errors, request counters.

Every error leaves as plain text with Consul's status code: 400 for bad input,
403 for an ACL refusal (`ACLDenied`, whoever raised it), the ACL API's own
status for its other errors (`ACLError`), 404 for unknown paths and missing
rows, 405 with `Allow` for a wrong method, 413 for oversized
bodies, 500 for a server's refusal and (logged) for anything unexpected.
Tokens are never logged.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from proconsul.acl.errors import ACLDenied, ACLError
from proconsul.http import (
    acl_routes,
    agent_routes,
    catalog,
    connect_routes,
    gossip_routes,
    kv,
    operator_routes,
)
from proconsul.http.acl_rules import acl_middleware, check_routes
from proconsul.http.api import AGENT_KEY, AgentAPI
from proconsul.http.common import HTTPError
from proconsul.rpc.errors import RPCError

log = logging.getLogger("proconsul.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Request bodies other than KV values are small; KV's own limit is checked per request.
_MIN_BODY_LIMIT = 1024 * 1024

_UI_PAGE = b"""<!doctype html><html><head><title>Proconsul</title></head>
<body><h1>Proconsul</h1><p>The web UI is not built yet; the HTTP API is at /v1/.</p></body>
</html>"""


class HTTPStats:
    def __init__(self) -> None:
        self.requests = 0
        self.by_status: Counter[int] = Counter()

    def as_dict(self) -> dict[str, int]:
        out = {"requests": self.requests}
        for status, count in sorted(self.by_status.items()):
            out[f"status_{status}"] = count
        return out


STATS_KEY: web.AppKey[HTTPStats] = web.AppKey("http_stats")


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=message, headers=headers)


@web.middleware
async def consul_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    stats = request.app[STATS_KEY]
    stats.requests += 1
    try:
        response = await handler(request)
    except HTTPError as exc:
        response = _text(exc.status, exc.message, exc.headers)
    except web.HTTPMethodNotAllowed as exc:
        allow = ", ".join(sorted(exc.allowed_methods))
        response = _text(405, f"method {request.method} not allowed", {"Allow": allow})
    except web.HTTPNotFound:
        response = _text(404, "404 page not found")
    except web.HTTPRequestEntityTooLarge as exc:
        response = _text(413, exc.text or "Request body too large")
    except web.HTTPException as exc:
        response = _text(exc.status, exc.text or exc.reason)
    except ACLDenied as exc:
        # Every ACL refusal, local or a server's (that one is an RPCError too).
        response = _text(403, exc.message)
    except ACLError as exc:
        # The ACL API's other failures: 400 bad input, 500 a write that failed.
        response = _text(exc.status, exc.message)
    except RPCError as exc:
        response = _text(500, exc.message)
    except (ConnectionError, TimeoutError) as exc:
        # No server reachable ("No known Consul servers"), a server's refusal
        # ("No cluster leader", ...) or a call that ran out of time: Consul says 500.
        response = _text(500, str(exc) or type(exc).__name__)
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        response = _text(500, "Internal error")
    stats.by_status[response.status] += 1
    return response


async def ui_index(request: web.Request) -> web.Response:
    return web.Response(body=_UI_PAGE, content_type="text/html")


async def root_redirect(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/ui/")


def build_app(agent: AgentAPI, ui_enabled: bool) -> web.Application:
    app = web.Application(
        middlewares=[consul_errors, acl_middleware],
        client_max_size=max(_MIN_BODY_LIMIT, agent.kv_max_value_size + 1),
    )
    app[AGENT_KEY] = agent
    app[STATS_KEY] = HTTPStats()
    catalog.add_routes(app)
    kv.add_routes(app)
    agent_routes.add_routes(app)
    gossip_routes.add_routes(app)
    acl_routes.add_routes(app)
    operator_routes.add_routes(app)
    connect_routes.add_routes(app)
    if ui_enabled:
        app.router.add_get("/ui/", ui_index)
        app.router.add_get("/ui", root_redirect)
        app.router.add_get("/", root_redirect)
    check_routes(app)
    return app


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
