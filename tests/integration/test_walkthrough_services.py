"""The walkthrough's `api` and `web` service files against demo services, on real processes.

Health transitions must honour success_before_passing / failures_before_critical,
`?passing` must follow them, and `reload` must add and remove services.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.agent_process import AgentProcess, free_port, proconsul_cmd, wait_for

SERVICE_FILE = """
service {{
  name = "{name}"
  port = {port}
  tags = ["fake-service-{name}"]
  checks = [
    {{
      id = "{name}_check"
      name = "Check {name_upper} health {port}"
      service_id = "{name}"
      http = "http://localhost:{port}/health"
      method = "GET"
      interval = "1s"
      timeout = "1s"
      success_before_passing = 3
      failures_before_critical = 3
    }}
  ]
}}
"""


@dataclass
class Demo:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def health_probes(self, status: int) -> int:
        text = self.log_path.read_text(errors="replace")
        return text.count(f" GET /health {status} ")

    def post(self, path: str, agent: AgentProcess) -> None:
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200


@pytest.fixture
def demo_factory(tmp_path: Path) -> Iterator[Callable[[str], Demo]]:
    started: list[Demo] = []

    def start(name: str) -> Demo:
        port = free_port()
        log_path = tmp_path / f"demo-{name}.log"
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                proconsul_cmd("demo", "service", "-name", name, "-listen", f"127.0.0.1:{port}"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        demo = Demo(name, port, proc, log_path)
        started.append(demo)
        return demo

    yield start
    for demo in started:
        demo.proc.send_signal(signal.SIGTERM)
        demo.proc.wait(timeout=10)


def write_service(config_dir: Path, name: str, port: int) -> None:
    (config_dir / f"{name}.hcl").write_text(
        SERVICE_FILE.format(name=name, name_upper=name.upper(), port=port)
    )


def check_status(agent: AgentProcess, check_id: str) -> str:
    return str(agent.get_json("/v1/agent/checks")[check_id]["Status"])


def passing_ids(agent: AgentProcess, service: str) -> list[str]:
    rows = agent.get_json(f"/v1/health/service/{service}?passing")
    return [row["Service"]["ID"] for row in rows]


def wait_for_status_after_probes(
    agent: AgentProcess, demo: Demo, wanted: str, probe_status: int
) -> None:
    """Poll until the check is `wanted`; each observation is read before the probe
    count, so seeing `wanted` with fewer than three such probes is a real violation."""

    def reached() -> bool:
        status = check_status(agent, "api_check")
        probes = demo.health_probes(probe_status)
        if status == wanted:
            assert probes >= 3, f"{wanted} after only {probes} probes answering {probe_status}"
            return True
        return False

    wait_for(reached, deadline_s=15)


def test_health_thresholds_and_passing_filter(
    tmp_path: Path,
    agent_factory: Callable[..., AgentProcess],
    demo_factory: Callable[[str], Demo],
) -> None:
    api = demo_factory("api")
    config_dir = tmp_path / "services"
    config_dir.mkdir()
    write_service(config_dir, "api", api.port)
    agent = agent_factory("-config-dir", str(config_dir))

    assert check_status(agent, "api_check") == "critical"
    # Passing only after three consecutive successful probes: whenever we see it
    # passing, the service must already have answered three probes.
    wait_for_status_after_probes(agent, api, "passing", 200)
    wait_for(lambda: passing_ids(agent, "api") == ["api"], deadline_s=5)
    checks = agent.get_json("/v1/health/checks/api")
    assert checks[0]["Output"].startswith("HTTP GET http://localhost:")

    api.post("/fail", agent)
    # Critical only after three failed probes; until then it stays passing.
    wait_for_status_after_probes(agent, api, "critical", 500)
    wait_for(lambda: passing_ids(agent, "api") == [], deadline_s=5)
    # Still listed without ?passing, with its critical check.
    rows = agent.get_json("/v1/health/service/api")
    assert [c["Status"] for c in rows[0]["Checks"] if c["CheckID"] == "api_check"] == ["critical"]

    api.post("/recover", agent)
    wait_for(lambda: passing_ids(agent, "api") == ["api"], deadline_s=15)


def test_reload_adds_and_removes_services(
    tmp_path: Path,
    agent_factory: Callable[..., AgentProcess],
    demo_factory: Callable[[str], Demo],
) -> None:
    api = demo_factory("api")
    web = demo_factory("web")
    config_dir = tmp_path / "services"
    config_dir.mkdir()
    write_service(config_dir, "api", api.port)
    agent = agent_factory("-config-dir", str(config_dir))
    # A service registered through the API must survive the reload.
    status, _, _ = agent.request(
        "PUT", "/v1/agent/service/register", {"Name": "from-api", "Port": 1}
    )
    assert status == 200
    assert set(agent.get_json("/v1/agent/services")) == {"api", "from-api"}

    (config_dir / "api.hcl").unlink()
    write_service(config_dir, "web", web.port)
    result = subprocess.run(
        proconsul_cmd("reload", "-http-addr", agent.http_addr),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Configuration reload triggered" in result.stdout
    wait_for(lambda: set(agent.get_json("/v1/agent/services")) == {"web", "from-api"})
    assert "api_check" not in agent.get_json("/v1/agent/checks")
    wait_for(lambda: set(agent.get_json("/v1/catalog/services")) == {"consul", "web", "from-api"})
    wait_for(lambda: check_status(agent, "web_check") == "passing", deadline_s=15)

    # SIGHUP does the same as `proconsul reload`.
    write_service(config_dir, "api", api.port)
    agent.signal(signal.SIGHUP)
    wait_for(lambda: "api" in agent.get_json("/v1/agent/services"))


def test_bad_config_exits_with_file_and_key(tmp_path: Path) -> None:
    config_dir = tmp_path / "bad"
    config_dir.mkdir()
    (config_dir / "a.hcl").write_text('ports { http = "eighty" }\n')
    result = subprocess.run(
        proconsul_cmd("agent", "-dev", "-config-dir", str(config_dir)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "a.hcl" in result.stderr
    assert "ports.http" in result.stderr
