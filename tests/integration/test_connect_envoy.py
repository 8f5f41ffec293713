"""`proconsul connect envoy` and the agent's xDS port, against real dev agents.

The CLI runs as a subprocess; its bootstrap must parse strictly into Envoy's
`Bootstrap` message. A gRPC client in the test stands for Envoy at the
agent's xDS port, where the agent checks tokens as Consul does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401 (Any type)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401 (Any type)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format
from tests.agent_process import AgentProcess, free_port, start_agent, wait_for

from proconsul.tls.certs import LeafSpec, generate_ca, issue_leaf, load_ca

MGMT = "0aa0c000-0000-4000-8000-0000000000e1"
WEB_WRITER = "0aa0c000-0000-4000-8000-0000000000e2"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"


@dataclass
class Agent:
    process: AgentProcess
    grpc_port: int


def start(tmp_path: Path, *extra: str) -> Agent:
    grpc_port = free_port()
    process = start_agent(tmp_path, "-grpc-port", str(grpc_port), *extra)
    wait_for(lambda: process.get_json("/v1/status/leader"), deadline_s=20.0)
    return Agent(process, grpc_port)


def register(agent: AgentProcess, body: dict[str, Any], token: str = "") -> None:
    headers = {"X-Consul-Token": token} if token else {}
    status, _, raw = agent.request("PUT", "/v1/agent/service/register", body, headers=headers)
    assert status == 200, raw


def sidecar(service: str, port: int, proxy_id: str = "") -> dict[str, Any]:
    return {
        "Kind": "connect-proxy",
        "ID": proxy_id or f"{service}-sidecar-proxy",
        "Name": f"{service}-sidecar-proxy",
        "Port": port,
        "Proxy": {
            "DestinationServiceName": service,
            "DestinationServiceID": service,
            "LocalServiceAddress": "127.0.0.1",
            "LocalServicePort": 9090,
        },
    }


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    running = start(tmp_path_factory.mktemp("agent"))
    try:
        register(running.process, {"Name": "api", "ID": "api", "Port": 9090})
        register(running.process, sidecar("api", 20000))
        yield running
    finally:
        running.process.stop()


@dataclass
class Result:
    code: int
    out: str
    err: str


def connect_envoy(agent: AgentProcess, *args: str, **env: str) -> Result:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONNECT_"))}
    done = subprocess.run(
        [sys.executable, "-m", "proconsul", "connect", "envoy", *args],
        capture_output=True,
        env={**base, "CONSUL_HTTP_ADDR": agent.http_addr, **env},
        timeout=60,
        check=False,
    )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def reconnects(admin_port: int) -> int:
    """The proxy's `ads.reconnects` counter, from its admin /stats."""
    found = re.search(
        rb"ads\.reconnects: (\d+)", http_get(f"http://127.0.0.1:{admin_port}/stats")[2]
    )
    return int(found.group(1)) if found else 0


def strict_bootstrap(text: str) -> Any:
    """Parse as Envoy does; a field Envoy does not know is an error."""
    return json_format.Parse(text, bootstrap_pb2.Bootstrap(), ignore_unknown_fields=False)


def test_bootstrap_parses_strictly_with_consuls_shape(agent: Agent) -> None:
    secret = "f0000000-0000-4000-8000-000000000001"
    result = connect_envoy(agent.process, "-sidecar-for=api", f"-token={secret}", "-bootstrap")
    assert result.code == 0, result.err
    bootstrap = strict_bootstrap(result.out)
    assert (bootstrap.node.id, bootstrap.node.cluster) == ("api-sidecar-proxy", "api")
    admin = bootstrap.admin.address.socket_address
    assert (admin.address, admin.port_value) == ("127.0.0.1", 19000)
    (local_agent,) = bootstrap.static_resources.clusters
    assert local_agent.name == "local_agent"
    address = local_agent.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    # No -grpc-addr: the agent's own xDS port, from /v1/agent/self.
    assert (address.socket_address.address, address.socket_address.port_value) == (
        "127.0.0.1",
        agent.grpc_port,
    )
    ads = bootstrap.dynamic_resources.ads_config
    assert ads.api_type == ads.DELTA_GRPC
    assert ads.transport_api_version == config_source_pb2.V3
    (service,) = ads.grpc_services
    assert service.envoy_grpc.cluster_name == "local_agent"
    assert [(m.key, m.value) for m in service.initial_metadata] == [("x-consul-token", secret)]
    assert bootstrap.dynamic_resources.lds_config.HasField("ads")
    assert bootstrap.dynamic_resources.cds_config.HasField("ads")


