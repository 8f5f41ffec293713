"""`proconsul connect proxy` as the sidecars of web and api on a real dev agent.

The agent's proxycfg builds the snapshots, its xDS server serves them, and
two built-in proxy processes carry them out: web (a demo service) calls its
upstream api on a local port, through web's sidecar and, over mTLS, api's.
An intention written through the HTTP API reaches api's sidecar at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.agent_process import AgentProcess, free_port, start_agent, wait_for
from tests.integration.test_connect_envoy import register

DEADLINE_S = 30.0


@dataclass
class Mesh:
    agent: AgentProcess
    web_port: int
    admins: dict[str, int]
    processes: list[subprocess.Popen[bytes]]


def demo(name: str, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    command = [sys.executable, "-m", "proconsul", "demo", "service", "-name", name]
    proc = subprocess.Popen(
        [*command, "-listen", "127.0.0.1:0", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()  # "==> Demo service NAME listening on HOST:PORT"
    assert "listening on" in line, line
    return proc, int(line.strip().rsplit(":", 1)[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return -1, str(err)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    agent = start_agent(tmp_path, "-grpc-port", str(free_port()))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        wait_for(lambda: agent.get_json("/v1/status/leader"), deadline_s=20.0)
        # http, so intentions apply per request (a tcp intention spares the
        # connection web's demo keeps alive, as in Consul).
        defaults = {"Kind": "service-defaults", "Name": "api", "Protocol": "http"}
        code, _, raw = agent.request("PUT", "/v1/config", defaults)
        assert code == 200, raw
        api, api_port = demo("api")
        upstream = free_port()
        web, web_port = demo("web", "-upstream", f"127.0.0.1:{upstream}")
        processes += [api, web]
        register(
            agent,
            {
                "Name": "api",
                "ID": "api",
                "Port": api_port,
                "Connect": {"SidecarService": {"Port": free_port()}},
            },
        )
        sidecar = {
            "Port": free_port(),
            "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": upstream}]},
        }
        register(
            agent,
            {"Name": "web", "ID": "web", "Port": web_port, "Connect": {"SidecarService": sidecar}},
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONNECT_"))}
        env["CONSUL_HTTP_ADDR"] = agent.http_addr
        admins = {}
        for service in ("api", "web"):
            admins[service] = free_port()
            command = [sys.executable, "-m", "proconsul", "connect", "proxy"]
            processes.append(
                subprocess.Popen(
                    [
                        *command,
                        "-sidecar-for",
                        service,
                        "-admin-bind",
                        f"127.0.0.1:{admins[service]}",
                    ],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield Mesh(agent, web_port, admins, processes)
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in processes:
            try:
                codes.append(proc.wait(timeout=15))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        agent.stop()
    assert codes == [0] * len(codes)  # every process stopped cleanly on SIGTERM


def test_web_calls_api_through_two_builtin_sidecars_and_an_intention_applies(
    mesh: Mesh,
) -> None:
    for port in mesh.admins.values():
        wait_for(lambda p=port: get(f"http://127.0.0.1:{p}/ready")[0] == 200, DEADLINE_S)

    def answers() -> str | None:
        status, body = get(f"http://127.0.0.1:{mesh.web_port}/")
        return body if status == 200 else None

    reply = json.loads(wait_for(answers, DEADLINE_S))
    (nested,) = reply["upstream_calls"].values()
    assert nested["name"] == "api" and nested["code"] == 200
    deny = {"SourceName": "web", "DestinationName": "api", "Action": "deny"}
    code, _, raw = mesh.agent.request(
        "PUT", "/v1/connect/intentions/exact?source=web&destination=api", deny
    )
    assert code == 200, raw

    def refused() -> str | None:
        status, body = get(f"http://127.0.0.1:{mesh.web_port}/")
        return body if status == 500 else None

    started = time.monotonic()
    nested = next(iter(json.loads(wait_for(refused, 5.0))["upstream_calls"].values()))
    assert time.monotonic() - started < 1.0  # an intention applies within a second
    assert nested["code"] == 403 and nested["body"] == "RBAC: access denied"
    _, stats = get(f"http://127.0.0.1:{mesh.admins['api']}/stats")
    (denied,) = [
        line for line in stats.splitlines() if "public_listener" in line and "rbac.denied" in line
    ]
    assert int(denied.rsplit(" ", 1)[1]) >= 1
