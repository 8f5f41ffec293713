"""`proconsul demo service` as a real subprocess on 127.0.0.1.

Each instance listens on port 0 and the test reads the bound address from its
first stderr line; later stderr lines (the request log) are drained into a
list the test can wait on. No sleeps: every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
import pytest

from proconsul.checks.runner import make_monitor
from proconsul.checks.status import CRITICAL, PASSING
from proconsul.demo.command import parse_listen
from proconsul.demo.command import run as demo_run
from proconsul.demo.service import MAX_HOPS
from proconsul.structs.definitions import CheckDefinition
from proconsul.structs.duration import dec_hook

pytestmark = pytest.mark.filterwarnings("error")

DEADLINE = 20.0
LISTENING = re.compile(r"==> Demo service (\S+) listening on (\S+)")


class Demo:
    """One running demo-service process."""

    def __init__(self, proc: asyncio.subprocess.Process, address: str) -> None:
        self.proc = proc
        self.address = address
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._drain = asyncio.get_running_loop().create_task(self._read_stderr())

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode().rstrip("\n"))
            self._changed.set()

    async def wait_line(self, predicate: Callable[[str], bool]) -> str:
        async with asyncio.timeout(DEADLINE):
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                self._changed.clear()
                await self._changed.wait()

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signum)
        async with asyncio.timeout(DEADLINE):
            code = await self.proc.wait()
            await self._drain
        return code


async def start_demo(*args: str, env: dict[str, str] | None = None) -> Demo:
    listen = [] if env and "LISTEN_ADDR" in env else ["-listen", "127.0.0.1:0"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proconsul",
        "demo",
        "service",
        *listen,
        *args,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(DEADLINE):
            first = (await proc.stderr.readline()).decode()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    match = LISTENING.search(first)
    if match is None:
        await proc.wait()
        rest = (await proc.stderr.read()).decode()
        pytest.fail(f"demo service did not start: {first}{rest}")
    return Demo(proc, match.group(2))


@pytest.fixture
async def demos() -> AsyncIterator[Callable[..., Any]]:
    started: list[Demo] = []

    async def launch(*args: str, env: dict[str, str] | None = None) -> Demo:
        demo = await start_demo(*args, env=env)
        started.append(demo)
        return demo

    yield launch
    for demo in started:
        if demo.proc.returncode is None:
            demo.proc.kill()
        await demo.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as session:
        yield session


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def status_of(http: aiohttp.ClientSession, method: str, url: str) -> int:
    async with http.request(method, url) as response:
        await response.read()
        return response.status


async def test_root_names_itself(demos: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    api = await demos("-name", "api")
    code, body = await get_json(http, api.url + "/")
    assert code == 200
    assert body["name"] == "api"
    assert body["uri"] == "/"
    assert body["type"] == "HTTP"
    assert body["body"] == "Hello World"
    assert body["code"] == 200
    assert "127.0.0.1" in body["ip_addresses"]
    assert {"start_time", "end_time", "duration"} <= body.keys()
    assert "upstream_calls" not in body


async def test_message_flag(demos: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    api = await demos("-name", "api", "-message", "from the api")
    _, body = await get_json(http, api.url + "/anything?x=1")
    assert body["body"] == "from the api"
    assert body["uri"] == "/anything?x=1"


async def test_upstream_response_is_nested(
    demos: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    api = await demos("-name", "api", "-message", "api says hi")
    web = await demos("-name", "web", "-upstream", api.url)
    code, body = await get_json(http, web.url + "/")
    assert code == 200
    assert body["name"] == "web"
    nested = body["upstream_calls"][api.url]
    assert nested["name"] == "api"
    assert nested["body"] == "api says hi"
    assert nested["code"] == 200


async def test_fake_service_environment_variables(
    demos: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """A unit file written for fake-service (its NAME, MESSAGE, ...) runs as is."""
    api = await demos("-name", "api")
    port = closed_port()
    web = await demos(
        env={
            "NAME": "web",
            "MESSAGE": "from env",
            "LISTEN_ADDR": f"127.0.0.1:{port}",
            "UPSTREAM_URIS": f"{api.url}, {api.url}/again",
        }
    )
    assert web.url == f"http://127.0.0.1:{port}"
    code, body = await get_json(http, web.url + "/")
    assert code == 200 and body["name"] == "web" and body["body"] == "from env"
    assert sorted(body["upstream_calls"]) == [api.url, f"{api.url}/again"]
    flagged = await demos("-name", "flagged", env={"NAME": "ignored"})
    _, body = await get_json(http, flagged.url + "/")
    assert body["name"] == "flagged"  # a flag beats its variable


async def test_upstream_without_scheme_and_chain(
    demos: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    db = await demos("-name", "db")
    api = await demos("-name", "api", "-upstream", db.address)
    web = await demos("-name", "web", "-upstream", api.url)
    _, body = await get_json(http, web.url + "/")
    nested_api = body["upstream_calls"][api.url]
    assert nested_api["upstream_calls"][db.url]["name"] == "db"


async def test_failed_upstream_gives_500(
    demos: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    api = await demos("-name", "api")
    dead = f"http://127.0.0.1:{closed_port()}"
    web = await demos("-name", "web", "-upstream", api.url, "-upstream", dead)
    code, body = await get_json(http, web.url + "/")
    assert code == 500
    assert body["code"] == 500
    assert body["upstream_calls"][api.url]["code"] == 200
    failed = body["upstream_calls"][dead]
    assert failed["code"] == -1
    assert "connection refused" in failed["error"]


async def test_unhealthy_upstream_gives_500(
    demos: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    # api's own upstream is dead, so api answers 500; a non-2xx upstream fails web too.
    api = await demos("-name", "api", "-upstream", "http://127.0.0.1:1")
    web = await demos("-name", "web", "-upstream", api.url)
    code, body = await get_json(http, web.url + "/")
    assert code == 500
    assert body["upstream_calls"][api.url]["code"] == 500


async def test_slow_upstream_times_out(
    demos: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    # A listening socket that never answers: connect succeeds, the response never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        web = await demos("-name", "web", "-upstream", url, "-upstream-timeout", "200ms")
        code, body = await get_json(http, web.url + "/")
    assert code == 500
    assert body["upstream_calls"][url]["error"] == "upstream timed out after 0.2s"


async def test_upstream_loop_is_cut(demos: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    port = closed_port()
    me = f"http://127.0.0.1:{port}"
    await demos("-name", "loop", "-listen", f"127.0.0.1:{port}", "-upstream", me)
    code, body = await get_json(http, me + "/")
    assert code == 500
    depth = 0
    while "upstream_calls" in body:
        body = body["upstream_calls"][me]
        depth += 1
    assert body["code"] == 508
    assert body["error"] == "upstream loop detected"
    assert depth == MAX_HOPS


async def test_health_fail_and_recover(
    demos: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    api = await demos("-name", "api")
    assert await status_of(http, "GET", api.url + "/health") == 200
    assert await status_of(http, "POST", api.url + "/fail") == 200
    assert await status_of(http, "GET", api.url + "/health") == 500
    assert await status_of(http, "GET", api.url + "/health?wait=10m&index=99") == 500
    assert await status_of(http, "POST", api.url + "/recover") == 200
    assert await status_of(http, "GET", api.url + "/health") == 200
    assert await status_of(http, "PUT", api.url + "/health/fail") == 200
    assert await status_of(http, "HEAD", api.url + "/health") == 500
    assert await status_of(http, "PUT", api.url + "/health/recover") == 200
    async with http.get(api.url + "/health") as response:
        assert (await response.text()).strip() == "OK"


async def test_fail_flag_starts_unhealthy(
    demos: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    api = await demos("-name", "api", "-fail")
    assert await status_of(http, "GET", api.url + "/health") == 500
    assert await status_of(http, "POST", api.url + "/recover") == 200
    assert await status_of(http, "GET", api.url + "/health") == 200


async def test_request_log_lines(demos: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    api = await demos("-name", "api")
    await status_of(http, "GET", api.url + "/health?probe=1")
    line = await api.wait_line(lambda text: "GET /health?probe=1" in text)
    assert re.search(r"\[INFO\] api: GET /health\?probe=1 200 \S+s$", line)


async def test_request_log_json(demos: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    api = await demos("-name", "api", "-log-json")
    await status_of(http, "POST", api.url + "/fail")
    line = await api.wait_line(lambda text: text.startswith("{"))
    record = json.loads(line)
    assert record["service"] == "api"
    assert (record["method"], record["path"], record["status"]) == ("POST", "/fail", 200)
    assert record["duration"].endswith("s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_exits_zero(
    demos: Callable[..., Any], http: aiohttp.ClientSession, signum: int
) -> None:
    api = await demos("-name", "api")
    assert await status_of(http, "GET", api.url + "/health") == 200
    assert await api.stop(signum) == 0
    assert any("stopped" in line for line in api.lines)


async def test_http_check_follows_demo_health(
    demos: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    api = await demos("-name", "api")
    reports: list[tuple[str, str]] = []
    changed = asyncio.Event()

    def report(check_id: str, status: str, output: str) -> None:
        reports.append((status, output))
        changed.set()

    async def wait_status(status: str) -> None:
        async with asyncio.timeout(DEADLINE):
            while not reports or reports[-1][0] != status:
                changed.clear()
                await changed.wait()

    check = msgspec.convert(
        {"http": api.url + "/health", "interval": "50ms", "timeout": "1s"},
        CheckDefinition,
        dec_hook=dec_hook,
    )
    monitor = make_monitor("api_check", check, report, min_interval=0.01)
    monitor.start()
    try:
        await wait_status(PASSING)
        assert reports[-1][1] == f"HTTP GET {api.url}/health: 200 OK Output: OK\n"
        await status_of(http, "POST", api.url + "/fail")
        await wait_status(CRITICAL)
        await status_of(http, "POST", api.url + "/recover")
        await wait_status(PASSING)
    finally:
        await monitor.stop()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "Missing required -name flag"),
        (["-name", "x", "-listen", "nowhere"], "invalid -listen address"),
        (["-name", "x", "-bogus"], "flag provided but not defined: -bogus"),
        (["-name", "x", "extra"], "Too many arguments"),
        (["-name", "x", "-upstream-timeout", "soon"], "invalid value"),
    ],
)
def test_usage_errors_exit_1(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo_run(argv) == 1
    assert message in capsys.readouterr().err


async def test_listen_address_in_use_exits_1(demos: Callable[..., Any]) -> None:
    api = await demos("-name", "api")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "proconsul", "demo", "service", "-name", "b", "-listen", api.address),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(DEADLINE):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"Error starting demo service" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":9090", ("0.0.0.0", 9090)),
        ("[::1]:8080", ("::1", 8080)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected
