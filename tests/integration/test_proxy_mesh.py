"""The built-in sidecar proxy against the real ADS server, with real demo services.

Two proxies run in-process (proxy/command.py `serve`, on the test's uvloop
loop, as in production) as ADS clients of the agent's real `XDSServer`, fed hand-built
snapshots (a real mesh CA, leaves, intentions, chains). The demo services
are real `proconsul demo service` processes. web -> web's sidecar (upstream
listener, plaintext) -> mTLS -> api's sidecar (public listener) -> api.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import uvloop
from cryptography import x509
from tests.agent_process import wait_for_async
from tests.integration.test_demo_service import Demo, start_demo
from tests.proxy_helpers import (
    API_TARGET,
    Mesh,
    Ports,
    ProxyHandle,
    api_snapshot,
    start_proxy,
    web_snapshot,
)
from tests.xds_helpers import (
    SHAPING_ENTRIES,
    TRUST_DOMAIN,
    MeshCA,
    entries,
    instance,
    intentions,
    mesh_ca,
)

from proconsul.xds.snapshot import ProxySnapshot

CA = mesh_ca()
# The event_loop_policy override is deprecated in pytest-asyncio in favour of a
# suite-wide hook; only this module wants uvloop, so it keeps the override.
pytestmark = pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy"')


@pytest.fixture(scope="module")
def event_loop_policy() -> uvloop.EventLoopPolicy:
    """The proxy runs on uvloop (proxy/command.py); so do these tests."""
    return uvloop.EventLoopPolicy()


ALLOW_WEB = intentions("api", {"Name": "web", "Action": "allow"})
DENY_WEB = intentions("api", {"Name": "web", "Action": "deny"})
HTTP_API = entries({"Kind": "service-defaults", "Name": "api", "Protocol": "http"})


def port_of(demo: Demo) -> int:
    return int(demo.address.rsplit(":", 1)[1])


@dataclass
class World:
    mesh: Mesh
    ports: Ports
    api_demo: Demo
    web: ProxyHandle
    api: ProxyHandle
    protocol: str
    extra: list[Any] = dataclasses.field(default_factory=list)
    handles: list[ProxyHandle] = dataclasses.field(default_factory=list)
    processes: list[asyncio.subprocess.Process] = dataclasses.field(default_factory=list)

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.web_upstream}"

    def publish_api(
        self, ixns: Any = ALLOW_WEB, ca: MeshCA = CA, protocol_override: str = ""
    ) -> ProxySnapshot:
        snap = api_snapshot(
            ca,
            self.ports.api_public,
            self.ports.api_local,
            protocol=protocol_override or self.protocol,
            ixns=ixns,
        )
        self.mesh.publish(snap)
        return snap


async def both_ready(*handles: ProxyHandle) -> None:
    await wait_for_async(lambda: all(h.runtime.ready and h.runtime.servers for h in handles))


async def start_world(protocol: str, ixns: Any = ALLOW_WEB) -> World:
    mesh = Mesh()
    await mesh.start()
    api_demo = await start_demo("-name", "api")
    ports = Ports.pick(api_local=port_of(api_demo))
    chain = HTTP_API if protocol == "http" else None
    mesh.publish(web_snapshot(CA, ports, chain=chain))
    world = World(mesh, ports, api_demo, None, None, protocol)  # type: ignore[arg-type]
    world.publish_api(ixns)
    world.web = await start_proxy(mesh, "web-sidecar-proxy", "web")
    world.api = await start_proxy(mesh, "api-sidecar-proxy", "api")
    await both_ready(world.web, world.api)
    return world


async def stop_world(world: World) -> None:
    for handle in (world.web, world.api, *world.handles):
        if handle is not None:
            await handle.close()
    for proc in world.processes:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    for demo in [world.api_demo, *world.extra]:
        await demo.stop()
    await world.mesh.stop()


@pytest.fixture
async def tcp_world() -> AsyncIterator[World]:
    world = await start_world("tcp")
    yield world
    await stop_world(world)


@pytest.fixture
async def http_world() -> AsyncIterator[World]:
    world = await start_world("http")
    yield world
    await stop_world(world)


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """One request on a new connection; status -1 when the connection was closed."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(5)) as r:
                return r.status, r.headers, await r.text()
        except (aiohttp.ClientError, ConnectionError):
            return -1, {}, ""


