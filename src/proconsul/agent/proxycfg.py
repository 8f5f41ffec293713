"""The agent's proxy view (Consul's proxycfg): one live snapshot per local connect-proxy.

How it fits: DESIGN.md, "xDS". `ProxyConfigManager` follows the agent's
local services; for each one of kind connect-proxy it runs a `ProxyView`
that keeps blocking watches open and publishes a new `ProxySnapshot` into
the agent's `SnapshotHub` whenever an input changes. The pure half (inputs,
which watches, the snapshot) is `agent/proxycfg_inputs.py`.

Rules:
- Watches (each one task, a loop of blocking reads from its last index):
  the CA roots and the proxy's leaf from the agent's CA view; the
  service-intentions entries ("ConfigEntry.List"); the resolved central
  config of the destination and its upstreams
  ("ConfigEntry.ResolveServiceConfig"); per upstream its chain
  ("DiscoveryChain.Get"); per chain target service its connect instances
  ("Health.ConnectServiceNodes"). Targets come and go with the chains:
  watches start and stop as `wanted_watches` says.
- Reads carry the proxy's token: the one it was registered with, else the
  agent's `default`, else anonymous. They may be stale (as Consul's cache
  reads them): any server's copy will do.
- The leaf cache serves any caller, so the view checks service:write on the
  destination with that token before every leaf read (the leader checks it
  again when it signs).
- An index that goes backwards starts over at 0; an index of 0 blocks at 1
  (no hot loop on a table nobody wrote yet).
- Errors retry after a growing, capped delay (1 s doubling to 30 s, with
  jitter); each is logged once per change of error text, never with a token.
- Publishing: a change is published at once after a quiet spell; bursts are
  coalesced to one snapshot per `COALESCE_S` (so no change waits longer than
  that); an unchanged snapshot is not published again. The first snapshot
  waits (at most `FIRST_SETTLE_S` after the view started) until every watch
  answered, so Envoy does not start from a view without its upstreams. The snapshot is built
  once per change, never per xDS request.
- A proxy that goes (deregistered, or no longer a connect-proxy) has its
  tasks cancelled and is forgotten by the hub, which ends its xDS streams.
  `close()` cancels everything (agent stop).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from proconsul.acl.resolved import ResolvedToken
from proconsul.agent.proxycfg_inputs import (
    CHAIN,
    CONFIG,
    HEALTH,
    INTENTIONS,
    LEAF,
    ROOTS,
    ProxyInputs,
    WatchKey,
    build_snapshot,
    wanted_watches,
)
from proconsul.structs.catalog import NodeService
from proconsul.structs.config_entries import SERVICE_INTENTIONS
from proconsul.structs.connect import IndexedCARoots, IssuedCert
from proconsul.structs.requests import QueryOptions, ReadRequest, ReadResponse
from proconsul.xds.snapshot import ProxySnapshot
from proconsul.xds.sources import SnapshotHub

log = logging.getLogger("proconsul.agent")

CONNECT_PROXY = "connect-proxy"
COALESCE_S = 0.05  # at most one snapshot per proxy this often; no change waits longer
FIRST_SETTLE_S = 0.5  # the first snapshot waits at most this long for every watch's answer
WATCH_WAIT_S = 300.0  # each blocking read's wait (Consul's default)
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0
RESYNC_S = 5.0  # look at the local services at least this often (token changes are silent)

LIST_METHOD = "ConfigEntry.List"
RESOLVE_METHOD = "ConfigEntry.ResolveServiceConfig"
CHAIN_METHOD = "DiscoveryChain.Get"
HEALTH_METHOD = "Health.ConnectServiceNodes"


@dataclass(frozen=True)
class ProxyCfgDeps:
    """What the proxy views need from the agent: values and callables."""

    datacenter: str
    acl_enabled: bool
    default_policy: str
    hub: SnapshotHub
    # Local connect-proxies: proxy ID -> (registration, the token its reads carry).
    proxies: Callable[[], dict[str, tuple[NodeService, str]]]
    wait_local_change: Callable[[float], Awaitable[bool]]
    read: Callable[[str, ReadRequest], Awaitable[ReadResponse]]
    roots: Callable[[int, float], Awaitable[tuple[int, IndexedCARoots]]]
    leaf: Callable[[str, str, int, float], Awaitable[IssuedCert]]
    resolve_token: Callable[[str], Awaitable[ResolvedToken | None]]


def next_min_index(last: int, got: int) -> int:
    """The index the next blocking read waits on (Consul's rules for watches)."""
    if got < last:
        return 0  # the server's state went back (a restore, another server): start over
    return max(got, 1)


@dataclass
class Stats:
    publishes: int = 0
    watch_errors: int = 0


class ProxyView:
    """The live view of one local connect-proxy (see the module docstring)."""

    def __init__(
        self, proxy: NodeService, token: str, deps: ProxyCfgDeps, stats: Stats, rng: random.Random
    ) -> None:
        self.deps = deps
        self.token = token
        self.stats = stats
        self.rng = rng
        self.inputs = ProxyInputs(
            proxy=proxy,
            datacenter=deps.datacenter,
            acl_enabled=deps.acl_enabled,
            default_policy=deps.default_policy,
        )
        self._watches: dict[WatchKey, asyncio.Task[None]] = {}
        self._dirty = asyncio.Event()
        self._published: ProxySnapshot | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._started_s = 0.0

    @property
    def proxy_id(self) -> str:
        return self.inputs.proxy.id

    def start(self) -> None:
        self._started_s = asyncio.get_running_loop().time()
        self._publisher = asyncio.create_task(
            self._publish_loop(), name=f"proxycfg-{self.proxy_id}"
        )
        self._reconcile()

    def update(self, proxy: NodeService, token: str) -> None:
        """The registration or its token changed (or not: then nothing happens)."""
        if proxy == self.inputs.proxy and token == self.token:
            return
        old_service = self.inputs.service
        self.inputs.proxy = proxy
        if token != self.token or proxy.proxy.destination_service_name != old_service:
            # Every answer was read for the old token or service: start afresh.
            self.token = token
            self._cancel(list(self._watches))
            self.inputs.reset()
        self._reconcile()
        self._dirty.set()

    def tasks(self) -> list[asyncio.Task[None]]:
        found = list(self._watches.values())
        if self._publisher is not None:
            found.append(self._publisher)
        return found

    def close(self) -> list[asyncio.Task[None]]:
        """Cancel every task; the cancelled tasks, for the caller to await."""
        cancelled = self.tasks()
        for task in cancelled:
            task.cancel()
        self._watches.clear()
        self._publisher = None
        return cancelled

    # ----- watches ---------------------------------------------------------------

    def _cancel(self, keys: list[WatchKey]) -> None:
        for key in keys:
            task = self._watches.pop(key, None)
            if task is not None:
                task.cancel()

    def _reconcile(self) -> None:
        """Start the watches the inputs call for; stop (and forget) the others."""
        wanted = wanted_watches(self.inputs)
        for key in [k for k in self._watches if k not in wanted]:
            self._cancel([key])
            self.inputs.drop(key)
        for key in sorted(wanted - set(self._watches)):
            name = f"proxycfg {self.proxy_id} {key.label()}"
            self._watches[key] = asyncio.create_task(self._watch(key), name=name)

    def _deliver(self, key: WatchKey, value: object) -> None:
        if self._watches.get(key) is not asyncio.current_task():
            return  # stopped (or replaced) meanwhile
        if self.inputs.store(key, value):
            if key.kind == CHAIN:
                self._reconcile()  # the targets may have changed
            self._dirty.set()

    async def _watch(self, key: WatchKey) -> None:
        index = 0
        delay_s = RETRY_MIN_S
        last_error = ""
        while True:
            try:
                got, value = await self._fetch(key, index)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.watch_errors += 1
                text = getattr(exc, "message", "") or str(exc) or type(exc).__name__
                if text != last_error:
                    log.warning(
                        "agent: proxycfg: watch %s of proxy %s failed: %s",
                        key.label(),
                        self.proxy_id,
                        text,
                    )
                    last_error = text
                await asyncio.sleep(delay_s * (1 + self.rng.random() / 2))
                delay_s = min(delay_s * 2, RETRY_MAX_S)
                continue
            if last_error:
                log.info(
                    "agent: proxycfg: watch %s of proxy %s recovered",
                    key.label(),
                    self.proxy_id,
                )
                last_error = ""
            delay_s = RETRY_MIN_S
            index = next_min_index(index, got)
            self._deliver(key, value)

    def _options(self, index: int, datacenter: str = "") -> QueryOptions:
        return QueryOptions(
            datacenter=datacenter,
            token=self.token,
            min_index=index,
            max_query_time_s=WATCH_WAIT_S,
            allow_stale=True,
        )

    async def _fetch(self, key: WatchKey, index: int) -> tuple[int, Any]:
        """One blocking read of `key` after `index`: (its index, its value)."""
        deps = self.deps
        if key.kind == ROOTS:
            return await deps.roots(index, WATCH_WAIT_S)
        if key.kind == LEAF:
            await self._check_service_write(key.name)
            cert = await deps.leaf(key.name, self.token, index, WATCH_WAIT_S)
            return cert.modify_index, cert
        if key.kind == INTENTIONS:
            request = ReadRequest(kind=SERVICE_INTENTIONS, options=self._options(index))
            response = await deps.read(LIST_METHOD, request)
        elif key.kind == CONFIG:
            request = ReadRequest(
                name=key.name,
                upstreams=list(key.upstreams),
                mesh_gateway_mode=self.inputs.proxy.proxy.mesh_gateway.mode,
                options=self._options(index),
            )
            response = await deps.read(RESOLVE_METHOD, request)
        elif key.kind == CHAIN:
            response = await deps.read(
                CHAIN_METHOD, ReadRequest(name=key.name, options=self._options(index))
            )
        elif key.kind == HEALTH:
            request = ReadRequest(name=key.name, options=self._options(index, key.datacenter))
            response = await deps.read(HEALTH_METHOD, request)
        else:
            raise ValueError(f"unknown watch kind {key.kind!r}")
        return response.meta.index, response.value

    async def _check_service_write(self, service: str) -> None:
        """The leaf cache serves anyone: the proxy's token must write its service."""
        resolved = await self.deps.resolve_token(self.token)
        if resolved is not None and not resolved.authorizer.service_write(service):
            raise resolved.deny("service", "write", service)

    # ----- publishing ------------------------------------------------------------

    async def _publish_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_s = -COALESCE_S
        while True:
            await self._dirty.wait()
            wait_s = last_s + COALESCE_S - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # coalesce a burst
            self._dirty.clear()
            snapshot = build_snapshot(self.inputs)
            if snapshot is None or snapshot == self._published:
                continue
            settle_s = self._started_s + FIRST_SETTLE_S - loop.time()
            if self._published is None and settle_s > 0 and not self.inputs.complete():
                loop.call_later(settle_s, self._dirty.set)  # look again then at the latest
                continue
            self._published = snapshot
            self.deps.hub.publish(snapshot)
            self.stats.publishes += 1
            last_s = loop.time()


class ProxyConfigManager:
    """One `ProxyView` per local connect-proxy, following local state changes."""

    def __init__(self, deps: ProxyCfgDeps, rng: random.Random | None = None) -> None:
        self.deps = deps
        self.rng = rng or random.Random()
        self.views: dict[str, ProxyView] = {}
        self._stats = Stats()
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.sync()
        self._task = asyncio.create_task(self._follow(), name="proxycfg")

    async def _follow(self) -> None:
        while True:
            await self.deps.wait_local_change(RESYNC_S)
            self.sync()

    def sync(self) -> None:
        """Make the views match the local connect-proxies now."""
        proxies = self.deps.proxies()
        for proxy_id in [p for p in self.views if p not in proxies]:
            self._drop(proxy_id)
        for proxy_id, (proxy, token) in proxies.items():
            view = self.views.get(proxy_id)
            if view is None:
                view = ProxyView(proxy, token, self.deps, self._stats, self.rng)
                self.views[proxy_id] = view
                view.start()
                log.debug("agent: proxycfg: watching proxy %s", proxy_id)
            else:
                view.update(proxy, token)

    def _drop(self, proxy_id: str) -> None:
        view = self.views.pop(proxy_id)
        for task in view.close():
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self.deps.hub.forget(proxy_id)
        log.debug("agent: proxycfg: proxy %s is gone", proxy_id)

    async def close(self) -> None:
        tasks = [self._task] if self._task is not None else []
        self._task = None
        for proxy_id in list(self.views):
            view = self.views.pop(proxy_id)
            tasks.extend(view.close())
            self.deps.hub.forget(proxy_id)
        tasks.extend(self._closing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict[str, float]:
        return {
            "proxies": len(self.views),
            "watches": sum(len(v.tasks()) - 1 for v in self.views.values()),
            "publishes": self._stats.publishes,
            "watch_errors": self._stats.watch_errors,
        }
