"""Server endpoints: the reads and writes that Consul serves over RPC.

Job: `ServerEndpoints` answers a read by method (the catalog, health and KV
reads in server/catalog_reads.py, config entries, intentions, prepared queries,
coordinates, transactions, sessions from their own modules): it runs it
against the local state store, blocking on its watch channels, then applies
the caller's ACLs and `?filter` (server/read_options.py). Writes go through the
log (Raft, behind the `LeaderRouter`).

Rules:
- ACLs (when `acl` is set) follow server/endpoint_acl.py: reads are checked up
  front and filtered row by row, writes are vetted per command. A filtered
  result is cached per (request, accessor) while both the source rows and the
  token's authorizer stay the same objects, so a repeated query returns the
  very same list (the HTTP body cache then skips encoding).
- `?filter` runs after the ACL filter, so the filtered-by-ACLs header speaks
  of ACLs only.
- Only `CALLER_COMMANDS` are written here, whatever the token; the token goes
  on into the log with the check: the server that applies the command runs
  the check, once (server/leader_router.py, server/raft_rpc.py).
- `local_read` skips the ACL check: for the agent's own bookkeeping reads.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from proconsul.acl.authorizer import Authorizer
from proconsul.acl.errors import ACLDenied
from proconsul.acl.resolved import ResolvedToken
from proconsul.connect.intentions import default_allow
from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.server.catalog_reads import catalog_reads
from proconsul.server.config_endpoints import (
    ReadFn,
    check_config_request,
    check_graph,
    config_reads,
)
from proconsul.server.coordinate_endpoints import (
    NEAR_READS,
    CoordinateBatcher,
    coordinate_reads,
    distance_from,
    sort_by_distance,
    vet_coordinate_update,
)
from proconsul.server.endpoint_acl import (
    CALLER_COMMANDS,
    CONNECT_READS,
    NOT_A_CATALOG_COMMAND,
    RAW_ACL_COMMAND,
    filter_result,
    health_rows_filter,
    precheck_read,
    vet_write,
)
from proconsul.server.intention_endpoints import intention_reads, postcheck_read
from proconsul.server.query_endpoints import EXECUTE_METHOD as QUERY_EXECUTE
from proconsul.server.query_endpoints import check_query_request, finish_execute, query_reads
from proconsul.server.query_endpoints import precheck_read as precheck_query_read
from proconsul.server.read_options import FILTERED_IN_READ, apply_query_filter, blocking_query
from proconsul.server.session_rules import prepare_session_write, session_reads
from proconsul.server.txn_endpoints import TXN_READ, acl_errors, check_ops, filter_reply, txn_read
from proconsul.state.store import StateStore
from proconsul.structs.commands import (
    ACLCommand,
    ApplyResult,
    Command,
    ConfigEntryRequest,
    CoordinateBatchUpdate,
    PreparedQueryRequest,
    SessionRequest,
    TxnRequest,
)
from proconsul.structs.requests import QueryMeta, ReadRequest, ReadResponse
from proconsul.structs.txn import TxnReply

_FILTER_CACHE_MAX = 4096
# Reads whose unfiltered result is the same object while the index stands still
# (see `_health_service`, server/catalog_reads.py): only those gain from the
# filtered cache.
_STABLE_READS = frozenset({"Health.ServiceNodes"})


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
        # (request, accessor) -> (source value, authorizer, filtered value, dropped any)
        self._filter_cache: dict[tuple[Any, ...], tuple[Any, Authorizer, Any, bool]] = {}
        self.reads: dict[str, ReadFn] = catalog_reads(store, datacenter)
        self.reads.update(config_reads(store, datacenter))
        self.reads.update(intention_reads(store, self._intention_default_allow))
        self.reads.update(
            query_reads(store, datacenter, self.rng, lambda near: distance_from(store, near))
        )
        self.reads.update(coordinate_reads(store))
        # Agents' coordinates, applied in batches (server/coordinate_endpoints.py).
        self.coordinates = CoordinateBatcher(lambda command: self.log.apply(command))
        self.reads[TXN_READ] = txn_read(store)
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
            precheck_read(method, request, resolved)
            if method == TXN_READ:
                denied = acl_errors(self.store, resolved, request.txn_ops)
                if denied:
                    meta = QueryMeta(index=max(self.store.last_index, 1))
                    return ReadResponse(meta=meta, value=TxnReply(errors=denied))
        index, value = await blocking_query(self.store, request.options, watch_keys, run, self.rng)
        filtered = False
        if method == QUERY_EXECUTE:
            value, filtered = finish_execute(value, resolved, self.resolve, health_rows_filter)
        elif resolved is not None:
            value = precheck_query_read(method, resolved, value)
            postcheck_read(method, resolved, value)
            value, filtered = self._filter(method, request, resolved, value)
        if request.near and method in NEAR_READS:
            value = sort_by_distance(method, value, self.store, request.near)
        if request.options.filter and method not in FILTERED_IN_READ:
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