def test_bootstrap_flags_and_env(agent: Agent) -> None:
    result = connect_envoy(
        agent.process,
        "-proxy-id",
        "api-sidecar-proxy",
        "-admin-bind",
        "127.0.0.1:19555",
        "-grpc-addr",
        "https://127.0.0.2:8503",
        "-ca-file",
        "/etc/consul/ca.pem",
        "-bootstrap",
    )
    assert result.code == 0, result.err
    bootstrap = strict_bootstrap(result.out)
    assert bootstrap.admin.address.socket_address.port_value == 19555
    (local_agent,) = bootstrap.static_resources.clusters
    address = local_agent.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert address.socket_address.port_value == 8503
    assert local_agent.transport_socket.name == "tls"
    assert "/etc/consul/ca.pem" in result.out
    from_env = connect_envoy(
        agent.process, "-bootstrap", CONNECT_SIDECAR_FOR="api", CONSUL_GRPC_ADDR="127.0.0.3:9999"
    )
    assert from_env.code == 0, from_env.err
    assert '"port_value": 9999' in from_env.out and '"api-sidecar-proxy"' in from_env.out


def test_sidecar_lookup_errors(agent: Agent) -> None:
    none = connect_envoy(agent.process, "-sidecar-for", "nope", "-bootstrap")
    assert (none.code, none.err.strip()) == (1, "No sidecar proxy registered for nope")
    register(agent.process, {"Name": "db", "ID": "db", "Port": 5432})
    register(agent.process, sidecar("db", 20001, "db-proxy-1"))
    register(agent.process, sidecar("db", 20002, "db-proxy-2"))
    several = connect_envoy(agent.process, "-sidecar-for", "db", "-bootstrap")
    assert several.code == 1
    assert several.err.splitlines() == [
        "More than one sidecar proxy registered for db.",
        "    Start proxy with -proxy-id and one of the following IDs: db-proxy-1, db-proxy-2",
    ]
    neither = connect_envoy(agent.process, "-bootstrap")
    assert neither.code == 1 and "-sidecar-for" in neither.err


