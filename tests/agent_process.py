"""Real agent processes for integration tests.

`start_agent` launches `python -m proconsul agent …` on free ports and waits,
with a deadline, until its HTTP API answers. Output goes to a log file that is
printed when a test fails to start it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

START_DEADLINE_S = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_gossip_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on `host` (gossip binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
        return port
    raise RuntimeError(f"no port free for both TCP and UDP on {host}")


def wait_for(
    condition: Callable[[], T | None], deadline_s: float = 10.0, interval_s: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy; fail after the deadline."""
    end = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while time.monotonic() < end:
        try:
            value = condition()
        except AssertionError:
            raise  # a violated invariant, not a "not yet"
        except Exception as exc:
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {deadline_s}s (last error: {last_error})")


async def wait_for_async(
    condition: Callable[[], object], deadline_s: float = 10.0, interval_s: float = 0.01
) -> None:
    """`wait_for` inside an event loop: poll `condition` without blocking the loop."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {deadline_s}s")
        await asyncio.sleep(interval_s)


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    http_port: int
    log_path: Path
    host: str = "127.0.0.1"

    @property
    def http_addr(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | dict[str, Any] | list[Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        data: bytes | None
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def get_json(self, path: str) -> Any:
        status, _, body = self.request("GET", path)
        if status != 200:
            # Not an AssertionError: `wait_for` polls through it (a client that
            # knows no server yet answers 500 until gossip finds one).
            raise RuntimeError(f"GET {path}: {status} {body!r}")
        return json.loads(body)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str) -> float:
        """One gauge of /v1/agent/metrics (0 when the agent does not report it)."""
        gauges = self.get_json("/v1/agent/metrics")["Gauges"]
        return next((float(g["Value"]) for g in gauges if g["Name"] == name), 0.0)

    def connect(self, timeout_s: float = 5.0) -> socket.socket:
        """A raw TCP connection to the HTTP API, for requests no client library sends."""
        return socket.create_connection((self.host, self.http_port), timeout=timeout_s)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def read_until_closed(sock: socket.socket, deadline_s: float) -> tuple[bytes, bool]:
    """Everything the peer sends until it closes the connection or the deadline
    passes; the flag says whether it closed (EOF or reset) in time."""
    end = time.monotonic() + deadline_s
    received = b""
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return received, False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk


def proconsul_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "proconsul", *args]


def start_agent(
    tmp_path: Path,
    *args: str,
    dev: bool = True,
    env: dict[str, str] | None = None,
    http_port: int | None = None,
) -> AgentProcess:
    """Start an agent with its HTTP API and gossip on free ports; DNS, gRPC off unless asked.
    `http_port` pins the API's port (a restarted agent that a browser page still talks to)."""
    http_port = http_port or free_port()
    log_path = tmp_path / f"agent-{http_port}.log"
    restarts = 1
    while log_path.exists():  # a port reused by a later agent keeps the earlier log
        restarts += 1
        log_path = tmp_path / f"agent-{http_port}-{restarts}.log"
    argv = list(args)
    if dev:
        argv.insert(0, "-dev")
    command = proconsul_cmd("agent", *argv, "-http-port", str(http_port))
    if "-dns-port" not in argv:
        command += ["-dns-port", "-1"]
    if "-grpc-port" not in argv:
        command += ["-grpc-port", "-1"]
    if "-serf-lan-port" not in argv:
        # Agents on one address must not share the gossip port (default 8301).
        bind = argv[argv.index("-bind") + 1] if "-bind" in argv else "127.0.0.1"
        command += ["-serf-lan-port", str(free_gossip_port(bind))]
    with open(log_path, "wb") as log_file:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=tmp_path,
        )
    agent = AgentProcess(proc=proc, http_port=http_port, log_path=log_path)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"agent exited with {proc.returncode}:\n{agent.log_text()}")
        # Any answer will do: a client that knows no server yet answers 500.
        agent.request("GET", "/v1/status/leader", timeout_s=1.0)
        return True

    try:
        wait_for(ready, START_DEADLINE_S)
    except BaseException:
        agent.stop()
        raise
    return agent
