"""Bad input to the HTTP API is refused with a 400 and a reason, never a 500 or a traceback.

Real dev agents on real sockets: JSON bodies nested far too deep on every route
that decodes one, `?index`/`?wait`/`?cas`/`?flags` outside what Consul parses
(an unsigned 64-bit number, a Go duration), and requests that are not HTTP at
all, sent on raw sockets. After each, the agent still answers and its log holds
no traceback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.agent_process import AgentProcess, read_until_closed, start_agent

# Deeper than any real body, and deep enough to exhaust Python's recursion
# limit in a recursive walk (about 1000 frames).
DEEP = 600

BODY_ROUTES = [
    ("PUT", "/v1/catalog/register"),
    ("PUT", "/v1/catalog/deregister"),
    ("PUT", "/v1/agent/service/register"),
    ("PUT", "/v1/agent/check/register"),
    ("PUT", "/v1/agent/check/update/some-check"),
    ("PUT", "/v1/operator/keyring"),
    ("POST", "/v1/operator/keyring"),
    ("DELETE", "/v1/operator/keyring"),
    ("PUT", "/v1/config"),
]

BLOCKING_READS = [
    "/v1/kv/missing",
    "/v1/catalog/services",
    "/v1/health/service/web",
    "/v1/event/list",
]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    tmp: Path = tmp_path_factory.mktemp("http-bad-input")
    process = start_agent(tmp)
    try:
        yield process
        assert "Traceback" not in process.log_text()
    finally:
        process.stop()


def deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int) -> str:
    return '{"Node":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("body", [deep_array(DEEP), deep_object(DEEP)], ids=["array", "object"])
def test_deeply_nested_json_is_a_400(
    agent: AgentProcess, method: str, path: str, body: str
) -> None:
    status, _, raw = agent.request(method, path, body)
    assert status == 400, raw[:200]
    assert raw.startswith(b"Request decode failed:"), raw[:200]
    assert b"Internal error" not in raw
    assert agent.request("GET", "/v1/status/leader")[0] == 200


def test_json_nested_within_the_limit_is_still_decoded(agent: AgentProcess) -> None:
    """Opaque user data (a service's Meta, a proxy's Config) may nest a little."""
    config: object = {"leaf": 1}
    for _ in range(20):
        config = {"level": config}
    service = {"Name": "nested", "Port": 1, "Proxy": {"Config": config}}
    status, _, raw = agent.request("PUT", "/v1/agent/service/register", service)
    assert status == 200, raw
    assert "nested" in agent.get_json("/v1/agent/services")


@pytest.mark.parametrize("path", BLOCKING_READS)
@pytest.mark.parametrize(
    "index",
    ["-1", str(2**64), str(2**70), "1.5", "+1", "1_000", "0x10", "%201", "abc", "%D9%A3"],
)
def test_an_index_that_is_not_a_uint64_is_a_400(agent: AgentProcess, path: str, index: str) -> None:
    # The wait is short so an unfixed agent that blocks answers, wrongly, within the timeout.
    status, _, raw = agent.request("GET", f"{path}?index={index}&wait=2s", timeout_s=5)
    assert (status, raw) == (400, b"Invalid index")


@pytest.mark.parametrize("path", BLOCKING_READS)
@pytest.mark.parametrize(
    "wait",
    ["-1s", "-0.5ms", "abc", "10", "1e3s", "5%20s", "%D9%A3s", "9" * 30 + "h", "3000000h"],
)
def test_a_wait_that_is_not_a_go_duration_is_a_400(
    agent: AgentProcess, path: str, wait: str
) -> None:
    status, _, raw = agent.request("GET", f"{path}?index=1&wait={wait}", timeout_s=5)
    assert (status, raw) == (400, b"Invalid wait time")


def test_the_largest_index_and_a_capped_wait_are_accepted(agent: AgentProcess) -> None:
    status, headers, _ = agent.request(
        "GET", f"/v1/kv/missing?index={2**64 - 1}&wait=100ms", timeout_s=5
    )
    assert status == 404
    assert int(headers["X-Consul-Index"]) >= 1
    # Consul caps a wait at 10 minutes rather than refusing a longer one.
    status, _, _ = agent.request("GET", "/v1/kv/missing?wait=1000h", timeout_s=5)
    assert status == 404


@pytest.mark.parametrize(
    "query", ["cas=-1", f"cas={2**64}", "cas=abc", f"flags={2**64}", "flags=-1"]
)
def test_kv_cas_and_flags_are_uint64(agent: AgentProcess, query: str) -> None:
    status, _, raw = agent.request("PUT", f"/v1/kv/fuzzed?{query}", b"value")
    name = query.partition("=")[0]
    assert status == 400, raw
    assert raw.startswith(f"Invalid {name} value".encode()), raw
    assert agent.request("GET", "/v1/kv/fuzzed")[0] == 404


# Requests that are not HTTP, or not valid HTTP, each refused by the HTTP parser
# before any handler runs. A case is sent in parts, each after the answer to
# the one before (a good request first makes the garbage a second request).
MALFORMED: dict[str, list[bytes]] = {
    "header-without-colon": [b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"],
    "bad-content-length": [b"PUT /v1/kv/m HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"],
    "two-content-lengths": [
        b"PUT /v1/kv/m HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    ],
    "bad-version": [b"GET /v1/status/leader HTTP/9.Z\r\nHost: x\r\n\r\n"],
    "control-char-in-header": [b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"],
    "request-line-too-long": [b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"],
    "garbage-after-a-good-request": [
        b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x01garbage\xff\r\n\r\n",
    ],
    "tls-hello-on-plain-http": [bytes.fromhex("16030100a5010000a10303") + b"\x00" * 40],
    "bad-chunk-size": [
        b"PUT /v1/kv/m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nab\r\n0\r\n\r\n"
    ],
}


def exchange(agent: AgentProcess, parts: list[bytes], deadline_s: float) -> tuple[bytes, bool]:
    """Send `parts` on one raw connection, each after the answer to the one
    before; then read until the agent closes it or the deadline passes."""
    with agent.connect() as sock:
        for part in parts[:-1]:
            sock.sendall(part)
            sock.settimeout(deadline_s)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.sendall(parts[-1])
        return read_until_closed(sock, deadline_s)


def test_malformed_requests_are_counted_not_logged_as_tracebacks(
    dev_agent: AgentProcess,
) -> None:
    before = dev_agent.metric("consul.http.malformed_requests")
    for name, parts in MALFORMED.items():
        received, closed = exchange(dev_agent, parts, deadline_s=5.0)
        assert closed, name
        # aiohttp answers in HTTP/1.0 when it could not read the request's version.
        assert re.match(rb"HTTP/1\.[01] 400 ", received), (name, received[:300])
        assert b"Internal" not in received, (name, received[:300])
    assert dev_agent.request("GET", "/v1/status/leader")[0] == 200
    after = dev_agent.metric("consul.http.malformed_requests")
    assert after - before == len(MALFORMED)
    log = dev_agent.log_text()
    assert "Traceback" not in log
    assert "Error handling request" not in log
    assert dev_agent.request("GET", "/v1/kv/m")[0] == 404  # written by none of them


def test_a_body_that_breaks_off_mid_way_is_refused_in_time(dev_agent: AgentProcess) -> None:
    """A chunked body whose framing breaks after its handler started reading.

    aiohttp's C parser then drops the body without failing its reader, so the
    handler waiting on it ends at the body deadline (408); its Python parser
    fails the read at once (400). Either way the connection closes in time.
    """
    with dev_agent.connect() as sock:
        sock.sendall(
            b"PUT /v1/kv/m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        # Nothing outside the agent shows that the handler is reading: give it a moment.
        time.sleep(0.5)
        sock.sendall(b"zz\r\nab\r\n0\r\n\r\n")
        received, closed = read_until_closed(sock, deadline_s=12.0)
    assert closed
    assert re.match(rb"HTTP/1\.[01] (400|408) ", received), received[:300]
    assert dev_agent.request("GET", "/v1/kv/m")[0] == 404
    assert "Traceback" not in dev_agent.log_text()
