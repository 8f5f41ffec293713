"""The admin listener: `/stats`, `/stats/prometheus`, `/ready`.

Job: a small aiohttp app on `-admin-bind` (127.0.0.1:19000 by default) that
shows the runtime's counters as Envoy's admin does.

Rules:
- `/ready`: 200 `LIVE` once the first configuration is applied, 503
  `PRE_INITIALIZING` before, and `DRAINING` 503 while stopping.
- `/stats`: `name: value` lines; `/stats/prometheus`: Prometheus text.
- Read-only, and only GET (Envoy's mutating admin endpoints are not here).
"""

from __future__ import annotations

from aiohttp import web

from proconsul.proxy.runtime import Runtime


def admin_app(runtime: Runtime) -> web.Application:
    async def ready(_: web.Request) -> web.Response:
        if runtime.draining:
            return web.Response(status=503, text="DRAINING\n")
        if not runtime.ready:
            return web.Response(status=503, text="PRE_INITIALIZING\n")
        return web.Response(text="LIVE\n")

    async def stats(_: web.Request) -> web.Response:
        return web.Response(text=runtime.stats.render_text())

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(
            text=runtime.stats.render_prometheus(), content_type="text/plain", charset="utf-8"
        )

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_get("/stats", stats)
    app.router.add_get("/stats/prometheus", prometheus)
    return app


async def start_admin(runtime: Runtime, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(admin_app(runtime), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def admin_port(runner: web.AppRunner) -> int:
    """The port actually bound (for `-admin-bind host:0`)."""
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    return 0
