"""Script, gRPC and H2PING checks on a real agent: the script gate names its
setting, scripts run with their exit code and output, gRPC health and HTTP/2
pings reach a real gRPC server."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.agent_process import AgentProcess, wait_for
from tests.grpc_health import SERVING
from tests.grpc_health import health_server as serve_health


def check_status(agent: AgentProcess, check_id: str) -> tuple[str, str] | None:
    check = agent.get_json("/v1/agent/checks").get(check_id)
    return (check["Status"], check["Output"]) if check else None


def test_script_checks_are_off_by_default(dev_agent: AgentProcess) -> None:
    body = {"Name": "s", "Args": ["/bin/true"], "Interval": "1s"}
    status, _, text = dev_agent.request("PUT", "/v1/agent/check/register", body)
    assert status == 400
    assert b"enable_script_checks" in text and b"remote calls" in text
    service = {"Name": "web", "Check": {"args": ["/bin/true"], "interval": "1s"}}
    status, _, text = dev_agent.request("PUT", "/v1/agent/service/register", service)
    assert status == 400 and b"enable_script_checks" in text
    assert dev_agent.get_json("/v1/agent/services") == {}


def test_local_script_checks_refuse_api_but_run_from_config(
    agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    config = tmp_path / "check.json"
    config.write_text(
        '{"enable_local_script_checks": true, "check": {"id": "local", "name": "local",'
        f' "args": ["{sys.executable}", "-c", "print(42)"], "interval": "1s"}}}}'
    )
    agent = agent_factory("-config-file", str(config))
    wait_for(lambda: check_status(agent, "local") == ("passing", "42\n"), 15.0)
    body = {"Name": "s", "Args": ["/bin/true"], "Interval": "1s"}
    status, _, text = agent.request("PUT", "/v1/agent/check/register", body)
    assert status == 400 and b"enable_script_checks" in text


def test_script_check_runs_with_exit_code_and_output(
    agent_factory: Callable[..., AgentProcess],
) -> None:
    agent = agent_factory("-hcl", "enable_script_checks = true")
    script = "import sys; print('degraded'); sys.exit(1)"
    body = {"Name": "s", "Args": [sys.executable, "-c", script], "Interval": "1s"}
    status, _, text = agent.request("PUT", "/v1/agent/check/register", body)
    assert status == 200, text
    wait_for(lambda: check_status(agent, "s") == ("warning", "degraded\n"), 15.0)
    checks = agent.get_json("/v1/agent/checks")
    assert checks["s"]["Type"] == "script"


@pytest.fixture
def health_server() -> Iterator[str]:
    with serve_health({"": SERVING}) as address:
        yield address


def test_grpc_and_h2ping_checks(dev_agent: AgentProcess, health_server: str) -> None:
    for body in (
        {"Name": "g", "GRPC": health_server, "Interval": "1s"},
        {"Name": "h", "H2PING": health_server, "H2PingUseTLS": False, "Interval": "1s"},
    ):
        status, _, text = dev_agent.request("PUT", "/v1/agent/check/register", body)
        assert status == 200, text
    wait_for(
        lambda: check_status(dev_agent, "g") == ("passing", f"gRPC check {health_server}: success"),
        15.0,
    )
    wait_for(lambda: check_status(dev_agent, "h") == ("passing", "HTTP2 ping was successful"), 15.0)
    checks = dev_agent.get_json("/v1/agent/checks")
    assert (checks["g"]["Type"], checks["h"]["Type"]) == ("grpc", "h2ping")
