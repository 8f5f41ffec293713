"""Every service config shape the walkthrough and Consul's docs use: validate, agent, HTTP.

The rule under test: a config `validate` accepts never crashes the agent, and
the same definition registered over HTTP is a 200, never a 500. Each shape is
a service file as a user writes it (HCL or JSON) and, for the HTTP half, its
`/v1/agent/service/register` body.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.agent_process import AgentProcess, start_agent
from tests.unit.test_config_walkthrough import API_HCL, WEB_HCL

from proconsul.config import validate_command

SIDECAR_CHECK = {"Name": "sidecar", "TCP": "127.0.0.1:20000", "Interval": "10s", "Timeout": "1s"}

# name -> (file name, file text, service ID it registers, HTTP body or None)
SHAPES: dict[str, tuple[str, str, str, dict[str, Any] | None]] = {
    "walkthrough api (sidecar check block)": (
        "api.hcl",
        API_HCL,
        "api",
        {
            "Name": "api-http",
            "Port": 8080,
            "Connect": {"SidecarService": {"Port": 20000, "Check": SIDECAR_CHECK}},
            "Checks": [
                {
                    "Name": "Check API health 8080",
                    "HTTP": "http://localhost:8080/health",
                    "Method": "GET",
                    "Interval": "10s",
                    "Timeout": "1s",
                    "SuccessBeforePassing": 3,
                    "FailuresBeforeCritical": 3,
                }
            ],
        },
    ),
    "walkthrough web (sidecar upstreams)": (
        "web.hcl",
        WEB_HCL,
        "web",
        {
            "Name": "web-http",
            "Port": 8080,
            "Connect": {
                "SidecarService": {
                    "Port": 20000,
                    "Check": SIDECAR_CHECK,
                    "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": 8081}]},
                }
            },
        },
    ),
    "single check block": (
        "single.hcl",
        'service {\n name = "single"\n port = 9001\n'
        ' check {\n  id = "single-tcp"\n  tcp = "127.0.0.1:9001"\n  interval = "10s"\n'
        '  timeout = "1s"\n  deregister_critical_service_after = "90m"\n }\n}\n',
        "single",
        {
            "Name": "single-http",
            "Check": {
                "TCP": "127.0.0.1:9001",
                "Interval": "10s",
                "DeregisterCriticalServiceAfter": "90m",
            },
        },
    ),
    "ttl check and meta, weights, tagged addresses": (
        "ttl.hcl",
        'service {\n id = "ttl-1"\n name = "ttl"\n port = 9002\n meta { version = "1" }\n'
        " enable_tag_override = true\n weights { passing = 5\n warning = 1 }\n"
        ' tagged_addresses { lan { address = "127.0.0.1"\n port = 9002 } }\n'
        ' check { ttl = "30s" }\n}\n',
        "ttl-1",
        {
            "ID": "ttl-http",
            "Name": "ttl",
            "Meta": {"version": "1"},
            "Weights": {"Passing": 5, "Warning": 1},
            "TaggedAddresses": {"lan": {"Address": "127.0.0.1", "Port": 9002}},
            "Check": {"TTL": "30s"},
        },
    ),
    "http check with headers and tls_skip_verify": (
        "headers.hcl",
        'service {\n name = "headers"\n port = 9003\n checks = [{\n'
        '  http = "https://127.0.0.1:9003/health"\n  tls_skip_verify = true\n'
        '  header = { X-Probe = ["lab"] }\n  interval = "15s"\n }]\n}\n',
        "headers",
        {
            "Name": "headers-http",
            "Checks": [
                {
                    "HTTP": "https://127.0.0.1:9003/health",
                    "TLSSkipVerify": True,
                    "Header": {"X-Probe": ["lab"]},
                    "Interval": "15s",
                }
            ],
        },
    ),
    "services list with an empty sidecar": (
        "many.hcl",
        'services = [\n {\n  name = "cache"\n  port = 6379\n  connect { sidecar_service {} }\n },\n'
        ' {\n  name = "db"\n  port = 5432\n }\n]\n',
        "cache",
        {"Name": "cache-http", "Port": 6379, "Connect": {"SidecarService": {}}},
    ),
    "sidecar with its own checks list and proxy settings": (
        "proxied.hcl",
        'service {\n name = "proxied"\n port = 9004\n connect {\n  sidecar_service {\n'
        '   checks = [{ name = "listening"\n tcp = "127.0.0.1:21999"\n interval = "5s" }]\n'
        "   proxy {\n    local_service_port = 9004\n"
        '    upstreams = [{ destination_name = "api"\n local_bind_port = 9191\n'
        '     datacenter = "dc1" }]\n   }\n  }\n }\n}\n',
        "proxied",
        {
            "Name": "proxied-http",
            "Port": 9004,
            "Connect": {
                "SidecarService": {
                    "Checks": [{"TCP": "127.0.0.1:21998", "Interval": "5s"}],
                    "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": 9192}]},
                }
            },
        },
    ),
    "alias check": (
        "alias.hcl",
        'service {\n name = "aliased"\n port = 9005\n check { alias_service = "db" }\n}\n',
        "aliased",
        {"Name": "aliased-http", "Check": {"AliasService": "db"}},
    ),
    "JSON service file": (
        "json.json",
        json.dumps(
            {
                "service": {
                    "name": "json",
                    "port": 9006,
                    "connect": {
                        "sidecar_service": {"check": {"tcp": "127.0.0.1:21001", "interval": "10s"}}
                    },
                    "checks": [{"http": "http://127.0.0.1:9006/", "interval": "10s"}],
                }
            }
        ),
        "json",
        None,
    ),
}


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "config"
    root.mkdir()
    for file_name, text, _, _ in SHAPES.values():
        (root / file_name).write_text(text)
    return root


@pytest.fixture(scope="module")
def agent(config_dir: Path) -> Iterator[AgentProcess]:
    running = start_agent(config_dir.parent, "-config-dir", str(config_dir))
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_validate_accepts_the_shape(
    shape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file_name, text, _, _ = SHAPES[shape]
    (tmp_path / file_name).write_text(text)
    (tmp_path / "agent.hcl").write_text(
        f'data_dir = "{tmp_path / "data"}"\nbind_addr = "127.0.0.1"\n'
    )
    assert validate_command.run([str(tmp_path)]) == 0, capsys.readouterr().err


def test_agent_starts_with_every_shape_and_registers_them(agent: AgentProcess) -> None:
    services = agent.get_json("/v1/agent/services")
    for shape, (_, _, service_id, _) in SHAPES.items():
        assert service_id in services, shape
    assert "api-sidecar-proxy" in services and "cache-sidecar-proxy" in services
    assert agent.proc.poll() is None
    assert "Traceback" not in agent.log_text()


@pytest.mark.parametrize("shape", [s for s, v in SHAPES.items() if v[3] is not None])
def test_http_registration_of_the_shape(shape: str, agent: AgentProcess) -> None:
    body = SHAPES[shape][3]
    assert body is not None
    status, _, answer = agent.request("PUT", "/v1/agent/service/register", body)
    assert status == 200, (shape, answer)
    service_id = body.get("ID") or body["Name"]
    status, _, answer = agent.request("GET", f"/v1/agent/service/{service_id}")
    assert status == 200, (shape, answer)
    if "Connect" in body:
        status, _, _ = agent.request("GET", f"/v1/agent/service/{service_id}-sidecar-proxy")
        assert status == 200, shape
    assert agent.proc.poll() is None
    assert "Traceback" not in agent.log_text()
