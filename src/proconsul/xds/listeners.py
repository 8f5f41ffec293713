"""Listeners: the public (inbound, mTLS) listener and one per upstream.

Job: `public_listener` accepts mesh traffic on the proxy's port, requires a
client certificate from the mesh CA, authorizes it with intentions (RBAC)
and passes it to `local_app`; `upstream_listeners` listen on each upstream's
`local_bind_address:local_bind_port` and send the app's traffic into the
mesh.

Rules (Consul's names and shapes):
- Public: `public_listener:<addr>:<port>`, INBOUND. tcp: the network RBAC
  filter, then tcp_proxy to `local_app` (stat prefix `public_listener`).
  http/http2/grpc: an HTTP connection manager with the HTTP RBAC filter
  (L7 permissions) before the router, an inline route to `local_app`, the
  client certificate forwarded in `x-forwarded-client-cert`.
- Upstream: `<upstream id>:<addr>:<port>`, OUTBOUND, stat prefix
  `upstream.<svc>.default.default.<dc>`. tcp: tcp_proxy to the chain's one
  target cluster. http: an HTTP connection manager fetching the route
  configuration named like the upstream by RDS.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.type.v3 import percent_pb2

from proconsul.connect.config_entries import HTTP_PROTOCOLS
from proconsul.structs.discovery_chain import NODE_RESOLVER
from proconsul.xds import rbac
from proconsul.xds.clusters import HTTP2_PROTOCOLS, LOCAL_APP, cluster_name
from proconsul.xds.common import ads_source, filter_of, pack, socket_address
from proconsul.xds.routes import RouteError, uses_rds
from proconsul.xds.secrets import downstream_socket
from proconsul.xds.snapshot import ProxySnapshot, UpstreamSnapshot

PUBLIC_LISTENER = "public_listener"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"


def public_listener_name(snapshot: ProxySnapshot) -> str:
    return f"{PUBLIC_LISTENER}:{snapshot.public_address}:{snapshot.public_port}"


def _tcp_proxy(stat_prefix: str, cluster: str) -> Any:
    return filter_of(
        TCP_PROXY_FILTER, tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster)
    )


def _router() -> Any:
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router()))


def _hcm(stat_prefix: str, protocol: str) -> Any:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        tracing=hcm_pb2.HttpConnectionManager.Tracing(random_sampling=percent_pb2.Percent()),
    )
    if protocol in HTTP2_PROTOCOLS:
        manager.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    return manager


def public_listener(snapshot: ProxySnapshot) -> Any:
    allow, domain = snapshot.default_allow, snapshot.trust_domain
    if snapshot.protocol in HTTP_PROTOCOLS:
        manager = _hcm(PUBLIC_LISTENER, snapshot.protocol)
        manager.route_config.CopyFrom(
            route_pb2.RouteConfiguration(
                name=PUBLIC_LISTENER,
                virtual_hosts=[
                    route_components_pb2.VirtualHost(
                        name=PUBLIC_LISTENER,
                        domains=["*"],
                        routes=[
                            route_components_pb2.Route(
                                match=route_components_pb2.RouteMatch(prefix="/"),
                                route=route_components_pb2.RouteAction(cluster=LOCAL_APP),
                            )
                        ],
                    )
                ],
            )
        )
        manager.http_filters.extend(
            [
                rbac.http_filter(snapshot.intentions, default_allow=allow, trust_domain=domain),
                _router(),
            ]
        )
        manager.forward_client_cert_details = hcm_pb2.HttpConnectionManager.APPEND_FORWARD
        details = manager.set_current_client_cert_details
        details.subject.value = True
        details.cert = details.chain = details.dns = details.uri = True
        filters = [filter_of(HCM_FILTER, manager)]
    else:
        filters = [
            rbac.network_filter(snapshot.intentions, default_allow=allow, trust_domain=domain),
            _tcp_proxy(PUBLIC_LISTENER, LOCAL_APP),
        ]
    return listener_pb2.Listener(
        name=public_listener_name(snapshot),
        address=socket_address(snapshot.public_address, snapshot.public_port),
        traffic_direction=base_pb2.INBOUND,
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=filters, transport_socket=downstream_socket(snapshot.service)
            )
        ],
    )


def upstream_listener(up: UpstreamSnapshot) -> Any:
    chain = up.chain
    stat_prefix = (
        f"upstream.{chain.service_name}.{chain.namespace}.{chain.partition}.{chain.datacenter}"
    )
    if uses_rds(up):
        manager = _hcm(stat_prefix, chain.protocol)
        manager.rds.CopyFrom(hcm_pb2.Rds(config_source=ads_source(), route_config_name=up.envoy_id))
        manager.http_filters.append(_router())
        network_filter = filter_of(HCM_FILTER, manager)
    else:
        start = chain.nodes[chain.start_node]
        if start.type != NODE_RESOLVER or start.resolver is None:
            raise RouteError(f"a {chain.protocol} chain cannot start at a {start.type}")
        target = chain.targets[start.resolver.target]
        network_filter = _tcp_proxy(stat_prefix, cluster_name(target))
    port = up.upstream.local_bind_port
    return listener_pb2.Listener(
        name=f"{up.envoy_id}:{up.bind_address}:{port}",
        address=socket_address(up.bind_address, port),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[listener_components_pb2.FilterChain(filters=[network_filter])],
    )


def upstream_listeners(snapshot: ProxySnapshot) -> list[Any]:
    return [upstream_listener(up) for up in snapshot.upstreams if up.upstream.local_bind_port]
