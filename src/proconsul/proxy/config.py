"""The proxy's configuration model, built from the xDS resources it receives.

Job: one `parse_*` per resource type turns an Envoy v3 resource into a
frozen value the data plane uses directly (compiled RBAC, route tables,
endpoint lists); `parse_resources` does a whole response. A resource outside
the subset our translator emits raises `Unsupported` with a clear reason;
the ADS client NACKs the response with it and keeps its last good config.

Rules:
- The subset: listeners with one filter chain, an optional `tls` transport
  socket (DownstreamTlsContext by SDS), the network filters
  `envoy.filters.network.rbac`, `envoy.filters.network.tcp_proxy` and
  `envoy.filters.network.http_connection_manager` (HTTP/1.1; HTTP filters
  `envoy.filters.http.rbac` and `envoy.filters.http.router`; routes by RDS
  over ADS or inline); STATIC and EDS clusters with an UpstreamTlsContext
  by SDS, circuit breakers and outlier detection; load assignments; route
  configurations (routing.py); TLS certificate and validation secrets.
- HTTP/2 (http2 and grpc services) is not carried out: NACKed.
- Pure: no sockets, clocks or files. Secrets keep their key out of reprs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from proconsul.proxy.matchers import Unsupported as Unsupported
from proconsul.proxy.rbac import RBACRules, compile_rbac
from proconsul.proxy.routing import RouteTable, compile_routes
from proconsul.xds.common import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    TYPE_ORDER,
)

TYPES = TYPE_ORDER  # the order the server pushes in, and we subscribe in

NETWORK_RBAC = "envoy.filters.network.rbac"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
HCM = "envoy.filters.network.http_connection_manager"
HTTP_RBAC = "envoy.filters.http.rbac"
ROUTER = "envoy.filters.http.router"
TLS_SOCKET = "envoy.transport_sockets.tls"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HEALTHY_STATES = (0, 1)  # UNKNOWN, HEALTHY (core.v3.HealthStatus)
URI_SAN = 3  # SubjectAltNameMatcher.SanType.URI
# Envoy's defaults when a CircuitBreakers / OutlierDetection leaves a field unset.
DEFAULT_MAX = 1024
DEFAULT_CONSECUTIVE_5XX = 5
DEFAULT_BASE_EJECTION_S = 30.0
DEFAULT_MAX_EJECTION_PERCENT = 10


@dataclass(frozen=True)
class ServerTLS:
    """A listener's TLS: our leaf, and the roots a client certificate must chain to."""

    leaf_secret: str
    roots_secret: str
    require_client_cert: bool


@dataclass(frozen=True)
class ClientTLS:
    """A cluster's TLS: our leaf as client certificate, the roots, the SNI and the
    URI SANs (SPIFFE IDs) the server may present."""

    leaf_secret: str
    roots_secret: str
    sni: str
    allowed_sans: frozenset[str]


@dataclass(frozen=True)
class HttpManager:
    stat_prefix: str
    rbac: RBACRules | None
    rds_name: str  # "" when routes are inline
    routes: RouteTable | None
    forward_client_cert: bool


@dataclass(frozen=True)
class ListenerConfig:
    name: str
    host: str
    port: int
    inbound: bool
    tls: ServerTLS | None
    stat_prefix: str
    rbac: RBACRules | None  # the network RBAC filter
    tcp_cluster: str  # tcp_proxy's cluster, "" for HTTP
    http: HttpManager | None


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    weight: int = 1
    priority: int = 0


@dataclass(frozen=True)
class Outlier:
    consecutive_5xx: int
    base_ejection_s: float
    max_ejection_percent: int


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    connect_timeout_s: float
    eds: bool
    static_endpoints: tuple[Endpoint, ...]
    tls: ClientTLS | None
    max_connections: int
    max_pending: int
    max_requests: int
    outlier: Outlier | None


@dataclass(frozen=True)
class SecretConfig:
    name: str
    cert_pem: str = ""
    key_pem: str = field(default="", repr=False)
    roots_pem: str = ""


def _unpack(packed: Any, cls: Any, what: str) -> Any:
    message = cls()
    if not packed.Unpack(message):
        raise Unsupported(f"{what}: expected {cls.DESCRIPTOR.full_name}, got {packed.type_url}")
    return message


def _address(address: Any, what: str) -> tuple[str, int]:
    if address.WhichOneof("address") != "socket_address":
        raise Unsupported(f"{what}: only socket addresses are supported")
    sock = address.socket_address
    if sock.WhichOneof("port_specifier") != "port_value":
        raise Unsupported(f"{what}: a named port is not supported")
    return sock.address, sock.port_value


