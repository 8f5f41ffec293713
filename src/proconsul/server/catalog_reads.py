"""The catalog, health, KV, Connect CA and usage reads of the server endpoints.

Job: `catalog_reads` gives, per read method ("Catalog.ListNodes",
"Health.ServiceNodes", "KVS.Get", "ConnectCA.Roots", "Operator.Usage", ...),
a function of the request that returns the read's watch keys and a function
yielding `(index, value)` from the local state store; `ServerEndpoints`
(server/endpoints.py) runs it blocking and ACL-filtered.

Rules: filtering by tag (`?tag`, case-insensitive), node meta (`?node-meta`)
and health (`?passing`) lives here, once, for HTTP, DNS and RPC callers.
"Health.ServiceNodes" rows are cached per index (without `?node-meta`),
because the same blocking queries arrive over and over while the data stays
put: a repeated read returns the very same list, which the ACL filter cache
and the HTTP body cache then recognize. The Connect reads
("Catalog.ConnectServiceNodes", "Health.ConnectServiceNodes") answer the
proxies and connect-native instances for a destination and watch only its
`connect:<name>` key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from proconsul.server.config_endpoints import ReadFn
from proconsul.server.read_options import query_filter
from proconsul.state.ca_tables import CONFIG_KEY as CA_CONFIG_KEY
from proconsul.state.ca_tables import ROOTS_KEY as CA_ROOTS_KEY
from proconsul.state.store import StateStore, service_node
from proconsul.structs.catalog import CheckServiceNode, HealthCheck, Node, ServiceNode
from proconsul.structs.requests import ReadRequest

USAGE_READ = "Operator.Usage"
# The instance kinds `/v1/operator/usage` counts under ConnectServiceInstances.
CONNECT_KINDS = (
    "api-gateway",
    "connect-native",
    "connect-proxy",
    "ingress-gateway",
    "mesh-gateway",
    "terminating-gateway",
)


def _has_tags(tags: Sequence[str], wanted: Sequence[str]) -> bool:
    if not wanted:
        return True
    lowered = {t.lower() for t in tags}
    return all(w.lower() in lowered for w in wanted)


def _node_meta_matches(node: Node, wanted: dict[str, str]) -> bool:
    return all(node.meta.get(k) == v for k, v in wanted.items())


def _all_passing(checks: Sequence[HealthCheck]) -> bool:
    return all(check.status == "passing" for check in checks)


class CatalogReads:
    """The reads of one `ServerEndpoints`: its store, datacenter and health-row cache."""

    def __init__(self, store: StateStore, datacenter: str) -> None:
        self.store = store
        self.datacenter = datacenter
        self._health_cache: dict[tuple[str, tuple[str, ...], bool], tuple[int, list[Any]]] = {}

    def reads(self) -> dict[str, ReadFn]:
        return {
            "Catalog.ListNodes": self._catalog_nodes,
            "Catalog.NodeServices": self._catalog_node,
            "Catalog.ListServices": self._catalog_services,
            "Catalog.ServiceNodes": self._catalog_service,
            "Catalog.ConnectServiceNodes": self._catalog_connect,
            "Health.ServiceNodes": self._health_service,
            "Health.ConnectServiceNodes": self._health_connect,
            "Health.NodeChecks": self._health_node,
            "Health.ServiceChecks": self._health_checks,
            "Health.ChecksInState": self._health_state,
            "KVS.Get": self._kv_get,
            "KVS.List": self._kv_list,
            "KVS.ListKeys": self._kv_keys,
            "ConnectCA.Roots": self._connect_ca_roots,
            "ConnectCA.ConfigurationGet": self._connect_ca_config,
            USAGE_READ: self._usage,
        }

    # Each returns the watch keys and a function that yields (index, value).

    def _catalog_nodes(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[Node]]:
            index, nodes = self.store.catalog_nodes()
            if req.node_meta:
                nodes = [n for n in nodes if _node_meta_matches(n, req.node_meta)]
            return index, nodes

        return ("nodes",), run

    def _catalog_node(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, Any]:
            index, node, services = self.store.catalog_node(req.name)
            return index, (node, services)

        return (f"node:{req.name}", "nodes"), run

    def _catalog_services(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        text = req.options.filter
        compiled = query_filter("Catalog.ListServices", text) if text else None

        def run() -> tuple[int, dict[str, list[str]]]:
            if not req.node_meta and compiled is None:
                return self.store.catalog_services()
            index = self.store.index("services")
            result: dict[str, set[str]] = {}
            for name, rows in self.store.instances.items():
                for (node_name, _), service in rows.items():
                    node = self.store.nodes[node_name]
                    if not _node_meta_matches(node, req.node_meta):
                        continue
                    if compiled is not None and not compiled.matches(
                        msgspec.to_builtins(service_node(node, service))
                    ):
                        continue
                    result.setdefault(name, set()).update(service.tags)
            return index, {name: sorted(tags) for name, tags in sorted(result.items())}

        return ("services", "nodes"), run

    def _catalog_service(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[Any]]:
            index, rows = self.store.catalog_service(req.name)
            rows = [
                r
                for r in rows
                if _has_tags(r.service_tags, req.tags)
                and all(r.node_meta.get(k) == v for k, v in req.node_meta.items())
            ]
            return index, rows

        return (f"service:{req.name}", "services"), run

    def _health_service(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        cache_key = (req.name, tuple(req.tags), req.passing_only)

        def run() -> tuple[int, list[CheckServiceNode]]:
            current = self.store.index(f"service:{req.name}") or self.store.index("services")
            cached = self._health_cache.get(cache_key)
            if cached is not None and cached[0] == current and not req.node_meta:
                return cached
            index, rows = self.store.health_service(req.name)
            rows = [
                r
                for r in rows
                if _has_tags(r.service.tags, req.tags)
                and _node_meta_matches(r.node, req.node_meta)
                and (not req.passing_only or _all_passing(r.checks))
            ]
            if not req.node_meta:
                if len(self._health_cache) > 4096:
                    self._health_cache.clear()
                self._health_cache[cache_key] = (index, rows)
            return index, rows

        return (f"service:{req.name}", "services"), run

    def _catalog_connect(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[ServiceNode]]:
            index, rows = self.store.catalog_service(req.name, connect=True)
            return index, [
                r
                for r in rows
                if _has_tags(r.service_tags, req.tags)
                and all(r.node_meta.get(k) == v for k, v in req.node_meta.items())
            ]

        return (f"connect:{req.name}",), run

    def _health_connect(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[CheckServiceNode]]:
            index, rows = self.store.health_service(req.name, connect=True)
            return index, [
                r
                for r in rows
                if _has_tags(r.service.tags, req.tags)
                and _node_meta_matches(r.node, req.node_meta)
                and (not req.passing_only or _all_passing(r.checks))
            ]

        return (f"connect:{req.name}",), run

    def _health_node(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return (f"node:{req.name}", "checks"), lambda: self.store.node_checks(req.name)

    def _health_checks(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[HealthCheck]]:
            index, checks = self.store.service_checks(req.name)
            if req.node_meta:
                checks = [
                    c for c in checks if _node_meta_matches(self.store.nodes[c.node], req.node_meta)
                ]
            return index, checks

        return (f"service:{req.name}", "checks"), run

    def _health_state(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[HealthCheck]]:
            index, checks = self.store.checks_in_state(req.state)
            if req.node_meta:
                checks = [
                    c for c in checks if _node_meta_matches(self.store.nodes[c.node], req.node_meta)
                ]
            return index, checks

        return ("checks",), run

    def _connect_ca_roots(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return [CA_ROOTS_KEY], self.store.ca_roots

    def _connect_ca_config(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return [CA_CONFIG_KEY], self.store.ca_config

    def _usage(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        """`/v1/operator/usage`: service and instance counts of this datacenter."""

        def run() -> tuple[int, dict[str, Any]]:
            store = self.store
            kinds = dict.fromkeys(CONNECT_KINDS, 0)
            instances = billable = 0
            for name, rows in store.instances.items():
                for service in rows.values():
                    instances += 1
                    if service.kind in kinds:
                        kinds[service.kind] += 1
                    elif service.connect.native:
                        kinds["connect-native"] += 1
                    if not service.kind and name != "consul":
                        billable += 1
            usage = {
                "Services": len(store.instances),
                "ServiceInstances": instances,
                "ConnectServiceInstances": kinds,
                "BillableServiceInstances": billable,
                "Nodes": len(store.nodes),
            }
            index = max(store.index("services"), store.index("nodes"))
            return index, {self.datacenter: usage}

        return ("services", "nodes"), run

    def _kv_get(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return ("kvs",), lambda: self.store.kv_get(req.name)

    def _kv_list(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return ("kvs",), lambda: self.store.kv_list(req.name)

    def _kv_keys(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return ("kvs",), lambda: self.store.kv_keys(req.name, req.separator)


def catalog_reads(store: StateStore, datacenter: str) -> dict[str, ReadFn]:
    """The catalog, health, KV, Connect CA and usage reads over `store`, by method."""
    return CatalogReads(store, datacenter).reads()
