"""Clusters and their endpoints: `local_app` and one cluster per chain target.

Job: `local_app_cluster` points the public listener at the service itself;
`upstream_clusters` makes one EDS cluster per target of each upstream's
discovery chain, and `load_assignments` the ClusterLoadAssignment of each
from the snapshot's instances.

Rules (Consul's, for a sidecar):
- A target's cluster is named by its SNI
  (`api.default.dc1.internal.<trust domain>`, `v1.api...` for a subset);
  its connect timeout is the resolver's (5s by default), or the upstream's
  `connect_timeout_ms` when no resolver shaped the chain. Endpoints come by
  EDS; TLS is the target's SNI and SPIFFE ID (xds/secrets.py). http2 and
  grpc upstreams speak HTTP/2 to the far proxy.
- Failover: the targets a resolver fails over to are added to the primary
  target's load assignment at priorities 1, 2, ... in order, and their SPIFFE
  IDs are accepted by its TLS check.
- An instance is HEALTHY with its `Weights.Passing` weight; a warning check
  gives it `Weights.Warning` (unhealthy under the subset's `OnlyPassing`), a
  critical one makes it UNHEALTHY, as does a weight below 1; weights are
  capped at 128. Its address is the service's, else the node's.
- `local_app` is STATIC at `local_service_address` (127.0.0.1 by default) and
  `local_service_port`, with `local_connect_timeout_ms` (5s).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2

from proconsul.structs.catalog import CheckServiceNode
from proconsul.structs.discovery_chain import CompiledDiscoveryChain, DiscoveryTarget
from proconsul.xds.common import ads_source, duration_ms, duration_s, pack, socket_address
from proconsul.xds.secrets import upstream_socket
from proconsul.xds.snapshot import ProxySnapshot, UpstreamSnapshot, _as_int, service_spiffe_id

LOCAL_APP = "local_app"
HTTP2_PROTOCOLS = frozenset({"http2", "grpc"})
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
MAX_WEIGHT = 128

HEALTHY = health_check_pb2.HEALTHY
UNHEALTHY = health_check_pb2.UNHEALTHY


def _http2_options(cluster: Any) -> None:
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(pack(options))


def local_app_cluster(snapshot: ProxySnapshot) -> Any:
    cluster = cluster_pb2.Cluster(
        name=LOCAL_APP,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration_ms(snapshot.local_connect_timeout_ms),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=LOCAL_APP,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=socket_address(snapshot.local_address, snapshot.local_port)
                            )
                        )
                    ]
                )
            ],
        ),
    )
    if snapshot.protocol in HTTP2_PROTOCOLS:
        _http2_options(cluster)
    return cluster


def cluster_name(target: DiscoveryTarget) -> str:
    return target.sni


def failover_of(chain: CompiledDiscoveryChain) -> dict[str, list[str]]:
    """Target id -> the target ids its resolver fails over to, in order."""
    out: dict[str, list[str]] = {}
    for node in chain.nodes.values():
        resolver = node.resolver
        if resolver is not None and resolver.failover is not None:
            out[resolver.target] = list(resolver.failover.targets)
    return out


def _connect_timeout_s(up: UpstreamSnapshot, target: DiscoveryTarget) -> float:
    override = up.upstream.config.get("connect_timeout_ms")
    if up.chain.default and override is not None:
        return _as_int(override, 5000) / 1000
    return float(target.connect_timeout)


def _targets(
    snapshot: ProxySnapshot,
) -> Iterator[tuple[UpstreamSnapshot, DiscoveryTarget, list[DiscoveryTarget]]]:
    """Each chain target once (by cluster name), with the targets it fails over to."""
    seen: set[str] = set()
    for up in snapshot.upstreams:
        failover = failover_of(up.chain)
        for target_id, target in up.chain.targets.items():
            if cluster_name(target) in seen:
                continue
            seen.add(cluster_name(target))
            yield up, target, [up.chain.targets[t] for t in failover.get(target_id, [])]


def upstream_clusters(snapshot: ProxySnapshot) -> list[Any]:
    clusters = []
    for up, target, failover in _targets(snapshot):
        name = cluster_name(target)
        reachable = [target, *failover]
        spiffe_ids = list(
            dict.fromkeys(
                service_spiffe_id(snapshot.trust_domain, t.datacenter, t.service) for t in reachable
            )
        )
        cluster = cluster_pb2.Cluster(
            name=name,
            alt_stat_name=name,
            type=cluster_pb2.Cluster.EDS,
            eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()),
            connect_timeout=duration_s(_connect_timeout_s(up, target)),
            circuit_breakers=circuit_breaker_pb2.CircuitBreakers(),
            outlier_detection=outlier_detection_pb2.OutlierDetection(),
            common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
                healthy_panic_threshold=percent_pb2.Percent()
            ),
            transport_socket=upstream_socket(snapshot.service, target.sni, spiffe_ids),
        )
        if up.chain.protocol in HTTP2_PROTOCOLS:
            _http2_options(cluster)
        clusters.append(cluster)
    return clusters


def endpoint_health(node: CheckServiceNode, only_passing: bool) -> tuple[int, int]:
    """(Envoy health status, load-balancing weight) of one instance."""
    weights = node.service.weights
    weight = weights.passing
    for check in node.checks:
        if check.status == "critical":
            return UNHEALTHY, 1
        if only_passing and check.status != "passing":
            return UNHEALTHY, 1
        if check.status == "warning":
            weight = weights.warning
    if weight < 1:
        return UNHEALTHY, 1
    return HEALTHY, min(weight, MAX_WEIGHT)


def _lb_endpoints(nodes: Iterable[CheckServiceNode], only_passing: bool) -> list[Any]:
    out = []
    for node in nodes:
        status, weight = endpoint_health(node, only_passing)
        lb = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=socket_address(node.service.address or node.node.address, node.service.port)
            ),
            health_status=status,
        )
        lb.load_balancing_weight.value = weight
        out.append(lb)
    return out


def load_assignments(snapshot: ProxySnapshot) -> list[Any]:
    assignments = []
    for up, target, failover in _targets(snapshot):
        localities = [
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=_lb_endpoints(up.endpoints.get(t.id, ()), t.subset.only_passing),
                priority=priority,
            )
            for priority, t in enumerate([target, *failover])
        ]
        assignments.append(
            endpoint_pb2.ClusterLoadAssignment(
                cluster_name=cluster_name(target), endpoints=localities
            )
        )
    return assignments
