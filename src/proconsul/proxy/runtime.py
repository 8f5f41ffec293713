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
- TLS by the loop (`create_server(ssl=...)`) with the listener's live
  context (tls.py `ServerContext`): a renewed leaf or new roots serve the
  next handshake; a removed root rebinds the listener (established
  connections stay). A failed handshake (plaintext, no or a foreign client
  certificate) is counted (`ssl.connection_error`).
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
import weakref
from typing import Any

from proconsul.proxy.config import ListenerConfig, ProxyConfig
from proconsul.proxy.http import HttpDownstream, Pool
from proconsul.proxy.stats import ListenerStats, Stats
from proconsul.proxy.tcp import TcpDownstream
from proconsul.proxy.tls import (
    MissingSecret,
    ServerContext,
    TLSContexts,
    client_cert_details,
    peer_uri,
)
from proconsul.proxy.upstream import Clusters

log = logging.getLogger("proconsul.proxy")

HANDSHAKE_TIMEOUT_S = 10.0


def _handshake_lost(stats: ListenerStats, done: list[bool]) -> None:
    if not done[0]:
        stats.ssl_connection_error += 1


class Acceptor(asyncio.Protocol):
    """An accepted connection (after its TLS handshake, if any) until it knows its
    real protocol. With TLS, the loop makes it at accept time and calls
    `connection_made` only after a good handshake; one that never got there
    (plaintext, no or a foreign client certificate, a timeout) is counted as
    `ssl.connection_error` when it is dropped."""

    def __init__(self, runtime: Runtime, name: str, tls: bool) -> None:
        self.runtime = runtime
        self.name = name
        self.handler: asyncio.Protocol | None = None
        if tls:
            self._made = [False]
            weakref.finalize(self, _handshake_lost, runtime.stats.listener(name), self._made)

    def connection_made(self, transport: Any) -> None:
        runtime = self.runtime
        listener = runtime.config.listeners.get(self.name)
        stats = runtime.stats.listener(self.name)
        stats.downstream_cx_total += 1
        principal = None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._made[0] = True
            principal = peer_uri(ssl_object)
        if listener is None:
            transport.abort()
            return
        self._hand_off(listener, transport, principal)

    def _hand_off(self, listener: ListenerConfig, transport: Any, principal: str | None) -> None:
        runtime = self.runtime
        stats = runtime.stats.listener(self.name)
        handler: asyncio.Protocol
        if listener.http is not None:
            xfcc = ""
            ssl_object = transport.get_extra_info("ssl_object")
            if listener.http.forward_client_cert and ssl_object is not None and listener.tls:
                xfcc = client_cert_details(ssl_object, runtime.tls.leaf_uri(listener.tls))
            handler = HttpDownstream(runtime, self.name, principal, xfcc)
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

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
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
        self.contexts: dict[str, ServerContext] = {}
        self.connections: dict[str, set[Any]] = {}
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()  # set while no HTTP request is in flight
        self._idle.set()
        self.versions = 0

    # request and connection bookkeeping (the proxies call these)
    def request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def request_done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

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
        for name in list(self.servers):
            old = self.servers[name][0]
            new = config.listeners.get(name)
            if new is None or (new.host, new.port) != (old.host, old.port):
                self._unbind(name, close_connections=new is None)
        for name, listener in config.listeners.items():
            context = self._context(name, listener)
            if listener.tls is not None and context is None:
                continue  # its secrets are not here (ready would not be set)
            if name in self.servers:
                if context is not None and context is not self.contexts.get(name):
                    self._unbind(name, close_connections=False)  # a root was removed
                else:
                    self.servers[name] = (listener, self.servers[name][1])
                    continue
            if not self.draining:
                await self._bind(name, listener, context)
        self.versions += 1
        self.ready = True

    def _context(self, name: str, listener: ListenerConfig) -> ServerContext | None:
        if listener.tls is None:
            return None
        try:
            return self.tls.server(listener.tls, self.contexts.get(name))
        except (MissingSecret, ssl.SSLError, ValueError) as err:
            log.warning("listener %s: no TLS context: %s", name, err)
            return None

    async def _bind(
        self, name: str, listener: ListenerConfig, context: ServerContext | None
    ) -> None:
        loop = asyncio.get_running_loop()
        tls = context is not None
        try:
            server = await loop.create_server(
                lambda: Acceptor(self, name, tls),
                listener.host,
                listener.port,
                reuse_address=True,
                backlog=1024,
                ssl=context.context if context is not None else None,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if context is not None else None,
            )
        except OSError as err:
            where = f"{listener.host}:{listener.port}"
            log.error("listener %s: cannot listen on %s: %s", name, where, err)
            return
        self.servers[name] = (listener, server)
        if context is not None:
            self.contexts[name] = context
        self.stats.listener(name)
        log.info("listener %s on %s:%d", name, listener.host, listener.port)

    def _unbind(self, name: str, *, close_connections: bool) -> None:
        entry = self.servers.pop(name, None)
        if entry is not None:
            entry[1].close()
        self.contexts.pop(name, None)
        if close_connections:
            self._close_connections(name)

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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        for name in list(self.connections):
            self._close_connections(name)
        self.pool.close_all()
        for _, server in self.servers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self.servers.clear()
