"""Bad input to the HTTP API is refused with a 400 and a reason, never a 500 or a traceback.

A real dev agent on a real socket: JSON bodies nested far too deep on every
route that decodes one, and `?index`/`?wait`/`?cas`/`?flags` outside what
Consul parses (an unsigned 64-bit number, a Go duration). After each, the
agent still answers and its log holds no traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.agent_process import AgentProcess, start_agent

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
