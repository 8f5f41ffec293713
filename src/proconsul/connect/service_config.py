"""Central service config: proxy-defaults and service-defaults merged for a proxy.

Job: the two halves of Consul's `enable_central_service_config`.
- `resolve_service_config` (servers, "ConfigEntry.ResolveServiceConfig"): for
  a proxy's destination service and the upstreams it names, the stored
  proxy-defaults overlaid with that service's service-defaults, and each
  upstream's opaque config.
- `merge_service_config` (agents): that answer merged *under* a connect-proxy
  registration, so what the registration says wins.

Precedence, highest first: the upstream's own definition in the
registration > the proxy registration > service-defaults > proxy-defaults.
In detail, as Consul 1.16 computes it:
- `ProxyConfig` starts as proxy-defaults' `Config`; service-defaults set
  `protocol`, `max_inbound_connections`, `local_connect_timeout_ms`,
  `local_request_timeout_ms`, `balance_inbound_connections` in it.
  `MeshGateway.Mode`, `Mode`, `MutualTLSMode` and `TransparentProxy` fields
  come from service-defaults when it sets them; `Expose.Checks` is true if
  either says so, and service-defaults' paths replace proxy-defaults'.
- An upstream's config: `protocol` from proxy-defaults, replaced by the
  upstream service's own service-defaults protocol; then the downstream's
  `UpstreamConfig.Defaults`; then the mesh gateway of the proxy registration
  (it is specific to the instance); then the downstream's
  `UpstreamConfig.Overrides` entry for that upstream. `Defaults` are also
  given under the upstream `*` for upstreams not asked about.
- Merging into a registration: keys the registration's `Config` has win
  over `ProxyConfig`; unset `Mode`, `MeshGateway.Mode` and `Expose` parts
  take the central value; each upstream's `Config` keeps its own keys and
  takes the rest from the central config (without `mesh_gateway`, which
  fills the upstream's `MeshGateway` only when it has no mode).

Pure: values in, values out; inputs are never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from proconsul.structs.catalog import ConnectProxyConfig, Upstream
from proconsul.structs.config_entries import (
    MeshGatewayConfig,
    ProxyDefaults,
    ServiceDefaults,
    UpstreamConfig,
)
from proconsul.structs.service_config import (
    WILDCARD_UPSTREAM,
    ServiceConfigResponse,
    UpstreamServiceConfig,
)


def _upstream_config_into(config: UpstreamConfig, out: dict[str, Any]) -> None:
    """Consul's UpstreamConfig.MergeInto: only the fields that are set."""
    if config.envoy_listener_json:
        out["envoy_listener_json"] = config.envoy_listener_json
    if config.envoy_cluster_json:
        out["envoy_cluster_json"] = config.envoy_cluster_json
    if config.protocol:
        out["protocol"] = config.protocol
    if config.connect_timeout_ms:
        out["connect_timeout_ms"] = config.connect_timeout_ms
    if config.limits is not None:
        out["limits"] = msgspec.to_builtins(config.limits)
    if config.passive_health_check is not None:
        out["passive_health_check"] = msgspec.to_builtins(config.passive_health_check)
    if config.mesh_gateway is not None and config.mesh_gateway.mode:
        out["mesh_gateway"] = {"Mode": config.mesh_gateway.mode}
    if config.balance_outbound_connections:
        out["balance_outbound_connections"] = config.balance_outbound_connections


def resolve_service_config(
    service: str,
    upstreams: Iterable[str],
    *,
    proxy_defaults: ProxyDefaults | None,
    service_defaults: Mapping[str, ServiceDefaults],
    registration_mesh_gateway: MeshGatewayConfig | None = None,
) -> ServiceConfigResponse:
    """The central config of `service`'s proxy and of the `upstreams` it names."""
    reply = ServiceConfigResponse()
    global_protocol = ""
    if proxy_defaults is not None:
        reply.proxy_config = copy.deepcopy(proxy_defaults.config)
        reply.mode = proxy_defaults.mode
        reply.mutual_tls_mode = proxy_defaults.mutual_tls_mode
        reply.transparent_proxy = copy.deepcopy(proxy_defaults.transparent_proxy)
        reply.mesh_gateway = copy.deepcopy(proxy_defaults.mesh_gateway)
        reply.expose = copy.deepcopy(proxy_defaults.expose)
        protocol = proxy_defaults.config.get("protocol")
        global_protocol = protocol.lower() if isinstance(protocol, str) else ""
    own = service_defaults.get(service)
    if own is not None:
        _overlay_service_defaults(reply, own)
    overrides: dict[str, UpstreamConfig] = {}
    defaults: UpstreamConfig | None = None
    if own is not None and own.upstream_config is not None:
        overrides = {o.name: o for o in own.upstream_config.overrides if o.name}
        defaults = own.upstream_config.defaults
    if defaults is not None:
        wildcard: dict[str, Any] = {}
        _upstream_config_into(_with_mesh_mode(defaults, reply.mesh_gateway.mode), wildcard)
        reply.upstream_configs.append(UpstreamServiceConfig(WILDCARD_UPSTREAM, wildcard))
    for name in dict.fromkeys(upstreams):
        resolved: dict[str, Any] = {}
        protocol = global_protocol
        upstream_defaults = service_defaults.get(name)
        if upstream_defaults is not None and upstream_defaults.protocol:
            protocol = upstream_defaults.protocol
        if protocol:
            resolved["protocol"] = protocol
        if defaults is not None:
            _upstream_config_into(_with_mesh_mode(defaults, reply.mesh_gateway.mode), resolved)
        if registration_mesh_gateway is not None and registration_mesh_gateway.mode:
            resolved["mesh_gateway"] = {"Mode": registration_mesh_gateway.mode}
        if name in overrides:
            _upstream_config_into(overrides[name], resolved)
        if resolved:
            reply.upstream_configs.append(UpstreamServiceConfig(name, resolved))
    return reply


