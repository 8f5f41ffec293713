"""Check monitors against real sockets on 127.0.0.1: HTTP, TCP and TTL.

No sleeps: every test waits for the reports it expects, with a deadline.
Intervals are 50ms (the runner's 1s floor is lowered with `min_interval`).
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proconsul.checks.runner import CheckMonitor, CheckRunnerSet, make_monitor
from proconsul.checks.status import CRITICAL, OUTPUT_MAX_SIZE, PASSING, WARNING
from proconsul.structs.definitions import CheckDefinition
from proconsul.structs.duration import dec_hook

pytestmark = pytest.mark.filterwarnings("error")

FAST = 0.01  # interval floor for tests
DEADLINE = 10.0


def definition(**fields: Any) -> CheckDefinition:
    fields.setdefault("interval", "50ms")
    return msgspec.convert(fields, CheckDefinition, dec_hook=dec_hook)


@dataclass
class Seen:
    method: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Target:
    """An HTTP server whose answer the test controls."""

    status: int = 200
    text: str = "healthy"
    hang: bool = False
    seen: list[Seen] = field(default_factory=list)
    served: dict[int, int] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    def url(self, path: str = "/health") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def health(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(Seen(request.method, list(request.headers.items()), body))
        self.arrived.set()
        if self.hang:
            await self.release.wait()
        self.served[self.status] = self.served.get(self.status, 0) + 1
        return web.Response(status=self.status, text=self.text)

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/health")


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    state = Target()
    app = web.Application()
    app.router.add_route("*", "/health", state.health)
    app.router.add_get("/redirect", state.redirect)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    yield state
    state.release.set()
    await runner.cleanup()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Reports:
    """Collects report() calls and lets a test wait for a condition on them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []
        self.snapshots: list[Any] = []
        self.snapshot: Callable[[], Any] = lambda: None
        self._changed = asyncio.Event()

    def __call__(self, check_id: str, status: str, output: str) -> None:
        self.items.append((check_id, status, output))
        self.snapshots.append(self.snapshot())
        self._changed.set()

    @property
    def statuses(self) -> list[str]:
        return [status for _, status, _ in self.items]

    async def wait(self, predicate: Callable[[list[tuple[str, str, str]]], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            while not predicate(self.items):
                self._changed.clear()
                await self._changed.wait()

    async def wait_count(self, count: int) -> None:
        await self.wait(lambda items: len(items) >= count)


@pytest.fixture
async def monitors() -> AsyncIterator[list[CheckMonitor]]:
    started: list[CheckMonitor] = []
    yield started
    for monitor in started:
        await monitor.stop()
    gc.collect()


def run(
    monitors: list[CheckMonitor],
    check: CheckDefinition,
    reports: Callable[[str, str, str], None],
    **kwargs: Any,
) -> CheckMonitor:
    monitor = make_monitor("c1", check, reports, min_interval=FAST, **kwargs)
    monitors.append(monitor)
    monitor.start()
    return monitor


async def test_http_passing(target: Target, monitors: list[CheckMonitor]) -> None:
    reports = Reports()
    run(monitors, definition(http=target.url()), reports)
    await reports.wait_count(1)
    expected = f"HTTP GET {target.url()}: 200 OK Output: healthy"
    assert reports.items[0] == ("c1", PASSING, expected)


@pytest.mark.parametrize(
    ("code", "status", "phrase"),
    [
        (429, WARNING, "429 Too Many Requests"),
        (500, CRITICAL, "500 Internal Server Error"),
        (404, CRITICAL, "404 Not Found"),
        (204, PASSING, "204 No Content"),
    ],
)
async def test_http_status_codes(
    target: Target, monitors: list[CheckMonitor], code: int, status: str, phrase: str
) -> None:
    target.status = code
    reports = Reports()
    run(monitors, definition(http=target.url()), reports)
    await reports.wait_count(1)
    _, got_status, output = reports.items[0]
    assert got_status == status
    assert output.startswith(f"HTTP GET {target.url()}: {phrase} Output: ")


async def test_http_connection_refused(monitors: list[CheckMonitor]) -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}/health"
    reports = Reports()
    run(monitors, definition(http=url), reports)
    await reports.wait_count(1)
    assert reports.items[0] == (
        "c1",
        CRITICAL,
        f'Get "{url}": dial tcp 127.0.0.1:{port}: connect: connection refused',
    )


async def test_http_timeout(target: Target, monitors: list[CheckMonitor]) -> None:
    target.hang = True
    reports = Reports()
    run(monitors, definition(http=target.url(), timeout="100ms"), reports)
    await reports.wait_count(1)
    _, status, output = reports.items[0]
    assert status == CRITICAL
    assert output == (
        f'Get "{target.url()}": context deadline exceeded'
        " (Client.Timeout exceeded while awaiting headers)"
    )


async def test_http_sends_method_headers_and_body(
    target: Target, monitors: list[CheckMonitor]
) -> None:
    reports = Reports()
    check = definition(
        http=target.url(),
        method="POST",
        header={"X-Check": ["a", "b"], "Content-Type": ["application/json"]},
        body='{"method":"health"}',
    )
    run(monitors, check, reports)
    await reports.wait_count(1)
    seen = target.seen[0]
    assert seen.method == "POST"
    assert seen.body == b'{"method":"health"}'
    assert [v for k, v in seen.headers if k.lower() == "x-check"] == ["a", "b"]
    assert ("Content-Type", "application/json") in seen.headers
    assert ("User-Agent", "Consul Health Check") in seen.headers
    assert reports.items[0][2].startswith(f"HTTP POST {target.url()}: 200 OK")


async def test_http_output_keeps_last_4kb(target: Target, monitors: list[CheckMonitor]) -> None:
    target.text = "".join(f"{i:05d}\n" for i in range(2000))
    reports = Reports()
    run(monitors, definition(http=target.url()), reports)
    await reports.wait_count(1)
    output = reports.items[0][2]
    assert output.endswith(target.text[-OUTPUT_MAX_SIZE:])
    assert output.split(" Output: ", 1)[1] == target.text[-OUTPUT_MAX_SIZE:]


@pytest.mark.parametrize(("disable", "status"), [(False, PASSING), (True, CRITICAL)])
async def test_http_redirects(
    target: Target, monitors: list[CheckMonitor], disable: bool, status: str
) -> None:
    reports = Reports()
    run(monitors, definition(http=target.url("/redirect"), disable_redirects=disable), reports)
    await reports.wait_count(1)
    assert reports.items[0][1] == status
    if disable:
        assert "302 Found" in reports.items[0][2]


async def test_success_before_passing_from_start(
    target: Target, monitors: list[CheckMonitor]
) -> None:
    reports = Reports()
    reports.snapshot = lambda: target.served.get(200, 0)
    run(monitors, definition(http=target.url(), success_before_passing=3), reports)
    await reports.wait_count(1)
    assert reports.statuses == [PASSING]
    assert reports.snapshots[0] == 3


async def test_primed_reports_first_result_at_once(
    target: Target, monitors: list[CheckMonitor]
) -> None:
    reports = Reports()
    reports.snapshot = lambda: target.served.get(200, 0)
    check = definition(http=target.url(), success_before_passing=3)
    run(monitors, check, reports, primed=True)
    await reports.wait_count(1)
    assert reports.statuses == [PASSING]
    assert reports.snapshots[0] == 1


async def test_success_before_passing(target: Target, monitors: list[CheckMonitor]) -> None:
    target.status = 500
    reports = Reports()
    reports.snapshot = lambda: target.served.get(200, 0)
    run(monitors, definition(http=target.url(), success_before_passing=3), reports)
    await reports.wait_count(1)
    assert reports.statuses == [CRITICAL]
    target.status = 200
    await reports.wait(lambda items: items[-1][1] == PASSING)
    first_passing = reports.statuses.index(PASSING)
    assert set(reports.statuses[:first_passing]) == {CRITICAL}
    assert reports.snapshots[first_passing] == 3


async def test_failures_before_critical(target: Target, monitors: list[CheckMonitor]) -> None:
    reports = Reports()
    reports.snapshot = lambda: target.served.get(500, 0)
    run(monitors, definition(http=target.url(), failures_before_critical=3), reports)
    await reports.wait_count(1)
    assert reports.statuses == [PASSING]
    target.status = 500
    await reports.wait(lambda items: items[-1][1] == CRITICAL)
    first_critical = reports.statuses.index(CRITICAL)
    assert set(reports.statuses[:first_critical]) == {PASSING}
    assert reports.snapshots[first_critical] == 3


async def test_failures_before_warning(target: Target, monitors: list[CheckMonitor]) -> None:
    reports = Reports()
    check = definition(http=target.url(), failures_before_warning=1, failures_before_critical=3)
    run(monitors, check, reports)
    await reports.wait_count(1)
    target.status = 503
    await reports.wait(lambda items: items[-1][1] == CRITICAL)
    after = reports.statuses[1 : reports.statuses.index(CRITICAL) + 1]
    assert after[-3:] == [WARNING, WARNING, CRITICAL]
    # A warning reached through failures keeps the failing probe's output.
    assert "503 Service Unavailable" in reports.items[-2][2]


async def test_tcp_passing(target: Target, monitors: list[CheckMonitor]) -> None:
    address = f"127.0.0.1:{target.port}"
    reports = Reports()
    run(monitors, definition(tcp=address), reports)
    await reports.wait_count(1)
    assert reports.items[0] == ("c1", PASSING, f"TCP connect {address}: Success")


async def test_tcp_refused(monitors: list[CheckMonitor]) -> None:
    address = f"127.0.0.1:{closed_port()}"
    reports = Reports()
    run(monitors, definition(tcp=address), reports)
    await reports.wait_count(1)
    assert reports.items[0] == ("c1", CRITICAL, f"dial tcp {address}: connect: connection refused")


async def test_tcp_bad_address(monitors: list[CheckMonitor]) -> None:
    reports = Reports()
    run(monitors, definition(tcp="localhost"), reports)
    await reports.wait_count(1)
    assert reports.items[0][1:] == (
        CRITICAL,
        "dial tcp: address localhost: missing port in address",
    )


async def test_ttl_set_status_and_expiry(monitors: list[CheckMonitor]) -> None:
    reports = Reports()
    monitor = run(monitors, definition(ttl="100ms", interval=None), reports)
    await reports.wait_count(1)
    assert reports.items[0] == ("c1", CRITICAL, "TTL expired")
    monitor.set_status(PASSING, "all good")
    assert reports.items[1] == ("c1", PASSING, "all good")
    # The update re-armed the timer, so the check expires again, quoting it.
    await reports.wait_count(3)
    assert reports.items[2] == (
        "c1",
        CRITICAL,
        "TTL expired (last output before timeout follows): all good",
    )


async def test_ttl_rejects_bad_status_and_other_kinds_reject_set_status(
    target: Target, monitors: list[CheckMonitor]
) -> None:
    reports = Reports()
    ttl = run(monitors, definition(ttl="10s", interval=None), reports)
    with pytest.raises(ValueError, match="invalid check status"):
        ttl.set_status("fine", "")
    http = run(monitors, definition(http=target.url()), reports)
    with pytest.raises(ValueError, match='CheckID "c1" does not have associated TTL'):
        http.set_status(PASSING, "")


async def test_alias_monitor_is_passive(monitors: list[CheckMonitor]) -> None:
    reports = Reports()
    monitor = run(monitors, definition(alias_service="web", interval=None), reports)
    assert monitor.kind == "alias"
    assert monitor.running
    monitor.set_status(WARNING, "aliased service is warning")
    assert reports.items == [("c1", WARNING, "aliased service is warning")]


async def test_stop_mid_probe_is_prompt_and_final(
    target: Target, monitors: list[CheckMonitor]
) -> None:
    target.hang = True
    reports = Reports()
    monitor = run(monitors, definition(http=target.url(), timeout="30s"), reports)
    async with asyncio.timeout(DEADLINE):
        await target.arrived.wait()
    assert monitor.running
    async with asyncio.timeout(2.0):
        await monitor.stop()
        await monitor.stop()
    target.release.set()
    assert reports.items == []
    monitor.start()  # a stopped monitor stays stopped
    assert not monitor.running


async def test_no_report_after_stop(target: Target, monitors: list[CheckMonitor]) -> None:
    reports = Reports()
    monitor = run(monitors, definition(ttl="50ms", interval=None), reports)
    assert monitor.running
    await monitor.stop()
    assert not monitor.running
    monitor.set_status(PASSING, "late")
    assert reports.items == []


async def test_runner_set_shares_one_session(target: Target) -> None:
    runners = CheckRunnerSet(min_interval=FAST)
    first, second = Reports(), Reports()
    a = runners.make_monitor("a", definition(http=target.url()), first)
    b = runners.make_monitor("b", definition(http=target.url(), method="HEAD"), second)
    a.start()
    b.start()
    await first.wait_count(2)
    await second.wait_count(2)
    assert a._pool is b._pool  # type: ignore[attr-defined]
    assert second.items[0][2].startswith(f"HTTP HEAD {target.url()}: 200 OK")
    assert a.running and b.running
    await runners.close()
    assert not a.running and not b.running
    assert a.stats()["runs"] >= 2
    gc.collect()


async def test_report_callback_errors_do_not_stop_the_monitor(
    target: Target, monitors: list[CheckMonitor]
) -> None:
    reports = Reports()

    def flaky(check_id: str, status: str, output: str) -> None:
        reports(check_id, status, output)
        raise RuntimeError("consumer broke")

    run(monitors, definition(http=target.url()), flaky)
    await reports.wait_count(3)


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    dns_name: str | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if dns_name:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class TlsTarget:
    url: str
    ca_context: ssl.SSLContext


@pytest.fixture
async def tls_target(tmp_path: Any) -> AsyncIterator[TlsTarget]:
    """An HTTPS server whose certificate names only `example.test`, from a private CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("test CA", ca_key, None, ca_key, None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue("example.test", key, ca, ca_key, "example.test")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    ca_context = ssl.create_default_context(
        cadata=ca.public_bytes(serialization.Encoding.PEM).decode()
    )

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="secure")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    yield TlsTarget(f"https://127.0.0.1:{port}/health", ca_context)
    await runner.cleanup()


@pytest.mark.parametrize(
    ("fields", "use_ca", "status", "phrase"),
    [
        # Not trusted by the system's CAs.
        ({}, False, CRITICAL, "failed to verify certificate: unable to get local issuer"),
        ({"tls_skip_verify": True}, False, PASSING, "200 OK Output: secure"),
        # Trusted CA, but the certificate does not name 127.0.0.1.
        ({}, True, CRITICAL, "failed to verify certificate: IP address mismatch"),
        ({"tls_server_name": "example.test"}, True, PASSING, "200 OK Output: secure"),
        ({"tls_server_name": "other.test"}, True, CRITICAL, "Hostname mismatch"),
    ],
)
async def test_https_verification(
    tls_target: TlsTarget,
    monitors: list[CheckMonitor],
    fields: dict[str, Any],
    use_ca: bool,
    status: str,
    phrase: str,
) -> None:
    reports = Reports()
    context = tls_target.ca_context if use_ca else None
    run(monitors, definition(http=tls_target.url, **fields), reports, ssl_context=context)
    await reports.wait_count(1)
    assert reports.items[0][1] == status
    assert phrase in reports.items[0][2]
