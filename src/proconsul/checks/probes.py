"""One HTTP or TCP probe: do the request or connect once, return (status, output).

Probes never raise for a failed target: refusals, timeouts, bad URLs and TLS
errors all become `critical` with a description in the words Go's network
errors use (`connect: connection refused`, `i/o timeout`, `context deadline
exceeded`), so outputs read like Consul's. Each probe is bounded by its own
timeout, covering connect, headers and body together (Go's Client.Timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from proconsul.checks.status import (
    CRITICAL,
    OUTPUT_MAX_SIZE,
    PASSING,
    go_url_op,
    http_output,
    keep_tail,
    status_for_http_code,
)
from proconsul.structs.hostport import split_host_port

# Consul's HTTP checks send these unless the definition sets its own.
USER_AGENT = "Consul Health Check"
ACCEPT = "text/plain, text/*, */*"

# How long a probe may spend closing a connected socket after a TCP success.
_CLOSE_GRACE = 1.0


@dataclass(frozen=True)
class HttpProbe:
    url: str
    method: str = "GET"
    header: Mapping[str, Sequence[str]] | None = None
    body: str = ""
    timeout: float = 10.0
    tls_skip_verify: bool = False
    tls_server_name: str = ""
    disable_redirects: bool = False

    def headers(self) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict()
        for name, values in (self.header or {}).items():
            for value in values:
                out.add(name, value)
        out.setdefault("User-Agent", USER_AGENT)
        out.setdefault("Accept", ACCEPT)
        return out


def os_error_text(exc: OSError) -> str:
    """Go-style lower-case text for an OS error (`connection refused`)."""
    if exc.errno is not None and exc.strerror:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def _connector_error_text(exc: aiohttp.ClientConnectorError) -> str:
    cause = exc.os_error
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(cause, socket.gaierror):
        return f"dial tcp: lookup {exc.host}: no such host"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        detail = getattr(error, "verify_message", "") or str(error)
        return f"tls: failed to verify certificate: {detail}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        error = exc.os_error
        detail = getattr(error, "reason", "") or str(error)
        return f"tls: handshake failed: {detail}"
    return f"dial tcp {exc.host}:{exc.port}: connect: {os_error_text(cause)}"


async def _read_tail(response: aiohttp.ClientResponse, limit: int) -> bytes:
    # The whole body is read (so the connection ends cleanly) but only its last
    # `limit` bytes are kept, as Consul's ring buffer does.
    buffer = bytearray()
    async for chunk in response.content.iter_any():
        buffer += chunk
        if len(buffer) > 2 * limit:
            del buffer[:-limit]
    return keep_tail(bytes(buffer), limit)


async def http_probe(
    session: aiohttp.ClientSession,
    probe: HttpProbe,
    *,
    ssl_context: ssl.SSLContext | None = None,
    output_limit: int = OUTPUT_MAX_SIZE,
) -> tuple[str, str]:
    method = probe.method.upper() or "GET"
    where = f'{go_url_op(method)} "{probe.url}"'
    verify: ssl.SSLContext | bool = False if probe.tls_skip_verify else (ssl_context or True)
    phase = "awaiting headers"
    try:
        async with asyncio.timeout(probe.timeout):
            async with session.request(
                method,
                probe.url,
                headers=probe.headers(),
                data=probe.body.encode() if probe.body else None,
                ssl=verify,
                server_hostname=probe.tls_server_name or None,
                allow_redirects=not probe.disable_redirects,
            ) as response:
                phase = "reading body"
                body = await _read_tail(response, output_limit)
    except TimeoutError:
        why = (
            "Client.Timeout exceeded while awaiting headers"
            if phase == "awaiting headers"
            else "Client.Timeout or context cancellation while reading body"
        )
        return CRITICAL, f"{where}: context deadline exceeded ({why})"
    except aiohttp.ClientConnectorError as exc:
        return CRITICAL, f"{where}: {_connector_error_text(exc)}"
    except aiohttp.NonHttpUrlClientError:
        scheme = probe.url.partition(":")[0]
        return CRITICAL, f'{where}: unsupported protocol scheme "{scheme}"'
    except aiohttp.InvalidURL:
        return CRITICAL, f"{where}: invalid URL"
    except aiohttp.ServerDisconnectedError:
        return CRITICAL, f"{where}: EOF"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return CRITICAL, f"{where}: {exc or type(exc).__name__}"
    text = body.decode("utf-8", errors="replace")
    reason = response.reason or ""
    output = http_output(method, probe.url, response.status, reason, text)
    return status_for_http_code(response.status), output


async def tcp_probe(address: str, timeout: float) -> tuple[str, str]:
    try:
        host, port = split_host_port(address)
    except ValueError as exc:
        return CRITICAL, f"dial tcp: address {address}: {exc}"
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host or None, port)
    except TimeoutError:
        return CRITICAL, f"dial tcp {address}: i/o timeout"
    except socket.gaierror:
        return CRITICAL, f"dial tcp: lookup {host}: no such host"
    except OSError as exc:
        return CRITICAL, f"dial tcp {address}: connect: {os_error_text(exc)}"
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(_CLOSE_GRACE):
            await writer.wait_closed()
    return PASSING, f"TCP connect {address}: Success"
