"""The session API and the KV lock verbs on a dev agent, as a user sees them:
Consul's defaults and texts over HTTP, `kv put -acquire/-release -session`,
and `proconsul lock -timeout` giving up while another session holds the lock."""

from __future__ import annotations

import json
import subprocess

from tests.agent_process import AgentProcess, proconsul_cmd


def cli(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`proconsul <verb words> -http-addr <agent> <rest>`; verb words are the
    arguments before the first flag."""
    words = 0
    while words < len(args) and not args[words].startswith("-"):
        words += 1
    argv = proconsul_cmd(*args[:words], "-http-addr", agent.http_addr, *args[words:])
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def create(agent: AgentProcess, body: object = None) -> tuple[int, bytes]:
    status, _, reply = agent.request("PUT", "/v1/session/create", body)
    return status, reply


def test_session_http_api(dev_agent: AgentProcess) -> None:
    status, reply = create(dev_agent, {"Name": "web-lock", "TTL": "30s"})
    assert status == 200
    session_id = json.loads(reply)["ID"]
    (row,) = dev_agent.get_json(f"/v1/session/info/{session_id}")
    node = dev_agent.get_json("/v1/agent/self")["Config"]["NodeName"]
    assert row["Name"] == "web-lock" and row["Node"] == node
    assert (row["LockDelay"], row["Behavior"], row["TTL"]) == (15_000_000_000, "release", "30s")
    assert row["NodeChecks"] == ["serfHealth"]
    assert [s["ID"] for s in dev_agent.get_json(f"/v1/session/node/{node}")] == [session_id]
    assert dev_agent.get_json("/v1/session/info/no-such-session") == []

    assert create(dev_agent, {"TTL": "5s"}) == (
        400,
        b"Invalid Session TTL '5000000000', must be between [10s=24h0m0s]",
    )
    assert create(dev_agent, {"Behavior": "keep"}) == (400, b"Invalid Behavior setting 'keep'")
    assert create(dev_agent, {"NodeChecks": ["nope"]}) == (
        500,
        b"Missing check 'nope' registration",
    )
    status, _, reply = dev_agent.request("PUT", "/v1/session/renew/no-such-session")
    assert (status, reply) == (404, b"Session id 'no-such-session' not found")
    status, _, reply = dev_agent.request("PUT", f"/v1/session/renew/{session_id}")
    assert status == 200 and json.loads(reply)[0]["ID"] == session_id

    # The KV verbs with a session.
    taken = cli(dev_agent, "kv", "put", "-acquire", "-session", session_id, "locks/a", "mine")
    assert (taken.returncode, taken.stdout) == (0, "Success! Lock acquired on: locks/a\n")
    detailed = cli(dev_agent, "kv", "get", "-detailed", "locks/a").stdout
    assert f"Session          {session_id}" in detailed
    assert "LockIndex        1" in detailed

    # Another `lock` on the held key gives up at its timeout.
    other = json.loads(create(dev_agent)[1])["ID"]
    held = cli(dev_agent, "kv", "put", "-acquire", "-session", other, "locks/a", "theirs")
    assert (held.returncode, held.stderr) == (1, "Error! Did not acquire lock\n")
    status, _, _ = dev_agent.request(
        "PUT", f"/v1/kv/app/.lock?acquire={session_id}&flags=3304740253564472344"
    )
    assert status == 200
    waited = cli(dev_agent, "lock", "-timeout", "1s", "app", "true")
    assert waited.returncode == 1
    assert waited.stderr == "Shutdown triggered or timeout during lock acquisition\n"

    released = cli(dev_agent, "kv", "put", "-release", "-session", session_id, "locks/a", "x")
    assert (released.returncode, released.stdout) == (0, "Success! Lock released on: locks/a\n")
    status, _, reply = dev_agent.request("PUT", f"/v1/session/destroy/{session_id}")
    assert (status, reply.strip()) == (200, b"true")
    # Destroying the holder of app/.lock started its 15s lock-delay.
    assert cli(dev_agent, "lock", "-timeout", "1s", "app", "true").returncode == 1
