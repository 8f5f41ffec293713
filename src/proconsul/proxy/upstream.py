"""Connecting to a cluster: pick an endpoint, respect the limits, TLS with SPIFFE check.

Job: `Clusters` owns each cluster's `Balancer` and statistics and opens
upstream connections (`connect`), reporting each outcome to outlier
detection. The TCP and HTTP proxies call it; they never pick endpoints.

Rules:
- `connect` fails with `UpstreamError`: `no_cluster`, `no_healthy`,
  `overflow` (circuit breaker: max connections / pending) or
  `connect_failure` (refused, timed out after the cluster's connect
  timeout, TLS failed, or the server's SPIFFE ID is not the cluster's).
- A connect failure counts against the endpoint (outlier detection) and in
  `upstream_cx_connect_fail`.
- The caller calls `release(name)` once per successful connect when the
  connection is gone, so `upstream_cx_active` and the breaker stay true.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

from proconsul.proxy.balancer import Balancer
from proconsul.proxy.config import ClusterConfig, Endpoint, ProxyConfig
from proconsul.proxy.stats import ClusterStats, Stats
from proconsul.proxy.tls import MissingSecret, TLSContexts, san_ok

NO_CLUSTER, NO_HEALTHY, OVERFLOW, CONNECT_FAILURE = (
    "no_cluster",
    "no_healthy",
    "overflow",
    "connect_failure",
)


class UpstreamError(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Clusters:
    def __init__(self, stats: Stats, tls: TLSContexts) -> None:
        self.stats = stats
        self.tls = tls
        self.balancers: dict[str, Balancer] = {}
        self.configs: dict[str, ClusterConfig] = {}

    def apply(self, config: ProxyConfig) -> None:
        for name, cluster in config.clusters.items():
            endpoints = config.cluster_endpoints(name)
            balancer = self.balancers.get(name)
            if balancer is None:
                self.balancers[name] = Balancer(cluster, endpoints)
            else:
                balancer.update_cluster(cluster)
                balancer.set_endpoints(endpoints)
            self.stats.cluster(name)
        for name in set(self.balancers) - set(config.clusters):
            del self.balancers[name]
        self.configs = dict(config.clusters)

    def cluster_stats(self, name: str) -> ClusterStats:
        return self.stats.cluster(name)

    def report(self, name: str, endpoint: Endpoint, ok: bool) -> None:
        balancer = self.balancers.get(name)
        if balancer is not None and balancer.report(endpoint, ok, time.monotonic()):
            self.stats.cluster(name).ejections += 1

    def release(self, name: str) -> None:
        balancer = self.balancers.get(name)
        if balancer is not None and balancer.connections > 0:
            balancer.connections -= 1
        stats = self.stats.cluster(name)
        stats.upstream_cx_active -= 1

    async def connect(
        self, name: str, factory: Callable[[], asyncio.Protocol], endpoint: Endpoint | None = None
    ) -> tuple[asyncio.Transport, Any, Endpoint]:
        """A new connection to `endpoint`, else to the balancer's next pick."""
        balancer = self.balancers.get(name)
        if balancer is None:
            raise UpstreamError(NO_CLUSTER, name)
        stats = self.stats.cluster(name)
        if not balancer.may_connect() or not balancer.may_queue():
            stats.upstream_cx_overflow += 1
            raise UpstreamError(OVERFLOW, name)
        if endpoint is None:
            endpoint = balancer.pick(time.monotonic())
        if endpoint is None:
            raise UpstreamError(NO_HEALTHY, name)
        cluster = balancer.cluster
        context: ssl.SSLContext | None = None
        if cluster.tls is not None:
            try:
                context = self.tls.client(cluster.tls)
            except (MissingSecret, ssl.SSLError) as err:
                raise UpstreamError(CONNECT_FAILURE, str(err)) from None
        loop = asyncio.get_running_loop()
        balancer.pending += 1
        try:
            async with asyncio.timeout(cluster.connect_timeout_s):
                if context is None:
                    transport, protocol = await loop.create_connection(
                        factory, endpoint.host, endpoint.port
                    )
                else:
                    assert cluster.tls is not None
                    transport, protocol = await loop.create_connection(
                        factory,
                        endpoint.host,
                        endpoint.port,
                        ssl=context,
                        server_hostname=cluster.tls.sni or None,
                    )
                    if not san_ok(cluster.tls, transport.get_extra_info("ssl_object")):
                        transport.abort()
                        raise OSError("the server's SPIFFE ID is not the cluster's")
        except (OSError, TimeoutError, ssl.SSLError) as err:
            stats.upstream_cx_connect_fail += 1
            self.report(name, endpoint, False)
            raise UpstreamError(CONNECT_FAILURE, str(err) or type(err).__name__) from None
        finally:
            balancer.pending -= 1
        balancer.connections += 1
        stats.upstream_cx_total += 1
        stats.upstream_cx_active += 1
        return transport, protocol, endpoint


class RuntimeView(Protocol):
    """What the TCP and HTTP proxies use of the running proxy (runtime.py)."""

    config: ProxyConfig
    stats: Stats
    clusters: Clusters
    pool: Any  # http.Pool
    rng: random.Random
    draining: bool
    in_flight: int

    def request_started(self) -> None: ...

    def request_done(self) -> None: ...

    def track(self, handler: Any) -> None: ...

    def untrack(self, handler: Any) -> None: ...
