"""A real agent with `addresses { http = "unix:///..." }`: the API and the CLI over the socket.

The agent listens on the socket and on TCP (the list form of addresses.http),
so the usual start-up wait works; everything asserted goes over the socket.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.agent_process import AgentProcess, wait_for


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def get(path: Path, url: str) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(path)
    try:
        conn.request("GET", url)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def socket_path() -> Iterator[Path]:
    # Unix socket paths are limited to about 100 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="pc-") as name:
        yield Path(name) / "http.sock"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    return subprocess.run(
        [sys.executable, "-m", "proconsul", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
        check=False,
    )


def test_agent_answers_over_a_unix_socket_and_the_cli_uses_it(
    agent_factory: Callable[..., AgentProcess], socket_path: Path
) -> None:
    # A socket file left by an agent that died: the new agent replaces it.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(socket_path))
    agent = agent_factory("-hcl", f'addresses {{ http = "unix://{socket_path} 127.0.0.1" }}')

    # The dev server elects itself soon after the API answers: wait for a leader.
    wait_for(lambda: json.loads(get(socket_path, "/v1/status/leader")[1]), deadline_s=20.0)
    assert stat.S_IMODE(socket_path.lstat().st_mode) == 0o660

    status, body = get(socket_path, "/v1/agent/self")
    assert status == 200
    http_addrs = json.loads(body)["DebugConfig"]["HTTPAddrs"]
    assert http_addrs == [f"unix://{socket_path}", f"tcp://127.0.0.1:{agent.http_port}"]
    node = json.loads(body)["Config"]["NodeName"]

    by_flag = cli("members", "-http-addr", f"unix://{socket_path}")
    assert by_flag.returncode == 0, by_flag.stderr
    assert node in by_flag.stdout and "alive" in by_flag.stdout
    by_env = cli("members", env={"CONSUL_HTTP_ADDR": f"unix://{socket_path}"})
    assert (by_env.returncode, by_env.stdout) == (0, by_flag.stdout)

    assert agent.stop() == 0
    assert not socket_path.exists()  # the agent removes its socket on the way out
    gone = cli("members", "-http-addr", f"unix://{socket_path}")
    assert gone.returncode == 1
    assert "dial unix" in gone.stderr and "no such file or directory" in gone.stderr
