"""The xDS server: ADS over gRPC (grpc.aio), state of the world and delta.

Job: `XDSServer` listens on the agent's gRPC ports and serves Envoy's
Aggregated Discovery Service. Per stream: read the first request's node id
(the proxy ID), watch that proxy's snapshots from the `SnapshotSource`,
check the caller's token against each snapshot, translate it
(xds/translate.py) and let the protocol core (xds/ads.py) decide what to
send.

Rules:
- The token is the `x-consul-token` metadata. `authorize(token, proxy_id)`
  is the agent's check (`service:write` on the proxy's destination service),
  made before anything is sent; it raises `XDSAuthError`: an unknown token
  ends the stream with UNAUTHENTICATED, a missing right with
  PERMISSION_DENIED, as Consul does (no token is the anonymous token), and
  `UnknownProxy` for a proxy the agent does not have. It runs again on every
  new snapshot, so a revoked token loses the stream.
- A request without `node.id` first, an empty or unknown `type_url`: the
  stream ends with INVALID_ARGUMENT and a clear text. A proxy the source
  does not know: NOT_FOUND. A proxy deregistered while streaming: ABORTED.
  Nothing a client sends raises out of a handler.
- A NACK is logged (warning) with the proxy, the type, the nonce and
  Envoy's error detail; the last accepted version stays in force.
- A snapshot that does not translate is logged and skipped; the stream keeps
  the last good resources.
- Per proxy it keeps what it last sent of each type (the version) and how
  its last stream ended (`proxy_status`), so the agent can tell a
  troubleshooter whether a proxy is up to date or was refused.
- Each stream holds at most one pending read of each input (the next
  request, the next snapshot): nothing queues up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from proconsul.xds.ads import DeltaStream, ProtocolError, SotwStream, Step
from proconsul.xds.snapshot import ProxySnapshot
from proconsul.xds.sources import SnapshotSource, UnknownProxy
from proconsul.xds.translate import Resources, TranslateError, translate

log = logging.getLogger("proconsul.xds")

TOKEN_METADATA = "x-consul-token"
STOP_GRACE_S = 1.0


class XDSAuthError(Exception):
    """The stream's token may not have this proxy's configuration."""

    def __init__(self, message: str, *, unauthenticated: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unauthenticated = unauthenticated


Authorize = Callable[[str, str], Awaitable[None]]  # (token, proxy_id); raises XDSAuthError


@dataclass(frozen=True)
class TLSFiles:
    """The agent's gRPC TLS settings (PEM bytes)."""

    cert: bytes
    key: bytes = b""
    ca: bytes | None = None
    verify_incoming: bool = False

    def __repr__(self) -> str:
        size = len(self.cert)
        return f"TLSFiles(cert=<{size} bytes>, key=<redacted>, verify={self.verify_incoming})"


@dataclass(frozen=True)
class Listen:
    """One address to serve on: `host:port` or `unix:/path`, plaintext or TLS."""

    address: str
    tls: TLSFiles | None = None


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass
class ProxyStatus:
    """What one proxy's streams got: versions sent per type URL, open streams, last end."""

    versions: dict[str, str] = field(default_factory=dict)
    streams: int = 0
    error: str = ""  # how the last stream was ended by the agent ("" if it was not)


