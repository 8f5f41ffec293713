"""Prepared query table of the state store: every query by ID, and who owns it.

Job: hold the replicated prepared queries (structs/prepared_query.py) and
apply `PreparedQueryRequest` to them, stamping raft indexes and bumping the
index key "prepared-queries".

Rules (Consul's state store):
- Only `fsm.apply` calls `apply`; it is deterministic. Queries arrive
  validated (query/definition.py ran on the server that took the write).
- A create needs an ID not in use; an update or delete one that is
  (`Cannot modify non-existent prepared query: '<id>'`).
- A name may not equal another query's name or any query's ID
  (`name "<n>" aliases an existing query name` / `... query ID`), and at most
  one template may have the empty name.
- `owner` (the creator's AccessorID) is kept beside the row, never in it, so
  no read shows it; an update keeps the first owner.
- A query's `Session` must name a live session (`invalid session "<id>"`);
  destroying the session deletes its queries (`drop_session`, called by
  state/session_ops.py), as in Consul.
- An update keeps `CreateIndex`; rows are copies, the command in the log never
  sees the stamped indexes.
"""

from __future__ import annotations

from collections.abc import Callable, Container

import msgspec

from proconsul.structs.commands import PreparedQueryRequest
from proconsul.structs.prepared_query import PreparedQuery

QUERIES_KEY = "prepared-queries"


class PreparedQueryStateError(Exception):
    """A refused prepared query write; the FSM turns it into an ApplyError."""


class PreparedQuerySnapshot(msgspec.Struct, array_like=True):
    """Every query in the order it was first written, with owners. APPEND-ONLY fields."""

    queries: list[PreparedQuery]
    owners: dict[str, str]


class PreparedQueryTables:
    def __init__(self, bump: Callable[[int, str], None]) -> None:
        self._bump = bump
        self.queries: dict[str, PreparedQuery] = {}
        self.owners: dict[str, str] = {}  # query ID -> creator's AccessorID

    def __repr__(self) -> str:
        return f"PreparedQueryTables(queries={len(self.queries)})"

    def snapshot(self) -> PreparedQuerySnapshot:
        return PreparedQuerySnapshot(queries=list(self.queries.values()), owners=dict(self.owners))

    def restore(self, snap: PreparedQuerySnapshot | None) -> None:
        """`None`: a snapshot from before prepared queries existed, which restores empty."""
        self.queries = {} if snap is None else {query.id: query for query in snap.queries}
        self.owners = {} if snap is None else dict(snap.owners)

    def all(self) -> list[PreparedQuery]:
        """Every query, by ID (Consul's list order)."""
        return [self.queries[key] for key in sorted(self.queries)]

    def _check_name(self, query: PreparedQuery) -> None:
        for other in self.queries.values():
            if other.id == query.id:
                continue
            if query.name and other.name == query.name:
                raise PreparedQueryStateError(f'name "{query.name}" aliases an existing query name')
            if query.name and other.id == query.name:
                raise PreparedQueryStateError(f'name "{query.name}" aliases an existing query ID')
            if not query.name and query.template.type and not other.name and other.template.type:
                raise PreparedQueryStateError("a query template with an empty name already exists")

    def drop_session(self, index: int, session_id: str) -> None:
        """Delete the queries bound to a session that ended."""
        bound = [qid for qid, query in self.queries.items() if query.session == session_id]
        for qid in bound:
            del self.queries[qid]
            self.owners.pop(qid, None)
        if bound:
            self._bump(index, QUERIES_KEY)

    def apply(
        self, index: int, request: PreparedQueryRequest, sessions: Container[str] = ()
    ) -> None:
        query = request.query
        if not query.id:
            raise PreparedQueryStateError("Missing query ID")
        existing = self.queries.get(query.id)
        if request.op == "create":
            if existing is not None:
                raise PreparedQueryStateError(f"Query ID '{query.id}' is already in use")
        elif existing is None:
            raise PreparedQueryStateError(
                f"Cannot modify non-existent prepared query: '{query.id}'"
            )
        if request.op == "delete":
            del self.queries[query.id]
            self.owners.pop(query.id, None)
            self._bump(index, QUERIES_KEY)
            return
        self._check_name(query)
        if query.session and query.session not in sessions:
            raise PreparedQueryStateError(f'invalid session "{query.session}"')
        self.queries[query.id] = msgspec.structs.replace(
            query,
            create_index=index if existing is None else existing.create_index,
            modify_index=index,
        )
        if existing is None:
            self.owners[query.id] = request.owner
        self._bump(index, QUERIES_KEY)
