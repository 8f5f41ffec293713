"""ACL rules of the server endpoints: row filtering of reads, vetting of writes.

Job: given a caller's resolved token, say what of a read's answer it may see
(`filter_result`, `precheck_read`) and whether it may have a write applied
(`vet_write`); and which commands a caller may write at all (`CALLER_COMMANDS`).
`ServerEndpoints` (server/endpoints.py) calls these; they hold no state.

Rules (when ACLs are on; Consul's, as documented):
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
  log (a bad one is a 400). ACL rows are never written through the server
  endpoints, whatever the token (`RAW_ACL_COMMAND`): only `ACLEndpoints` writes
  them; nor is any command but those in `CALLER_COMMANDS` (catalog, KV,
  session, config entries, prepared queries, coordinates, transactions; the
  CA roots are the leader's own write), even with ACLs off.
- Connect reads (`CONNECT_READS`: the proxies and connect-native instances for
  a destination service) need service:read on the destination, else they
  answer an empty list (as Consul's do); their rows are then filtered like
  their plain counterparts' (`ServerEndpoints._filter` applies this).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proconsul.acl.authorizer import Authorizer
from proconsul.acl.errors import ACLDenied
from proconsul.acl.resolved import ResolvedToken
from proconsul.server.catalog_reads import USAGE_READ
from proconsul.server.config_endpoints import LIST_METHOD as CONFIG_LIST
from proconsul.server.config_endpoints import filter_entries, vet_config_write
from proconsul.server.config_endpoints import precheck_read as precheck_config_read
from proconsul.server.coordinate_endpoints import LIST_METHOD as COORDINATE_LIST
from proconsul.server.coordinate_endpoints import NODE_METHOD as COORDINATE_NODE
from proconsul.server.coordinate_endpoints import filter_coordinates, vet_coordinate_update
from proconsul.server.intention_endpoints import LIST_METHOD as INTENTION_LIST
from proconsul.server.intention_endpoints import filter_intentions
from proconsul.server.intention_endpoints import precheck_read as precheck_intention_read
from proconsul.server.query_endpoints import LIST_METHOD as QUERY_LIST
from proconsul.server.query_endpoints import filter_queries, vet_query_write
from proconsul.server.session_rules import SESSION_READS, filter_sessions, vet_session
from proconsul.server.txn_endpoints import first_denial
from proconsul.state.store import StateStore
from proconsul.structs.catalog import (
    CheckServiceNode,
    HealthCheck,
    KVEntry,
    Node,
    NodeService,
    ServiceNode,
)
from proconsul.structs.commands import (
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
from proconsul.structs.requests import ReadRequest

# Connect reads and the plain reads whose ACL filter they share.
CONNECT_READS = {
    "Catalog.ConnectServiceNodes": "Catalog.ServiceNodes",
    "Health.ConnectServiceNodes": "Health.ServiceNodes",
}
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


def precheck_read(method: str, request: ReadRequest, resolved: ResolvedToken) -> None:
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


def health_rows_filter(
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
