"""The HTTP-API verbs against a scripted stand-in agent.

A tiny stdlib HTTP server records every request and answers from a script,
so these tests can see what the CLI sends (token header, query string, body)
and check how it renders answers and errors, independent of the real agent.
The CLI runs as a subprocess, exactly as a user runs it.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeAgent:
    """Answers `(method, path-without-query)` from `routes`; 404 otherwise."""

    server: ThreadingHTTPServer
    routes: dict[tuple[str, str], tuple[int, bytes]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    @property
    def addr(self) -> str:
        port = self.server.server_address[1]
        return f"127.0.0.1:{port}"

    def answer(self, method: str, path: str, body: Any, status: int = 200) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.routes[(method, path)] = (status, raw)


def start_fake(tls: ssl.SSLContext | None = None) -> FakeAgent:
    """Serve the scripted agent on a free loopback port, over TLS when given a context."""
    agent: FakeAgent

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            agent.seen.append(Seen(self.command, self.path, dict(self.headers), body))
            status, reply = agent.routes.get((self.command, self.path.split("?", 1)[0]), (404, b""))
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # failed TLS handshakes are part of the tests

    server = Server(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    agent = FakeAgent(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return agent


def stop_fake(agent: FakeAgent) -> None:
    agent.server.shutdown()
    agent.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeAgent]:
    agent = start_fake()
    yield agent
    stop_fake(agent)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any CONSUL_* settings of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update(extra)
    return env


def cli(
    *args: str, addr: str | None = None, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "proconsul", *args]
    if addr is not None:
        # Global API flags go right after the verb words, before other args.
        words = 2 if args[0] in ("kv", "catalog", "services") else 1
        argv = [*argv[:3], *args[:words], f"-http-addr={addr}", *args[words:]]
    return subprocess.run(
        argv, input=stdin, capture_output=True, env=env or clean_env(), timeout=60, check=False
    )


def out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode()


def err(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode()


# --------------------------------------------------------------------------- connection


def test_env_addr_and_token_are_used(fake: FakeAgent) -> None:
    fake.answer("PUT", "/v1/agent/reload", b"")
    env = clean_env(CONSUL_HTTP_ADDR=f"http://{fake.addr}", CONSUL_HTTP_TOKEN="env-secret")
    result = cli("reload", env=env)
    assert result.returncode == 0, err(result)
    assert out(result) == "Configuration reload triggered\n"
    assert fake.seen[0].method == "PUT"
    assert fake.seen[0].headers.get("X-Consul-Token") == "env-secret"


def test_token_flag_beats_env(fake: FakeAgent) -> None:
    fake.answer("PUT", "/v1/agent/leave", b"")
    env = clean_env(CONSUL_HTTP_ADDR=fake.addr, CONSUL_HTTP_TOKEN="env-secret")
    result = cli("leave", "-token=flag-secret", env=env)
    assert result.returncode == 0, err(result)
    assert out(result) == "Graceful leave complete\n"
    assert fake.seen[0].headers.get("X-Consul-Token") == "flag-secret"


def test_token_file_env(fake: FakeAgent, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-secret\n")
    fake.answer("GET", "/v1/catalog/datacenters", ["dc1", "dc2"])
    env = clean_env(CONSUL_HTTP_ADDR=fake.addr, CONSUL_HTTP_TOKEN_FILE=str(token_file))
    result = cli("catalog", "datacenters", env=env)
    assert out(result) == "dc1\ndc2\n"
    assert fake.seen[0].headers.get("X-Consul-Token") == "file-secret"


def test_no_token_sends_no_header(fake: FakeAgent) -> None:
    fake.answer("GET", "/v1/catalog/datacenters", ["dc1"])
    assert cli("catalog", "datacenters", addr=fake.addr).returncode == 0
    assert "X-Consul-Token" not in fake.seen[0].headers


def test_datacenter_and_stale_reach_the_query(fake: FakeAgent) -> None:
    fake.answer("GET", "/v1/catalog/services", {"consul": []})
    result = cli("catalog", "services", "-datacenter=dc2", "-stale", addr=fake.addr)
    assert out(result) == "consul\n"
    assert fake.seen[0].path == "/v1/catalog/services?dc=dc2&stale="


def test_permission_denied_is_shown_like_consul(fake: FakeAgent) -> None:
    fake.answer("GET", "/v1/kv/secret", b"Permission denied", status=403)
    result = cli("kv", "get", "secret", addr=fake.addr)
    assert result.returncode == 1
    assert err(result) == (
        "Error querying Consul agent: Unexpected response code: 403 (Permission denied)\n"
    )
    assert out(result) == ""


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("members", env=clean_env(CONSUL_HTTP_ADDR=f"127.0.0.1:{port}"))
    assert result.returncode == 1
    assert err(result) == (
        f'Error retrieving members: Get "http://127.0.0.1:{port}/v1/agent/members": '
        f"dial tcp 127.0.0.1:{port}: connect: connection refused\n"
    )


# --------------------------------------------------------------------------- usage errors


def test_unknown_flag_is_named() -> None:
    result = cli("kv", "get", "-bogus", "k")
    assert result.returncode == 1
    assert err(result).startswith("flag provided but not defined: -bogus\n")


def test_token_typo_gets_a_hint_without_echoing_the_secret() -> None:
    # The shell has already removed the quotes of token="..." by the time we see it.
    result = cli("catalog", "services", "token=800818ce-ccb5-11ba")
    assert result.returncode == 1
    assert "Did you mean -token=...?" in err(result)
    assert "800818ce" not in err(result)


def test_stray_argument_is_named() -> None:
    result = cli("members", "extra")
    assert result.returncode == 1
    assert 'unexpected argument "extra"' in err(result)


def test_flag_after_key_is_explained() -> None:
    result = cli("kv", "get", "k", "-detailed")
    assert result.returncode == 1
    assert "Too many arguments (expected 1, got 2)" in err(result)
    assert "Flags must come before arguments" in err(result)


def test_help_exits_zero() -> None:
    result = cli("kv", "put", "-h")
    assert result.returncode == 0
    assert "-modify-index" in out(result)


# --------------------------------------------------------------------------- verbs


def test_members_table_and_status_filter(fake: FakeAgent) -> None:
    member = {
        "Name": "node-1",
        "Addr": "127.0.0.1",
        "Port": 8301,
        "Tags": {"role": "consul", "dc": "dc1", "vsn": "2", "build": "1.16.0:abc"},
        "Status": 1,
    }
    fake.answer("GET", "/v1/agent/members", [member])
    result = cli("members", addr=fake.addr)
    assert out(result).splitlines() == [
        "Node    Address         Status  Type    Build   Protocol  DC   Partition  Segment",
        "node-1  127.0.0.1:8301  alive   server  1.16.0  2         dc1  default    <all>",
    ]
    result = cli("members", "-status=failed", addr=fake.addr)
    assert (result.returncode, out(result)) == (2, "")


def test_kv_put_sends_file_stdin_and_flags(fake: FakeAgent, tmp_path: Path) -> None:
    fake.answer("PUT", "/v1/kv/cfg/blob", b"true")
    payload = bytes(range(256))
    (tmp_path / "blob.bin").write_bytes(payload)
    result = cli("kv", "put", "-flags=42", "cfg/blob", f"@{tmp_path / 'blob.bin'}", addr=fake.addr)
    assert out(result) == "Success! Data written to: cfg/blob\n", err(result)
    assert fake.seen[-1].body == payload
    assert fake.seen[-1].path == "/v1/kv/cfg/blob?flags=42"
    result = cli("kv", "put", "cfg/blob", "-", addr=fake.addr, stdin=b"line one\nline two\n")
    assert result.returncode == 0
    assert fake.seen[-1].body == b"line one\nline two\n"


def test_kv_cas_failure(fake: FakeAgent) -> None:
    fake.answer("PUT", "/v1/kv/a", b"false")
    result = cli("kv", "put", "-cas", "-modify-index=7", "a", "v", addr=fake.addr)
    assert result.returncode == 1
    assert err(result) == "Error! Did not write to a: CAS failed\n"
    assert fake.seen[-1].path == "/v1/kv/a?cas=7"


def test_kv_put_failure_prefix(fake: FakeAgent) -> None:
    fake.answer("PUT", "/v1/kv/a", b"Permission denied", status=403)
    result = cli("kv", "put", "a", "v", addr=fake.addr)
    assert err(result) == (
        "Error! Failed writing data: Unexpected response code: 403 (Permission denied)\n"
    )


def test_services_register_file_sends_pascal_case(fake: FakeAgent, tmp_path: Path) -> None:
    fake.answer("PUT", "/v1/agent/service/register", b"")
    svc = tmp_path / "web.hcl"
    svc.write_text('service {\n  name = "web"\n  port = 9090\n  meta { team = "a" }\n}\n')
    result = cli("services", "register", str(svc), addr=fake.addr)
    assert out(result) == "Registered service: web\n", err(result)
    assert json.loads(fake.seen[-1].body) == {"Name": "web", "Port": 9090, "Meta": {"team": "a"}}


def test_services_register_flags(fake: FakeAgent) -> None:
    fake.answer("PUT", "/v1/agent/service/register", b"")
    result = cli(
        "services",
        "register",
        "-name=api",
        "-id=api-1",
        "-port=8080",
        "-tag=v1",
        "-tag=blue",
        "-meta=owner=me",
        addr=fake.addr,
    )
    assert out(result) == "Registered service: api\n", err(result)
    assert json.loads(fake.seen[-1].body) == {
        "Name": "api",
        "ID": "api-1",
        "Port": 8080,
        "Tags": ["v1", "blue"],
        "Meta": {"owner": "me"},
    }


def test_services_deregister_error_prefix(fake: FakeAgent) -> None:
    fake.answer("PUT", "/v1/agent/service/deregister/nope", b"Unknown service ID", status=404)
    result = cli("services", "deregister", "-id=nope", addr=fake.addr)
    assert result.returncode == 1
    assert err(result) == (
        'Error deregistering service "nope": Unexpected response code: 404 (Unknown service ID)\n'
    )


def test_dash_h_after_the_key_is_a_value(fake: FakeAgent) -> None:
    fake.answer("PUT", "/v1/kv/k", b"true")
    result = cli("kv", "put", "k", "-h", addr=fake.addr)
    assert out(result) == "Success! Data written to: k\n", err(result)
    assert fake.seen[-1].body == b"-h"


# --------------------------------------------------------------------------- TLS


@dataclass
class TLSFiles:
    ca: Path
    client_cert: Path
    client_key: Path
    context: ssl.SSLContext


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A CA, a server cert valid only for server.dc1.consul, and a client cert."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from proconsul.tls.certs import LeafSpec, generate_ca, issue_leaf, load_ca

    now = datetime.now(UTC)
    where = tmp_path_factory.mktemp("tls")
    ca_pair = generate_ca(now=now)
    ca = load_ca(ca_pair.cert_pem, ca_pair.key_pem)
    server = issue_leaf(
        ca,
        LeafSpec(
            "server.dc1.consul",
            timedelta(days=1),
            dns_names=("server.dc1.consul",),
            ext_key_usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
        ),
        now=now,
    )
    client = issue_leaf(
        ca,
        LeafSpec(
            "cli.dc1.consul",
            timedelta(days=1),
            ip_addresses=(ip_address("127.0.0.1"),),
            ext_key_usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        ),
        now=now,
    )
    files = {
        "ca.pem": ca_pair.cert_pem,
        "server.pem": server.cert_pem,
        "server-key.pem": server.key_pem,
        "cli.pem": client.cert_pem,
        "cli-key.pem": client.key_pem,
    }
    for name, text in files.items():
        (where / name).write_text(text)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(where / "server.pem", where / "server-key.pem")
    context.load_verify_locations(where / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED  # like verify_incoming on the HTTPS port
    return TLSFiles(where / "ca.pem", where / "cli.pem", where / "cli-key.pem", context)


@pytest.fixture
def tls_fake(tls_files: TLSFiles) -> Iterator[FakeAgent]:
    agent = start_fake(tls_files.context)
    agent.answer("GET", "/v1/catalog/datacenters", ["dc1"])
    yield agent
    stop_fake(agent)


def test_https_with_flags(tls_fake: FakeAgent, tls_files: TLSFiles) -> None:
    result = cli(
        "catalog",
        "datacenters",
        f"-http-addr=https://{tls_fake.addr}",
        f"-ca-file={tls_files.ca}",
        f"-client-cert={tls_files.client_cert}",
        f"-client-key={tls_files.client_key}",
        "-tls-server-name=server.dc1.consul",
    )
    assert (result.returncode, out(result)) == (0, "dc1\n"), err(result)


def test_https_with_env(tls_fake: FakeAgent, tls_files: TLSFiles) -> None:
    env = clean_env(
        CONSUL_HTTP_ADDR=tls_fake.addr,
        CONSUL_HTTP_SSL="true",
        CONSUL_CACERT=str(tls_files.ca),
        CONSUL_CLIENT_CERT=str(tls_files.client_cert),
        CONSUL_CLIENT_KEY=str(tls_files.client_key),
        CONSUL_TLS_SERVER_NAME="server.dc1.consul",
    )
    result = cli("catalog", "datacenters", env=env)
    assert (result.returncode, out(result)) == (0, "dc1\n"), err(result)


def test_https_name_mismatch_fails(tls_fake: FakeAgent, tls_files: TLSFiles) -> None:
    env = clean_env(
        CONSUL_HTTP_ADDR=f"https://{tls_fake.addr}",
        CONSUL_CACERT=str(tls_files.ca),
        CONSUL_CLIENT_CERT=str(tls_files.client_cert),
        CONSUL_CLIENT_KEY=str(tls_files.client_key),
    )
    result = cli("catalog", "datacenters", env=env)
    assert result.returncode == 1
    assert err(result).startswith(
        f'Error listing datacenters: Get "https://{tls_fake.addr}/v1/catalog/datacenters": '
        "tls: failed to verify certificate"
    )


def test_https_without_verify(tls_fake: FakeAgent, tls_files: TLSFiles) -> None:
    env = clean_env(
        CONSUL_HTTP_ADDR=f"https://{tls_fake.addr}",
        CONSUL_HTTP_SSL_VERIFY="false",
        CONSUL_CLIENT_CERT=str(tls_files.client_cert),
        CONSUL_CLIENT_KEY=str(tls_files.client_key),
    )
    result = cli("catalog", "datacenters", env=env)
    assert (result.returncode, out(result)) == (0, "dc1\n"), err(result)


def test_https_to_plain_http_agent(fake: FakeAgent) -> None:
    result = cli("members", env=clean_env(CONSUL_HTTP_ADDR=f"https://{fake.addr}"))
    assert result.returncode == 1
    assert err(result).endswith("http: server gave HTTP response to HTTPS client\n")
