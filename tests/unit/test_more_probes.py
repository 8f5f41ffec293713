"""Script, gRPC and HTTP/2 ping probes (checks/more_probes.py) against real
processes and sockets: exit codes, captured output, timeouts, the health
protocol's bytes, and a PING answered by a real HTTP/2 server (grpcio)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.grpc_health import NOT_SERVING, SERVING
from tests.grpc_health import health_server as serve_health

from proconsul.checks.kinds import check_kind, effective_timeout
from proconsul.checks.more_probes import (
    captured_output,
    grpc_probe,
    h2ping_probe,
    health_request,
    health_status,
    script_probe,
    script_status,
)
from proconsul.rpc.testing import make_pki
from proconsul.structs.definitions import CheckDefinition
from proconsul.structs.duration import Duration


def run(coro: object) -> tuple[str, str]:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.mark.parametrize(("code", "status"), [(0, "passing"), (1, "warning"), (2, "critical")])
def test_exit_codes(code: int, status: str) -> None:
    script = f"import sys; print('out'); sys.stderr.write('err\\n'); sys.exit({code})"
    found = run(script_probe([sys.executable, "-c", script], 10.0))
    assert found[0] == status
    assert "out" in found[1] and "err" in found[1]
    assert script_status(code) == status


def test_output_keeps_the_last_4_kib_with_consuls_note() -> None:
    script = "import sys; sys.stdout.write('a' * 10000 + 'END')"
    status, output = run(script_probe([sys.executable, "-c", script], 10.0))
    assert status == "passing"
    assert output.startswith("Captured 4096 of 10003 bytes\n...\n")
    assert output.endswith("END") and len(output.split("\n...\n")[1]) == 4096
    assert captured_output(b"abc", 3) == "abc"


def test_timeout_kills_and_is_critical() -> None:
    status, output = run(script_probe([sys.executable, "-c", "import time; time.sleep(30)"], 0.3))
    assert (status, output) == ("critical", "Timed out (0.3s) running check")


def test_missing_program_is_critical() -> None:
    status, output = run(script_probe(["/nonexistent/program"], 1.0))
    assert status == "critical" and "No such file" in output


def test_kinds_and_timeouts() -> None:
    script = CheckDefinition(script_args=["true"], interval=Duration(10))
    assert check_kind(script) == "script" and effective_timeout(script) == 30.0
    assert check_kind(CheckDefinition(grpc="127.0.0.1:1", interval=Duration(1))) == "grpc"
    assert check_kind(CheckDefinition(h2ping="127.0.0.1:1", interval=Duration(1))) == "h2ping"
    with pytest.raises(ValueError, match="Interval must be > 0"):
        check_kind(CheckDefinition(script_args=["true"]))


def test_health_protocol_bytes() -> None:
    assert health_request("") == b""
    assert health_request("web") == b"\x0a\x03web"
    assert health_status(b"\x08\x01") == 1
    assert health_status(b"") == 0
    assert health_status(b"\x12\x01x\x08\x02") == 2
    with pytest.raises(ValueError):
        health_status(b"\x08")


@pytest.fixture
def health_server() -> Iterator[tuple[str, dict[str, int]]]:
    statuses = {"": SERVING, "web": SERVING, "down": NOT_SERVING}
    with serve_health(statuses) as address:
        yield address, statuses


def test_grpc_probe(health_server: tuple[str, dict[str, int]]) -> None:
    address, _ = health_server
    assert run(grpc_probe(address, False, 5.0)) == (
        "passing",
        f"gRPC check {address}: success",
    )
    assert run(grpc_probe(address + "/web", False, 5.0))[0] == "passing"
    assert run(grpc_probe(address + "/down", False, 5.0)) == (
        "critical",
        f"gRPC {address}/down serving status: NOT_SERVING",
    )
    status, output = run(grpc_probe(address + "/nope", False, 5.0))
    assert status == "critical" and "NOT_FOUND" in output


def test_h2ping_probe(health_server: tuple[str, dict[str, int]]) -> None:
    address, _ = health_server
    assert run(h2ping_probe(address, False, False, "", 5.0)) == (
        "passing",
        "HTTP2 ping was successful",
    )
    status, output = run(h2ping_probe("127.0.0.1:1", False, False, "", 2.0))
    assert status == "critical" and output.startswith("HTTP2 ping failed")


def test_h2ping_over_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cert = pki.issue("server", "h2")
    with serve_health({"": SERVING}, tls=(cert.cert_file, cert.key_file)) as address:
        assert run(h2ping_probe(address, True, True, "", 5.0)) == (
            "passing",
            "HTTP2 ping was successful",
        )
        status, output = run(h2ping_probe(address, True, False, "", 5.0))
        assert status == "critical" and "CERTIFICATE_VERIFY_FAILED" in output
