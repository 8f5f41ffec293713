"""HTTP connections that would hold an agent: bodies that never arrive, and
blocking queries still waiting when the agent is told to stop.

Real dev agents and raw sockets. A request whose body stalls is answered 408
and closed within the body deadline (http/server.py), and the agent serves
others meanwhile; SIGTERM stops an agent within a few seconds however many
blocking queries it holds, whether their clients are still there or gone.
"""

from __future__ import annotations

import signal
import subprocess
import time

from tests.agent_process import AgentProcess, read_until_closed, wait_for

# Bodies are announced as 1000 bytes: their deadline is the base of 5 s plus
# a negligible share for the length (http/server.py); the rest is slack for a
# loaded machine.
STALLED_BODY_DEADLINE_S = 12.0
STALLED_ROUTES = [
    "/v1/kv/stalled",
    "/v1/agent/service/register",
    "/v1/catalog/register",
    "/v1/agent/check/update/some-check",
    "/v1/event/fire/stalled",
]
STOP_DEADLINE_S = 5.0


def test_a_body_that_stalls_is_answered_408_and_closed(dev_agent: AgentProcess) -> None:
    sockets = []
    for number in range(40):
        path = STALLED_ROUTES[number % len(STALLED_ROUTES)]
        sock = dev_agent.connect()
        head = f"PUT {path} HTTP/1.1\r\nHost: agent\r\nContent-Length: 1000\r\n\r\n"
        sock.sendall(head.encode() + b"abc")  # 3 of the 1000 bytes, then nothing
        sockets.append(sock)
    started = time.monotonic()
    # Meanwhile the agent serves everyone else.
    assert dev_agent.request("GET", "/v1/status/leader", timeout_s=2)[0] == 200
    for sock in sockets:
        with sock:
            remaining = STALLED_BODY_DEADLINE_S - (time.monotonic() - started)
            received, closed = read_until_closed(sock, max(remaining, 0.1))
            assert closed, f"still open after {time.monotonic() - started:.1f}s: {received!r}"
            assert received.startswith(b"HTTP/1.1 408 "), received[:200]
            assert b"Connection: close" in received
    assert dev_agent.request("GET", "/v1/kv/stalled")[0] == 404
    assert "stalled" not in dev_agent.get_json("/v1/agent/services")
    assert "Traceback" not in dev_agent.log_text()


def test_a_slow_but_steady_body_is_read(dev_agent: AgentProcess) -> None:
    with dev_agent.connect() as sock:
        body = b"x" * 1000
        sock.sendall(b"PUT /v1/kv/steady HTTP/1.1\r\nHost: agent\r\nContent-Length: 1000\r\n\r\n")
        for start in range(0, len(body), 250):
            sock.sendall(body[start : start + 250])
            time.sleep(0.3)  # a slow sender, on purpose
        sock.settimeout(5)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    status, _, value = dev_agent.request("GET", "/v1/kv/steady?raw")
    assert (status, value) == (200, body)


def test_sigterm_ends_waiting_blocking_queries_at_once(dev_agent: AgentProcess) -> None:
    _, headers, _ = dev_agent.request("GET", "/v1/kv/watched")
    index = headers["X-Consul-Index"]
    sockets = []
    for _ in range(20):
        sock = dev_agent.connect()
        request = f"GET /v1/kv/watched?index={index}&wait=5m HTTP/1.1\r\nHost: agent\r\n\r\n"
        sock.sendall(request.encode())
        sockets.append(sock)
    wait_for(lambda: dev_agent.metric("consul.state.blocking_queries") >= 20)
    # Half of the clients go away, as a fuzzer's or a crashed watcher's do.
    for sock in sockets[:10]:
        sock.close()
    started = time.monotonic()
    dev_agent.signal(signal.SIGTERM)
    try:
        code = dev_agent.proc.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"agent still running {STOP_DEADLINE_S}s after SIGTERM with blocking queries"
        ) from None
    elapsed = time.monotonic() - started
    assert code == 0, dev_agent.log_text()[-2000:]
    assert elapsed < STOP_DEADLINE_S
    for sock in sockets[10:]:
        with sock:
            _, closed = read_until_closed(sock, deadline_s=1.0)
            assert closed
    assert "Traceback" not in dev_agent.log_text()
