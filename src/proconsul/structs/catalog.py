"""Catalog, health and KV rows: one definition for the HTTP JSON and the msgpack log.

Field names are snake_case here and Consul's PascalCase on the wire (`rename=pascal`).
Rows carry `create_index`/`modify_index`, set only by the state store.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from proconsul.structs.naming import pascal

HealthStatus = Literal["passing", "warning", "critical", "maintenance"]
HEALTH_STATUSES = ("passing", "warning", "critical", "maintenance")

SERF_CHECK_ID = "serfHealth"
SERF_CHECK_NAME = "Serf Health Status"
NODE_MAINT_CHECK_ID = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"


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
    # Connect fields stay untyped here; the mesh issue gives them types.
    proxy: dict[str, Any] = {}
    connect: dict[str, Any] = {}
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
    service_proxy: dict[str, Any]
    service_connect: dict[str, Any]
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
