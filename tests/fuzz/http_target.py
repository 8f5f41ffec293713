"""One real agent as a fuzz target: send a request, check the property.

The property every fuzzed request must keep: the agent answers within
`REQUEST_TIMEOUT_S` (no hang) with a result or a clean refusal — a 4xx with
a message — and never a 500 "Internal error"; nothing it logs meanwhile is a
traceback. A 500 with a message of its own is the agent passing on a failure
Consul also answers 500 (a keyring operation the pool refused, no path to a
datacenter); a bad input never reaches one.

Requests go over `http.client`, one connection each, so an answer that
closes its connection cannot disturb the next example.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import settings

from tests.agent_process import AgentProcess

REQUEST_TIMEOUT_S = 15.0
# What the agent logs only when something it did not expect went wrong.
BUG_MARKERS = ("Traceback", "unexpected error", "Error handling request", "Unhandled exception")


def fuzz_settings() -> settings:
    """The HTTP tests' profile for HYPOTHESIS_PROFILE (conftest.py registers them)."""
    return settings.get_profile("http-" + os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def encode_body(body: bytes | str | Any) -> bytes | None:
    """Bytes as they are, text as UTF-8 (surrogates escaped), anything else as JSON."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    return json.dumps(body).encode("utf-8", "surrogatepass")


@dataclass
class Target:
    agent: AgentProcess
    token: str = ""
    _log_offset: int = 0

    def send(
        self,
        method: str,
        path: str,
        body: bytes | str | Any = None,
        query: Sequence[tuple[str, str]] = (),
    ) -> tuple[int, bytes]:
        """One request; `path` is quoted here, `query` encoded (repeats allowed)."""
        url = quote(path, safe="/", errors="surrogatepass")
        if query:
            url += "?" + urlencode(list(query), errors="surrogatepass")
        headers = {"X-Consul-Token": self.token} if self.token else {}
        conn = http.client.HTTPConnection(
            self.agent.host, self.agent.http_port, timeout=REQUEST_TIMEOUT_S
        )
        try:
            conn.request(method, url, body=encode_body(body), headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def check(
        self,
        method: str,
        path: str,
        body: bytes | str | Any = None,
        query: Sequence[tuple[str, str]] = (),
    ) -> tuple[int, bytes]:
        """`send`, then assert the property; returns the answer for finer checks."""
        status, answer = self.send(method, path, body, query)
        context = f"{method} {path} {query!r} -> {status} {answer[:300]!r}"
        assert status != 500 or answer.strip() not in (b"", b"Internal error"), context
        assert status <= 500, context
        if 400 <= status < 500 and not (status == 404 and method == "GET"):
            # A refusal says why (a GET's 404 is a result: nothing there).
            assert answer.strip(), context
        self.assert_healthy(context)
        return status, answer

    def new_log(self) -> str:
        """What the agent logged since the last call."""
        with open(self.agent.log_path, "rb") as log:
            log.seek(self._log_offset)
            data = log.read()
        self._log_offset += len(data)
        return data.decode(errors="replace")

    def assert_healthy(self, context: str = "") -> None:
        logged = self.new_log()
        for marker in BUG_MARKERS:
            assert marker not in logged, f"{context}\n{logged[-3000:]}"
        assert self.agent.proc.poll() is None, f"agent exited: {context}"
