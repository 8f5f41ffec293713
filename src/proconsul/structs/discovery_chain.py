"""The compiled discovery chain, in the shape of Consul's `/v1/discovery-chain/:service`.

Job: the plain data connect/discovery_chain.py produces and the HTTP API and
proxies read: nodes (router, splitter, resolver) keyed by name, and the
targets the resolvers point at.

Rules:
- Field names are Consul's (`StartNode`, `NextNode`, `SNI`, `ID`); fields
  Consul leaves out when empty are left out (`ServiceSubset`, `Routes` on a
  resolver, `Failover`), while `MeshGateway` and `Subset` are always shown.
- Names are opaque to readers but stable: a node is `router:<svc>.<ns>.<ap>`,
  `splitter:<svc>.<ns>.<ap>` or `resolver:<target id>`; a target id is
  `[<subset>.]<svc>.<ns>.<ap>.<dc>` (`v1.api.default.default.dc1`).
- A subset's filter is carried as text; evaluating it is the caller's job.
"""

from __future__ import annotations

import msgspec

from proconsul.structs.config_entries import (
    LoadBalancer,
    MeshGatewayConfig,
    ServiceResolverSubset,
    ServiceRoute,
    ServiceSplit,
)
from proconsul.structs.duration import Duration
from proconsul.structs.naming import pascal

NODE_ROUTER = "router"
NODE_SPLITTER = "splitter"
NODE_RESOLVER = "resolver"


class _Row(msgspec.Struct, rename=pascal, omit_defaults=True):
    """Base of the chain's rows: Consul's names and field order, empty fields left out."""


class DiscoveryTarget(_Row, kw_only=True):
    """One set of instances: a service (and subset) in a datacenter."""

    id: str
    service: str
    service_subset: str = ""
    namespace: str
    partition: str
    datacenter: str
    mesh_gateway: MeshGatewayConfig = msgspec.field(default_factory=MeshGatewayConfig)
    subset: ServiceResolverSubset = msgspec.field(default_factory=ServiceResolverSubset)
    connect_timeout: Duration
    sni: str = msgspec.field(name="SNI")
    name: str


class DiscoveryRoute(_Row, kw_only=True):
    definition: ServiceRoute
    next_node: str


class DiscoverySplit(_Row, kw_only=True):
    definition: ServiceSplit
    weight: float
    next_node: str


class DiscoveryFailover(_Row, kw_only=True):
    targets: list[str] = []


class DiscoveryResolver(_Row, kw_only=True):
    default: bool = False  # no service-resolver entry: the defaults were synthesized
    connect_timeout: Duration
    request_timeout: Duration | None = None
    target: str
    failover: DiscoveryFailover | None = None
    load_balancer: LoadBalancer | None = None


class DiscoveryGraphNode(_Row, kw_only=True):
    type: str  # router, splitter or resolver
    name: str
    routes: list[DiscoveryRoute] = []
    splits: list[DiscoverySplit] = []
    resolver: DiscoveryResolver | None = None


class CompiledDiscoveryChain(_Row, kw_only=True):
    service_name: str
    namespace: str
    partition: str
    datacenter: str
    default: bool = False  # no entry shaped this chain
    protocol: str
    start_node: str
    nodes: dict[str, DiscoveryGraphNode] = {}
    targets: dict[str, DiscoveryTarget] = {}
