"""Central service config (`enable_central_service_config`) on real agents.

- A dev agent with the walkthrough's bootstrap proxy-defaults
  (`config { protocol = "http" }`) and its `web` and `api` service files:
  after a service-defaults for api (protocol grpc) is written, the agent and
  the catalog show web's sidecar with protocol http and its upstream api with
  grpc, and api's sidecar with grpc; a later change of proxy-defaults wakes a
  `?hash=` wait on the service; a SIGHUP reload keeps the merged row (same
  ContentHash); with every entry deleted the sidecar is again
  exactly what the user wrote; an HTTP registration answers already merged.
- A dev agent with `enable_central_service_config = false`: nothing is merged.
- A client agent whose server is not up yet: it starts and registers without
  waiting (the proxy as written), and merges once the server answers.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.agent_process import AgentProcess, free_gossip_port, free_port, start_agent, wait_for
from tests.integration.test_config_entries_api import BOOTSTRAP_HCL, call, start_server
from tests.unit.test_config_walkthrough import API_HCL, WEB_HCL

DEADLINE_S = 20.0
API_DEFAULTS = {"Kind": "service-defaults", "Name": "api", "Protocol": "grpc"}
PROXY_DEFAULTS = {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}
WEB_PROXY = "/v1/agent/service/web-sidecar-proxy"
# web's upstream as the user wrote it (with the agent's DestinationType).
WEB_UPSTREAM = {
    "DestinationType": "service",
    "DestinationName": "api",
    "LocalBindPort": 8081,
    "MeshGateway": {},
}


def config_dir(tmp: Path) -> Path:
    found = tmp / "services"
    found.mkdir()
    (found / "api.hcl").write_text(API_HCL)
    (found / "web.hcl").write_text(WEB_HCL)
    return found


def get(agent: AgentProcess, path: str) -> Any:
    status, body = call(agent, "GET", path)
    assert status == 200, (path, status, body)
    return body


def web_proxy(agent: AgentProcess) -> dict[str, Any]:
    found: dict[str, Any] = get(agent, WEB_PROXY)["Proxy"]
    return found


def catalog_proxy(agent: AgentProcess, name: str) -> dict[str, Any] | None:
    rows = get(agent, f"/v1/catalog/service/{name}")
    return rows[0]["ServiceProxy"] if rows else None


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    tmp = tmp_path_factory.mktemp("central")
    proc = start_agent(tmp, "-hcl", BOOTSTRAP_HCL, "-config-dir", str(config_dir(tmp)))
    try:
        yield proc
    finally:
        proc.stop()


def test_agent_and_catalog_show_the_merged_sidecars(dev: AgentProcess) -> None:
    assert call(dev, "PUT", "/v1/config", API_DEFAULTS) == (200, True)

    def merged() -> dict[str, Any] | None:
        proxy = web_proxy(dev)
        upstream = proxy["Upstreams"][0]
        return proxy if upstream.get("Config") == {"protocol": "grpc"} else None

    proxy = wait_for(merged, DEADLINE_S)
    assert proxy["Config"] == {"protocol": "http"}  # proxy-defaults
    assert proxy["Upstreams"] == [{**WEB_UPSTREAM, "Config": {"protocol": "grpc"}}]
    # api's own sidecar: its service-defaults win over proxy-defaults.
    assert get(dev, "/v1/agent/service/api-sidecar-proxy")["Proxy"]["Config"] == {
        "protocol": "grpc"
    }
    services = get(dev, "/v1/agent/services")
    assert services["web-sidecar-proxy"]["Proxy"] == proxy
    assert "Proxy" not in services["web"]  # only proxies are merged
    # The catalog gets the merged registration.
    assert wait_for(lambda: catalog_proxy(dev, "web-sidecar-proxy") == proxy, DEADLINE_S)


def test_a_proxy_defaults_change_wakes_a_hash_wait(dev: AgentProcess) -> None:
    status, headers, raw = dev.request("GET", WEB_PROXY)
    assert status == 200
    before = json.loads(raw)
    content_hash = headers["X-Consul-ContentHash"]
    assert before["ContentHash"] == content_hash
    answer: dict[str, Any] = {}

    def wait() -> None:
        started = time.monotonic()
        status, _, raw = dev.request(
            "GET", f"{WEB_PROXY}?hash={content_hash}&wait=30s", timeout_s=40.0
        )
        answer.update(status=status, body=json.loads(raw), took=time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        changed = {**PROXY_DEFAULTS, "Config": {"protocol": "http2"}}
        assert call(dev, "PUT", "/v1/config", changed) == (200, True)
    finally:
        waiter.join(timeout=40.0)
    assert answer["status"] == 200 and answer["took"] < 25.0
    proxy = answer["body"]["Proxy"]
    assert answer["body"]["ContentHash"] != content_hash
    assert proxy["Config"] == {"protocol": "http2"}
    # The upstream keeps its own service's protocol.
    assert proxy["Upstreams"][0]["Config"] == {"protocol": "grpc"}
    assert wait_for(lambda: catalog_proxy(dev, "web-sidecar-proxy") == proxy, DEADLINE_S)


def test_a_reload_keeps_the_merged_registration(dev: AgentProcess) -> None:
    before = get(dev, WEB_PROXY)
    assert before["Proxy"]["Config"] == {"protocol": "http2"}
    dev.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded configuration" in dev.log_text(), DEADLINE_S)
    after = get(dev, WEB_PROXY)
    assert after["ContentHash"] == before["ContentHash"]


def test_without_central_entries_the_sidecar_is_what_the_user_wrote(dev: AgentProcess) -> None:
    assert call(dev, "DELETE", "/v1/config/service-defaults/api") == (200, {})
    assert call(dev, "DELETE", "/v1/config/proxy-defaults/global") == (200, {})
    written = {
        "DestinationServiceName": "web",
        "DestinationServiceID": "web",
        "LocalServiceAddress": "127.0.0.1",
        "LocalServicePort": 8080,
        "Upstreams": [WEB_UPSTREAM],
        "MeshGateway": {},
        "Expose": {},
    }
    assert wait_for(lambda: web_proxy(dev) == written, DEADLINE_S)
    assert wait_for(lambda: catalog_proxy(dev, "web-sidecar-proxy") == written, DEADLINE_S)
    # And back: merged again from that same registration.
    assert call(dev, "PUT", "/v1/config", PROXY_DEFAULTS) == (200, True)
    wait_for(lambda: web_proxy(dev).get("Config") == {"protocol": "http"}, DEADLINE_S)
    assert web_proxy(dev)["Upstreams"] == [{**WEB_UPSTREAM, "Config": {"protocol": "http"}}]


def test_an_http_registration_answers_merged(dev: AgentProcess) -> None:
    body = {
        "Name": "db",
        "Port": 5432,
        "Connect": {
            "SidecarService": {
                "Proxy": {
                    "Config": {"protocol": "tcp"},
                    "Upstreams": [{"DestinationName": "api", "LocalBindPort": 9191}],
                }
            }
        },
    }
    status, _ = call(dev, "PUT", "/v1/agent/service/register", body)
    assert status == 200
    proxy = get(dev, "/v1/agent/service/db-sidecar-proxy")["Proxy"]
    assert proxy["Config"] == {"protocol": "tcp"}  # the registration wins
    assert proxy["Upstreams"][0]["Config"] == {"protocol": "http"}
    assert call(dev, "PUT", "/v1/agent/service/deregister/db")[0] == 200


def test_nothing_is_merged_when_disabled(tmp_path: Path) -> None:
    agent = start_agent(
        tmp_path,
        "-hcl",
        BOOTSTRAP_HCL,
        "-hcl",
        "enable_central_service_config = false",
        "-config-dir",
        str(config_dir(tmp_path)),
    )
    try:
        assert wait_for(lambda: catalog_proxy(agent, "web-sidecar-proxy"), DEADLINE_S)
        assert call(agent, "PUT", "/v1/config", API_DEFAULTS) == (200, True)
        status, _ = call(
            agent,
            "PUT",
            "/v1/agent/service/register",
            {"Name": "db", "Port": 5432, "Connect": {"SidecarService": {}}},
        )
        assert status == 200
        for service_id in ("web-sidecar-proxy", "api-sidecar-proxy", "db-sidecar-proxy"):
            proxy = get(agent, f"/v1/agent/service/{service_id}")["Proxy"]
            assert "Config" not in proxy
            assert all("Config" not in u for u in proxy.get("Upstreams", []))
        assert catalog_proxy(agent, "web-sidecar-proxy") == web_proxy(agent)
    finally:
        agent.stop()


def test_a_client_registers_before_its_server_answers(tmp_path: Path) -> None:
    serf_port, server_port = free_gossip_port(), free_port()
    client = start_agent(
        tmp_path,
        "-node",
        "central-client",
        "-bind",
        "127.0.0.1",
        "-data-dir",
        str(tmp_path / "client-data"),
        "-retry-join",
        f"127.0.0.1:{serf_port}",
        "-hcl",
        'retry_interval = "1s"',
        "-config-dir",
        str(config_dir(tmp_path)),
        dev=False,
    )
    server: AgentProcess | None = None
    try:
        # No server yet: the files' proxies are held as written ...
        assert "Config" not in web_proxy(client)
        # ... and an HTTP registration does not wait long for one.
        started = time.monotonic()
        body = {"Name": "db", "Port": 5432, "Connect": {"SidecarService": {}}}
        assert call(client, "PUT", "/v1/agent/service/register", body)[0] == 200
        assert time.monotonic() - started < 10.0
        assert "Config" not in get(client, "/v1/agent/service/db-sidecar-proxy")["Proxy"]
        server = start_server(tmp_path, tmp_path / "server-data", serf_port, server_port)
        # Merged once the server answers (the watch retries with a growing delay).
        proxy = wait_for(lambda: web_proxy(client).get("Config") and web_proxy(client), 60.0)
        assert proxy["Config"] == {"protocol": "http"}
        assert proxy["Upstreams"] == [{**WEB_UPSTREAM, "Config": {"protocol": "http"}}]
        db_config = wait_for(
            lambda: get(client, "/v1/agent/service/db-sidecar-proxy")["Proxy"].get("Config"),
            DEADLINE_S,
        )
        assert db_config == {"protocol": "http"}
        # Through the client: a service-defaults write reaches the client's proxy.
        assert call(client, "PUT", "/v1/config", API_DEFAULTS) == (200, True)
        wanted = [{**WEB_UPSTREAM, "Config": {"protocol": "grpc"}}]
        wait_for(lambda: web_proxy(client)["Upstreams"] == wanted, DEADLINE_S)
        merged = web_proxy(client)
        assert wait_for(lambda: catalog_proxy(server, "web-sidecar-proxy") == merged, DEADLINE_S)
    finally:
        client.stop()
        if server is not None:
            server.stop()
