"""The walkthrough's mesh end to end: web -> api through two built-in sidecars on a real cluster.

The cluster is the walkthrough's (tests/walkthrough_cluster.py): 1 server and
2 clients with gossip encryption, TLS, auto_encrypt and ACLs with
`default_policy = "deny"`, and `proxy-defaults` with `protocol = "http"`.
`api` (a `proconsul demo service`) and its sidecar run on client 1, `web`
(calling its upstream http://127.0.0.1:8081 and nesting the reply) and its
sidecar on client 2, registered from the walkthrough's service files with
service-identity tokens and `reload`. The sidecars are started as the
walkthrough starts them, `connect envoy -sidecar-for ... -token ...`; with
no `envoy` on PATH that runs the built-in proxy.

Deviations from the walkthrough's text, because all three agents share one
machine (loopback addresses 127.0.0.181-183):
- each sidecar's public listener is bound to its node's address (the
  sidecar service's `address`), on a free port rather than 20000, and its TCP
  check points there;
- the demo services listen on free ports rather than 8080 (web's upstream
  stays 127.0.0.1:8081 as printed);
- checks run every 500 ms and pass or fail at the first result (the text has
  10 s and 3 in a row), so the test waits seconds, not half a minute;
- `api` carries `meta { version = "v1" }` and a second instance `api-v2`
  (its own service file, id and sidecar on client 1) `version = "v2"`, for the
  fail switch, the traffic-shaping entries and the `kill -9`. api-v2's
  sidecar has no `check` block, so it gets Consul's default sidecar checks,
  among them the alias of api-v2's own health: with the walkthrough's custom
  sidecar check (as for `api`) a failing service keeps its sidecar passing,
  in Consul as here, and traffic would not move;
- `connect envoy` gets `-grpc-addr` (the agents' gRPC ports are free ports,
  not 8502) and `-admin-bind` (two proxies cannot share 19000).

The tests run in order on one cluster (each leaves the intention allowing
web -> api). A malformed or unsupported xDS resource, NACKed with the last
good configuration serving, is covered in-process with a hand-built
resource (tests/integration/test_proxy_mesh.py,
`test_unsupported_resource_is_nacked_and_the_last_config_serves`): the
agent's translator does not emit one on purpose.
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from tests.agent_process import free_port, proconsul_cmd, wait_for
from tests.integration.test_connect_proxy import get
from tests.integration.test_proxy_mesh import client_context, pem_context, raw_exchange
from tests.walkthrough_cluster import (
    CLIENT_1,
    CLIENT_2,
    DEADLINE_S,
    Mesh,
    running_mesh,
    service_file,
)
from tests.xds_helpers import SHAPING_RESOLVER, SHAPING_SPLITTER, mesh_ca

from proconsul.cli.connect_envoy import NO_ENVOY
from proconsul.connect.ca import generate_root

BASE = 181  # consul-server-1, consul-client-1, consul-client-2: 127.0.0.181-183
UPSTREAM = "http://127.0.0.1:8081/"
CHECKS = {"interval": "500ms", "successes": 1, "failures": 1}


@dataclass
class Instance:
    """A demo service and its sidecar, as processes."""

    name: str
    port: int
    admin: int
    demo: subprocess.Popen[bytes]
    sidecar: subprocess.Popen[bytes] | None = None


@dataclass
class World:
    mesh: Mesh
    logs: Path
    instances: dict[str, Instance] = field(default_factory=dict)
    sidecar_ports: dict[str, int] = field(default_factory=dict)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.instances['web'].port}/"

    def stats(self, name: str) -> dict[str, float]:
        """The proxy's /stats as name -> value."""
        _, text = get(f"http://127.0.0.1:{self.instances[name].admin}/stats")
        out = {}
        for line in text.splitlines():
            key, _, value = line.rpartition(": ")
            if key and value.isdigit():  # histograms (count=... P50=...) left out
                out[key] = float(value)
        return out


