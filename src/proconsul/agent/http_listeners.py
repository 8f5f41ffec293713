"""The HTTP API's listeners: TCP on `host:port`, or a unix socket for `unix:///path`.

Job: bind the aiohttp app on every address `addresses.http` (else `client_addr`)
names, and take the sockets down again on stop.

Rules (Consul's, for `addresses { http = "unix:///path" }`):
- The socket file gets `unix_sockets { user, group, mode }`: `user` a uid or a
  user name, `group` a gid, `mode` octal; unset, the agent's own uid and gid
  and mode 0660 (owner and group may connect, nobody else).
- A socket file left by an agent that died is removed at start. A socket that
  something still answers on is refused (another agent owns it), and so is a
  path holding anything but a socket; the config loader refuses that one
  first, so `proconsul validate` says so too.
- On stop the socket file is removed, unless something else replaced it.
- A failure to bind is an `OSError` whose text names the address; nothing is
  left behind (no runner, no socket file).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import socket
import stat
from dataclasses import dataclass

from aiohttp import web

from proconsul.config.schema import RuntimeConfig, UnixSockets
from proconsul.config.validation import UNIX_PREFIX, is_numeric_id
from proconsul.http.server import http_runner

log = logging.getLogger("proconsul.agent")

DEFAULT_SOCKET_MODE = 0o660
# How long to wait for an answer on an existing socket before calling it stale.
_PROBE_TIMEOUT_S = 0.5


@dataclass
class HTTPListener:
    """One bound address and the runner serving it."""

    host: str  # an IP, or `unix:///path`
    port: int
    runner: web.AppRunner
    socket_inode: tuple[int, int] | None = None  # (device, inode) of our socket file

    @property
    def unix_path(self) -> str | None:
        return self.host[len(UNIX_PREFIX) :] if self.host.startswith(UNIX_PREFIX) else None

    @property
    def display(self) -> str:
        """`127.0.0.1:8500 (tcp)` or `/path (unix)`, for logs."""
        path = self.unix_path
        if path is not None:
            return f"{path} (unix)"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port} (tcp)"

    async def close(self) -> None:
        await self.runner.cleanup()
        self.remove_socket()

    def remove_socket(self) -> None:
        """Remove our socket file, unless something else has replaced it since."""
        path = self.unix_path
        if path is None or self.socket_inode is None:
            return
        with contextlib.suppress(OSError):
            found = os.lstat(path)
            if (found.st_dev, found.st_ino) == self.socket_inode:
                os.unlink(path)


async def start_listener(
    app: web.Application, host: str, port: int, config: RuntimeConfig
) -> HTTPListener:
    """Serve `app` on `host` (an IP or `unix:///path`) and `port` (ignored for unix)."""
    runner = http_runner(app)
    await runner.setup()
    try:
        if host.startswith(UNIX_PREFIX):
            return await _start_unix(runner, host, config.unix_sockets)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise OSError(
                f"Failed to start HTTP server on {host}:{port}: {exc.strerror or exc}"
            ) from None
        return HTTPListener(host, port, runner)
    except BaseException:
        await runner.cleanup()
        raise


async def _start_unix(runner: web.AppRunner, host: str, sockets: UnixSockets) -> HTTPListener:
    path = host[len(UNIX_PREFIX) :]
    listener = HTTPListener(host, 0, runner)
    try:
        _clear_stale_socket(path)
        site = web.UnixSite(runner, path)
        await site.start()
        found = os.lstat(path)
        listener.socket_inode = (found.st_dev, found.st_ino)
        _set_permissions(path, sockets)
    except OSError as exc:
        listener.remove_socket()  # the caller cleans the runner up
        raise OSError(
            f"Failed to start HTTP server on unix socket {path}: {exc.strerror or exc}"
        ) from None
    return listener


def _clear_stale_socket(path: str) -> None:
    """Remove a socket file nobody answers on; refuse a live socket or any other file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "the path exists and is not a unix socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT_S)
    try:
        probe.connect(path)
    except OSError:
        # Refused (or timed out): the agent that made it is gone.
        log.info("agent: removing stale unix socket %s", path)
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another process is listening on this socket")


def _set_permissions(path: str, sockets: UnixSockets) -> None:
    """Consul's setFilePermissions: owner first, then the mode."""
    uid, gid = -1, -1  # -1: leave as created (this process's ids)
    if is_numeric_id(sockets.user):
        uid = int(sockets.user)
    elif sockets.user:
        try:
            uid = pwd.getpwnam(sockets.user).pw_uid
        except (KeyError, ValueError):
            raise OSError(errno.EINVAL, f"no such user {sockets.user!r}") from None
    if sockets.group:
        gid = int(sockets.group)
    if uid != -1 or gid != -1:
        os.chown(path, uid, gid)
    os.chmod(path, int(sockets.mode, 8) if sockets.mode else DEFAULT_SOCKET_MODE)
