"""The web UI's files and the one internal endpoint it asks before fetching.

Routes:
- `GET /ui/` and `GET /ui/{path}` serve the UI's static files from the package
  (`proconsul/ui/static`; nothing outside it, whatever the path says); `/` and
  `/ui` redirect to `/ui/`. Registered only with `ui_config.enabled` (else 404).
- `POST /v1/internal/acl/authorize` (Consul's UI asks the same): a JSON list of
  `{"Resource", "Segment", "Access"}` answered as the same list with `"Allow"`
  for the caller's token, so the UI fetches nothing the token may not read.
  At most 64 checks; an unknown resource or access is a 400; with ACLs off
  everything is allowed. It needs no rule of its own: it only tells the caller
  about its own token.

How the UI is laid out: DESIGN.md, "The web UI".
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

import msgspec
from aiohttp import web

from proconsul.acl.rules import LABELLED_RESOURCES, UNLABELLED_RESOURCES
from proconsul.http.acl_rules import ensure_resolved
from proconsul.http.common import bad_request, decode_body, json_response
from proconsul.structs.naming import pascal

UI_ROOT = Path(__file__).resolve().parent.parent / "ui" / "static"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
MAX_CHECKS = 64
RESOURCES = frozenset((*LABELLED_RESOURCES, *UNLABELLED_RESOURCES, "intention"))
ACCESS = frozenset(("read", "list", "write"))


class AuthorizationCheck(msgspec.Struct, rename=pascal):
    resource: str
    access: str
    segment: str = ""


def _ui_file(path: str) -> Path | None:
    """The file under UI_ROOT that `path` names; None for anything else (no escapes)."""
    target = (UI_ROOT / (path or "index.html")).resolve()
    if not target.is_relative_to(UI_ROOT) or not target.is_file():
        return None
    return target


async def ui_file(request: web.Request) -> web.Response:
    target = _ui_file(request.match_info.get("path", ""))
    if target is None:
        raise web.HTTPNotFound()
    kind = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0]
    return web.Response(
        body=target.read_bytes(),
        content_type=kind or "application/octet-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def ui_redirect(request: web.Request) -> web.Response:
    # Answered, not raised: the error middleware would turn a raised redirect into text.
    return web.Response(status=301, headers={"Location": "/ui/"})


async def acl_authorize(request: web.Request) -> web.Response:
    checks = await decode_body(request, list[AuthorizationCheck])
    if len(checks) > MAX_CHECKS:
        bad_request(f"Refusing to authorize more than {MAX_CHECKS} resources")
    for check in checks:
        if check.resource not in RESOURCES:
            bad_request(f"Invalid resource: {check.resource!r}")
        if check.access not in ACCESS:
            bad_request(f"Invalid access level for {check.resource} resource: {check.access!r}")
    resolved = await ensure_resolved(request)
    out = []
    for check in checks:
        allow = resolved is None or resolved.authorizer.allowed(
            check.resource, check.access, check.segment
        )
        out.append(
            {
                "Resource": check.resource,
                "Segment": check.segment,
                "Access": check.access,
                "Allow": allow,
            }
        )
    return json_response(request, out)


def add_routes(app: web.Application, ui_enabled: bool) -> None:
    app.router.add_post("/v1/internal/acl/authorize", acl_authorize)
    if ui_enabled:
        app.router.add_get("/ui/{path:.*}", ui_file)
        app.router.add_get("/ui", ui_redirect)
        app.router.add_get("/", ui_redirect)