def post(url: str) -> None:
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def start_demo(world: World, name: str, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = (world.logs / f"demo-{name}.log").open("wb")
    proc = subprocess.Popen(
        [*proconsul_cmd("demo", "service", "-name", name, "-listen", f"127.0.0.1:{port}"), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    wait_for(lambda: get(f"http://127.0.0.1:{port}/health")[0] > 0, DEADLINE_S)
    return proc, port


def start_sidecar(world: World, instance: Instance, agent: str, token: str) -> None:
    log = (world.logs / f"sidecar-{instance.name}.log").open("wb")
    instance.sidecar = subprocess.Popen(
        proconsul_cmd(
            "connect",
            "envoy",
            "-sidecar-for",
            instance.name,
            "-token",
            token,
            "-grpc-addr",
            f"127.0.0.1:{world.mesh.grpc_ports[agent]}",
            "-admin-bind",
            f"127.0.0.1:{instance.admin}",
        ),
        env={k: v for k, v in world.mesh.env(agent).items() if k != "CONSUL_HTTP_TOKEN"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    wait_for(lambda: get(f"http://127.0.0.1:{instance.admin}/ready")[0] == 200, DEADLINE_S)


def add_instance(
    world: World,
    name: str,
    service: str,
    agent: str,
    *demo_args: str,
    sidecar_check: bool = True,
    **meta: str,
) -> Instance:
    """A demo service registered from a walkthrough-shaped file, with its sidecar."""
    demo, port = start_demo(world, name, *demo_args)
    instance = world.instances[name] = Instance(name, port, free_port(), demo)
    address = world.mesh.ip(agent)
    world.sidecar_ports[name] = free_port(address)
    token = world.mesh.tokens[service]
    text = service_file(
        service,
        token,
        service_id=name if name != service else "",
        port=port,
        sidecar_port=world.sidecar_ports[name],
        sidecar_address=address,
        meta=meta or None,
        sidecar_check=sidecar_check,
        **CHECKS,  # type: ignore[arg-type]
    )
    world.mesh.add_service_file(agent, f"{name}.hcl", text)
    wait_for(lambda: world.mesh.get(f"/v1/agent/service/{name}-sidecar-proxy", agent), DEADLINE_S)
    start_sidecar(world, instance, agent, token)
    return instance


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("mesh-traffic")
    with running_mesh(tmp, BASE) as mesh:
        logs = tmp / "logs"
        logs.mkdir()
        built = World(mesh, logs)
        try:
            for service in ("api", "web"):
                mesh.create_service_token(service)
            add_instance(built, "api", "api", CLIENT_1, version="v1")
            add_instance(built, "web", "web", CLIENT_2, "-upstream", UPSTREAM)
            yield built
        finally:
            for instance in built.instances.values():
                stop(instance.sidecar)
                stop(instance.demo)
    for log in logs.glob("sidecar-*.log"):
        text = log.read_text()
        assert "Traceback" not in text and "no TLS context" not in text, (log.name, text)


def call_web(world: World) -> tuple[int, dict[str, Any]]:
    """web's answer: its status and its upstream call (api's nested reply, or the error)."""
    status, body = get(world.web_url)
    try:
        reply = json.loads(body)
    except ValueError:
        return status, {}
    calls = reply.get("upstream_calls") or {}
    return status, next(iter(calls.values()), {})


def nested_name(world: World) -> str | None:
    status, call = call_web(world)
    return call.get("name") if status == 200 else None


def names_answering(world: World, count: int) -> set[str | None]:
    return {nested_name(world) for _ in range(count)}


def stat(stats: dict[str, float], listener: str, name: str) -> float:
    (value,) = [v for k, v in stats.items() if listener in k and k.endswith("." + name)]
    return value


# -------------------------------------------------------------- intentions


def test_1_without_an_intention_web_gets_403_from_apis_sidecar(world: World) -> None:
    for name in ("api", "web"):  # connect envoy says once that it runs the built-in proxy
        lines = (world.logs / f"sidecar-{name}.log").read_text().splitlines()
        assert lines[0] == NO_ENVOY and lines.count(NO_ENVOY) == 1
    seen: list[tuple[int, dict[str, Any]]] = []

    def refused() -> dict[str, Any] | None:
        seen[:] = [call_web(world)]
        status, call = seen[0]
        return call if status == 500 and call.get("code") == 403 else None

    try:
        call = wait_for(refused, DEADLINE_S)
    except AssertionError:
        raise AssertionError(f"web answered {seen}") from None
    assert call["body"] == "RBAC: access denied"


def test_2_an_allow_intention_lets_web_reach_api_nested(world: World) -> None:
    out = world.mesh.cli("intention", "create", "-allow", "web", "api", agent=CLIENT_2)
    assert out == "Created: web => api (allow)\n"

    def answered() -> dict[str, Any] | None:
        status, body = get(world.web_url)
        return json.loads(body) if status == 200 else None

    reply = wait_for(answered, 5.0)
    assert reply["name"] == "web" and reply["code"] == 200
    (nested,) = reply["upstream_calls"].values()
    assert (nested["name"], nested["code"], nested["uri"]) == ("api", 200, UPSTREAM)


def test_3_a_deny_with_replace_applies_to_new_requests_within_a_second(world: World) -> None:
    world.mesh.cli("intention", "create", "-deny", "-replace", "web", "api", agent=CLIENT_2)
    started = time.monotonic()
    wait_for(lambda: call_web(world)[1].get("code") == 403, 5.0, 0.02)
    assert time.monotonic() - started < 1.0
    world.mesh.cli("intention", "create", "-allow", "-replace", "web", "api", agent=CLIENT_2)
    wait_for(lambda: nested_name(world) == "api", 5.0, 0.02)


# ------------------------------------------------------------- bad callers


def test_4_bad_callers_on_the_public_listener_are_refused_and_counted(world: World) -> None:
    host, port = world.mesh.ip(CLIENT_1), world.sidecar_ports["api"]
    before = world.stats("api")
    leaf = world.mesh.get("/v1/agent/connect/ca/leaf/db", CLIENT_1)
    other_service = raw_exchange(port, pem_context(leaf["CertPEM"], leaf["PrivateKeyPEM"]), host)
    assert other_service.startswith(b"HTTP/1.1 403")
    assert other_service.endswith(b"RBAC: access denied")
    assert raw_exchange(port, client_context(mesh_ca(seed=2), "web"), host) == b""
    assert not raw_exchange(port, None, host).startswith(b"HTTP/")

    def counted() -> dict[str, float] | None:
        after = world.stats("api")
        errors = stat(after, "public_listener", "ssl.connection_error")
        ok = errors >= stat(before, "public_listener", "ssl.connection_error") + 2
        return after if ok else None

    after = wait_for(counted, 5.0)
    denied = stat(after, "public_listener", "rbac.denied")
    assert denied == stat(before, "public_listener", "rbac.denied") + 1


# ------------------------------------------------------ health and failure


def test_5_a_failed_instance_gets_no_traffic(world: World) -> None:
    add_instance(world, "api-v2", "api", CLIENT_1, sidecar_check=False, version="v2")
    wait_for(lambda: names_answering(world, 8) == {"api", "api-v2"}, DEADLINE_S)
    post(f"http://127.0.0.1:{world.instances['api-v2'].port}/fail")
    wait_for(lambda: names_answering(world, 10) == {"api"}, DEADLINE_S)
    post(f"http://127.0.0.1:{world.instances['api-v2'].port}/recover")
    wait_for(lambda: names_answering(world, 8) == {"api", "api-v2"}, DEADLINE_S)


# ------------------------------------------------------- steady streams


class Stream:
    """Requests through web, one after another, in a thread; failures recorded."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.ok = 0
        self.failures: list[tuple[float, int, dict[str, Any]]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        while not self.done.is_set():
            status, call = call_web(self.world)
            if status == 200:
                self.ok += 1
            else:
                self.failures.append((time.monotonic(), status, call))

    def __enter__(self) -> Stream:
        self.thread.start()
        wait_for(lambda: self.ok >= 5, DEADLINE_S)
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join(timeout=20)

    def wait_more(self, count: int) -> None:
        target = self.ok + count
        wait_for(lambda: self.ok >= target, DEADLINE_S)


def public_leaf(world: World, name: str) -> x509.Certificate:
    """The leaf `name`'s sidecar presents to a new handshake now."""
    host, port = world.mesh.ip(CLIENT_1), world.sidecar_ports[name]
    leaf = world.mesh.get("/v1/agent/connect/ca/leaf/web", CLIENT_2)
    context = pem_context(leaf["CertPEM"], leaf["PrivateKeyPEM"])
    with (
        socket.create_connection((host, port), timeout=5) as plain,
        context.wrap_socket(plain) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_6_a_leaf_rotation_during_a_request_stream_fails_no_request(world: World) -> None:
    roots = world.mesh.get("/v1/connect/ca/roots")
    new = generate_root(
        cluster_id=roots["TrustDomain"].removesuffix(".consul"),
        now=datetime.now(UTC),
        rng=random.Random(),
    )
    new_root = x509.load_pem_x509_certificate(new.cert_pem.encode())
    old_leaf = public_leaf(world, "api")
    with Stream(world) as stream:
        body = {
            "Provider": "consul",
            "Config": {"LeafCertTTL": "72h", "PrivateKey": new.key_pem, "RootCert": new.cert_pem},
        }
        status, raw = world.mesh.request("PUT", "/v1/connect/ca/configuration", body)
        assert status == 200, raw

        def rotated(name: str) -> bool:
            try:
                public_leaf(world, name).verify_directly_issued_by(new_root)
            except (ValueError, TypeError):
                return False
            return True

        wait_for(lambda: rotated("api") and rotated("api-v2"), DEADLINE_S)
        stream.wait_more(20)
    assert public_leaf(world, "api") != old_leaf
    assert stream.failures == [] and stream.ok > 20


# --------------------------------------------------------- traffic shaping

SHAPING = [
    SHAPING_RESOLVER,
    {
        "Kind": "service-router",
        "Name": "api",
        "Routes": [
            {
                "Match": {"HTTP": {"Header": [{"Name": "x-api-version", "Exact": version}]}},
                "Destination": {"ServiceSubset": version},
            }
            for version in ("v1", "v2")
        ],
    },
    SHAPING_SPLITTER,
]


def put_entry(world: World, entry: dict[str, Any]) -> None:
    status, body = world.mesh.request("PUT", "/v1/config", entry)
    assert (status, body) == (200, b"true"), entry


def test_7_router_splitter_and_resolver_shape_webs_traffic(world: World) -> None:
    for entry in SHAPING:
        put_entry(world, entry)
    connection = http.client.HTTPConnection("127.0.0.1", 8081, timeout=10)

    def ask(headers: dict[str, str]) -> tuple[str, str | None]:
        connection.request("GET", "/", headers=headers)
        response = connection.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        return body["name"], response.getheader("x-api-version")

    wait_for(lambda: ask({})[1] is not None, DEADLINE_S)  # the splitter is in force
    assert {ask({"x-api-version": "v1"})[0] for _ in range(50)} == {"api"}
    assert {ask({"x-api-version": "v2"})[0] for _ in range(10)} == {"api-v2"}
    counts = {"v1": 0, "v2": 0}
    for _ in range(1000):
        name, version = ask({})
        assert version in counts and name == {"v1": "api", "v2": "api-v2"}[version]
        counts[version] += 1
    connection.close()
    # 75/25 over 1,000: sd = sqrt(1000 * .75 * .25) ~ 13.7; 5 sd ~ 69.
    assert abs(counts["v1"] - 750) < 69, counts


def test_8_kill_9_of_an_api_instance_costs_at_most_the_request_in_flight(world: World) -> None:
    for kind in ("service-splitter", "service-router", "service-resolver"):
        status, _ = world.mesh.request("DELETE", f"/v1/config/{kind}/api")
        assert status == 200
    put_entry(
        world,
        {
            "Kind": "service-router",
            "Name": "api",
            "Routes": [
                {
                    "Match": {"HTTP": {"PathPrefix": "/"}},
                    "Destination": {"NumRetries": 3, "RetryOnConnectFailure": True},
                }
            ],
        },
    )
    wait_for(lambda: names_answering(world, 8) == {"api", "api-v2"}, DEADLINE_S)
    victim = world.instances["api-v2"]
    with Stream(world) as stream:
        for proc in (victim.sidecar, victim.demo):
            assert proc is not None
            proc.kill()
            proc.wait()
        killed = stream.ok
        wait_for(lambda: names_answering(world, 10) == {"api"}, DEADLINE_S)
        stream.wait_more(20)
    # One request at a time: at most the one in flight at the kill is lost.
    assert len(stream.failures) <= 1, stream.failures
    assert stream.ok > killed


def test_9_webs_agent_restarts_during_traffic(world: World) -> None:
    """web's sidecar keeps serving while its agent is away, and resubscribes.

    The agent restarted is client 2, web's: a client stopped with SIGTERM
    leaves the cluster, so restarting api's agent would take api's endpoints
    out of the catalog (as in Consul) and measure that, not the proxy."""
    before = world.stats("web")
    with Stream(world) as stream:
        world.mesh.pool.stop(world.mesh.pool[CLIENT_2])
        stream.wait_more(20)  # established traffic continues without the agent
        world.mesh.pool.start(world.mesh.pool[CLIENT_2])
        world.mesh.wait_auto_encrypt(CLIENT_2)

        def resubscribed() -> bool:
            after = world.stats("web")
            return after.get("ads.reconnects", 0) > before.get("ads.reconnects", 0) and (
                after.get("ads.acks", 0) > before.get("ads.acks", 0)
            )

        wait_for(resubscribed, DEADLINE_S)
        stream.wait_more(20)
    assert stream.failures == []
    # The new subscription carries changes: web's sidecar applies the next one.
    acks = world.stats("web")["ads.acks"]
    put_entry(world, {"Kind": "service-resolver", "Name": "api", "ConnectTimeout": "3s"})
    wait_for(lambda: world.stats("web")["ads.acks"] > acks, 5.0)
    assert nested_name(world) == "api"
