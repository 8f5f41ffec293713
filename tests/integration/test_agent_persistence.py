"""API registrations survive an agent crash; deregistrations stay done.

A lone server with a data dir (real Raft on disk, real HTTP) is killed with
SIGKILL and started again on the same data dir: what was registered over
`/v1/agent/service/register` and `/v1/agent/check/register` is back in the
agent and in the catalog with the same IDs, a TTL check with its last status,
a sidecar with the port it was given. Config-file services are not written to
the data dir, and a corrupt file is moved aside without stopping the agent.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.agent_process import AgentProcess, start_agent, wait_for

DEADLINE_S = 30.0


def start(tmp_path: Path, *extra: str) -> AgentProcess:
    return start_agent(
        tmp_path,
        "-server",
        "-bootstrap-expect",
        "1",
        "-node",
        "n1",
        "-bind",
        "127.0.0.1",
        "-data-dir",
        str(tmp_path / "data"),
        *extra,
        dev=False,
    )


def kill9(agent: AgentProcess) -> None:
    agent.proc.kill()
    agent.proc.wait(timeout=10)


def put(agent: AgentProcess, path: str, body: object) -> None:
    status, _, text = agent.request("PUT", path, body)
    assert status == 200, (path, status, text)


def catalog_service_ids(agent: AgentProcess, name: str) -> list[str]:
    return sorted(row["ServiceID"] for row in agent.get_json(f"/v1/catalog/service/{name}"))


def test_registrations_survive_kill_and_deregistrations_stay_gone(tmp_path: Path) -> None:
    agent = start(tmp_path)
    try:
        wait_for(lambda: agent.get_json("/v1/status/leader"), DEADLINE_S)
        put(
            agent,
            "/v1/agent/service/register",
            {
                "Name": "web",
                "ID": "web-1",
                "Port": 8080,
                "Tags": ["v1"],
                "Token": "service-secret",
                "Check": {"TTL": "10m", "CheckID": "web-ttl"},
                "Connect": {"SidecarService": {}},
            },
        )
        put(agent, "/v1/agent/check/register", {"Name": "mem", "ID": "mem", "TTL": "10m"})
        put(agent, "/v1/agent/check/pass/web-ttl?note=all+good", None)
        put(agent, "/v1/agent/maintenance?enable=true&reason=patching", None)
        sidecar_port = agent.get_json("/v1/agent/service/web-1-sidecar-proxy")["Port"]
        wait_for(lambda: catalog_service_ids(agent, "web") == ["web-1"], DEADLINE_S)

        data = tmp_path / "data"
        files = list((data / "services").iterdir()) + list((data / "checks").iterdir())
        assert files, "nothing persisted"
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert any(b"service-secret" in p.read_bytes() for p in files)
        (data / "services" / "garbage").write_bytes(b"{not json")

        kill9(agent)
        agent = start(tmp_path)
        services = wait_for(lambda: agent.get_json("/v1/agent/services"), DEADLINE_S)
        assert set(services) == {"web-1", "web-1-sidecar-proxy"}
        assert services["web-1"]["Tags"] == ["v1"]
        assert services["web-1-sidecar-proxy"]["Port"] == sidecar_port
        checks = agent.get_json("/v1/agent/checks")
        assert {"web-ttl", "mem"} <= set(checks)
        assert checks["web-ttl"]["Status"] == "passing"
        assert checks["web-ttl"]["Output"] == "all good"
        assert checks["mem"]["Status"] == "critical"
        assert checks["_node_maintenance"]["Notes"] == "patching"
        wait_for(lambda: catalog_service_ids(agent, "web") == ["web-1"], DEADLINE_S)
        wait_for(
            lambda: catalog_service_ids(agent, "web-sidecar-proxy") == ["web-1-sidecar-proxy"],
            DEADLINE_S,
        )
        assert (data / "services" / "garbage.corrupt").exists()
        assert "failed decoding persisted service file" in agent.log_text()

        status, _, _ = agent.request("PUT", "/v1/agent/service/deregister/web-1")
        assert status == 200
        status, _, _ = agent.request("PUT", "/v1/agent/check/deregister/mem")
        assert status == 200
        put(agent, "/v1/agent/maintenance?enable=false", None)
        kill9(agent)
        agent = start(tmp_path)
        wait_for(lambda: agent.get_json("/v1/status/leader"), DEADLINE_S)
        assert agent.get_json("/v1/agent/services") == {}
        assert not set(agent.get_json("/v1/agent/checks")) & {"web-ttl", "mem", "_node_maintenance"}
        wait_for(lambda: catalog_service_ids(agent, "web") == [], DEADLINE_S)
        assert os.listdir(data / "services") == ["garbage.corrupt"]
    finally:
        agent.stop()


def test_config_file_services_are_not_persisted(tmp_path: Path) -> None:
    config = tmp_path / "web.json"
    config.write_text(json.dumps({"service": {"name": "db", "port": 5432}}))
    agent = start(tmp_path, "-config-file", str(config))
    try:
        wait_for(lambda: "db" in agent.get_json("/v1/agent/services"), DEADLINE_S)
        services_dir = tmp_path / "data" / "services"
        assert not services_dir.exists() or not list(services_dir.iterdir())
    finally:
        agent.stop()
