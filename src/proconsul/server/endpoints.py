"""Server endpoints: the reads and writes that Consul serves over RPC.

Reads run against the local state store and block (`?index=&wait=`) on its
watch channels; writes go through the log (Raft, behind the `LeaderRouter`).
Filtering by tag, node meta and health lives here, once, for HTTP,
DNS and RPC callers. Filtered results are cached per index, because the same
blocking queries arrive over and over while the data stays put.

ACL rules (when `acl` is set; Consul's, as documented):
- The caller's token is `options.token` on reads and the `token` argument on
  writes; "" is the anonymous token. An unknown or expired secret raises
  `ACLNotFound` ("ACL not found"); a refused write or a refused single-key
  read raises `ACLDenied` with Consul's Permission denied text.
- Reads are filtered row by row: nodes need node:read, services and service
  instances service:read (instances also node:read on their node), checks
  node:read plus service:read when they belong to a service, KV entries and
  keys key:read, intentions `intentions = "read"` on either end
  (server/intention_endpoints.py). Dropped rows set `results_filtered_by_acls`. A single KV key
  the token may not read is a 403, and so is a recursive or keys read of a
  prefix it may not list when `enable_key_list_policy` is on.
  A filtered result is cached per (request, accessor) while both the source
  rows and the token's authorizer stay the same objects, so a repeated query
  returns the very same list (the HTTP body cache then skips encoding).
- Writes are vetted per command before they enter the log (`vet_write`):
  a register needs node:write when it creates the node or changes its own
  data (address, ID, tagged addresses, meta), service:write on its service
  (and on the old name when an instance is renamed), service:write for each
  service check and node:write for each node check; a deregister is allowed
  by node:write, else by service:write on the service the row belongs to;
  KV set/cas/delete and lock/unlock (acquire/release) need key:write, a
  recursive delete write on the whole prefix; sessions session:write on
  their node (server/session_rules.py); config entries follow Consul's rules per kind
  (server/config_endpoints.py), and are normalized and validated before the
  log (a bad one is a 400). ACL rows are never written through here, whatever
  the token: only `ACLEndpoints` writes them; nor is any other command but
  catalog, KV, session and config entries (the CA roots are the leader's own write),
  even with ACLs off. The token
  goes on into the log with the check: the server that applies the command
  runs the check, once (server/leader_router.py, server/raft_rpc.py).
- Connect reads ("Health.ConnectServiceNodes", "Catalog.ConnectServiceNodes":
  the proxies and connect-native instances for a destination service) need
  service:read on the destination, else they answer an empty list (as
  Consul's do); their rows are then filtered like their plain counterparts'.
- `local_read` skips the ACL check: for the agent's own bookkeeping reads.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from proconsul.acl.authorizer import Authorizer
from proconsul.acl.errors import ACLDenied
from proconsul.acl.resolved import ResolvedToken
from proconsul.connect.intentions import default_allow
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.server.config_endpoints import (
    LIST_METHOD as CONFIG_LIST,
)
from proconsul.server.config_endpoints import (
    check_config_request,
    check_graph,
    config_reads,
    filter_entries,
    vet_config_write,
)
from proconsul.server.config_endpoints import (
    precheck_read as precheck_config_read,
)
from proconsul.server.coordinate_endpoints import LIST_METHOD as COORDINATE_LIST
from proconsul.server.coordinate_endpoints import (
    NEAR_READS,
    CoordinateBatcher,
    coordinate_reads,
    distance_from,
    filter_coordinates,
    sort_by_distance,
    vet_coordinate_update,
)
from proconsul.server.coordinate_endpoints import NODE_METHOD as COORDINATE_NODE
from proconsul.server.intention_endpoints import LIST_METHOD as INTENTION_LIST
from proconsul.server.intention_endpoints import (
    filter_intentions,
    filter_view,
    intention_reads,
    postcheck_read,
)
from proconsul.server.intention_endpoints import (
    precheck_read as precheck_intention_read,
)
from proconsul.server.query_endpoints import EXECUTE_METHOD as QUERY_EXECUTE
from proconsul.server.query_endpoints import LIST_METHOD as QUERY_LIST
from proconsul.server.query_endpoints import (
    check_query_request,
    filter_queries,
    finish_execute,
    query_reads,
    vet_query_write,
)
from proconsul.server.query_endpoints import precheck_read as precheck_query_read
from proconsul.server.session_rules import (
    SESSION_READS,
    filter_sessions,
    prepare_session_write,
    session_reads,
    vet_session,
)
from proconsul.server.txn_endpoints import (
    TXN_READ,
    acl_errors,
    check_ops,
    filter_reply,
    first_denial,
    txn_read,
)
from proconsul.state.ca_tables import CONFIG_KEY as CA_CONFIG_KEY
from proconsul.state.ca_tables import ROOTS_KEY as CA_ROOTS_KEY
from proconsul.state.store import StateStore, service_node
from proconsul.structs.catalog import (
    CheckServiceNode,
    HealthCheck,
    KVEntry,
    Node,
    NodeService,
    ServiceNode,
)
from proconsul.structs.commands import (
    ACLCommand,
    ApplyResult,
    Command,
    ConfigEntryRequest,
    CoordinateBatchUpdate,
    DeregisterRequest,
    KVSRequest,
    PreparedQueryRequest,
    RegisterRequest,
    SessionRequest,
    TxnRequest,
)
from proconsul.structs.config_entries import Intention
from proconsul.structs.filter import Filter, cached_filter
from proconsul.structs.filter_syntax import FilterError
from proconsul.structs.requests import (
    DEFAULT_WAIT_S,
    MAX_WAIT_S,
    QueryMeta,
    QueryOptions,
    ReadRequest,
    ReadResponse,
)
from proconsul.structs.txn import TxnReply

_FILTER_CACHE_MAX = 4096
# Reads whose unfiltered result is the same object while the index stands
# still (see `_health_service`): only those gain from the filtered cache.
_STABLE_READS = frozenset({"Health.ServiceNodes"})
# Connect reads and the plain reads whose ACL filter they share.
CONNECT_READS = {
    "Catalog.ConnectServiceNodes": "Catalog.ServiceNodes",
    "Health.ConnectServiceNodes": "Health.ServiceNodes",
}
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
RAW_ACL_COMMAND = "Permission denied: ACL rows are written through the ACL endpoints only"
NOT_A_CATALOG_COMMAND = (
    "Permission denied: only catalog, KV, session, config entry and prepared query "
    "commands are written here"
)
# The commands a caller may have applied through `ServerEndpoints.write`.
CALLER_COMMANDS = (
    RegisterRequest,
    DeregisterRequest,
    KVSRequest,
    ConfigEntryRequest,
    PreparedQueryRequest,
    CoordinateBatchUpdate,
    TxnRequest,
    SessionRequest,
)


# Raises an ACL refusal unless the holder of the token may have the command applied.
Authorize = Callable[[Command, str], None]


class Log(Protocol):
    async def apply(
        self, command: Command, token: str = "", authorize: Authorize | None = None
    ) -> tuple[int, ApplyResult]:
        """Commit `command` for the caller holding `token` ("" for the agent's own
        writes). `authorize(command, token)` runs where the command is applied,
        and only there: a log that forwards to the leader hands the token along
        and the leader authorizes (server/leader_router.py)."""
        ...


# The row type each filterable read returns: `?filter` is checked against it.
FILTER_SHAPES: dict[str, type] = {
    "Catalog.ListNodes": Node,
    "Catalog.ServiceNodes": ServiceNode,
    "Catalog.ConnectServiceNodes": ServiceNode,
    "Health.ServiceNodes": CheckServiceNode,
    "Health.ConnectServiceNodes": CheckServiceNode,
    "Health.NodeChecks": HealthCheck,
    "Health.ServiceChecks": HealthCheck,
    "Health.ChecksInState": HealthCheck,
    # Consul filters the instances (ServiceNode rows) and then lists names and
    # tags: done inside the read (`_catalog_services`), not on its answer.
    "Catalog.ListServices": ServiceNode,
    INTENTION_LIST: Intention,
}
_FILTERED_IN_READ = frozenset({"Catalog.ListServices"})


def query_filter(method: str, text: str) -> Filter:
    """`?filter=text` compiled for `method`'s rows; a bad filter, or one on a
    read that takes none, is `RPCError(..., BAD_QUERY)` (HTTP 400)."""
    shape = FILTER_SHAPES.get(method)
    if shape is None:
        raise RPCError(f"filtering is not supported by {method}", ErrorCode.BAD_QUERY)
    try:
        return cached_filter(text, shape)
    except FilterError as exc:
        raise RPCError(str(exc), ErrorCode.BAD_QUERY) from None


def apply_query_filter(method: str, text: str, rows: Any) -> Any:
    """The rows of `method`'s answer that pass `?filter=text` (see `query_filter`)."""
    if method == INTENTION_LIST:
        views: Any = [filter_view(row) for row in rows]
    else:
        views = msgspec.to_builtins(rows)
    return query_filter(method, text).select(rows, views)


