"""Catalog, health and KV rows: one definition for the HTTP JSON and the msgpack log.

Field names are snake_case here and Consul's PascalCase on the wire (`rename=pascal`).
Rows carry `create_index`/`modify_index`, set only by the state store.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from proconsul.structs.config_entries import ExposeConfig, MeshGatewayConfig
from proconsul.structs.naming import pascal

HealthStatus = Literal["passing", "warning", "critical", "maintenance"]
HEALTH_STATUSES = ("passing", "warning", "critical", "maintenance")

SERF_CHECK_ID = "serfHealth"
SERF_CHECK_NAME = "Serf Health Status"
NODE_MAINT_CHECK_ID = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"
CONNECT_PROXY_KIND = "connect-proxy"  # Kind of a mesh proxy instance
SIDECAR_PROXY_SUFFIX = "-sidecar-proxy"  # a sidecar's ID and name: the parent's plus this


class Weights(msgspec.Struct, rename=pascal):
    passing: int = 1
    warning: int = 1


class ServiceAddress(msgspec.Struct, rename=pascal):
    address: str = ""
    port: int = 0


class Node(msgspec.Struct, rename=pascal):
    node: str
    address: str
    id: str = ""
    datacenter: str = ""
    tagged_addresses: dict[str, str] = {}
    meta: dict[str, str] = {}
    create_index: int = 0
    modify_index: int = 0


class Upstream(msgspec.Struct, rename=pascal, omit_defaults=True):
    """One upstream of a connect proxy (Consul's structs.Upstream)."""

    destination_name: str = ""
    # The agent writes "service" when none is given, so JSON shows it as Consul's
    # does; "" (a catalog registration that left it out) also means "service".
    destination_type: str = ""
    destination_namespace: str = ""
    datacenter: str = ""
    local_bind_address: str = ""
    local_bind_port: int = 0
    config: dict[str, Any] = {}
    mesh_gateway: MeshGatewayConfig = msgspec.field(default_factory=MeshGatewayConfig)


class ConnectProxyConfig(msgspec.Struct, rename=pascal, omit_defaults=True):
    """`Proxy` of a connect-proxy instance (Consul's structs.ConnectProxyConfig).
    Empty for every other kind of service."""

    destination_service_name: str = ""
    destination_service_id: str = ""
    local_service_address: str = ""
    local_service_port: int = 0
    mode: str = ""
    config: dict[str, Any] = {}
    upstreams: list[Upstream] = []
    mesh_gateway: MeshGatewayConfig = msgspec.field(default_factory=MeshGatewayConfig)
    expose: ExposeConfig = msgspec.field(default_factory=ExposeConfig)

    def __bool__(self) -> bool:
        return self != _EMPTY_PROXY


_EMPTY_PROXY = ConnectProxyConfig()


class ServiceConnect(msgspec.Struct, rename=pascal, omit_defaults=True):
    """`Connect` of an instance: `Native` for mesh-native apps. A sidecar_service
    is expanded by the agent into its own instance and never stored here."""

    native: bool = False

    def __bool__(self) -> bool:
        return self.native


class NodeService(msgspec.Struct, rename=pascal):
    """A service instance as the catalog stores it (Consul's structs.NodeService)."""

    service: str = ""
    id: str = ""
    kind: str = ""
    tags: list[str] = []
    address: str = ""
    tagged_addresses: dict[str, ServiceAddress] = {}
    meta: dict[str, str] = {}
    port: int = 0
    weights: Weights = msgspec.field(default_factory=Weights)
    enable_tag_override: bool = False
    proxy: ConnectProxyConfig = msgspec.field(default_factory=ConnectProxyConfig)
    connect: ServiceConnect = msgspec.field(default_factory=ServiceConnect)
    create_index: int = 0
    modify_index: int = 0


class HealthCheck(msgspec.Struct, rename=pascal):
    """A check's latest result as the catalog stores it (Consul's structs.HealthCheck)."""

    node: str = ""
    check_id: str = ""
    name: str = ""
    status: str = "critical"
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = []
    type: str = ""
    interval: str = ""
    timeout: str = ""
    exposed_port: int = 0
    definition: dict[str, Any] = {}
    create_index: int = 0
    modify_index: int = 0


class KVEntry(msgspec.Struct, rename=pascal):
    """A KV row. `value` is raw bytes; JSON shows it base64 (null when absent)."""

    key: str
    value: bytes | None = None
    flags: int = 0
    lock_index: int = 0
    session: str = ""
    create_index: int = 0
    modify_index: int = 0


class ServiceNode(msgspec.Struct, rename=pascal):
    """One row of /v1/catalog/service/:name: the node joined with the instance."""

    id: str
    node: str
    address: str
    datacenter: str
    tagged_addresses: dict[str, str]
    node_meta: dict[str, str]
    service_kind: str
    service_id: str
    service_name: str
    service_tags: list[str]
    service_address: str
    service_tagged_addresses: dict[str, ServiceAddress]
    service_weights: Weights
    service_meta: dict[str, str]
    service_port: int
    service_enable_tag_override: bool
    service_proxy: ConnectProxyConfig
    service_connect: ServiceConnect
    create_index: int
    modify_index: int


class CheckServiceNode(msgspec.Struct, rename=pascal):
    """One row of /v1/health/service/:name."""

    node: Node
    service: NodeService
    checks: list[HealthCheck]


class NodeServices(msgspec.Struct, rename=pascal):
    """/v1/catalog/node/:node."""

    node: Node
    services: dict[str, NodeService]


class NodeServiceList(msgspec.Struct, rename=pascal):
    """/v1/catalog/node-services/:node."""

    node: Node
    services: list[NodeService]