def test_without_envoy_on_path_it_runs_the_builtin_proxy(agent: Agent, tmp_path: Path) -> None:
    """One line says so; the built-in proxy's admin answers; SIGTERM stops it cleanly."""
    admin = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONNECT_"))}
    env = {**base, "CONSUL_HTTP_ADDR": agent.process.http_addr, "PATH": str(tmp_path)}
    command = [sys.executable, "-m", "proconsul", "connect", "envoy", "-sidecar-for", "api"]
    proc = subprocess.Popen(
        [*command, "-admin-bind", f"127.0.0.1:{admin}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline().decode()
        assert "envoy" in first and "built-in" in first, first

        # The agent's snapshot of api's sidecar arrives over ADS: ready.
        wait_for(lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, 20.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None and proc.stdout.read() == b""


def test_connect_proxy_finds_the_sidecar_and_stops_on_sigterm(agent: Agent) -> None:
    admin = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONNECT_"))}
    env = {**base, "CONSUL_HTTP_ADDR": agent.process.http_addr}
    command = [sys.executable, "-m", "proconsul", "connect", "proxy"]
    missing = subprocess.run(
        [*command, "-sidecar-for", "nope"], capture_output=True, env=env, timeout=60, check=False
    )
    assert missing.returncode == 1
    assert missing.stderr.decode().strip() == "No sidecar proxy registered for nope"
    proc = subprocess.Popen(
        [
            *command,
            "-sidecar-for",
            "api",
            "-admin-bind",
            f"127.0.0.1:{admin}",
            "-log-level",
            "warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, 20.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


# ------------------------------------------------------- xDS token checks


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    hcl = (
        'acl { enabled = true default_policy = "deny" '
        f'tokens {{ initial_management = "{MGMT}" agent = "{MGMT}" }} }}'
    )
    running = start(tmp_path_factory.mktemp("acl-agent"), "-hcl", hcl)
    try:
        process = running.process
        headers = {"X-Consul-Token": MGMT}
        wait_for(
            lambda: process.request("GET", "/v1/acl/tokens", headers=headers)[0] == 200,
            deadline_s=20.0,
        )
        status, _, raw = process.request(
            "PUT",
            "/v1/acl/policy",
            {"Name": "web-writer", "Rules": 'service "web" { policy = "write" }'},
            headers=headers,
        )
        assert status == 200, raw
        status, _, raw = process.request(
            "PUT",
            "/v1/acl/token",
            {"SecretID": WEB_WRITER, "Policies": [{"Name": "web-writer"}]},
            headers=headers,
        )
        assert status == 200, raw
        register(process, {"Name": "api", "ID": "api", "Port": 9090}, MGMT)
        register(process, sidecar("api", 20000), MGMT)
        yield running
    finally:
        running.process.stop()


def ads_status(port: int, proxy_id: str, token: str | None) -> tuple[grpc.StatusCode, str]:
    """Open a delta ADS stream as Envoy would and return how the agent ends it."""

    async def attempt() -> tuple[grpc.StatusCode, str]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            metadata = (("x-consul-token", token),) if token is not None else ()
            call = stub.DeltaAggregatedResources(metadata=metadata)
            await call.write(
                discovery_pb2.DeltaDiscoveryRequest(
                    node=base_pb2.Node(id=proxy_id), type_url=LISTENER_TYPE
                )
            )
            try:
                await asyncio.wait_for(call.read(), 15.0)
            except grpc.aio.AioRpcError as err:
                return err.code(), str(err.details())
            raise AssertionError("the stream was not refused")

    return asyncio.run(attempt())


def test_xds_token_without_service_write_is_refused(acl_agent: Agent) -> None:
    port = acl_agent.grpc_port
    code, details = ads_status(port, "api-sidecar-proxy", WEB_WRITER)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "lacks permission 'service:write' on \"api\"" in details
    code, details = ads_status(port, "api-sidecar-proxy", None)  # no token: anonymous
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, details = ads_status(port, "api-sidecar-proxy", "f0000000-0000-4000-8000-00000000dead")
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "ACL not found")
    code, details = ads_status(port, "ghost-sidecar-proxy", MGMT)
    assert code == grpc.StatusCode.NOT_FOUND and "ghost-sidecar-proxy" in details
    # The agent is still fine and says nothing alarming about any of it.
    status, _, raw = acl_agent.process.request(
        "GET", "/v1/agent/self", headers={"X-Consul-Token": MGMT}
    )
    assert status == 200 and json.loads(raw)["xDS"]["Ports"]["Plaintext"] == port
    assert "Traceback" not in acl_agent.process.log_text()


def test_bootstrap_json_is_what_the_agent_reports(agent: Agent) -> None:
    """The JSON keys are Envoy's snake_case names, printed with indentation."""
    result = connect_envoy(agent.process, "-sidecar-for", "api", "-bootstrap")
    document = json.loads(result.out)
    assert list(document) == [
        "admin",
        "node",
        "layered_runtime",
        "static_resources",
        "stats_config",
        "dynamic_resources",
    ]
    assert result.out.startswith('{\n  "admin"')


def test_runs_envoy_with_the_bootstrap_in_a_private_file(agent: Agent, tmp_path: Path) -> None:
    """A stand-in `envoy` on PATH shows what the real one would get."""
    fake = tmp_path / "envoy"
    fake.write_text('#!/bin/sh\necho "ARGS $*"\ncat "$2"\n')
    fake.chmod(0o755)
    secret = "f0000000-0000-4000-8000-000000000002"
    result = connect_envoy(
        agent.process,
        "-sidecar-for",
        "api",
        "-token",
        secret,
        "--",
        "-l",
        "debug",
        PATH=f"{tmp_path}:/usr/bin:/bin",
    )
    assert result.code == 0, result.err
    args_line, document = result.out.split("\n", 1)
    assert args_line.startswith("ARGS --config-path /dev/fd/")
    assert args_line.endswith(" -l debug")
    assert secret not in args_line  # the token travels in the file only
    bootstrap = strict_bootstrap(document)
    assert bootstrap.node.id == "api-sidecar-proxy"
    assert bootstrap.dynamic_resources.ads_config.grpc_services[0].initial_metadata[0].value == (
        secret
    )


def test_an_agent_whose_grpc_port_is_taken_does_not_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AssertionError, match=r"cannot listen for gRPC on 127\.0\.0\.1"):
            start_agent(tmp_path, "-grpc-port", str(port))


def test_grpc_tls_port_serves_xds_and_the_bootstrap_uses_it(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca_pair = generate_ca(now=now)
    server_pair = issue_leaf(
        load_ca(ca_pair.cert_pem, ca_pair.key_pem),
        LeafSpec(
            common_name="server.dc1.consul",
            valid_for=timedelta(days=1),
            dns_names=("localhost",),
            ip_addresses=(ipaddress.ip_address("127.0.0.1"),),
        ),
        now=now,
    )
    files = {"ca.pem": ca_pair.cert_pem, "cert.pem": server_pair.cert_pem}
    files["key.pem"] = server_pair.key_pem
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    tls_port = free_port()
    hcl = (
        f"ports {{ grpc_tls = {tls_port} }} "
        f'tls {{ grpc {{ cert_file = "{tmp_path / "cert.pem"}" '
        f'key_file = "{tmp_path / "key.pem"}" }} }}'
    )
    process = start_agent(tmp_path, "-hcl", hcl)
    try:
        wait_for(lambda: process.get_json("/v1/status/leader"), deadline_s=20.0)
        register(process, {"Name": "api", "ID": "api", "Port": 9090})
        register(process, sidecar("api", 20000))
        result = connect_envoy(
            process, "-sidecar-for", "api", "-ca-file", str(tmp_path / "ca.pem"), "-bootstrap"
        )
        assert result.code == 0, result.err
        (local_agent,) = strict_bootstrap(result.out).static_resources.clusters
        address = local_agent.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
        assert address.socket_address.port_value == tls_port  # the only xDS port: TLS
        assert local_agent.transport_socket.name == "tls"

        async def ghost() -> grpc.StatusCode:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca_pair.cert_pem.encode())
            async with grpc.aio.secure_channel(f"127.0.0.1:{tls_port}", credentials) as channel:
                call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(
                    channel
                ).DeltaAggregatedResources()
                await call.write(
                    discovery_pb2.DeltaDiscoveryRequest(
                        node=base_pb2.Node(id="ghost"), type_url=LISTENER_TYPE
                    )
                )
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await asyncio.wait_for(call.read(), 15.0)
                return err.value.code()

        # Over TLS the agent answers, and knows no proxy called ghost.
        assert asyncio.run(ghost()) == grpc.StatusCode.NOT_FOUND
        # The built-in proxy takes the same way: TLS to the agent, trusting -ca-file.
        admin = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONNECT_"))}
        proxy = subprocess.Popen(
            [
                *[sys.executable, "-m", "proconsul", "connect", "proxy", "-sidecar-for", "api"],
                *["-ca-file", str(tmp_path / "ca.pem"), "-admin-bind", f"127.0.0.1:{admin}"],
            ],
            env={**base, "CONSUL_HTTP_ADDR": process.http_addr},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, 20.0)
        finally:
            proxy.send_signal(signal.SIGTERM)
            assert proxy.wait(timeout=20) == 0
    finally:
        process.stop()


def test_builtin_proxy_sends_its_token_and_waits_out_a_refusal(acl_agent: Agent) -> None:
    """A token that may not write api: the agent refuses the stream, the proxy
    stays up, unready, and retries. The management token: ready. No token in
    any log line."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONNECT_"))}
    env = {**base, "CONSUL_HTTP_ADDR": acl_agent.process.http_addr}
    grpc_addr = f"127.0.0.1:{acl_agent.grpc_port}"
    runs = [
        # straight at the xDS port: no lookup that the weak token could not make
        (
            ["proconsul.proxy", "-proxy-id", "api-sidecar-proxy", "-grpc-addr", grpc_addr],
            WEB_WRITER,
        ),
        (["proconsul", "connect", "proxy", "-sidecar-for", "api"], MGMT),
    ]
    for args, token in runs:
        admin = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", *args, "-token", token, "-admin-bind", f"127.0.0.1:{admin}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            if token == MGMT:
                wait_for(lambda a=admin: http_get(f"http://127.0.0.1:{a}/ready")[0] == 200, 20.0)
            else:
                # Two refusals: gRPC's core now and then ends the first refused
                # stream as INTERNAL (a reset racing the status); the proxy retries.
                wait_for(lambda a=admin: reconnects(a) >= 2, 20.0)
                assert http_get(f"http://127.0.0.1:{admin}/ready")[0] == 503
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert token.encode() not in log
        if token == WEB_WRITER:
            assert b"PERMISSION_DENIED" in log