def wait_with_jitter_s(requested_s: float, rng: random.Random) -> float:
    """Consul's blocking wait: default 5m, capped at 10m, plus up to wait/16 of jitter."""
    wait = requested_s if requested_s > 0 else DEFAULT_WAIT_S
    wait = min(wait, MAX_WAIT_S)
    return wait + rng.uniform(0, wait / 16)


async def blocking_query(
    store: StateStore,
    options: QueryOptions,
    watch_keys: Sequence[str],
    run: Callable[[], tuple[int, Any]],
    rng: random.Random,
) -> tuple[int, Any]:
    """Run `run` now, or when its index passes `options.min_index`, or when the wait ends."""
    index, value = run()
    if options.min_index <= 0 or index > options.min_index:
        return index, value
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_with_jitter_s(options.max_query_time_s, rng)
    while index <= options.min_index:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        changed: asyncio.Future[None] = loop.create_future()

        def wake(fut: asyncio.Future[None] = changed) -> None:
            if not fut.done():
                fut.set_result(None)

        handle = store.watches.subscribe(watch_keys, wake)
        try:
            await asyncio.wait_for(changed, remaining)
        except TimeoutError:
            pass
        finally:
            store.watches.unsubscribe(handle)
        index, value = run()
    return index, value


def _has_tags(tags: Sequence[str], wanted: Sequence[str]) -> bool:
    if not wanted:
        return True
    lowered = {t.lower() for t in tags}
    return all(w.lower() in lowered for w in wanted)


