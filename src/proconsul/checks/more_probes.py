"""Script, gRPC and HTTP/2 ping probes: run once, return (status, output).

Rules, as Consul's checks have them:
- Script (`args`): the program runs without a shell, with a timeout (30 s
  unless the check sets one); stdout and stderr together are captured, the
  last `OUTPUT_MAX_SIZE` bytes kept with Consul's `Captured N of M bytes`
  note; exit 0 is passing, 1 warning, anything else critical; a timeout
  kills the process and is critical (`Timed out (30s) running check`).
- gRPC (`grpc = "host:port[/service]"`): the standard health-checking
  protocol's `grpc.health.v1.Health/Check`; SERVING is passing, anything
  else or an error is critical. `grpc_use_tls` dials TLS.
- H2PING (`h2ping = "host:port"`): open an HTTP/2 connection (TLS with ALPN
  h2 unless `h2ping_use_tls` is false, then cleartext with prior knowledge),
  send a PING and wait for its ACK.
- Probes never raise for a failed target: every failure is `critical` with
  a description.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import struct

import grpc

from proconsul.checks.status import CRITICAL, OUTPUT_MAX_SIZE, PASSING, WARNING, keep_tail
from proconsul.structs.hostport import split_host_port

_READ_CHUNK = 65536


def _go_duration(seconds: float) -> str:
    return f"{seconds:g}s" if seconds < 60 or seconds % 60 else f"{int(seconds // 60)}m0s"


def script_status(exit_code: int) -> str:
    """Consul's mapping of a script's exit code."""
    if exit_code == 0:
        return PASSING
    if exit_code == 1:
        return WARNING
    return CRITICAL


def captured_output(data: bytes, total: int, limit: int = OUTPUT_MAX_SIZE) -> str:
    """The kept tail of a script's output, with Consul's note when some was dropped."""
    kept = keep_tail(data, limit)
    text = kept.decode("utf-8", errors="replace")
    if total > len(kept):
        return f"Captured {len(kept)} of {total} bytes\n...\n{text}"
    return text


async def script_probe(
    args: list[str], timeout_s: float, limit: int = OUTPUT_MAX_SIZE
) -> tuple[str, str]:
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return CRITICAL, f"Failed to setup invoke: {exc.strerror or exc}"
    assert process.stdout is not None
    tail = b""
    total = 0

    async def drain() -> None:
        nonlocal tail, total
        assert process.stdout is not None
        while chunk := await process.stdout.read(_READ_CHUNK):
            total += len(chunk)
            tail = keep_tail(tail + chunk, limit)

    try:
        async with asyncio.timeout(timeout_s):
            await drain()
            code = await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)  # the script and anything it started
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return CRITICAL, f"Timed out ({_go_duration(timeout_s)}) running check"
    return script_status(code), captured_output(tail, total, limit)


# ----- gRPC health -------------------------------------------------------------------

_HEALTH_METHOD = "/grpc.health.v1.Health/Check"
_SERVING_STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def health_request(service: str) -> bytes:
    """`HealthCheckRequest{service}` in protobuf's wire format (field 1, a string)."""
    raw = service.encode()
    return b"\x0a" + _varint(len(raw)) + raw if raw else b""


def health_status(reply: bytes) -> int:
    """The `status` (field 1, an enum) of a `HealthCheckResponse`; 0 if absent."""
    index = 0
    status = 0
    while index < len(reply):
        key, index = _read_varint(reply, index)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, index = _read_varint(reply, index)
            if field == 1:
                status = value
        elif wire == 2:
            length, index = _read_varint(reply, index)
            index += length
        elif wire == 5:
            index += 4
        elif wire == 1:
            index += 8
        else:
            raise ValueError("malformed health reply")
    return status


def _read_varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if index >= len(data) or shift > 63:
            raise ValueError("malformed varint")
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index
        shift += 7


async def grpc_probe(target: str, use_tls: bool, timeout_s: float) -> tuple[str, str]:
    address, _, service = target.partition("/")
    options = [("grpc.enable_retries", 0)]
    channel = (
        grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(), options=options)
        if use_tls
        else grpc.aio.insecure_channel(address, options=options)
    )
    try:
        check = channel.unary_unary(_HEALTH_METHOD)
        reply = await check(health_request(service), timeout=timeout_s)
        status = health_status(reply)
    except grpc.aio.AioRpcError as exc:
        return CRITICAL, f"gRPC {target} failed: {exc.code().name}: {exc.details()}"
    except ValueError as exc:
        return CRITICAL, f"gRPC {target} failed: {exc}"
    finally:
        await channel.close()
    if status != 1:
        name = _SERVING_STATUSES.get(status, str(status))
        return CRITICAL, f"gRPC {target} serving status: {name}"
    return PASSING, f"gRPC check {target}: success"


# ----- HTTP/2 ping -------------------------------------------------------------------

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS, _PING, _GOAWAY = 0x4, 0x6, 0x7
_ACK = 0x1


def _frame(kind: int, flags: int, payload: bytes, stream: int = 0) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


async def h2ping_probe(
    address: str, use_tls: bool, tls_skip_verify: bool, tls_server_name: str, timeout_s: float
) -> tuple[str, str]:
    try:
        host, port = split_host_port(address)
    except ValueError as exc:
        return CRITICAL, f"Failed to dial HTTP2 ping target: {exc}"
    context = None
    if use_tls:
        context = ssl.create_default_context()
        context.set_alpn_protocols(["h2"])
        if tls_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    server_name = (tls_server_name or host) if context else None
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=server_name
            )
            token = os.urandom(8)
            writer.write(_PREFACE + _frame(_SETTINGS, 0, b"") + _frame(_PING, 0, token))
            await writer.drain()
            while True:
                header = await reader.readexactly(9)
                length = int.from_bytes(header[:3], "big")
                kind, flags = header[3], header[4]
                payload = await reader.readexactly(length)
                if kind == _SETTINGS and not flags & _ACK:
                    writer.write(_frame(_SETTINGS, _ACK, b""))
                elif kind == _PING and flags & _ACK and payload == token:
                    return PASSING, "HTTP2 ping was successful"
                elif kind == _GOAWAY:
                    return CRITICAL, "HTTP2 ping failed: the server sent GOAWAY"
    except TimeoutError:
        return CRITICAL, f"HTTP2 ping failed: no answer within {_go_duration(timeout_s)}"
    except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
        return CRITICAL, f"HTTP2 ping failed: {exc}"
    finally:
        if writer is not None:
            # Abort: a TLS close waits for the peer's close_notify (up to 30 s),
            # and a probe has nothing left to say.
            writer.transport.abort()