def _sds_name(configs: Iterable[Any], what: str) -> str:
    names = [c.name for c in configs]
    if len(names) != 1:
        raise Unsupported(f"{what}: exactly one SDS certificate is supported")
    return str(names[0])


def _server_tls(socket: Any, name: str) -> ServerTLS:
    if socket.name not in ("tls", TLS_SOCKET):
        raise Unsupported(f"listener {name}: transport socket {socket.name!r} is not supported")
    context = _unpack(socket.typed_config, tls_pb2.DownstreamTlsContext, f"listener {name}")
    common = context.common_tls_context
    if common.tls_certificates or not common.HasField("validation_context_sds_secret_config"):
        raise Unsupported(f"listener {name}: TLS must name its leaf and roots by SDS")
    return ServerTLS(
        leaf_secret=_sds_name(common.tls_certificate_sds_secret_configs, f"listener {name}"),
        roots_secret=common.validation_context_sds_secret_config.name,
        require_client_cert=context.require_client_certificate.value,
    )


def _http_manager(config: Any, listener: str) -> HttpManager:
    manager = _unpack(config, hcm_pb2.HttpConnectionManager, f"listener {listener}")
    if manager.HasField("http2_protocol_options"):
        raise Unsupported(f"listener {listener}: HTTP/2 is not supported by the built-in proxy")
    rbac: RBACRules | None = None
    filters = list(manager.http_filters)
    if not filters or filters[-1].name != ROUTER:
        raise Unsupported(f"listener {listener}: the last HTTP filter must be {ROUTER}")
    _unpack(filters[-1].typed_config, router_pb2.Router, f"listener {listener}")
    for http_filter in filters[:-1]:
        if http_filter.name != HTTP_RBAC:
            raise Unsupported(
                f"listener {listener}: HTTP filter {http_filter.name!r} is not supported"
            )
        rules = _unpack(http_filter.typed_config, http_rbac_pb2.RBAC, f"listener {listener}")
        rbac = compile_rbac(rules.rules)
    kind = manager.WhichOneof("route_specifier")
    if kind == "rds":
        return HttpManager(manager.stat_prefix, rbac, manager.rds.route_config_name, None, False)
    if kind == "route_config":
        table = compile_routes(manager.route_config)
        forward = manager.forward_client_cert_details != hcm_pb2.HttpConnectionManager.SANITIZE
        return HttpManager(manager.stat_prefix, rbac, "", table, forward)
    raise Unsupported(f"listener {listener}: routes by {kind or 'nothing'!r} are not supported")


def parse_listener(listener: Any) -> ListenerConfig:
    name = listener.name
    host, port = _address(listener.address, f"listener {name}")
    if listener.listener_filters:
        raise Unsupported(f"listener {name}: listener filters are not supported")
    if len(listener.filter_chains) != 1:
        raise Unsupported(f"listener {name}: exactly one filter chain is supported")
    chain = listener.filter_chains[0]
    if chain.HasField("filter_chain_match"):
        raise Unsupported(f"listener {name}: filter chain matches are not supported")
    tls = _server_tls(chain.transport_socket, name) if chain.HasField("transport_socket") else None
    rbac: RBACRules | None = None
    tcp_cluster, http, stat_prefix = "", None, name
    filters = list(chain.filters)
    if not filters:
        raise Unsupported(f"listener {name}: no network filter")
    for position, net_filter in enumerate(filters):
        last = position == len(filters) - 1
        if net_filter.name == NETWORK_RBAC and not last:
            config = _unpack(net_filter.typed_config, network_rbac_pb2.RBAC, f"listener {name}")
            rbac = compile_rbac(config.rules)
        elif net_filter.name == TCP_PROXY and last:
            proxy = _unpack(net_filter.typed_config, tcp_proxy_pb2.TcpProxy, f"listener {name}")
            if proxy.WhichOneof("cluster_specifier") != "cluster":
                raise Unsupported(f"listener {name}: tcp_proxy needs one cluster")
            tcp_cluster, stat_prefix = proxy.cluster, proxy.stat_prefix or name
        elif net_filter.name == HCM and last:
            http = _http_manager(net_filter.typed_config, name)
            stat_prefix = http.stat_prefix or name
        else:
            raise Unsupported(
                f"listener {name}: network filter {net_filter.name!r} is not supported here"
            )
    return ListenerConfig(
        name=name,
        host=host,
        port=port,
        inbound=listener.traffic_direction == 1,  # core.v3.TrafficDirection.INBOUND
        tls=tls,
        stat_prefix=stat_prefix,
        rbac=rbac,
        tcp_cluster=tcp_cluster,
        http=http,
    )


