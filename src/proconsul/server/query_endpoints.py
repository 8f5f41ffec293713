"""Prepared queries on the servers: their reads, the check of a write, and their ACL rules.

Job: the reads `ServerEndpoints` serves for prepared queries
("PreparedQuery.Get": one query by ID, as a list of one; "PreparedQuery.List";
"PreparedQuery.Explain": the query an ID or name resolves to, rendered;
"PreparedQuery.Execute": its instances, query/execute.py over the local
health rows), the check a `PreparedQueryRequest` passes before it enters the
log (`check_query_request`, query/definition.py; a refusal is BAD_QUERY, HTTP
400, with Consul's text), and Consul's ACL rules for them.

ACL rules (Consul's `query`/`query_prefix` rules, DESIGN.md, "Prepared queries"):
- A query with a name (templates too) is governed by query rules on that
  name: creating or changing it needs query:write on the new name and, for an
  update or delete, on the name it has; reading it (Get, Explain) query:read,
  else 403; a List leaves out what the token may not read.
- A query without a name is owned by the token that created it: only that
  token (its AccessorID, recorded by the server that took the write) or a
  management token may change or delete it; anyone who knows its ID may read
  it, but a List shows it to management tokens only.
- `Token` (the token the query executes with) is shown to management tokens
  only, `<hidden>` to others.
- Executing needs no right on the query; the instances are filtered with the
  query's own `Token` when it has one, else with the caller's, as a health
  read (node:read and service:read).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from proconsul.acl.authorizer import Authorizer
from proconsul.acl.resolved import ResolvedToken
from proconsul.query.definition import QueryError, check_query, resolve_query
from proconsul.query.execute import Distance, select_instances
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.state.prepared_query_tables import QUERIES_KEY
from proconsul.state.store import StateStore
from proconsul.structs.catalog import CheckServiceNode
from proconsul.structs.commands import PreparedQueryRequest
from proconsul.structs.prepared_query import (
    REDACTED_TOKEN,
    ExecuteResponse,
    ExplainResponse,
    PreparedQuery,
)
from proconsul.structs.requests import ReadRequest

GET_METHOD = "PreparedQuery.Get"
LIST_METHOD = "PreparedQuery.List"
EXPLAIN_METHOD = "PreparedQuery.Explain"
EXECUTE_METHOD = "PreparedQuery.Execute"
NEAR_AGENT = "_agent"  # ?near= / Service.Near: the agent that asked

Read = Callable[[ReadRequest], tuple[Sequence[str], Callable[[], Any]]]
# Filters health rows for a token: (rows, resolved) -> (kept, dropped any).
RowFilter = Callable[[list[CheckServiceNode], ResolvedToken], tuple[list[CheckServiceNode], bool]]


class Executed(msgspec.Struct):
    """An execution before its ACL filter: the answer and the query's own token."""

    response: ExecuteResponse
    query_token: str


def check_query_request(request: PreparedQueryRequest) -> None:
    """Consul's checks of a definition, before the log; BAD_QUERY with its text."""
    if request.op == "delete":
        return
    try:
        check_query(request.query)
    except QueryError as exc:
        raise RPCError(str(exc), ErrorCode.BAD_QUERY) from None


def _is_management(authz: Authorizer) -> bool:
    return authz.acl_write()


def vet_query_write(
    store: StateStore, resolved: ResolvedToken, request: PreparedQueryRequest
) -> None:
    authz = resolved.authorizer
    query = request.query
    if request.op != "delete" and query.name and not authz.query_write(query.name):
        raise resolved.deny("query", "write", query.name)
    if request.op == "create":
        return
    existing = store.queries.queries.get(query.id)
    if existing is None:
        return  # the state store refuses it: "Cannot modify non-existent ..."
    if existing.name:
        if not authz.query_write(existing.name):
            raise resolved.deny("query", "write", existing.name)
        return
    owner = store.queries.owners.get(query.id, "")
    if not _is_management(resolved.authorizer) and (not owner or owner != resolved.accessor_id):
        raise resolved.deny("query", "write", existing.id)


def _redact(query: PreparedQuery) -> PreparedQuery:
    if not query.token:
        return query
    return msgspec.structs.replace(query, token=REDACTED_TOKEN)


def precheck_read(method: str, resolved: ResolvedToken, value: Any) -> Any:
    """A Get or Explain the token may not read is a 403; tokens are redacted."""
    if method not in (GET_METHOD, EXPLAIN_METHOD) or _is_management(resolved.authorizer):
        return value
    query: PreparedQuery | None
    if method == GET_METHOD:
        query = value[0] if value else None
    else:
        query = None if value is None else value.query
    if query is None:
        return value
    if query.name and not resolved.authorizer.query_read(query.name):
        raise resolved.deny("query", "read", query.name)
    if method == GET_METHOD:
        return [_redact(query)]
    return ExplainResponse(_redact(query))


def filter_queries(authz: Authorizer, queries: list[PreparedQuery]) -> tuple[Any, bool]:
    if _is_management(authz):
        return queries, False
    kept = [_redact(query) for query in queries if query.name and authz.query_read(query.name)]
    return kept, len(kept) != len(queries)


def finish_execute(
    value: Executed | None,
    caller: ResolvedToken | None,
    resolve: Callable[[str], ResolvedToken | None],
    filter_rows: RowFilter,
) -> tuple[ExecuteResponse | None, bool]:
    """The answer, its rows filtered with the query's token, else the caller's."""
    if value is None:
        return None, False
    response = value.response
    resolved = resolve(value.query_token) if value.query_token else caller
    if resolved is None:
        return response, False
    nodes, dropped = filter_rows(response.nodes, resolved)
    return msgspec.structs.replace(response, nodes=nodes), dropped


def query_reads(
    store: StateStore,
    datacenter: str,
    rng: random.Random,
    distance: Callable[[str], Distance] | None = None,
) -> dict[str, Read]:
    """The prepared query reads, by method name. `distance(near)` gives the
    distance function from a node (network coordinates); None: unknown."""

    def get(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[PreparedQuery]]:
            query = store.queries.queries.get(req.name)
            return store.index(QUERIES_KEY), [] if query is None else [query]

        return (QUERIES_KEY,), run

    def list_all(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return (QUERIES_KEY,), lambda: (store.index(QUERIES_KEY), store.queries.all())

    def explain(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, ExplainResponse | None]:
            query = resolve_query(store.queries.queries.values(), req.name)
            return store.index(QUERIES_KEY), None if query is None else ExplainResponse(query)

        return (QUERIES_KEY,), run

    def execute(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, Executed | None]:
            query = resolve_query(store.queries.queries.values(), req.name)
            if query is None:
                return store.index(QUERIES_KEY), None
            service = query.service
            index, rows = store.health_service(service.service)
            near = req.near or service.near
            if near == NEAR_AGENT:
                near = req.source_node
            nodes = select_instances(
                rows,
                service,
                rng,
                near=near,
                distance=None if distance is None or not near else distance(near),
                limit=req.limit,
            )
            response = ExecuteResponse(
                service=service.service, nodes=nodes, dns=query.dns, datacenter=datacenter
            )
            return max(index, store.index(QUERIES_KEY)), Executed(response, query.token)

        return (QUERIES_KEY, "services", "checks", "nodes"), run

    return {
        GET_METHOD: get,
        LIST_METHOD: list_all,
        EXPLAIN_METHOD: explain,
        EXECUTE_METHOD: execute,
    }
