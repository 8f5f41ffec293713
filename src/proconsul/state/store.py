"""The replicated state: catalog, health and KV tables with a raft index on every row.

Rules:
- Only `fsm.apply` calls the `apply_*` methods; everything else reads.
- Every write stamps `create_index`/`modify_index` on the rows it changes and
  bumps the index keys it touched, then notifies watchers of exactly those keys.
- A write that changes nothing (same row re-registered) bumps nothing, so blocking
  queries do not wake for anti-entropy's no-op syncs.
- Reads return `(index, result)`; the index is what a blocking query compares.

Index keys: "nodes", "services", "checks", "kvs" (whole tables), "node:<name>",
"service:<name>" (everything a health or catalog query on that name depends on,
including the node rows and node-level checks of the nodes it runs on), and
"connect:<name>" (the same for the connect-capable instances of `name`: its
proxies and its connect-native instances; every bump of "service:<p>" for
such a proxy `p` bumps it too, see `_bump`).

Connect index (`connect_instances`): destination name -> the instances a
mesh client may dial for it, kept on every write so `/v1/health/connect/:name`
never scans the catalog: proxies (kind connect-proxy) whose
`Proxy.DestinationServiceName` is the name, and connect-native instances
registered under the name.
ACL rows live in `self.acl` (acl_tables.py), with keys "acl-tokens",
"acl-policies" and "acl-roles". Connect CA rows live in `self.ca`
(ca_tables.py), with the key "connect-ca-roots". Config entries live in
`self.config` (config_entry_tables.py), with the keys "config-entries" and
"config-entries:<kind>". Sessions and lock-delays live in `self.sessions`
(session_tables.py), with the key "sessions"; a KV row's `Session` is the
session holding its lock.

Snapshots (snapshot.py has the format): `snapshot()` serializes every table as
it is at that instant; `restore(data)` verifies the bytes first and only then
replaces all state in place (the watch hub and its subscribers survive) and
wakes every watcher, so parked blocking queries re-run against the new tables.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import msgspec

from proconsul.state.acl_tables import ACLTables
from proconsul.state.ca_tables import CONFIG_KEY, ROOTS_KEY, CATables
from proconsul.state.config_entry_tables import ENTRIES_KEY, ConfigEntryTables, kind_key
from proconsul.state.coordinate_tables import CoordinateTables
from proconsul.state.prepared_query_tables import PreparedQueryTables
from proconsul.state.session_tables import SESSIONS_KEY, SessionTables
from proconsul.state.snapshot import ServiceRow, SnapshotBody, decode_snapshot, encode_snapshot
from proconsul.state.watch import WatchHub
from proconsul.structs.autopilot import AutopilotSettings
from proconsul.structs.catalog import (
    CONNECT_PROXY_KIND,
    CheckServiceNode,
    HealthCheck,
    KVEntry,
    Node,
    NodeService,
    ServiceNode,
)
from proconsul.structs.commands import AutopilotSetConfigRequest
from proconsul.structs.config_entries import ConfigEntry
from proconsul.structs.connect import CAConfiguration, IndexedCARoots
from proconsul.structs.session import Session

AUTOPILOT_KEY = "autopilot-config"

# Deleted KV keys remember their index so prefix queries see deletions; past this
# many, the oldest are folded into one floor index (prefix queries may then wake
# early, but never miss a change).
_MAX_TOMBSTONES = 10_000


class StateError(Exception):
    """A write the store refuses; the message is shown to the API caller."""


def connect_destination(service: NodeService) -> str:
    """The service `service` carries mesh traffic for ("" when none): a proxy's
    destination, or its own name for a connect-native instance."""
    if service.kind == CONNECT_PROXY_KIND:
        return service.proxy.destination_service_name
    if service.connect.native:
        return service.service
    return ""


def same_row(a: msgspec.Struct, b: msgspec.Struct) -> bool:
    """Rows equal apart from their indexes."""
    return msgspec.structs.replace(a, create_index=0, modify_index=0) == msgspec.structs.replace(
        b, create_index=0, modify_index=0
    )


class StateStore:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.services: dict[str, dict[str, NodeService]] = {}  # node -> service id -> row
        self.instances: dict[str, dict[tuple[str, str], NodeService]] = {}  # name -> rows
        # destination -> (node, id) -> connect-capable row (see the module docstring)
        self.connect_instances: dict[str, dict[tuple[str, str], NodeService]] = {}
        # "service:<proxy name>" -> {"connect:<destination>": how many rows link them}
        self._connect_keys: dict[str, dict[str, int]] = {}
        self.checks: dict[str, dict[str, HealthCheck]] = {}  # node -> check id -> row
        self.kvs: dict[str, KVEntry] = {}
        self._kv_keys: list[str] = []  # sorted, for prefix scans
        self._tombstones: dict[str, int] = {}
        self._tombstone_floor = 0
        self.indexes: dict[str, int] = {}
        self.last_index = 0
        self.restores = 0  # snapshots restored: a cache keyed on indexes keys on this too
        self.watches = WatchHub()
        self._touched: set[str] = set()
        self.acl = ACLTables(self._bump)  # tokens, policies, roles (acl_tables.py)
        self.ca = CATables(self._bump)  # Connect CA roots and signing keys (ca_tables.py)
        self.config = ConfigEntryTables(self._bump)  # config entries (config_entry_tables.py)
        self.queries = PreparedQueryTables(self._bump)  # prepared_query_tables.py
        self.coordinates = CoordinateTables(self._bump)  # coordinate_tables.py
        # Set through the operator API ("autopilot-config"); None: each server's file.
        self.autopilot: AutopilotSettings | None = None
        self.sessions = SessionTables(self._bump)  # sessions, lock-delays (session_tables.py)

    # ----- index bookkeeping -------------------------------------------------

    def index(self, key: str) -> int:
        return self.indexes.get(key, 0)

    def _bump(self, index: int, *keys: str) -> None:
        for key in keys:
            self.indexes[key] = index
            self._touched.add(key)
            linked = self._connect_keys.get(key)
            if linked:
                # A proxy's row, checks or node changed: so did its destination's
                # connect answer.
                for connect_key in linked:
                    self.indexes[connect_key] = index
                    self._touched.add(connect_key)

    def _link_connect(self, node_name: str, service: NodeService) -> str:
        """Add `service` to the connect index; returns its "connect:" key ("" if none)."""
        destination = connect_destination(service)
        if not destination:
            return ""
        self.connect_instances.setdefault(destination, {})[(node_name, service.id)] = service
        connect_key = f"connect:{destination}"
        links = self._connect_keys.setdefault(f"service:{service.service}", {})
        links[connect_key] = links.get(connect_key, 0) + 1
        return connect_key

    def _unlink_connect(self, index: int, node_name: str, service: NodeService) -> None:
        destination = connect_destination(service)
        if not destination:
            return
        rows = self.connect_instances.get(destination)
        if rows is not None:
            rows.pop((node_name, service.id), None)
            if not rows:
                del self.connect_instances[destination]
        connect_key = f"connect:{destination}"
        self._bump(index, connect_key)
        service_key = f"service:{service.service}"
        links = self._connect_keys.get(service_key, {})
        count = links.get(connect_key, 0) - 1
        if count > 0:
            links[connect_key] = count
        else:
            links.pop(connect_key, None)
            if not links:
                self._connect_keys.pop(service_key, None)

    def _bump_node_services(self, index: int, node: str) -> None:
        """Node rows and node checks are part of every service query on that node."""
        for service in self.services.get(node, {}).values():
            self._bump(index, f"service:{service.service}")

    def finish_write(self, index: int) -> None:
        """Called by the FSM after each command: record the index and wake watchers."""
        self.last_index = max(self.last_index, index)
        touched, self._touched = self._touched, set()
        if touched:
            self.watches.notify(touched)

    # ----- snapshot / restore -------------------------------------------------

    def snapshot(self) -> bytes:
        """Every table as checksummed msgpack (see snapshot.py)."""
        # Insertion order is kept, not sorted: some reads (a node's checks) and
        # tombstone eviction follow it, and it is the same on every replica.
        body = SnapshotBody(
            last_index=self.last_index,
            indexes=dict(self.indexes),
            nodes=list(self.nodes.values()),
            services=[
                ServiceRow(node, service)
                for node, rows in self.services.items()
                for service in rows.values()
            ],
            checks=[check for rows in self.checks.values() for check in rows.values()],
            kvs=[self.kvs[key] for key in self._kv_keys],
            tombstones=dict(self._tombstones),
            tombstone_floor=self._tombstone_floor,
            acl=self.acl.snapshot(),
            ca=self.ca.snapshot(),
            config_entries=self.config.snapshot(),
            prepared_queries=self.queries.snapshot(),
            coordinates=self.coordinates.snapshot(),
            autopilot=self.autopilot,
            sessions=self.sessions.snapshot(),
        )
        return encode_snapshot(body)

    def restore(self, data: bytes) -> None:
        """Replace all state with a snapshot's; SnapshotError (state untouched) if corrupt."""
        body = decode_snapshot(data)
        self.nodes = {node.node: node for node in body.nodes}
        self.services = {}
        self.instances = {}
        self.connect_instances = {}
        self._connect_keys = {}
        for row in body.services:
            service = row.service
            self.services.setdefault(row.node, {})[service.id] = service
            # The same object in all maps, as apply_service leaves them.
            self.instances.setdefault(service.service, {})[(row.node, service.id)] = service
            self._link_connect(row.node, service)
        self.checks = {}
        for check in body.checks:
            self.checks.setdefault(check.node, {})[check.check_id] = check
        self.kvs = {entry.key: entry for entry in body.kvs}
        self._kv_keys = sorted(self.kvs)
        self._tombstones = dict(body.tombstones)
        self._tombstone_floor = body.tombstone_floor
        self.acl.restore(body.acl)
        self.ca.restore(body.ca)
        self.config.restore(body.config_entries)
        self.queries.restore(body.prepared_queries)
        self.coordinates.restore(body.coordinates)
        self.autopilot = body.autopilot
        self.sessions.restore(body.sessions, body.kvs)
        self.indexes = dict(body.indexes)
        self.last_index = body.last_index
        self.restores += 1
        self._touched = set()
        self.watches.notify_all()

    # ----- autopilot configuration ----------------------------------------------

    def set_autopilot(self, index: int, req: AutopilotSetConfigRequest) -> bool:
        """Store the autopilot configuration; with `cas`, only at `cas_index`."""
        current = self.autopilot
        if req.cas and req.cas_index != (0 if current is None else current.modify_index):
            return False
        created = index if current is None else current.create_index
        self.autopilot = msgspec.structs.replace(
            req.config, create_index=created, modify_index=index
        )
        self._bump(index, AUTOPILOT_KEY)
        return True

    # ----- catalog writes ----------------------------------------------------

    def apply_node(self, index: int, node: Node) -> None:
        existing = self.nodes.get(node.node)
        if existing is not None:
            if same_row(existing, node):
                return
            node.create_index = existing.create_index
        else:
            node.create_index = index
        node.modify_index = index
        self.nodes[node.node] = node
        self._bump(index, "nodes", f"node:{node.node}")
        self._bump_node_services(index, node.node)

    def apply_service(self, index: int, node_name: str, service: NodeService) -> None:
        if node_name not in self.nodes:
            raise StateError(f"Missing node registration for {node_name!r}")
        node_services = self.services.setdefault(node_name, {})
        existing = node_services.get(service.id)
        if existing is not None:
            if same_row(existing, service):
                return
            service.create_index = existing.create_index
            self._unlink_connect(index, node_name, existing)
            if existing.service != service.service:
                self._drop_instance(index, node_name, existing)
        else:
            service.create_index = index
        service.modify_index = index
        node_services[service.id] = service
        self.instances.setdefault(service.service, {})[(node_name, service.id)] = service
        self._link_connect(node_name, service)
        self._bump(index, "services", f"service:{service.service}", f"node:{node_name}")
        # Checks denormalise the service name and tags.
        for check in self.checks.get(node_name, {}).values():
            if check.service_id == service.id and (
                check.service_name != service.service or check.service_tags != service.tags
            ):
                check.service_name = service.service
                check.service_tags = list(service.tags)
                check.modify_index = index
                self._bump(index, "checks")

    def _drop_instance(self, index: int, node_name: str, service: NodeService) -> None:
        rows = self.instances.get(service.service)
        if rows is not None:
            rows.pop((node_name, service.id), None)
            if not rows:
                del self.instances[service.service]
        self._bump(index, "services", f"service:{service.service}", f"node:{node_name}")

    def apply_check(self, index: int, check: HealthCheck) -> None:
        node_name = check.node
        if node_name not in self.nodes:
            raise StateError(f"Missing node registration for {node_name!r}")
        if check.service_id:
            service = self.services.get(node_name, {}).get(check.service_id)
            if service is None:
                raise StateError(
                    f"Unknown service ID {check.service_id!r} for check ID {check.check_id!r}"
                )
            check.service_name = service.service
            check.service_tags = list(service.tags)
        else:
            check.service_name = ""
            check.service_tags = []
        node_checks = self.checks.setdefault(node_name, {})
        existing = node_checks.get(check.check_id)
        if existing is not None:
            if same_row(existing, check):
                return
            check.create_index = existing.create_index
            if existing.service_name and existing.service_name != check.service_name:
                self._bump(index, f"service:{existing.service_name}")
        else:
            check.create_index = index
        check.modify_index = index
        node_checks[check.check_id] = check
        self._bump(index, "checks", f"node:{node_name}")
        if check.service_name:
            self._bump(index, f"service:{check.service_name}")
        else:
            self._bump_node_services(index, node_name)

    def delete_check(self, index: int, node_name: str, check_id: str) -> None:
        check = self.checks.get(node_name, {}).pop(check_id, None)
        if check is None:
            return
        self._bump(index, "checks", f"node:{node_name}")
        if check.service_name:
            self._bump(index, f"service:{check.service_name}")
        else:
            self._bump_node_services(index, node_name)

    def delete_service(self, index: int, node_name: str, service_id: str) -> None:
        service = self.services.get(node_name, {}).pop(service_id, None)
        if service is None:
            return
        for check_id in [
            c.check_id
            for c in self.checks.get(node_name, {}).values()
            if c.service_id == service_id
        ]:
            self.delete_check(index, node_name, check_id)
        self._unlink_connect(index, node_name, service)
        self._drop_instance(index, node_name, service)

    def delete_node(self, index: int, node_name: str) -> None:
        if node_name not in self.nodes:
            return
        for service_id in list(self.services.get(node_name, {})):
            self.delete_service(index, node_name, service_id)
        for check_id in list(self.checks.get(node_name, {})):
            self.delete_check(index, node_name, check_id)
        self.services.pop(node_name, None)
        self.checks.pop(node_name, None)
        del self.nodes[node_name]
        self.coordinates.drop(index, node_name)
        self._bump(index, "nodes", f"node:{node_name}")

    # ----- KV writes ---------------------------------------------------------

    def kv_set(self, index: int, entry: KVEntry) -> None:
        existing = self.kvs.get(entry.key)
        if existing is None:
            entry.create_index = index
            bisect.insort(self._kv_keys, entry.key)
            self._tombstones.pop(entry.key, None)
        else:
            entry.create_index = existing.create_index
            entry.lock_index = existing.lock_index
            entry.session = existing.session
        entry.modify_index = index
        self.kvs[entry.key] = entry
        self._bump(index, "kvs")

    def kv_delete(self, index: int, key: str) -> bool:
        entry = self.kvs.pop(key, None)
        if entry is None:
            return False
        if entry.session:
            self.sessions.forget(entry.session, key)
        pos = bisect.bisect_left(self._kv_keys, key)
        del self._kv_keys[pos]
        self._add_tombstone(index, key)
        self._bump(index, "kvs")
        return True

    def kv_delete_tree(self, index: int, prefix: str) -> None:
        for key in self._keys_with_prefix(prefix):
            self.kv_delete(index, key)

    def _add_tombstone(self, index: int, key: str) -> None:
        self._tombstones[key] = index
        if len(self._tombstones) > _MAX_TOMBSTONES:
            oldest = min(self._tombstones, key=self._tombstones.__getitem__)
            self._tombstone_floor = max(self._tombstone_floor, self._tombstones.pop(oldest))

    # ----- catalog reads -----------------------------------------------------

    def _table_or(self, key: str, table: str) -> int:
        return self.indexes.get(key) or self.index(table)

    def catalog_nodes(self) -> tuple[int, list[Node]]:
        return self.index("nodes"), [self.nodes[name] for name in sorted(self.nodes)]

    def catalog_node(self, node_name: str) -> tuple[int, Node | None, list[NodeService]]:
        index = self._table_or(f"node:{node_name}", "nodes")
        node = self.nodes.get(node_name)
        services = self.services.get(node_name, {})
        return index, node, [services[sid] for sid in sorted(services)]

    def catalog_services(self) -> tuple[int, dict[str, list[str]]]:
        result: dict[str, list[str]] = {}
        for name in sorted(self.instances):
            tags: set[str] = set()
            for service in self.instances[name].values():
                tags.update(service.tags)
            result[name] = sorted(tags)
        return self.index("services"), result

    def service_instances(self, name: str) -> tuple[int, list[tuple[Node, NodeService]]]:
        """Instances of `name` joined with their nodes, sorted by node then ID."""
        index = self._table_or(f"service:{name}", "services")
        rows = self.instances.get(name, {})
        joined = [(self.nodes[node], rows[(node, sid)]) for node, sid in sorted(rows)]
        return index, joined

    def connect_instances_of(self, destination: str) -> tuple[int, list[tuple[Node, NodeService]]]:
        """The connect-capable instances for `destination` (its proxies and its
        connect-native instances) joined with their nodes, sorted by node then ID."""
        index = self._table_or(f"connect:{destination}", "services")
        rows = self.connect_instances.get(destination, {})
        joined = [(self.nodes[node], rows[(node, sid)]) for node, sid in sorted(rows)]
        return index, joined

    def catalog_service(self, name: str, connect: bool = False) -> tuple[int, list[ServiceNode]]:
        """/v1/catalog/service/:name, or with `connect` /v1/catalog/connect/:name."""
        found = self.connect_instances_of if connect else self.service_instances
        index, joined = found(name)
        return index, [service_node(node, service) for node, service in joined]

    def health_service(
        self, name: str, connect: bool = False
    ) -> tuple[int, list[CheckServiceNode]]:
        """/v1/health/service/:name, or with `connect` /v1/health/connect/:name."""
        found = self.connect_instances_of if connect else self.service_instances
        index, joined = found(name)
        result = []
        for node, service in joined:
            checks = [
                check
                for check in self.checks.get(node.node, {}).values()
                if not check.service_id or check.service_id == service.id
            ]
            result.append(CheckServiceNode(node=node, service=service, checks=checks))
        return index, result

    def node_checks(self, node_name: str) -> tuple[int, list[HealthCheck]]:
        checks = self.checks.get(node_name, {})
        return self._table_or(f"node:{node_name}", "checks"), [
            checks[cid] for cid in sorted(checks)
        ]

    def service_checks(self, name: str) -> tuple[int, list[HealthCheck]]:
        index = self._table_or(f"service:{name}", "checks")
        nodes = {node for node, _ in self.instances.get(name, {})}
        found = [
            check
            for node in sorted(nodes)
            for check in self.checks.get(node, {}).values()
            if check.service_name == name
        ]
        return index, found

    def checks_in_state(self, state: str) -> tuple[int, list[HealthCheck]]:
        found = [
            check
            for node in sorted(self.checks)
            for check in self.checks[node].values()
            if state == "any" or check.status == state
        ]
        return self.index("checks"), found

    # ----- Connect CA reads ---------------------------------------------------

    def ca_roots(self) -> tuple[int, IndexedCARoots]:
        """The body of /v1/connect/ca/roots (no private key) and its index."""
        return self.index(ROOTS_KEY), self.ca.view()

    # ----- config entry reads -------------------------------------------------

    def config_entry(self, kind: str, name: str) -> tuple[int, ConfigEntry | None]:
        """One entry and the index of its kind (what a blocking Get compares)."""
        return self.index(kind_key(kind)), self.config.get(kind, name)

    def config_entries_of_kind(self, kind: str) -> tuple[int, list[ConfigEntry]]:
        return self.index(kind_key(kind)), self.config.of_kind(kind)

    def config_entries_all(self) -> tuple[int, list[ConfigEntry]]:
        return self.index(ENTRIES_KEY), self.config.all()

    def ca_config(self) -> tuple[int, CAConfiguration | None]:
        """The CA configuration (no key material) and its index."""
        return self.index(CONFIG_KEY), self.ca.config

    # ----- session reads -------------------------------------------------------

    def session_get(self, session_id: str) -> tuple[int, Session | None]:
        return self.index(SESSIONS_KEY), self.sessions.get(session_id)

    def session_list(self) -> tuple[int, list[Session]]:
        return self.index(SESSIONS_KEY), self.sessions.all()

    def node_sessions(self, node: str) -> tuple[int, list[Session]]:
        return self.index(SESSIONS_KEY), self.sessions.of_node(node)

    # ----- KV reads ----------------------------------------------------------

    def _keys_with_prefix(self, prefix: str) -> list[str]:
        start = bisect.bisect_left(self._kv_keys, prefix)
        end = start
        while end < len(self._kv_keys) and self._kv_keys[end].startswith(prefix):
            end += 1
        return self._kv_keys[start:end]

    def _prefix_index(self, prefix: str, entries: Iterable[KVEntry]) -> int:
        index = self._tombstone_floor
        for entry in entries:
            index = max(index, entry.modify_index)
        for key, tomb_index in self._tombstones.items():
            if key.startswith(prefix):
                index = max(index, tomb_index)
        return index or self.index("kvs")

    def kv_get(self, key: str) -> tuple[int, KVEntry | None]:
        entry = self.kvs.get(key)
        if entry is not None:
            return entry.modify_index, entry
        tomb = self._tombstones.get(key, 0)
        return (tomb or max(self._tombstone_floor, self.index("kvs"))), None

    def kv_list(self, prefix: str) -> tuple[int, list[KVEntry]]:
        entries = [self.kvs[key] for key in self._keys_with_prefix(prefix)]
        return self._prefix_index(prefix, entries), entries

    def kv_keys(self, prefix: str, separator: str) -> tuple[int, list[str]]:
        keys = self._keys_with_prefix(prefix)
        index = self._prefix_index(prefix, (self.kvs[k] for k in keys))
        if not separator:
            return index, keys
        result: list[str] = []
        for key in keys:
            cut = key.find(separator, len(prefix))
            short = key if cut < 0 else key[: cut + len(separator)]
            if not result or result[-1] != short:
                result.append(short)
        return index, result


def service_node(node: Node, service: NodeService) -> ServiceNode:
    """Join a node and an instance into a /v1/catalog/service row."""
    return ServiceNode(
        id=node.id,
        node=node.node,
        address=node.address,
        datacenter=node.datacenter,
        tagged_addresses=node.tagged_addresses,
        node_meta=node.meta,
        service_kind=service.kind,
        service_id=service.id,
        service_name=service.service,
        service_tags=service.tags,
        service_address=service.address,
        service_tagged_addresses=service.tagged_addresses,
        service_weights=service.weights,
        service_meta=service.meta,
        service_port=service.port,
        service_enable_tag_override=service.enable_tag_override,
        service_proxy=service.proxy,
        service_connect=service.connect,
        create_index=service.create_index,
        modify_index=service.modify_index,
    )
