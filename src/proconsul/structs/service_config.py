"""The answer of "ConfigEntry.ResolveServiceConfig": central config for one service's proxy.

Job: the plain data a server hands an agent that registers a connect proxy
with `enable_central_service_config` on: the proxy-defaults and
service-defaults of the proxy's destination service, already merged, and the
config of each upstream it asked about (connect/service_config.py computes
it; the agent merges it under the registration's own values).

Rules:
- Field names are Consul's (`ProxyConfig`, `UpstreamConfigs`, `MeshGateway`,
  `Expose`, `TransparentProxy`, `Mode`, `MutualTLSMode`, `Destination`,
  `Meta`); empty ones are left out, except the nested objects Consul always
  shows.
- `UpstreamConfigs` holds one opaque map per upstream name, with Consul's
  snake_case keys (`protocol`, `connect_timeout_ms`, `mesh_gateway`,
  `limits`, ...); the upstream `*` carries `UpstreamConfig.Defaults` for
  upstreams not listed.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proconsul.structs.config_entries import (
    DestinationConfig,
    ExposeConfig,
    MeshGatewayConfig,
    TransparentProxyConfig,
)
from proconsul.structs.naming import pascal

WILDCARD_UPSTREAM = "*"


class UpstreamServiceConfig(msgspec.Struct, rename=pascal):
    """The resolved opaque config of one upstream, by its destination name."""

    upstream: str
    config: dict[str, Any] = {}


class ServiceConfigResponse(msgspec.Struct, rename=pascal, omit_defaults=True):
    proxy_config: dict[str, Any] = {}
    upstream_configs: list[UpstreamServiceConfig] = []
    mesh_gateway: MeshGatewayConfig = msgspec.field(default_factory=MeshGatewayConfig)
    expose: ExposeConfig = msgspec.field(default_factory=ExposeConfig)
    transparent_proxy: TransparentProxyConfig = msgspec.field(
        default_factory=TransparentProxyConfig
    )
    mode: str = ""
    mutual_tls_mode: str = ""
    destination: DestinationConfig | None = None
    meta: dict[str, str] = {}

    def upstream_config(self, name: str) -> dict[str, Any] | None:
        """The config resolved for upstream `name`, else the `*` defaults, else None."""
        wildcard = None
        for item in self.upstream_configs:
            if item.upstream == name:
                return item.config
            if item.upstream == WILDCARD_UPSTREAM:
                wildcard = item.config
        return wildcard
