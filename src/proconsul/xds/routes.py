"""Route configurations for http upstreams, from their discovery chains.

Job: `route_configurations` makes one RouteConfiguration per upstream whose
chain speaks an HTTP protocol, named like the upstream (`api`), with one
virtual host for every domain; the outbound listener fetches it by RDS.

Rules (Consul's):
- A router start node gives one route per router route in order, its match
  built from the route's HTTP match (exact, prefix or regex path, else
  prefix `/`; headers; methods as a `:method` regex; query parameters),
  ending with the compiler's catch-all. A splitter start node or a resolver
  start node gives the single catch-all route (prefix `/`).
- A route to a splitter is a weighted cluster: each split's weight times 100
  (Envoy counts in integers; 75% is 7500 of 10000), a split's request and
  response header changes on its cluster. A route to a resolver goes to its
  target's cluster, with the resolver's RequestTimeout.
- A router destination adds: PrefixRewrite, RequestTimeout (negative means
  none: 0s), IdleTimeout, a retry policy (NumRetries, RetryOn, connect-failure,
  retriable status codes) and its request/response header changes.
- Header changes: `Add` appends, `Set` overwrites, `Remove` removes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

from proconsul.connect.config_entries import HTTP_PROTOCOLS
from proconsul.structs.config_entries import (
    HTTPHeaderModifiers,
    ServiceRouteDestination,
    ServiceRouteMatch,
    ServiceSplit,
)
from proconsul.structs.discovery_chain import (
    NODE_RESOLVER,
    NODE_ROUTER,
    NODE_SPLITTER,
    CompiledDiscoveryChain,
    DiscoverySplit,
)
from proconsul.xds.clusters import cluster_name
from proconsul.xds.common import duration_s, regex, string_match
from proconsul.xds.rbac import header_matcher, methods_matcher
from proconsul.xds.snapshot import ProxySnapshot, UpstreamSnapshot

WEIGHT_SCALE = 100  # Envoy weights are integers: 0.01% is 1 of 10000
APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


class RouteError(ValueError):
    """The chain cannot be expressed as routes (a node of an unexpected type)."""


def uses_rds(up: UpstreamSnapshot) -> bool:
    return up.chain.protocol in HTTP_PROTOCOLS


def route_configurations(snapshot: ProxySnapshot) -> list[Any]:
    return [upstream_route(up) for up in snapshot.upstreams if uses_rds(up)]


def upstream_route(up: UpstreamSnapshot) -> Any:
    name = up.envoy_id
    host = route_components_pb2.VirtualHost(name=name, domains=["*"], routes=chain_routes(up.chain))
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[host])


def chain_routes(chain: CompiledDiscoveryChain) -> list[Any]:
    start = chain.nodes[chain.start_node]
    if start.type == NODE_ROUTER:
        routes = []
        for discovery_route in start.routes:
            definition = discovery_route.definition
            route = route_components_pb2.Route(match=route_match(definition.match))
            action = _action_for(chain, discovery_route.next_node)
            if definition.destination is not None:
                _apply_destination(definition.destination, route, action)
            route.route.CopyFrom(action)
            routes.append(route)
        return routes
    route = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/"))
    route.route.CopyFrom(_action_for(chain, chain.start_node))
    return [route]


def _action_for(chain: CompiledDiscoveryChain, node_name: str) -> Any:
    node = chain.nodes[node_name]
    if node.type == NODE_SPLITTER:
        return _split_action(chain, node.splits)
    if node.type == NODE_RESOLVER and node.resolver is not None:
        target = chain.targets[node.resolver.target]
        action = route_components_pb2.RouteAction(cluster=cluster_name(target))
        if node.resolver.request_timeout:
            action.timeout.CopyFrom(duration_s(float(node.resolver.request_timeout)))
        return action
    raise RouteError(f"unexpected node {node_name!r} of type {node.type!r} after a route")


def _split_action(chain: CompiledDiscoveryChain, splits: Sequence[DiscoverySplit]) -> Any:
    weighted = route_components_pb2.WeightedCluster()
    for split in splits:
        node = chain.nodes[split.next_node]
        if node.type != NODE_RESOLVER or node.resolver is None:
            raise RouteError(f"unexpected splitter destination node type: {node.type}")
        weight = round(split.weight * WEIGHT_SCALE)
        if weight <= 0:
            continue  # a 0% leg gets no traffic; Envoy wants no empty legs
        cluster = route_components_pb2.WeightedCluster.ClusterWeight(
            name=cluster_name(chain.targets[node.resolver.target])
        )
        cluster.weight.value = weight
        _apply_split_headers(split.definition, cluster)
        weighted.clusters.append(cluster)
    return route_components_pb2.RouteAction(weighted_clusters=weighted)


def route_match(match: ServiceRouteMatch | None) -> Any:
    """A router route's match as Envoy's RouteMatch (prefix `/` when empty)."""
    http = match.http if match is not None else None
    out = route_components_pb2.RouteMatch()
    if http is None:
        out.prefix = "/"
        return out
    if http.path_exact:
        out.path = http.path_exact
    elif http.path_prefix:
        out.prefix = http.path_prefix
    elif http.path_regex:
        out.safe_regex.CopyFrom(regex(http.path_regex))
    else:
        out.prefix = "/"
    if http.case_insensitive:
        out.case_sensitive.value = False
    for criterion in http.header:
        matcher = header_matcher(criterion)
        if matcher is not None:
            out.headers.append(matcher)
    if http.methods:
        out.headers.append(methods_matcher(http.methods))
    for param in http.query_param:
        query = route_components_pb2.QueryParameterMatcher(name=param.name)
        if param.exact:
            query.string_match.CopyFrom(string_match(exact=param.exact))
        elif param.regex:
            query.string_match.CopyFrom(string_match(pattern=param.regex))
        elif param.present:
            query.present_match = True
        else:
            continue
        out.query_parameters.append(query)
    return out


def _apply_destination(destination: ServiceRouteDestination, route: Any, action: Any) -> None:
    if destination.prefix_rewrite:
        action.prefix_rewrite = destination.prefix_rewrite
    timeout = destination.request_timeout
    if timeout:  # negative: no timeout, which Envoy spells 0s
        action.timeout.CopyFrom(duration_s(max(float(timeout), 0.0)))
    if destination.idle_timeout:
        action.idle_timeout.CopyFrom(duration_s(float(destination.idle_timeout)))
    if (
        destination.num_retries
        or destination.retry_on_connect_failure
        or destination.retry_on
        or destination.retry_on_status_codes
    ):
        action.retry_policy.CopyFrom(retry_policy(destination))
    _apply_headers(
        destination.request_headers,
        route.request_headers_to_add,
        route.request_headers_to_remove,
    )
    _apply_headers(
        destination.response_headers,
        route.response_headers_to_add,
        route.response_headers_to_remove,
    )


def retry_policy(destination: ServiceRouteDestination) -> Any:
    policy = route_components_pb2.RetryPolicy()
    if destination.num_retries > 0:
        policy.num_retries.value = destination.num_retries
    retry_on = list(destination.retry_on)
    if destination.retry_on_connect_failure:
        retry_on.append("connect-failure")
    if destination.retry_on_status_codes:
        retry_on.append("retriable-status-codes")
        policy.retriable_status_codes.extend(destination.retry_on_status_codes)
    policy.retry_on = ",".join(retry_on)
    return policy


def _apply_split_headers(split: ServiceSplit, cluster: Any) -> None:
    _apply_headers(
        split.request_headers, cluster.request_headers_to_add, cluster.request_headers_to_remove
    )
    _apply_headers(
        split.response_headers, cluster.response_headers_to_add, cluster.response_headers_to_remove
    )


def _apply_headers(changes: HTTPHeaderModifiers | None, to_add: Any, to_remove: Any) -> None:
    """Adds first, then sets, each sorted by name (maps have no order to keep)."""
    if changes is None:
        return
    for action, values in ((APPEND, changes.add), (OVERWRITE, changes.set)):
        for key, value in sorted(values.items()):
            to_add.append(
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=key, value=value), append_action=action
                )
            )
    to_remove.extend(changes.remove)