class XDSServer:
    def __init__(self, source: SnapshotSource, authorize: Authorize) -> None:
        self.source = source
        self.authorize = authorize
        self._server: grpc.aio.Server | None = None
        self._closing = asyncio.Event()  # set by stop(): streams end themselves
        self._streams: set[asyncio.Task[Any]] = set()
        self.bound: list[str] = []  # addresses actually listened on (ports resolved)
        self.counters = {"streams": 0, "active": 0, "responses": 0, "acks": 0, "nacks": 0}
        self.proxies: dict[str, ProxyStatus] = {}

    async def start(self, listens: Sequence[Listen]) -> None:
        # No SO_REUSEPORT: a second agent on the same port must fail, not share it.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), server)
        for listen in listens:
            self.bound.append(_bind(server, listen))
        await server.start()
        self._server = server

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """End every stream (UNAVAILABLE, so Envoy reconnects elsewhere or later),
        then the server."""
        self._closing.set()
        if self._streams:
            await asyncio.wait(set(self._streams), timeout=grace_s)
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    def proxy_status(self, proxy_id: str) -> ProxyStatus | None:
        return self.proxies.get(proxy_id)

    # ------------------------------------------------------------- streams

    async def serve(self, core: SotwStream | DeltaStream, requests: Any, context: Any) -> None:
        self.counters["streams"] += 1
        self.counters["active"] += 1
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            await self._serve(core, requests, context)
        except _Aborted as aborted:
            await context.abort(aborted.code, aborted.details)
        except asyncio.CancelledError:
            # grpc cancels the handler when the client goes away (an Envoy
            # restarting) or the server stops: the stream is over, which is
            # not an error to report.
            pass
        finally:
            self.counters["active"] -= 1
            if task is not None:
                self._streams.discard(task)

    async def _serve(self, core: SotwStream | DeltaStream, requests: Any, context: Any) -> None:
        token = _token(context)
        iterator = aiter(requests)
        closing = asyncio.ensure_future(self._closing.wait())
        next_request = asyncio.ensure_future(anext(iterator, None))
        try:
            await asyncio.wait({next_request, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not next_request.done():
                next_request.cancel()
                closing.cancel()
        if closing.done():
            raise _Aborted(grpc.StatusCode.UNAVAILABLE, "the agent is shutting down")
        closing.cancel()
        first = next_request.result()
        if first is None:
            return
        proxy_id = first.node.id if first.HasField("node") else ""
        if not proxy_id:
            raise _Aborted(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first request must carry node.id, the proxy's service ID",
            )
        flavour = "delta" if isinstance(core, DeltaStream) else "state-of-the-world"
        log.debug("xds: %s stream opened for proxy %s", flavour, proxy_id)
        status = self.proxies.setdefault(proxy_id, ProxyStatus())
        status.streams += 1
        try:
            await self._stream(core, first, proxy_id, token, iterator, context)
        except _Aborted as aborted:
            status.error = f"{aborted.code.name}: {aborted.details}"
            raise
        finally:
            status.streams -= 1

    async def _stream(
        self,
        core: SotwStream | DeltaStream,
        first: Any,
        proxy_id: str,
        token: str,
        iterator: Any,
        context: Any,
    ) -> None:
        try:
            await self._check(token, proxy_id)
        except UnknownProxy as err:
            raise _Aborted(grpc.StatusCode.NOT_FOUND, str(err)) from None
        await self._apply(core.on_request, first, proxy_id, context)
        snapshots = self.source.watch(proxy_id)
        next_request = asyncio.ensure_future(anext(iterator, None))
        next_snapshot = asyncio.ensure_future(_next_snapshot(snapshots))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {next_request, next_snapshot, closing}, return_when=asyncio.FIRST_COMPLETED
                )
                if closing in done:
                    raise _Aborted(grpc.StatusCode.UNAVAILABLE, "the agent is shutting down")
                if next_snapshot in done:
                    snapshot = next_snapshot.result()
                    if snapshot is None:
                        raise _Aborted(
                            grpc.StatusCode.ABORTED, f'proxy "{proxy_id}" was deregistered'
                        )
                    await self._check(token, proxy_id)
                    resources = _translate(snapshot)
                    if resources is not None:
                        await self._apply(core.on_resources, resources, proxy_id, context)
                    next_snapshot = asyncio.ensure_future(_next_snapshot(snapshots))
                if next_request in done:
                    request = next_request.result()
                    if request is None:
                        return  # the client closed its side
                    await self._apply(core.on_request, request, proxy_id, context)
                    next_request = asyncio.ensure_future(anext(iterator, None))
        except UnknownProxy as err:
            raise _Aborted(grpc.StatusCode.NOT_FOUND, str(err)) from None
        finally:
            for task in (next_request, next_snapshot, closing):
                task.cancel()
            await asyncio.gather(next_request, next_snapshot, closing, return_exceptions=True)
            await _close(snapshots)

    async def _check(self, token: str, proxy_id: str) -> None:
        try:
            await self.authorize(token, proxy_id)
        except UnknownProxy:
            raise
        except XDSAuthError as err:
            code = (
                grpc.StatusCode.UNAUTHENTICATED
                if err.unauthenticated
                else grpc.StatusCode.PERMISSION_DENIED
            )
            raise _Aborted(code, err.message) from None
        except Exception as err:  # no server to ask, a timeout: Envoy retries later
            log.warning("xds: cannot check the token of proxy %s: %s", proxy_id, err)
            raise _Aborted(grpc.StatusCode.UNAVAILABLE, f"cannot check the token: {err}") from None

    async def _apply(
        self, handler: Callable[[Any], Step], value: Any, proxy_id: str, context: Any
    ) -> None:
        try:
            step = handler(value)
        except ProtocolError as err:
            raise _Aborted(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
        self.counters["acks"] += step.acks
        for nack in step.nacks:
            self.counters["nacks"] += 1
            log.warning(
                "xds: proxy %s rejected %s (nonce %s), keeping version %s: %s",
                proxy_id,
                nack.type_url.rsplit("/", 1)[-1],
                nack.nonce,
                nack.version_kept or "(none)",
                nack.message,
            )
        status = self.proxies.setdefault(proxy_id, ProxyStatus())
        for response in step.responses:
            # State of the world says `version_info`; delta `system_version_info`.
            version = getattr(response, "version_info", None)
            if version is None:
                version = getattr(response, "system_version_info", "")
            status.versions[response.type_url] = str(version)
            status.error = ""
            await context.write(response)
            self.counters["responses"] += 1


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, owner: XDSServer) -> None:
        self.owner = owner

    async def StreamAggregatedResources(self, requests: Any, context: Any) -> None:
        await self.owner.serve(SotwStream(), requests, context)

    async def DeltaAggregatedResources(self, requests: Any, context: Any) -> None:
        await self.owner.serve(DeltaStream(), requests, context)


def _token(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == TOKEN_METADATA:
            return str(value)
    return ""


def _translate(snapshot: ProxySnapshot) -> Resources | None:
    try:
        return translate(snapshot)
    except TranslateError as err:
        log.warning(
            "xds: cannot configure proxy %s, keeping its last config: %s", snapshot.proxy_id, err
        )
        return None


async def _next_snapshot(snapshots: AsyncIterator[ProxySnapshot]) -> ProxySnapshot | None:
    return await anext(snapshots, None)


async def _close(snapshots: AsyncIterator[ProxySnapshot]) -> None:
    closer = getattr(snapshots, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


def _bind(server: Any, listen: Listen) -> str:
    """Add one port; an address that cannot be bound is an OSError naming it."""
    try:
        if listen.tls is None:
            port = server.add_insecure_port(listen.address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(listen.tls.key, listen.tls.cert)],
                root_certificates=listen.tls.ca,
                require_client_auth=listen.tls.verify_incoming,
            )
            port = server.add_secure_port(listen.address, credentials)
    except RuntimeError:
        port = 0
    if not port:
        raise OSError(
            f"cannot listen for gRPC on {listen.address}: the address is in use or not available"
        )
    if listen.address.startswith("unix:"):
        return listen.address
    host = listen.address.rsplit(":", 1)[0]
    return f"{host}:{port}"
