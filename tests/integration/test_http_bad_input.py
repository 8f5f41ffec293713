"""Bad input to the HTTP API is refused with a 400 and a reason, never a 500 or a traceback.

A real dev agent on a real socket: JSON bodies nested far too deep on every
route that decodes one. After each, the agent still answers and its log holds
no traceback.
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