def _client_tls(socket: Any, name: str) -> ClientTLS:
    if socket.name not in ("tls", TLS_SOCKET):
        raise Unsupported(f"cluster {name}: transport socket {socket.name!r} is not supported")
    context = _unpack(socket.typed_config, tls_pb2.UpstreamTlsContext, f"cluster {name}")
    common = context.common_tls_context
    kind = common.WhichOneof("validation_context_type")
    if kind == "combined_validation_context":
        combined = common.combined_validation_context
        roots = combined.validation_context_sds_secret_config.name
        matchers = combined.default_validation_context.match_typed_subject_alt_names
    elif kind == "validation_context_sds_secret_config":
        roots, matchers = common.validation_context_sds_secret_config.name, []
    else:
        raise Unsupported(f"cluster {name}: TLS must name its roots by SDS")
    sans = set()
    for matcher in matchers:
        if matcher.san_type != URI_SAN or matcher.matcher.WhichOneof("match_pattern") != "exact":
            raise Unsupported(f"cluster {name}: only exact URI SAN matches are supported")
        sans.add(matcher.matcher.exact)
    return ClientTLS(
        leaf_secret=_sds_name(common.tls_certificate_sds_secret_configs, f"cluster {name}"),
        roots_secret=roots,
        sni=context.sni,
        allowed_sans=frozenset(sans),
    )


def _endpoints(assignment: Any, what: str) -> tuple[Endpoint, ...]:
    """The healthy endpoints of a load assignment (UNKNOWN counts as healthy)."""
    out = []
    for locality in assignment.endpoints:
        for lb in locality.lb_endpoints:
            if lb.health_status not in HEALTHY_STATES:
                continue
            host, port = _address(lb.endpoint.address, what)
            weight = lb.load_balancing_weight.value if lb.HasField("load_balancing_weight") else 1
            out.append(Endpoint(host, port, max(weight, 1), locality.priority))
    return tuple(out)


def _limit(threshold: Any, field_name: str) -> int:
    if threshold is not None and threshold.HasField(field_name):
        return int(getattr(threshold, field_name).value)
    return DEFAULT_MAX


def parse_cluster(cluster: Any) -> ClusterConfig:
    name = cluster.name
    kind = cluster.WhichOneof("cluster_discovery_type")
    if kind != "type" or cluster.type not in (cluster_pb2.Cluster.STATIC, cluster_pb2.Cluster.EDS):
        raise Unsupported(f"cluster {name}: only STATIC and EDS clusters are supported")
    if HTTP_OPTIONS_KEY in cluster.typed_extension_protocol_options or cluster.HasField(
        "http2_protocol_options"
    ):
        raise Unsupported(
            f"cluster {name}: HTTP/2 upstreams are not supported by the built-in proxy"
        )
    if cluster.lb_policy != cluster_pb2.Cluster.ROUND_ROBIN:
        raise Unsupported(f"cluster {name}: only ROUND_ROBIN load balancing is supported")
    eds = cluster.type == cluster_pb2.Cluster.EDS
    static = () if eds else _endpoints(cluster.load_assignment, f"cluster {name}")
    tls = (
        _client_tls(cluster.transport_socket, name)
        if cluster.HasField("transport_socket")
        else None
    )
    default = next((t for t in cluster.circuit_breakers.thresholds if t.priority == 0), None)
    outlier = None
    if cluster.HasField("outlier_detection"):
        od = cluster.outlier_detection
        outlier = Outlier(
            consecutive_5xx=od.consecutive_5xx.value
            if od.HasField("consecutive_5xx")
            else DEFAULT_CONSECUTIVE_5XX,
            base_ejection_s=od.base_ejection_time.ToNanoseconds() / 1e9
            if od.HasField("base_ejection_time")
            else DEFAULT_BASE_EJECTION_S,
            max_ejection_percent=od.max_ejection_percent.value
            if od.HasField("max_ejection_percent")
            else DEFAULT_MAX_EJECTION_PERCENT,
        )
    timeout = (
        cluster.connect_timeout.ToNanoseconds() / 1e9
        if cluster.HasField("connect_timeout")
        else 5.0
    )
    return ClusterConfig(
        name=name,
        connect_timeout_s=timeout,
        eds=eds,
        static_endpoints=static,
        tls=tls,
        max_connections=_limit(default, "max_connections"),
        max_pending=_limit(default, "max_pending_requests"),
        max_requests=_limit(default, "max_requests"),
        outlier=outlier,
    )