def listener_stat(handle: ProxyHandle, prefix: str, field: str) -> int:
    for name, stats in handle.runtime.stats.listeners.items():
        if name.startswith(prefix):
            return int(getattr(stats, field))
    raise AssertionError(f"no listener {prefix}")


async def admin_get(handle: ProxyHandle, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{handle.running.admin_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return r.status, await r.text()


# ------------------------------------------------------------- web -> api


@pytest.fixture(params=["tcp", "http"])
async def any_world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    world = await start_world(request.param)
    yield world
    await stop_world(world)


async def test_web_reaches_api_over_mtls_through_two_proxies(any_world: World) -> None:
    world = any_world
    web_demo = await start_demo(
        "-name", "web", "-upstream", f"127.0.0.1:{world.ports.web_upstream}"
    )
    world.extra.append(web_demo)
    status, _, body = await fetch(web_demo.url)
    assert status == 200, body
    assert '"name": "web"' in body and '"name": "api"' in body  # api's reply nested in web's
    assert listener_stat(world.api, "public_listener", "rbac_allowed") >= 1
    ready, _ = await admin_get(world.api, "/ready")
    assert ready == 200
    status, text = await admin_get(world.api, "/stats/prometheus")
    assert status == 200 and "envoy_listener_rbac_allowed{" in text
    assert 'envoy_cluster_upstream_cx_total{envoy_cluster_name="local_app"}' in text


async def test_tcp_intention_change_applies_within_a_second_and_keeps_open_connections(
    tcp_world: World,
) -> None:
    world = tcp_world
    kept = aiohttp.ClientSession()  # one kept-alive TCP connection through both proxies
    try:
        async with kept.get(world.upstream_url) as r:
            assert r.status == 200
        world.publish_api(DENY_WEB)
        changed = time.monotonic()
        await wait_for_async_result(lambda: fetch(world.upstream_url), lambda res: res[0] == -1)
        assert time.monotonic() - changed < 1.0
        async with kept.get(world.upstream_url) as r:  # established: stays, as in Consul
            assert r.status == 200
        assert listener_stat(world.api, "public_listener", "rbac_denied") >= 1
        world.publish_api(ALLOW_WEB)
        await wait_for_async_result(lambda: fetch(world.upstream_url), lambda res: res[0] == 200)
    finally:
        await kept.close()


async def test_default_deny_without_intention_refuses_at_l4(tcp_world: World) -> None:
    tcp_world.publish_api(())  # default deny, no intention
    await wait_for_async_result(lambda: fetch(tcp_world.upstream_url), lambda r: r[0] == -1)


async def test_http_intention_change_gives_403_within_a_second(http_world: World) -> None:
    world = http_world
    assert (await fetch(world.upstream_url))[0] == 200
    world.publish_api(DENY_WEB)
    changed = time.monotonic()
    _, _, body = await wait_for_async_result(
        lambda: fetch(world.upstream_url), lambda r: r[0] == 403
    )
    assert time.monotonic() - changed < 1.0
    assert body == "RBAC: access denied"
    assert listener_stat(world.api, "public_listener", "rbac_denied") >= 1


async def wait_for_async_result(make: Any, good: Any, deadline_s: float = 10.0) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        result = await make()
        if good(result):
            return result
        if time.monotonic() > end:
            raise AssertionError(f"last result: {result}")
        await asyncio.sleep(0.02)


# ------------------------------------------------------------ bad callers


def client_context(ca: MeshCA, service: str) -> ssl.SSLContext:
    leaf = ca.issue(service)
    return pem_context(leaf.cert_pem, leaf.key_pem)


def pem_context(cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """A client context presenting this certificate (it checks no server)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    fd, path = tempfile.mkstemp()
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(cert_pem + key_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    return context


def raw_exchange(port: int, context: ssl.SSLContext | None, host: str = "127.0.0.1") -> bytes:
    """GET / on the public listener; what came back before the close ("" if nothing)."""
    with socket.create_connection((host, port), timeout=5) as plain:
        try:
            sock = context.wrap_socket(plain) if context is not None else plain
            sock.sendall(b"GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n")
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
            return out
        except (ssl.SSLError, ConnectionError, OSError):
            return b""


async def test_bad_callers_are_refused_and_counted(http_world: World) -> None:
    world = http_world
    port = world.ports.api_public
    loop = asyncio.get_running_loop()
    wrong_service = await loop.run_in_executor(None, raw_exchange, port, client_context(CA, "db"))
    assert wrong_service.startswith(b"HTTP/1.1 403") and wrong_service.endswith(
        b"RBAC: access denied"
    )
    good = await loop.run_in_executor(None, raw_exchange, port, client_context(CA, "web"))
    assert good.startswith(b"HTTP/1.1 200")
    errors_before = listener_stat(world.api, "public_listener", "ssl_connection_error")
    other_ca = mesh_ca(seed=2)
    foreign = await loop.run_in_executor(None, raw_exchange, port, client_context(other_ca, "web"))
    assert foreign == b""
    plaintext = await loop.run_in_executor(None, raw_exchange, port, None)
    assert not plaintext.startswith(b"HTTP/")
    await wait_for_async(
        lambda: (
            listener_stat(world.api, "public_listener", "ssl_connection_error") >= errors_before + 2
        )
    )
    _, text = await admin_get(world.api, "/stats")
    assert ".ssl.connection_error: " in text and ".rbac.denied: 1" in text


# ---------------------------------------------------- health and failure


async def second_api(world: World, name: str, **meta: str) -> tuple[int, ProxyHandle]:
    """Another api instance (demo `name`) behind its own proxy; its public port."""
    demo = await start_demo("-name", name)
    world.extra.append(demo)
    public = Ports.pick().api_public
    world.mesh.publish(
        api_snapshot(
            CA,
            public,
            port_of(demo),
            protocol=world.protocol,
            ixns=ALLOW_WEB,
            proxy_id=f"{name}-sidecar-proxy",
        )
    )
    handle = await start_proxy(world.mesh, f"{name}-sidecar-proxy", "api")
    world.handles.append(handle)
    await both_ready(handle)
    return public, handle


def names_answering(bodies: list[str]) -> set[str]:
    return {b.split('"name": "', 1)[1].split('"', 1)[0] for b in bodies if '"name": "' in b}


async def test_unhealthy_endpoint_gets_no_traffic(http_world: World) -> None:
    world = http_world
    public2, _ = await second_api(world, "api-two")
    rows = [
        instance("api", "127.0.0.1", world.ports.api_public, node="n1"),
        instance("api", "127.0.0.1", public2, node="n2"),
    ]
    world.mesh.publish(web_snapshot(CA, world.ports, chain=HTTP_API, endpoints={API_TARGET: rows}))
    await wait_for_async_result(
        lambda: fetch_many(world.upstream_url, 6),
        lambda b: names_answering(b) == {"api", "api-two"},
    )
    rows[1] = instance("api", "127.0.0.1", public2, node="n2", status="critical")
    world.mesh.publish(web_snapshot(CA, world.ports, chain=HTTP_API, endpoints={API_TARGET: rows}))
    await wait_for_async_result(
        lambda: fetch_many(world.upstream_url, 10), lambda b: names_answering(b) == {"api"}
    )


async def test_killed_endpoint_costs_nothing_with_retries(http_world: World) -> None:
    """A sidecar killed with -9 between requests costs none of them: connect
    failures are retried on the other endpoint, then the dead one is ejected."""
    world = http_world
    demo = await start_demo("-name", "api-two")
    world.extra.append(demo)
    public2 = Ports.pick().api_public
    snap = api_snapshot(
        CA, public2, port_of(demo), protocol="http", ixns=ALLOW_WEB, proxy_id="two-sidecar-proxy"
    )
    world.mesh.publish(snap)
    proc, _ = await proxy_process(world, "two-sidecar-proxy", "api")
    rows = [
        instance("api", "127.0.0.1", world.ports.api_public, node="n1"),
        instance("api", "127.0.0.1", public2, node="n2"),
    ]
    router = entries(
        {"Kind": "service-defaults", "Name": "api", "Protocol": "http"},
        {
            "Kind": "service-router",
            "Name": "api",
            "Routes": [
                {
                    "Match": {"HTTP": {"PathPrefix": "/"}},
                    "Destination": {"NumRetries": 2, "RetryOnConnectFailure": True},
                }
            ],
        },
    )
    world.mesh.publish(web_snapshot(CA, world.ports, chain=router, endpoints={API_TARGET: rows}))
    await wait_for_async_result(
        lambda: fetch_many(world.upstream_url, 6),
        lambda b: names_answering(b) == {"api", "api-two"},
    )
    proc.kill()  # kill -9 of api-two's sidecar: its connections reset, new ones refused
    await proc.wait()
    statuses = [status for status, _, _ in [await fetch(world.upstream_url) for _ in range(20)]]
    assert statuses == [200] * 20
    cluster = world.web.runtime.stats.clusters[f"api.default.dc1.internal.{TRUST_DOMAIN}"]
    assert cluster.upstream_cx_connect_fail >= 1 and cluster.upstream_rq_retry >= 1


async def fetch_many(url: str, count: int, headers: dict[str, str] | None = None) -> list[str]:
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(url, headers=headers) as r:
                out.append(await r.text())
    return out


# ------------------------------------------------------------ traffic shaping


async def test_traffic_shaping_header_route_split_and_response_header() -> None:
    mesh = Mesh()
    await mesh.start()
    v1, v2 = await start_demo("-name", "api-v1"), await start_demo("-name", "api-v2")
    handles: list[ProxyHandle] = []
    try:
        ports = Ports.pick()
        publics = {"v1": Ports.pick().api_public, "v2": Ports.pick().api_public}
        for version, demo in (("v1", v1), ("v2", v2)):
            mesh.publish(
                api_snapshot(
                    CA,
                    publics[version],
                    port_of(demo),
                    protocol="http",
                    ixns=ALLOW_WEB,
                    proxy_id=f"api-{version}-sidecar-proxy",
                )
            )
        rows = {
            f"{version}.api.default.default.dc1": [
                instance("api", "127.0.0.1", publics[version], meta={"version": version})
            ]
            for version in ("v1", "v2")
        }
        mesh.publish(web_snapshot(CA, ports, chain=SHAPING_ENTRIES, endpoints=rows))
        for proxy_id, service in (
            ("web-sidecar-proxy", "web"),
            ("api-v1-sidecar-proxy", "api"),
            ("api-v2-sidecar-proxy", "api"),
        ):
            handles.append(await start_proxy(mesh, proxy_id, service))
        await both_ready(*handles)
        url = f"http://127.0.0.1:{ports.web_upstream}/"
        # The router sends x-api-version: v2 to v2, always.
        assert names_answering(await fetch_many(url, 20, {"x-api-version": "v2"})) == {"api-v2"}
        counts = {"v1": 0, "v2": 0}
        async with aiohttp.ClientSession() as session:
            for _ in range(1000):
                async with session.get(url) as r:
                    body = await r.text()
                    version = r.headers["x-api-version"]  # set by the split's response headers
                    assert f'"name": "api-{version}"' in body
                    counts[version] += 1
        # 75/25 over 1,000: sd = sqrt(1000 * .75 * .25) ~ 13.7; 5 sd ~ 69.
        assert abs(counts["v1"] - 750) < 69, counts
    finally:
        for handle in handles:
            await handle.close()
        await v1.stop()
        await v2.stop()
        await mesh.stop()


# ------------------------------------------------------------------ updates


async def test_leaf_rotation_during_a_request_stream(http_world: World) -> None:
    world = http_world
    failures: list[int] = []
    done = asyncio.Event()

    async def stream() -> int:
        count = 0
        while not done.is_set():
            status, _, _ = await fetch(world.upstream_url)  # new connections: new handshakes
            if status != 200:
                failures.append(status)
            count += 1
        return count

    task = asyncio.get_running_loop().create_task(stream())
    await wait_for_async(
        lambda: world.api.runtime.stats.listener(public_name(world)).downstream_rq_total >= 3
    )
    fresh = CA.issue("api")
    snap = world.publish_api(ALLOW_WEB)
    world.mesh.publish(dataclasses.replace(snap, leaf=fresh))
    loop = asyncio.get_running_loop()

    def served_serial() -> bytes:
        address = ("127.0.0.1", world.ports.api_public)
        with (
            socket.create_connection(address, timeout=5) as plain,
            client_context(CA, "web").wrap_socket(plain) as sock,
        ):
            return sock.getpeercert(binary_form=True) or b""

    wanted = x509.load_pem_x509_certificate(fresh.cert_pem.encode()).serial_number

    async def rotated() -> bool:
        der = await loop.run_in_executor(None, served_serial)
        return x509.load_der_x509_certificate(der).serial_number == wanted

    await wait_for_async_result(rotated, bool)
    before = world.api.runtime.stats.listener(public_name(world)).downstream_rq_total
    await wait_for_async(
        lambda: (
            world.api.runtime.stats.listener(public_name(world)).downstream_rq_total >= before + 5
        )
    )
    done.set()
    total = await task
    assert failures == [] and total >= 5


def public_name(world: World) -> str:
    return f"public_listener:127.0.0.1:{world.ports.api_public}"


async def test_ads_server_restart_during_traffic(http_world: World) -> None:
    world = http_world
    session = aiohttp.ClientSession()
    try:
        async with session.get(world.upstream_url) as r:
            assert r.status == 200
        port = int(world.mesh.address.rsplit(":", 1)[1])
        await world.mesh.stop()
        await wait_for_async(lambda: not world.web.running.client.connected.is_set())
        for _ in range(5):  # the last config keeps serving, kept-alive and new connections
            async with session.get(world.upstream_url) as r:
                assert r.status == 200
            assert (await fetch(world.upstream_url))[0] == 200
        await world.mesh.start(port)
        reconnects = world.api.runtime.stats.control["ads.reconnects"]
        await wait_for_async(lambda: world.api.running.client.connected.is_set(), deadline_s=15)
        assert world.api.runtime.stats.control["ads.reconnects"] >= reconnects
        world.publish_api(DENY_WEB)  # the resubscribed stream carries new config
        await wait_for_async_result(lambda: fetch(world.upstream_url), lambda r: r[0] == 403)
    finally:
        await session.close()


async def test_unsupported_resource_is_nacked_and_the_last_config_serves(
    http_world: World,
) -> None:
    world = http_world
    assert (await fetch(world.upstream_url))[0] == 200
    nacks = world.api.runtime.stats.control["ads.nacks"]
    # grpc means HTTP/2 to local_app, which the built-in proxy does not carry out.
    world.publish_api(ALLOW_WEB, protocol_override="grpc")
    await wait_for_async(lambda: world.api.runtime.stats.control["ads.nacks"] > nacks)
    assert (await fetch(world.upstream_url))[0] == 200
    assert world.mesh.server.stats()["nacks"] >= 1


async def test_removed_listener_closes_with_its_connections(tcp_world: World) -> None:
    world = tcp_world
    kept = aiohttp.ClientSession()
    try:
        async with kept.get(world.upstream_url) as r:
            assert r.status == 200
        web_only = dataclasses.replace(web_snapshot(CA, world.ports), upstreams=())
        world.mesh.publish(web_only)
        await wait_for_async(lambda: len(world.web.runtime.servers) == 1)
        assert (await fetch(world.upstream_url))[0] == -1  # nothing listens there now
        with pytest.raises((aiohttp.ClientError, ConnectionError)):
            async with kept.get(world.upstream_url) as r:  # the kept connection was closed
                await r.read()
    finally:
        await kept.close()


async def test_sigterm_drains_in_flight_requests(http_world: World) -> None:
    """A request in flight when the stop comes is answered, not reset."""
    world = http_world
    # A slow web: its upstream is a socket that never answers, so web takes its
    # upstream timeout (1s) to answer 500 through web's own sidecar.
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen()
    slow = await start_demo(
        "-name",
        "slow",
        "-upstream",
        f"127.0.0.1:{black_hole.getsockname()[1]}",
        "-upstream-timeout",
        "1s",
    )
    world.extra.append(slow)
    try:
        world.publish_api(ALLOW_WEB)
        world.mesh.publish(
            api_snapshot(CA, world.ports.api_public, port_of(slow), protocol="http", ixns=ALLOW_WEB)
        )
        await wait_for_async_result(
            lambda: fetch(world.upstream_url), lambda r: r[0] == 500 and '"slow"' in r[2]
        )
        in_flight = asyncio.get_running_loop().create_task(fetch(world.upstream_url))
        await wait_for_async(lambda: world.api.runtime.in_flight > 0)
        started = time.monotonic()
        code = await world.api.close()
        status, _, body = await in_flight
        assert code == 0 and status == 500 and '"slow"' in body
        assert time.monotonic() - started < 5
        world.api = None  # type: ignore[assignment]
    finally:
        black_hole.close()


def raw_http(port: int, request: bytes, until: bytes) -> bytes:
    """Send `request` on one plain connection; read until `until` has been seen."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        out = b""
        while until not in out:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


async def test_head_and_expect_continue_through_the_pair(http_world: World) -> None:
    loop = asyncio.get_running_loop()
    port = http_world.ports.web_upstream
    head = b"HEAD / HTTP/1.1\r\nhost: api\r\n\r\n"
    get = b"GET /after HTTP/1.1\r\nhost: api\r\n\r\n"
    both = await loop.run_in_executor(None, raw_http, port, head + get, b'"uri": "/after"')
    first, _, rest = both.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"content-length:" in first.lower()
    assert rest.startswith(b"HTTP/1.1 200")  # no body after HEAD: the next answer follows
    post = b"POST / HTTP/1.1\r\nhost: api\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
    interim = await loop.run_in_executor(None, raw_http, port, post, b"100 Continue\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100 Continue")


async def test_upstream_with_the_wrong_spiffe_id_is_not_trusted(http_world: World) -> None:
    """api's sidecar presenting db's leaf (same CA) fails web's SAN check: 503, counted."""
    world = http_world  # no request yet: web's first connection to api comes after the change
    snap = world.publish_api(ALLOW_WEB)
    applied = world.api.runtime.versions
    world.mesh.publish(dataclasses.replace(snap, leaf=CA.issue("db")))
    await wait_for_async(lambda: world.api.runtime.versions > applied)
    status, _, body = await fetch(world.upstream_url)
    assert status == 503 and "connection failure" in body
    cluster = world.web.runtime.stats.clusters[f"api.default.dc1.internal.{TRUST_DOMAIN}"]
    assert cluster.upstream_cx_connect_fail >= 1


async def proxy_process(
    world: World, proxy_id: str, service: str
) -> tuple[asyncio.subprocess.Process, int]:
    """`python -m proconsul.proxy` for `proxy_id`, once its admin says it is ready
    (calls into a port not yet bound would get it ejected from web's cluster)."""
    admin = Ports.pick().api_public
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "proconsul.proxy", "-proxy-id", proxy_id, "-service", service],
        *["-grpc-addr", world.mesh.address, "-admin-bind", f"127.0.0.1:{admin}"],
        *["-log-level", "warn"],
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    world.processes.append(proc)  # stop_world kills it if the test did not stop it
    ready = await wait_for_async_result(
        lambda: fetch(f"http://127.0.0.1:{admin}/ready"), lambda r: r[0] == 200, 20
    )
    assert ready[2] == "LIVE\n"
    return proc, admin


async def test_the_proxy_as_a_process_serves_and_stops_on_sigterm(http_world: World) -> None:
    """`python -m proconsul.proxy` in place of api's in-process sidecar."""
    world = http_world
    await world.api.close()
    world.api = None  # type: ignore[assignment]
    proc, _ = await proxy_process(world, "api-sidecar-proxy", "api")
    try:
        status, _, body = await fetch(world.upstream_url)
        assert status == 200 and '"name": "api"' in body
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert proc.stderr is not None
        assert b"Traceback" not in await proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_root_rotation_applies_to_the_next_handshake(http_world: World) -> None:
    world = http_world
    loop = asyncio.get_running_loop()
    port = world.ports.api_public
    new_ca = mesh_ca(seed=3)

    async def answer(ca: MeshCA) -> bytes:
        return await loop.run_in_executor(None, raw_exchange, port, client_context(ca, "web"))

    assert await answer(new_ca) == b""  # not trusted yet
    snap = world.publish_api(ALLOW_WEB)
    world.mesh.publish(dataclasses.replace(snap, roots=(CA.root, new_ca.root)))
    await wait_for_async_result(lambda: answer(new_ca), lambda r: r.startswith(b"HTTP/1.1 200"))
    assert (await answer(CA)).startswith(b"HTTP/1.1 200")  # both roots now
    kept = aiohttp.ClientSession()  # an established mTLS connection web -> api
    try:
        async with kept.get(world.upstream_url) as r:
            assert r.status == 200
        # The old root goes: the listener is rebound with a fresh context.
        rotated = dataclasses.replace(snap, roots=(new_ca.root,), leaf=new_ca.leaf("api"))
        world.mesh.publish(rotated)
        await wait_for_async_result(lambda: answer(CA), lambda r: r == b"")
        assert (await answer(new_ca)).startswith(b"HTTP/1.1 200")
        async with kept.get(world.upstream_url) as r:  # web's pooled connection stays
            assert r.status == 200
    finally:
        await kept.close()


async def failing_demo(world: World, name: str, black_hole: socket.socket) -> Demo:
    """A demo whose upstream never answers: every GET is a 500 after 50ms."""
    demo = await start_demo(
        "-name",
        name,
        "-upstream",
        f"127.0.0.1:{black_hole.getsockname()[1]}",
        "-upstream-timeout",
        "50ms",
    )
    world.extra.append(demo)
    return demo


async def test_retries_on_5xx_and_route_timeouts(http_world: World) -> None:
    world = http_world
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen()
    try:
        failing = await failing_demo(world, "failing", black_hole)
        router = entries(
            {"Kind": "service-defaults", "Name": "api", "Protocol": "http"},
            {
                "Kind": "service-router",
                "Name": "api",
                "Routes": [
                    {
                        "Match": {"HTTP": {"PathPrefix": "/slow"}},
                        "Destination": {"RequestTimeout": "20ms"},
                    },
                    {
                        "Match": {"HTTP": {"PathPrefix": "/"}},
                        "Destination": {"NumRetries": 2, "RetryOnStatusCodes": [500]},
                    },
                ],
            },
        )
        world.mesh.publish(web_snapshot(CA, world.ports, chain=router))
        world.mesh.publish(
            api_snapshot(
                CA, world.ports.api_public, port_of(failing), protocol="http", ixns=ALLOW_WEB
            )
        )
        cluster = f"api.default.dc1.internal.{TRUST_DOMAIN}"
        await wait_for_async_result(
            lambda: fetch(world.upstream_url + "/slow"), lambda r: r[0] == 504
        )
        assert (await fetch(world.upstream_url + "/slow"))[2] == "upstream request timeout"
        stats = world.web.runtime.stats.clusters[cluster]
        retries = stats.upstream_rq_retry
        status, _, body = await fetch(world.upstream_url + "/x")
        assert status == 500 and '"failing"' in body
        assert stats.upstream_rq_retry == retries + 2  # three tries in all
    finally:
        black_hole.close()


async def test_outlier_ejection_on_consecutive_5xx(http_world: World) -> None:
    world = http_world
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen()
    try:
        failing = await failing_demo(world, "failing", black_hole)
        public2 = Ports.pick().api_public
        world.mesh.publish(
            api_snapshot(
                CA,
                public2,
                port_of(failing),
                protocol="http",
                ixns=ALLOW_WEB,
                proxy_id="failing-sidecar-proxy",
            )
        )
        handle = await start_proxy(world.mesh, "failing-sidecar-proxy", "api")
        world.handles.append(handle)
        await both_ready(handle)
        rows = [
            instance("api", "127.0.0.1", world.ports.api_public, node="n1"),
            instance("api", "127.0.0.1", public2, node="n2"),
        ]
        world.mesh.publish(
            web_snapshot(CA, world.ports, chain=HTTP_API, endpoints={API_TARGET: rows})
        )
        cluster = f"api.default.dc1.internal.{TRUST_DOMAIN}"
        await wait_for_async(lambda: len(world.web.runtime.clusters.balancers[cluster].states) == 2)
        statuses = [(await fetch(world.upstream_url))[0] for _ in range(30)]
        assert statuses.count(500) == 5  # the fifth 5xx in a row ejects it (Envoy's default)
        assert statuses[-15:] == [200] * 15
        assert world.web.runtime.stats.clusters[cluster].ejections == 1
    finally:
        black_hole.close()


def half_closed_exchange(port: int) -> bytes:
    """An HTTP/1.0 request, then shutdown(SHUT_WR); everything until the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /half HTTP/1.0\r\nhost: api\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


async def test_tcp_half_close_keeps_the_answer(tcp_world: World) -> None:
    loop = asyncio.get_running_loop()
    answer = await loop.run_in_executor(None, half_closed_exchange, tcp_world.ports.web_upstream)
    assert answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.0 200"), answer[:80]
    assert b'"uri": "/half"' in answer


class EchoHead(asyncio.Protocol):
    """A local app that answers each request with the request's head as its body."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(head) + head
            )


async def test_public_listener_forwards_the_client_certificate(http_world: World) -> None:
    world = http_world
    server = await asyncio.get_running_loop().create_server(EchoHead, "127.0.0.1", 0)
    try:
        echo_port = server.sockets[0].getsockname()[1]
        world.mesh.publish(
            api_snapshot(CA, world.ports.api_public, echo_port, protocol="http", ixns=ALLOW_WEB)
        )
        loop = asyncio.get_running_loop()
        context = client_context(CA, "web")

        async def answer() -> bytes:
            return await loop.run_in_executor(None, raw_exchange, world.ports.api_public, context)

        reply = await wait_for_async_result(answer, lambda r: b"x-forwarded-client-cert" in r)
        header = next(
            line for line in reply.split(b"\r\n") if line.startswith(b"x-forwarded-client-cert")
        ).decode()
        spiffe = f"spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc"
        assert f"By={spiffe}/api;Hash=" in header and header.endswith(f"URI={spiffe}/web")
        assert 'Cert="-----BEGIN%20CERTIFICATE-----' in header and 'Subject="CN=web"' in header
    finally:
        server.close()


async def test_connect_timeout_is_the_resolvers(tcp_world: World) -> None:
    """An endpoint that takes the TCP connection but never answers TLS: a connect
    failure after the resolver's ConnectTimeout, counted."""
    world = tcp_world
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen()
    try:
        chain = entries({"Kind": "service-resolver", "Name": "api", "ConnectTimeout": "300ms"})
        rows = {API_TARGET: [instance("api", "127.0.0.1", black_hole.getsockname()[1])]}
        world.mesh.publish(web_snapshot(CA, world.ports, chain=chain, endpoints=rows))
        cluster = f"api.default.dc1.internal.{TRUST_DOMAIN}"
        await wait_for_async(
            lambda: world.web.runtime.clusters.configs[cluster].connect_timeout_s == 0.3
        )
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        request = b"GET / HTTP/1.1\r\nhost: api\r\n\r\n"
        port = world.ports.web_upstream
        closed = await loop.run_in_executor(None, raw_http, port, request, b"never")
        assert closed == b""  # tcp: the connection is closed
        assert 0.25 < time.monotonic() - started < 2.0
        assert world.web.runtime.stats.clusters[cluster].upstream_cx_connect_fail == 1
    finally:
        black_hole.close()


async def test_absolute_urls_and_garbage_requests(http_world: World) -> None:
    loop = asyncio.get_running_loop()
    port = http_world.ports.web_upstream
    absolute = b"GET http://api/abs?x=1 HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n"
    answer = await loop.run_in_executor(None, raw_http, port, absolute, b"never")
    assert answer.startswith(b"HTTP/1.1 200") and b'"uri": "/abs?x=1"' in answer
    garbage = await loop.run_in_executor(None, raw_http, port, b"\x00\x01 nonsense\r\n\r\n", b"x")
    assert garbage.startswith(b"HTTP/1.1 400")
    status, _, _ = await fetch(http_world.upstream_url)  # and the proxy serves on
    assert status == 200