def _node_meta_matches(node: Node, wanted: dict[str, str]) -> bool:
    return all(node.meta.get(k) == v for k, v in wanted.items())


def _all_passing(checks: Sequence[HealthCheck]) -> bool:
    return all(check.status == "passing" for check in checks)


class ServerEndpoints:
    def __init__(
        self, store: StateStore, log: Log, datacenter: str, rng: random.Random | None = None
    ) -> None:
        self.store = store
        self.log = log
        self.datacenter = datacenter
        self.rng = rng or random.Random()
        # Set by the agent when ACLs are enabled; None means every call is allowed.
        self.acl: ServerACLResolver | None = None
        self._health_cache: dict[tuple[str, tuple[str, ...], bool], tuple[int, list[Any]]] = {}
        # (request, accessor) -> (source value, authorizer, filtered value, dropped any)
        self._filter_cache: dict[tuple[Any, ...], tuple[Any, Authorizer, Any, bool]] = {}
        self.reads: dict[str, Callable[[ReadRequest], tuple[Sequence[str], Callable[[], Any]]]] = {
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
        }
        self.reads.update(config_reads(store, datacenter))
        self.reads.update(intention_reads(store, self._intention_default_allow))
        self.reads.update(
            query_reads(store, datacenter, self.rng, lambda near: distance_from(store, near))
        )
        self.reads.update(coordinate_reads(store))
        # Agents' coordinates, applied in batches (server/coordinate_endpoints.py).
        self.coordinates = CoordinateBatcher(lambda command: self.log.apply(command))
        self.reads[TXN_READ] = txn_read(store)
        self.reads[USAGE_READ] = self._usage
        self.reads.update(session_reads(store))

    def _intention_default_allow(self) -> bool:
        acl = self.acl
        return default_allow(acl is not None, "allow" if acl is None else acl.default_policy)

    def resolve(self, secret: str) -> ResolvedToken | None:
        """The caller's rights (None: ACLs off); an unknown secret raises ACLNotFound."""
        if self.acl is None:
            return None
        return self.acl.resolve(secret)

    async def read(self, method: str, request: ReadRequest) -> ReadResponse:
        return await self._read(method, request, self.resolve(request.options.token))

    async def local_read(self, method: str, request: ReadRequest) -> ReadResponse:
        """A read for the agent itself (leader bookkeeping): no ACL check."""
        return await self._read(method, request, None)

    async def _read(
        self, method: str, request: ReadRequest, resolved: ResolvedToken | None
    ) -> ReadResponse:
        watch_keys, run = self.reads[method](request)
        if resolved is not None:
            _precheck(method, request, resolved)
            if method == TXN_READ:
                denied = acl_errors(self.store, resolved, request.txn_ops)
                if denied:
                    meta = QueryMeta(index=max(self.store.last_index, 1))
                    return ReadResponse(meta=meta, value=TxnReply(errors=denied))
        index, value = await blocking_query(self.store, request.options, watch_keys, run, self.rng)
        filtered = False
        if method == QUERY_EXECUTE:
            value, filtered = finish_execute(value, resolved, self.resolve, _health_rows_filter)
        elif resolved is not None:
            value = precheck_query_read(method, resolved, value)
            postcheck_read(method, resolved, value)
            value, filtered = self._filter(method, request, resolved, value)
        if request.near and method in NEAR_READS:
            value = sort_by_distance(method, value, self.store, request.near)
        if request.options.filter and method not in _FILTERED_IN_READ:
            # After the ACL filter, so the filtered-by-ACLs header speaks of ACLs only.
            value = apply_query_filter(method, request.options.filter, value)
        # Consul never reports index 0: clients treat it as "don't block".
        meta = QueryMeta(index=max(index, 1), results_filtered_by_acls=filtered)
        return ReadResponse(meta=meta, value=value)

    def _filter(
        self, method: str, request: ReadRequest, resolved: ResolvedToken, value: Any
    ) -> tuple[Any, bool]:
        if method == TXN_READ:
            return filter_reply(resolved, value)
        plain = CONNECT_READS.get(method)
        if plain is not None:
            if not resolved.authorizer.service_read(request.name):
                return [], False  # Consul answers empty, not 403
            return filter_result(plain, resolved.authorizer, value)
        if method not in _STABLE_READS:
            return filter_result(method, resolved.authorizer, value)
        key = (
            method,
            request.name,
            tuple(request.tags),
            request.passing_only,
            tuple(sorted(request.node_meta.items())),
            resolved.accessor_id,
        )
        cached = self._filter_cache.get(key)
        if cached is not None and cached[0] is value and cached[1] is resolved.authorizer:
            return cached[2], cached[3]
        result, filtered = filter_result(method, resolved.authorizer, value)
        if len(self._filter_cache) >= _FILTER_CACHE_MAX:
            self._filter_cache.clear()
        self._filter_cache[key] = (value, resolved.authorizer, result, filtered)
        return result, filtered

    async def write(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        """Apply `command` for the caller holding `token` (the secret; "" = anonymous)."""
        if isinstance(command, ACLCommand):
            # Whatever the token: ACL rows carry secrets and are validated by ACLEndpoints.
            raise ACLDenied(RAW_ACL_COMMAND)
        if not isinstance(command, CALLER_COMMANDS):
            # Whatever the token, ACLs on or off: other rows (CA roots) are the leader's own.
            raise ACLDenied(NOT_A_CATALOG_COMMAND)
        if isinstance(command, ConfigEntryRequest):
            command = check_config_request(command)
            check_graph(self.store, command, self.datacenter)
        if isinstance(command, CoordinateBatchUpdate):
            # Checked here, where it comes in; the batch is this server's own write.
            resolved = self.resolve(token)
            if resolved is not None:
                vet_coordinate_update(resolved, command)
            self.coordinates.submit(command.updates)
            return 0, None
        if isinstance(command, PreparedQueryRequest):
            check_query_request(command)
            # The owner is whoever this server resolves the token to, never the caller's say.
            resolved = self.resolve(token)
            owner = "" if resolved is None else resolved.accessor_id
            command = msgspec.structs.replace(command, owner=owner)
        if isinstance(command, TxnRequest):
            check_ops(command.ops)
            resolved = self.resolve(token)
            if resolved is not None:
                # Refused operations are answered here, each named, as Consul
                # does: the transaction never enters the log.
                denied = acl_errors(self.store, resolved, command.ops)
                if denied:
                    return self.store.last_index, TxnReply(errors=denied)
        if isinstance(command, SessionRequest):
            command = prepare_session_write(command)

        return await self.log.apply(command, token, self._authorize_write)

    def _authorize_write(self, command: Command, token: str) -> None:
        """The ACL check of a catalog or KV write, run by the server that applies it."""
        resolved = self.resolve(token)
        if resolved is not None:
            vet_write(self.store, resolved, command)

    # ----- reads -------------------------------------------------------------
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


# ----- ACL filtering of reads -------------------------------------------------------


def _precheck(method: str, request: ReadRequest, resolved: ResolvedToken) -> None:
    """Consul's up-front refusals: a single key, a prefix that may not be listed,
    the CA configuration without operator:write (Consul's rule since 1.8.6)."""
    authz = resolved.authorizer
    if method == "ConnectCA.ConfigurationGet" and not authz.operator_write():
        raise resolved.deny("operator", "write")
    if method == USAGE_READ and not authz.operator_read():
        raise resolved.deny("operator", "read")
    if method == "KVS.Get" and not authz.key_read(request.name):
        raise resolved.deny("key", "read", request.name)
    precheck_config_read(method, request, resolved)
    precheck_intention_read(method, request, resolved)
    listing = method in ("KVS.List", "KVS.ListKeys")
    if listing and authz.enable_key_list_policy and not authz.key_list(request.name):
        raise resolved.deny("key", "list", request.name)


def _keep(rows: list[Any], allowed: Callable[[Any], bool]) -> tuple[list[Any], bool]:
    """The allowed rows; the same list object when nothing was dropped."""
    kept = [row for row in rows if allowed(row)]
    if len(kept) == len(rows):
        return rows, False
    return kept, True


def _check_readable(authz: Authorizer) -> Callable[[HealthCheck], bool]:
    def allowed(check: HealthCheck) -> bool:
        return authz.node_read(check.node) and (
            not check.service_name or authz.service_read(check.service_name)
        )

    return allowed


def filter_result(method: str, authz: Authorizer, value: Any) -> tuple[Any, bool]:
    """`value` (a result of `method`) without what `authz` may not read, and
    whether anything was dropped."""
    if method == "Health.ServiceNodes":
        rows: list[CheckServiceNode] = value
        return _keep(
            rows, lambda r: authz.node_read(r.node.node) and authz.service_read(r.service.service)
        )
    if method == "Catalog.ServiceNodes":
        service_rows: list[ServiceNode] = value
        return _keep(
            service_rows,
            lambda r: authz.node_read(r.node) and authz.service_read(r.service_name),
        )
    if method == "Catalog.ListNodes":
        return _keep(value, lambda n: authz.node_read(n.node))
    if method == "Catalog.ListServices":
        names: dict[str, list[str]] = value
        kept = {name: tags for name, tags in names.items() if authz.service_read(name)}
        return (names, False) if len(kept) == len(names) else (kept, True)
    if method == "Catalog.NodeServices":
        node: Node | None
        services: list[NodeService]
        node, services = value
        if node is None:
            return value, False
        if not authz.node_read(node.node):
            return (None, []), True
        kept_services, dropped = _keep(services, lambda s: authz.service_read(s.service))
        return ((node, kept_services), True) if dropped else (value, False)
    if method in ("Health.NodeChecks", "Health.ServiceChecks", "Health.ChecksInState"):
        return _keep(value, _check_readable(authz))
    if method == "KVS.List":
        entries: list[KVEntry] = value
        return _keep(entries, lambda e: authz.key_read(e.key))
    if method == "KVS.ListKeys":
        return _keep(value, authz.key_read)
    if method == CONFIG_LIST:
        return filter_entries(authz, value)
    if method == INTENTION_LIST:
        return filter_intentions(authz, value)
    if method == QUERY_LIST:
        return filter_queries(authz, value)
    if method in (COORDINATE_LIST, COORDINATE_NODE):
        return filter_coordinates(authz, value)
    if method in SESSION_READS:
        return filter_sessions(authz, value)
    return value, False  # KVS.Get: refused up front when not readable


def _health_rows_filter(
    rows: list[CheckServiceNode], resolved: ResolvedToken
) -> tuple[list[CheckServiceNode], bool]:
    result: tuple[list[CheckServiceNode], bool] = filter_result(
        "Health.ServiceNodes", resolved.authorizer, rows
    )
    return result


# ----- ACL vetting of writes -----------------------------------------------------


def _node_changes(store: StateStore, req: RegisterRequest) -> bool:
    """Would `req` create the node or change its own data (Consul's ChangesNode)?"""
    existing = store.nodes.get(req.node)
    if existing is None:
        return True
    if req.skip_node_update:
        return False
    return (
        (bool(req.id) and req.id != existing.id)
        or req.address != existing.address
        or req.tagged_addresses != existing.tagged_addresses
        or req.node_meta != existing.meta
    )


def _vet_register(store: StateStore, resolved: ResolvedToken, req: RegisterRequest) -> None:
    authz = resolved.authorizer
    if _node_changes(store, req) and not authz.node_write(req.node):
        raise resolved.deny("node", "write", req.node)
    existing_services = store.services.get(req.node, {})
    service = req.service
    if service is not None:
        if not authz.service_write(service.service):
            raise resolved.deny("service", "write", service.service)
        # Renaming an instance also needs write on the name it had.
        previous = existing_services.get(service.id or service.service)
        if previous is not None and not authz.service_write(previous.service):
            raise resolved.deny("service", "write", previous.service)
    checks = list(req.checks)
    if req.check is not None:
        checks.append(req.check)
    for check in checks:
        if not check.service_id:
            if not authz.node_write(req.node):
                raise resolved.deny("node", "write", req.node)
            continue
        if service is not None and check.service_id == (service.id or service.service):
            continue  # covered by the service's own check above
        owner = existing_services.get(check.service_id)
        if owner is None:
            continue  # the state store refuses it: "Unknown service ID"
        if not authz.service_write(owner.service):
            raise resolved.deny("service", "write", owner.service)


def _vet_deregister(store: StateStore, resolved: ResolvedToken, req: DeregisterRequest) -> None:
    authz = resolved.authorizer
    if authz.node_write(req.node):
        return  # node write covers everything on the node, as in Consul
    name = ""
    if req.service_id:
        service = store.services.get(req.node, {}).get(req.service_id)
        name = "" if service is None else service.service
    elif req.check_id:
        check = store.checks.get(req.node, {}).get(req.check_id)
        name = "" if check is None else check.service_name
    if name and authz.service_write(name):
        return
    resource, label = ("service", name) if name else ("node", req.node)
    raise resolved.deny(resource, "write", label)


def _vet_kv(resolved: ResolvedToken, req: KVSRequest) -> None:
    authz = resolved.authorizer
    key = req.dir_ent.key
    if req.op == "delete-tree":
        if not authz.key_write_prefix(key):
            raise resolved.deny("key", "write", key, recursive=True)
    elif not authz.key_write(key):
        raise resolved.deny("key", "write", key)


def vet_write(store: StateStore, resolved: ResolvedToken, command: Command) -> None:
    """Raise `ACLDenied` (Consul's Permission denied text) unless `resolved` may
    apply `command`."""
    if isinstance(command, RegisterRequest):
        _vet_register(store, resolved, command)
    elif isinstance(command, DeregisterRequest):
        _vet_deregister(store, resolved, command)
    elif isinstance(command, KVSRequest):
        _vet_kv(resolved, command)
    elif isinstance(command, ConfigEntryRequest):
        vet_config_write(resolved, command)
    elif isinstance(command, PreparedQueryRequest):
        vet_query_write(store, resolved, command)
    elif isinstance(command, CoordinateBatchUpdate):
        vet_coordinate_update(resolved, command)
    elif isinstance(command, TxnRequest):
        first_denial(store, resolved, command.ops)
    elif isinstance(command, SessionRequest):
        vet_session(store, resolved, command)
    else:
        raise ACLDenied(RAW_ACL_COMMAND)
