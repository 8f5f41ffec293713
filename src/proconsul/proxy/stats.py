"""The proxy's counters and latency histograms, rendered as Envoy does.

Job: `ListenerStats` and `ClusterStats` are plain counters the data plane
bumps (attribute increments, no lookups on the hot path); `Stats` keeps them
by name and renders `/stats` (`name: value` lines, Envoy's names) and
`/stats/prometheus` (`envoy_` metrics with labels).

Names (Envoy's where it has one):
- `listener.<name>.downstream_cx_total`, `downstream_cx_active`,
  `ssl.connection_error` (failed handshakes: plaintext, unknown CA, no
  client certificate), `rbac.allowed`, `rbac.denied`,
  `http.downstream_rq_total`, `http.downstream_rq_{2xx,3xx,4xx,5xx}`,
  `http.downstream_rq_time` (histogram, ms).
- `cluster.<name>.upstream_cx_total`, `upstream_cx_active`,
  `upstream_cx_connect_fail`, `upstream_cx_overflow`, `upstream_rq_total`,
  `upstream_rq_{2xx,...}`, `upstream_rq_retry`, `upstream_rq_timeout`,
  `outlier_detection.ejections_enforced_total`, `upstream_rq_time`.
- Text readouts (`/stats` only, as Envoy's `name: "text"`): the xDS
  version applied of each type (`VERSION_STATS`, e.g.
  `cluster_manager.cds.version_text`), so a troubleshooter can compare it
  with the version the agent serves.
- Pure: counters only; the adapters keep the time.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from proconsul.xds.common import VERSION_STATS

BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


@dataclass(slots=True)
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    total: int = 0
    sum_ms: float = 0.0

    def record(self, ms: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_MS, ms)] += 1
        self.total += 1
        self.sum_ms += ms

    def quantile(self, q: float) -> float:
        if not self.total:
            return 0.0
        want, seen = q * self.total, 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen >= want:
                return BUCKETS_MS[i] if i < len(BUCKETS_MS) else float("inf")
        return float("inf")


@dataclass(slots=True)
class ResponseClasses:
    c1xx: int = 0
    c2xx: int = 0
    c3xx: int = 0
    c4xx: int = 0
    c5xx: int = 0

    def count(self, status: int) -> None:
        if status < 200:
            self.c1xx += 1
        elif status < 300:
            self.c2xx += 1
        elif status < 400:
            self.c3xx += 1
        elif status < 500:
            self.c4xx += 1
        else:
            self.c5xx += 1


@dataclass(slots=True)
class ListenerStats:
    downstream_cx_total: int = 0
    downstream_cx_active: int = 0
    ssl_connection_error: int = 0
    rbac_allowed: int = 0
    rbac_denied: int = 0
    downstream_rq_total: int = 0
    responses: ResponseClasses = field(default_factory=ResponseClasses)
    rq_time: Histogram = field(default_factory=Histogram)

    def lines(self) -> list[tuple[str, float]]:
        r = self.responses
        return [
            ("downstream_cx_total", self.downstream_cx_total),
            ("downstream_cx_active", self.downstream_cx_active),
            ("ssl.connection_error", self.ssl_connection_error),
            ("rbac.allowed", self.rbac_allowed),
            ("rbac.denied", self.rbac_denied),
            ("http.downstream_rq_total", self.downstream_rq_total),
            ("http.downstream_rq_1xx", r.c1xx),
            ("http.downstream_rq_2xx", r.c2xx),
            ("http.downstream_rq_3xx", r.c3xx),
            ("http.downstream_rq_4xx", r.c4xx),
            ("http.downstream_rq_5xx", r.c5xx),
        ]


@dataclass(slots=True)
class ClusterStats:
    upstream_cx_total: int = 0
    upstream_cx_active: int = 0
    upstream_cx_connect_fail: int = 0
    upstream_cx_overflow: int = 0
    upstream_rq_pending_overflow: int = 0
    upstream_rq_total: int = 0
    upstream_rq_retry: int = 0
    upstream_rq_timeout: int = 0
    ejections: int = 0
    responses: ResponseClasses = field(default_factory=ResponseClasses)
    rq_time: Histogram = field(default_factory=Histogram)

    def lines(self) -> list[tuple[str, float]]:
        r = self.responses
        return [
            ("upstream_cx_total", self.upstream_cx_total),
            ("upstream_cx_active", self.upstream_cx_active),
            ("upstream_cx_connect_fail", self.upstream_cx_connect_fail),
            ("upstream_cx_overflow", self.upstream_cx_overflow),
            ("upstream_rq_pending_overflow", self.upstream_rq_pending_overflow),
            ("upstream_rq_total", self.upstream_rq_total),
            ("upstream_rq_retry", self.upstream_rq_retry),
            ("upstream_rq_timeout", self.upstream_rq_timeout),
            ("outlier_detection.ejections_enforced_total", self.ejections),
            ("upstream_rq_1xx", r.c1xx),
            ("upstream_rq_2xx", r.c2xx),
            ("upstream_rq_3xx", r.c3xx),
            ("upstream_rq_4xx", r.c4xx),
            ("upstream_rq_5xx", r.c5xx),
        ]


@dataclass
class Stats:
    listeners: dict[str, ListenerStats] = field(default_factory=dict)
    clusters: dict[str, ClusterStats] = field(default_factory=dict)
    control: dict[str, int] = field(
        default_factory=lambda: {"ads.acks": 0, "ads.nacks": 0, "ads.reconnects": 0}
    )
    versions: dict[str, str] = field(default_factory=dict)  # type URL -> version applied

    def listener(self, name: str) -> ListenerStats:
        found = self.listeners.get(name)
        if found is None:
            found = self.listeners[name] = ListenerStats()
        return found

    def cluster(self, name: str) -> ClusterStats:
        found = self.clusters.get(name)
        if found is None:
            found = self.clusters[name] = ClusterStats()
        return found

    def _all(self) -> list[tuple[str, str, str, float, Histogram | None]]:
        """(kind, scope, metric, value, histogram) for every number."""
        out: list[tuple[str, str, str, float, Histogram | None]] = []
        for name, listener in sorted(self.listeners.items()):
            out += [("listener", name, k, v, None) for k, v in listener.lines()]
            out.append(("listener", name, "http.downstream_rq_time", 0, listener.rq_time))
        for name, cluster in sorted(self.clusters.items()):
            out += [("cluster", name, k, v, None) for k, v in cluster.lines()]
            out.append(("cluster", name, "upstream_rq_time", 0, cluster.rq_time))
        out += [("", "", k, v, None) for k, v in sorted(self.control.items())]
        return out

    def render_text(self) -> str:
        lines = []
        for kind, scope, metric, value, histogram in self._all():
            name = f"{kind}.{scope}.{metric}" if kind else metric
            if histogram is None:
                lines.append(f"{name}: {int(value)}")
            else:
                p50, p99 = histogram.quantile(0.5), histogram.quantile(0.99)
                lines.append(f"{name}: count={histogram.total} P50={p50:g} P99={p99:g}")
        for type_url, stat in sorted(VERSION_STATS.items(), key=lambda kv: kv[1]):
            if type_url in self.versions:
                lines.append(f'{stat}: "{self.versions[type_url]}"')
        return "\n".join(lines) + "\n"

    def render_prometheus(self) -> str:
        lines = []
        for kind, scope, metric, value, histogram in self._all():
            name = "envoy_" + _UNSAFE.sub("_", f"{kind}_{metric}" if kind else metric)
            labels = ""
            if kind:
                escaped = scope.replace("\\", "\\\\").replace('"', '\\"')
                labels = f'{LABELS[kind]}="{escaped}"'
            if histogram is None:
                lines.append(
                    f"{name}{{{labels}}} {int(value)}" if labels else f"{name} {int(value)}"
                )
                continue
            running = 0
            inner = labels + "," if labels else ""
            for bound, count in zip((*BUCKETS_MS, "+Inf"), histogram.counts, strict=True):
                running += count
                lines.append(f'{name}_bucket{{{inner}le="{bound}"}} {running}')
            lines.append(f"{name}_sum{{{labels}}} {histogram.sum_ms:g}")
            lines.append(f"{name}_count{{{labels}}} {histogram.total}")
        return "\n".join(lines) + "\n"


_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
LABELS = {"listener": "envoy_listener_address", "cluster": "envoy_cluster_name"}
