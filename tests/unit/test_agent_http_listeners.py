"""The HTTP API on a unix socket: mode, stale sockets, refusals, clean-up."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proconsul.agent.http_listeners import DEFAULT_SOCKET_MODE, start_listener
from proconsul.config.schema import RuntimeConfig, UnixSockets


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to about 100 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="pc-") as name:
        yield Path(name)


def app() -> web.Application:
    async def leader(request: web.Request) -> web.Response:
        return web.json_response("127.0.0.1:8300")

    application = web.Application()
    application.router.add_get("/v1/status/leader", leader)
    return application


async def get_leader(path: Path) -> str:
    connector = aiohttp.UnixConnector(path=str(path))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://unix/v1/status/leader") as response,
    ):
        assert response.status == 200
        found: str = await response.json()
        return found


async def test_serves_on_a_unix_socket_with_mode_0660_and_removes_it(short_dir: Path) -> None:
    path = short_dir / "http.sock"
    listener = await start_listener(app(), f"unix://{path}", 8500, RuntimeConfig())
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == DEFAULT_SOCKET_MODE
        assert listener.display == f"{path} (unix)"
        assert await get_leader(path) == "127.0.0.1:8300"
    finally:
        await listener.close()
    assert not path.exists()


async def test_unix_sockets_mode_is_applied(short_dir: Path) -> None:
    path = short_dir / "http.sock"
    config = RuntimeConfig(unix_sockets=UnixSockets(mode="0600", user=str(os.getuid())))
    listener = await start_listener(app(), f"unix://{path}", 8500, config)
    try:
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    finally:
        await listener.close()


async def test_a_stale_socket_is_replaced(short_dir: Path) -> None:
    path = short_dir / "http.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening, then closed: a dead agent's file
    assert stat.S_ISSOCK(path.lstat().st_mode)
    listener = await start_listener(app(), f"unix://{path}", 8500, RuntimeConfig())
    try:
        assert await get_leader(path) == "127.0.0.1:8300"
    finally:
        await listener.close()


async def test_a_live_socket_or_a_plain_file_is_refused(short_dir: Path) -> None:
    path = short_dir / "http.sock"
    first = await start_listener(app(), f"unix://{path}", 8500, RuntimeConfig())
    try:
        with pytest.raises(OSError, match="another process is listening on this socket"):
            await start_listener(app(), f"unix://{path}", 8500, RuntimeConfig())
        assert await get_leader(path) == "127.0.0.1:8300"  # the first one still serves
    finally:
        await first.close()
    path.write_text("someone's file")
    with pytest.raises(OSError, match="exists and is not a unix socket"):
        await start_listener(app(), f"unix://{path}", 8500, RuntimeConfig())
    assert path.read_text() == "someone's file"


async def test_a_socket_in_a_missing_directory_names_the_path(short_dir: Path) -> None:
    path = short_dir / "missing" / "http.sock"
    with pytest.raises(OSError, match=f"Failed to start HTTP server on unix socket {path}"):
        await start_listener(app(), f"unix://{path}", 8500, RuntimeConfig())