def _with_mesh_mode(config: UpstreamConfig, mode: str) -> UpstreamConfig:
    """Upstream defaults without a mesh gateway mode take the service's."""
    if (config.mesh_gateway is None or not config.mesh_gateway.mode) and mode:
        return msgspec.structs.replace(config, mesh_gateway=MeshGatewayConfig(mode=mode))
    return config


def _overlay_service_defaults(reply: ServiceConfigResponse, own: ServiceDefaults) -> None:
    if own.expose.checks:
        reply.expose.checks = True
    if own.expose.paths:
        reply.expose.paths = copy.deepcopy(own.expose.paths)
    if own.mesh_gateway.mode:
        reply.mesh_gateway.mode = own.mesh_gateway.mode
    if own.protocol:
        reply.proxy_config["protocol"] = own.protocol
    if own.transparent_proxy.outbound_listener_port:
        reply.transparent_proxy.outbound_listener_port = (
            own.transparent_proxy.outbound_listener_port
        )
    if own.transparent_proxy.dialed_directly:
        reply.transparent_proxy.dialed_directly = True
    if own.mode:
        reply.mode = own.mode
    if own.mutual_tls_mode:
        reply.mutual_tls_mode = own.mutual_tls_mode
    if own.destination is not None:
        reply.destination = copy.deepcopy(own.destination)
    if own.max_inbound_connections > 0:
        reply.proxy_config["max_inbound_connections"] = own.max_inbound_connections
    if own.local_connect_timeout_ms > 0:
        reply.proxy_config["local_connect_timeout_ms"] = own.local_connect_timeout_ms
    if own.local_request_timeout_ms > 0:
        reply.proxy_config["local_request_timeout_ms"] = own.local_request_timeout_ms
    if own.balance_inbound_connections:
        reply.proxy_config["balance_inbound_connections"] = own.balance_inbound_connections
    reply.meta = dict(own.meta)


def merge_service_config(
    resolved: ServiceConfigResponse, proxy: ConnectProxyConfig
) -> ConnectProxyConfig:
    """`proxy` (a registration's `Proxy`) with the central config filled in
    under it: every value the registration sets wins. A new value."""
    merged = copy.deepcopy(proxy)
    merged.config = {**copy.deepcopy(resolved.proxy_config), **merged.config}
    if not merged.mode:
        merged.mode = resolved.mode
    if not merged.mesh_gateway.mode:
        merged.mesh_gateway = copy.deepcopy(resolved.mesh_gateway)
    if resolved.expose.checks:
        merged.expose.checks = True
    if not merged.expose.paths and resolved.expose.paths:
        merged.expose.paths = copy.deepcopy(resolved.expose.paths)
    merged.upstreams = [_merge_upstream(resolved, upstream) for upstream in merged.upstreams]
    return merged


def _merge_upstream(resolved: ServiceConfigResponse, upstream: Upstream) -> Upstream:
    if upstream.destination_type not in ("", "service"):
        return upstream  # prepared queries get no central config
    central = resolved.upstream_config(upstream.destination_name)
    if central is None:
        return upstream
    central = copy.deepcopy(central)
    gateway = central.pop("mesh_gateway", None)
    upstream.config = {**central, **upstream.config}
    if not upstream.mesh_gateway.mode and isinstance(gateway, dict):
        mode = gateway.get("Mode", gateway.get("mode", ""))
        if isinstance(mode, str) and mode:
            upstream.mesh_gateway = MeshGatewayConfig(mode=mode)
    return upstream