def parse_assignment(assignment: Any) -> tuple[Endpoint, ...]:
    return _endpoints(assignment, f"load assignment {assignment.cluster_name}")


def parse_secret(secret: Any) -> SecretConfig:
    kind = secret.WhichOneof("type")
    if kind == "tls_certificate":
        cert = secret.tls_certificate
        for source in (cert.certificate_chain, cert.private_key):
            if source.WhichOneof("specifier") != "inline_string":
                raise Unsupported(f"secret {secret.name}: only inline PEM is supported")
        return SecretConfig(
            secret.name,
            cert_pem=cert.certificate_chain.inline_string,
            key_pem=cert.private_key.inline_string,
        )
    if kind == "validation_context":
        trusted = secret.validation_context.trusted_ca
        if trusted.WhichOneof("specifier") != "inline_string":
            raise Unsupported(f"secret {secret.name}: only inline PEM roots are supported")
        return SecretConfig(secret.name, roots_pem=trusted.inline_string)
    raise Unsupported(f"secret {secret.name}: {kind or 'empty'!r} secrets are not supported")


_PARSERS: Mapping[str, tuple[Any, Any, str]] = {
    LISTENER_TYPE: (listener_pb2.Listener, parse_listener, "name"),
    CLUSTER_TYPE: (cluster_pb2.Cluster, parse_cluster, "name"),
    ENDPOINT_TYPE: (endpoint_pb2.ClusterLoadAssignment, parse_assignment, "cluster_name"),
    ROUTE_TYPE: (route_pb2.RouteConfiguration, compile_routes, "name"),
    SECRET_TYPE: (secret_pb2.Secret, parse_secret, "name"),
}


def parse_resources(type_url: str, resources: Iterable[Any]) -> dict[str, Any]:
    """name -> parsed value for every packed resource of one response."""
    if type_url not in _PARSERS:
        raise Unsupported(f"resource type {type_url!r} is not supported")
    cls, parse, name_field = _PARSERS[type_url]
    out: dict[str, Any] = {}
    for packed in resources:
        if packed.type_url != type_url:
            raise Unsupported(f"a {packed.type_url!r} resource in a {type_url!r} response")
        message = cls()
        try:
            message.ParseFromString(packed.value)
        except Exception as err:  # protobuf's DecodeError and friends
            raise Unsupported(f"a malformed {cls.DESCRIPTOR.name}: {err}") from None
        out[getattr(message, name_field)] = parse(message)
    return out


@dataclass(frozen=True)
class ProxyConfig:
    """Everything the data plane runs on, as of one moment."""

    listeners: Mapping[str, ListenerConfig] = field(default_factory=dict)
    clusters: Mapping[str, ClusterConfig] = field(default_factory=dict)
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    routes: Mapping[str, RouteTable] = field(default_factory=dict)
    secrets: Mapping[str, SecretConfig] = field(default_factory=dict)

    def wanted(self, type_url: str) -> list[str]:
        """The names of one by-name type (endpoints, routes, secrets) the rest refers to."""
        names: set[str] = set()
        if type_url == ENDPOINT_TYPE:
            names = {c.name for c in self.clusters.values() if c.eds}
        elif type_url == ROUTE_TYPE:
            names = {
                lst.http.rds_name
                for lst in self.listeners.values()
                if lst.http and lst.http.rds_name
            }
        elif type_url == SECRET_TYPE:
            for listener in self.listeners.values():
                if listener.tls:
                    names |= {listener.tls.leaf_secret, listener.tls.roots_secret}
            for cluster in self.clusters.values():
                if cluster.tls:
                    names |= {cluster.tls.leaf_secret, cluster.tls.roots_secret}
        return sorted(names)

    def missing(self) -> list[str]:
        """What is referred to but not here yet (a listener is warm when this is empty)."""
        out = [f"secret {n}" for n in self.wanted(SECRET_TYPE) if n not in self.secrets]
        out += [f"route {n}" for n in self.wanted(ROUTE_TYPE) if n not in self.routes]
        out += [f"endpoints {n}" for n in self.wanted(ENDPOINT_TYPE) if n not in self.endpoints]
        for listener in self.listeners.values():
            if listener.tcp_cluster and listener.tcp_cluster not in self.clusters:
                out.append(f"cluster {listener.tcp_cluster}")
        return out

    def cluster_endpoints(self, name: str) -> tuple[Endpoint, ...]:
        cluster = self.clusters.get(name)
        if cluster is None:
            return ()
        return self.endpoints.get(name, ()) if cluster.eds else cluster.static_endpoints
