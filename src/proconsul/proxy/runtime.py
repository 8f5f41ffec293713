"""The running data plane: listeners bound, clusters ready, configs applied live.

Job: `Runtime.apply(config)` makes the sockets match a `ProxyConfig`: it
binds new listeners, closes removed ones (and their connections), and hands
new clusters, endpoints, routes and secrets to the parts that use them.
`Acceptor` takes each accepted connection through TLS (when the listener
has it) to the TCP or HTTP proxy. `drain` stops it on SIGTERM.

Rules:
- A listener's configuration is read per connection (and per HTTP request),
  so a new version applies to new connections and requests at once and an
  established connection is never dropped by an update; a listener whose
  address changes is rebound.
- TLS per connection with the context of that moment (`loop.start_tls`), so
  a renewed leaf or new roots serve the next handshake. A failed handshake
  (plaintext, no or foreign client certificate) is counted
  (`ssl.connection_error`) and the connection dropped.
- `ready` after the first config has been applied.
- Drain: stop listening, let in-flight HTTP requests finish (bounded by
  `grace_s`), then close every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from typing import Any

from proconsul.proxy.config import ListenerConfig, ProxyConfig
from proconsul.proxy.http import HttpDownstream, Pool
from proconsul.proxy.stats import Stats
from proconsul.proxy.tcp import TcpDownstream
from proconsul.proxy.tls import MissingSecret, TLSContexts, peer_uri
from proconsul.proxy.upstream import Clusters

log = logging.getLogger("proconsul.proxy")

HANDSHAKE_TIMEOUT_S = 10.0


class Acceptor(asyncio.Protocol):
    """An accepted connection until it knows its real protocol."""

    def __init__(self, runtime: Runtime, name: str) -> None:
        self.runtime = runtime
        self.name = name
        self.handler: asyncio.Protocol | None = None
        self.early: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        runtime = self.runtime
        listener = runtime.config.listeners.get(self.name)
        stats = runtime.stats.listener(self.name)
        stats.downstream_cx_total += 1
        if listener is None:
            transport.abort()
            return
        if listener.tls is None:
            self._hand_off(listener, transport, None)
            return
        try:
            context = runtime.tls.server(listener.tls)
        except (MissingSecret, ssl.SSLError) as err:
            log.warning("listener %s: no TLS context: %s", self.name, err)
            transport.abort()
            return
        transport.pause_reading()
        asyncio.get_running_loop().create_task(self._handshake(listener, transport, context))

    async def _handshake(self, listener: ListenerConfig, transport: Any, context: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(
                transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, asyncio.CancelledError):
            self.runtime.stats.listener(self.name).ssl_connection_error += 1
            transport.abort()
            return
        if secure is None or self.lost:
            self.runtime.stats.listener(self.name).ssl_connection_error += 1
            return
        principal = peer_uri(secure.get_extra_info("ssl_object"))
        self._hand_off(listener, secure, principal)

    def _hand_off(self, listener: ListenerConfig, transport: Any, principal: str | None) -> None:
        runtime = self.runtime
        stats = runtime.stats.listener(self.name)
        handler: asyncio.Protocol
        if listener.http is not None:
            handler = HttpDownstream(runtime, self.name, principal)
        else:
            if listener.rbac is not None:
                if not listener.rbac.allows(principal, None):
                    stats.rbac_denied += 1
                    transport.close()
                    return
                stats.rbac_allowed += 1
            handler = TcpDownstream(runtime, self.name, listener.tcp_cluster)
        stats.downstream_cx_active += 1
        self.handler = handler
        transport.set_protocol(handler)
        handler.connection_made(transport)
        for chunk in self.early:
            handler.data_received(chunk)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)
        else:
            self.early.append(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.handler is not None:
            self.handler.connection_lost(exc)


class Runtime:
    def __init__(self, *, rng: random.Random | None = None) -> None:
        self.config = ProxyConfig()
        self.stats = Stats()
        self.tls = TLSContexts()
        self.clusters = Clusters(self.stats, self.tls)
        self.pool = Pool(self)
        self.rng = rng or random.Random()
        self.servers: dict[str, tuple[ListenerConfig, asyncio.Server]] = {}
        self.connections: dict[str, set[Any]] = {}
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self.versions = 0

    # connection bookkeeping (the proxies call these)
    def track(self, handler: Any) -> None:
        self.connections.setdefault(handler.listener, set()).add(handler)

    def untrack(self, handler: Any) -> None:
        live = self.connections.get(handler.listener)
        if live is not None and handler in live:
            live.discard(handler)
            self.stats.listener(handler.listener).downstream_cx_active -= 1

    async def apply(self, config: ProxyConfig) -> None:
        """Make the running proxy match `config`."""
        self.tls.update(dict(config.secrets))
        self.clusters.apply(config)
        self.config = config
        loop = asyncio.get_running_loop()
        for name in list(self.servers):
            old, server = self.servers[name]
            new = config.listeners.get(name)
            if new is None or (new.host, new.port) != (old.host, old.port):
                server.close()
                del self.servers[name]
                if new is None:
                    self._close_connections(name)
        for name, listener in config.listeners.items():
            if name in self.servers:
                self.servers[name] = (listener, self.servers[name][1])
                continue
            if self.draining:
                continue
            try:
                server = await loop.create_server(
                    lambda n=name: Acceptor(self, n),  # type: ignore[misc]
                    listener.host,
                    listener.port,
                    reuse_address=True,
                    backlog=1024,
                )
            except OSError as err:
                log.error(
                    "listener %s: cannot listen on %s:%d: %s",
                    name,
                    listener.host,
                    listener.port,
                    err,
                )
                continue
            self.servers[name] = (listener, server)
            self.stats.listener(name)
            log.info("listener %s on %s:%d", name, listener.host, listener.port)
        self.versions += 1
        self.ready = True

    def _close_connections(self, name: str) -> None:
        for handler in list(self.connections.pop(name, set())):
            handler.close()

    def bound(self, name: str) -> tuple[str, int] | None:
        entry = self.servers.get(name)
        if entry is None or not entry[1].sockets:
            return None
        host, port = entry[1].sockets[0].getsockname()[:2]
        return host, port

    async def drain(self, grace_s: float) -> None:
        """Stop accepting, finish in-flight requests within `grace_s`, close the rest."""
        self.draining = True
        for _, server in self.servers.values():
            server.close()
        deadline = time.monotonic() + grace_s
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for name in list(self.connections):
            self._close_connections(name)
        self.pool.close_all()
        for _, server in self.servers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self.servers.clear()
