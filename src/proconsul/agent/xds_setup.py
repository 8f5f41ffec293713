"""Start the agent's xDS server (Envoy's ADS) on the gRPC ports.

Job: turn `ports.grpc` / `ports.grpc_tls` and `addresses.grpc` (else
`client_addr`) into listeners, give the `XDSServer` the agent's proxy
snapshots (a `SnapshotHub` the proxy view publishes into) and its token
check, and hand the agent one handle with `close()` and `stats()`.

Rules:
- `ports.grpc = -1` and `ports.grpc_tls = -1` (the defaults outside -dev,
  which uses 8502) mean no gRPC listener; the handle still works.
- `ports.grpc_tls` serves with the `tls.grpc` settings (else
  `tls.defaults`): the certificate and key are required, and
  `verify_incoming` asks Envoy for a client certificate from `ca_file`.
- The token check is Consul's: the stream's `x-consul-token` (none means the
  anonymous token, not the agent's default) must have `service:write` on the
  destination service of the connect-proxy registered here under the
  stream's node id. An unknown secret is UNAUTHENTICATED ("ACL not found").
- The proxy view (agent/proxycfg.py) feeds the hub; a stream for a proxy
  it has not published yet waits a few seconds, then ends with NOT_FOUND.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from proconsul.acl.errors import ACLDenied, ACLNotFound
from proconsul.acl.resolved import ResolvedToken
from proconsul.config.schema import RuntimeConfig
from proconsul.config.validation import UNIX_PREFIX
from proconsul.structs.acl import ANONYMOUS_TOKEN_SECRET_ID
from proconsul.structs.catalog import NodeService
from proconsul.xds.server import Authorize, Listen, TLSFiles, XDSAuthError, XDSServer
from proconsul.xds.sources import SnapshotHub, UnknownProxy

log = logging.getLogger("proconsul.agent")

CONNECT_PROXY = "connect-proxy"


class XdsAgent(Protocol):
    """What the xDS server needs from the agent."""

    config: RuntimeConfig

    def local_services(self) -> dict[str, NodeService]: ...

    async def resolve_token(self, secret: str) -> ResolvedToken | None: ...


class XdsHandle:
    """The agent's grip on its xDS server (or on nothing, when gRPC is off)."""

    def __init__(self, server: XDSServer | None, hub: SnapshotHub) -> None:
        self.server = server
        self.hub = hub

    @property
    def addresses(self) -> list[str]:
        return list(self.server.bound) if self.server else []

    async def close(self) -> None:
        if self.server is not None:
            await self.server.stop()

    def proxy_status(self, proxy_id: str) -> dict[str, Any]:
        status = self.server.proxy_status(proxy_id) if self.server else None
        if status is None:
            return {}
        return {
            "Streams": status.streams,
            "Versions": dict(status.versions),
            "Error": status.error,
        }

    def stats(self) -> dict[str, float]:
        if self.server is None:
            return {}
        return {f"consul.xds.{k}": float(v) for k, v in self.server.stats().items()}


def grpc_address(host: str, port: int) -> str:
    """A host from the config as grpc spells a listen address."""
    if host.startswith(UNIX_PREFIX):
        return "unix:" + host[len(UNIX_PREFIX) :]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tls_files(config: RuntimeConfig) -> TLSFiles:
    settings = config.tls_settings("grpc")
    if not settings.cert_file or not settings.key_file:
        raise OSError(
            "ports.grpc_tls needs a certificate: set tls.grpc (or tls.defaults) "
            "cert_file and key_file"
        )
    ca = Path(settings.ca_file).read_bytes() if settings.ca_file else None
    return TLSFiles(
        cert=Path(settings.cert_file).read_bytes(),
        key=Path(settings.key_file).read_bytes(),
        ca=ca,
        verify_incoming=settings.verify_incoming and ca is not None,
    )


def listens_from_config(config: RuntimeConfig) -> list[Listen]:
    listens = []
    if config.ports.grpc >= 0:
        for host in config.listen_addresses("grpc"):
            listens.append(Listen(grpc_address(host, config.ports.grpc)))
    if config.ports.grpc_tls >= 0:
        tls = _tls_files(config)
        for host in config.listen_addresses("grpc_tls"):
            listens.append(Listen(grpc_address(host, config.ports.grpc_tls), tls))
    return listens


def token_check(agent: XdsAgent) -> Authorize:
    """`authorize(token, proxy_id)` for the server, as Consul checks an xDS stream."""

    async def authorize(token: str, proxy_id: str) -> None:
        proxy = agent.local_services().get(proxy_id)
        if proxy is None or proxy.kind != CONNECT_PROXY:
            raise UnknownProxy(proxy_id)
        try:
            resolved = await agent.resolve_token(token or ANONYMOUS_TOKEN_SECRET_ID)
        except ACLNotFound as err:
            raise XDSAuthError(err.message, unauthenticated=True) from None
        except ACLDenied as err:
            raise XDSAuthError(err.message) from None
        if resolved is None:
            return  # ACLs are off
        service = proxy.proxy.destination_service_name
        if not resolved.authorizer.service_write(service):
            raise XDSAuthError(resolved.deny("service", "write", service).message)

    return authorize


async def start_xds(agent: XdsAgent, hub: SnapshotHub) -> XdsHandle:
    """Serve ADS on every gRPC address the config names (none: an idle handle)."""
    listens = listens_from_config(agent.config)
    if not listens:
        return XdsHandle(None, hub)
    # grpc's own event-loop chatter is not the agent's news, even at DEBUG.
    logging.getLogger("grpc._cython.cygrpc").setLevel(logging.WARNING)
    server = XDSServer(hub, token_check(agent))
    await server.start(listens)
    for address, listen in zip(server.bound, listens, strict=True):
        kind = "grpc_tls" if listen.tls else "grpc"
        log.info("agent: Started gRPC (xDS) server: address=%s kind=%s", address, kind)
    return XdsHandle(server, hub)
