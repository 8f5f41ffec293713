"""Intentions on the servers: the "Intention.*" reads and their ACL rules.

Job: serve the legacy intentions API's reads from the stored
service-intentions config entries (connect/intentions.py turns each source
into an `Intention` row):
- "Intention.List": every intention, in evaluation order;
- "Intention.Match": for each of `names`, the intentions matching it as
  source or destination (`match_by`), as a map name -> rows;
- "Intention.Get": one intention, by legacy ID or by exact source and
  destination (None when there is none: the HTTP layer's 404);
- "Intention.Check": `{"Allowed": bool}` for a source and destination, L4
  semantics (an L7 intention counts as deny), the default from the ACL
  default policy (allow with ACLs off).

Rules:
- The rows are computed once per change of the service-intentions entries
  (`IntentionView`), not per request: blocking matches from every proxy ask
  again after each change.
- ACLs, as Consul 1.16 applies them: a row may be read with `intentions =
  "read"` on its source or on its destination; a list drops the others (and
  says it filtered), a Get of one is a 403 (a missing one is a 404 for
  anyone). A match needs intentions read on every name asked; a check
  needs service:read on the destination (it tells nothing about the
  intentions themselves). Writes go through the config
  entry path and need `intentions = "write"` on the destination
  (server/config_endpoints.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from proconsul.acl.authorizer import Authorizer
from proconsul.acl.resolved import ResolvedToken
from proconsul.connect.intentions import check, intentions_of, match_by
from proconsul.state.config_entry_tables import kind_key
from proconsul.state.store import StateStore
from proconsul.structs.config_entries import (
    SERVICE_INTENTIONS,
    ConfigEntry,
    Intention,
    ServiceIntentions,
)
from proconsul.structs.intentions import IntentionCheckResponse
from proconsul.structs.requests import ReadRequest

LIST_METHOD = "Intention.List"
MATCH_METHOD = "Intention.Match"
GET_METHOD = "Intention.Get"
CHECK_METHOD = "Intention.Check"
INTENTION_READS = frozenset({LIST_METHOD, MATCH_METHOD, GET_METHOD, CHECK_METHOD})

ReadFn = Callable[[ReadRequest], tuple[Sequence[str], Callable[[], Any]]]


class IntentionView:
    """The intention rows of the stored entries, rebuilt only when they change."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._key = kind_key(SERVICE_INTENTIONS)
        self._seen: tuple[int, dict[tuple[str, str], ConfigEntry]] | None = None
        self.index = 0
        self.rows: list[Intention] = []
        self.by_id: dict[str, Intention] = {}
        self.by_pair: dict[tuple[str, str], Intention] = {}

    def current(self) -> IntentionView:
        index = self.store.index(self._key)
        # The tables' dict is replaced on a snapshot restore: compare it too.
        entries = self.store.config.entries
        seen = self._seen
        if seen is None or seen[0] != index or seen[1] is not entries:
            stored = self.store.config.of_kind(SERVICE_INTENTIONS)
            self.rows = intentions_of(e for e in stored if isinstance(e, ServiceIntentions))
            self.by_id = {row.id: row for row in self.rows if row.id}
            self.by_pair = {
                (row.source_name, row.destination_name): row
                for row in self.rows
                if not row.source_peer
            }
            self.index = index
            self._seen = (index, entries)
        return self


def intention_reads(store: StateStore, default_allow: Callable[[], bool]) -> dict[str, ReadFn]:
    """The intention reads by their Consul names, for `ServerEndpoints.reads`.
    `default_allow` answers what happens with no matching intention."""
    view = IntentionView(store)
    keys = (kind_key(SERVICE_INTENTIONS),)

    def list_all(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[Intention]]:
            now = view.current()
            return now.index, now.rows

        return keys, run

    def match(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        query = req.intention

        def run() -> tuple[int, dict[str, list[Intention]]]:
            now = view.current()
            return now.index, {
                name: match_by(now.rows, query.match_by, name) for name in query.names
            }

        return keys, run

    def get(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        query = req.intention

        def run() -> tuple[int, Intention | None]:
            now = view.current()
            if query.id:
                return now.index, now.by_id.get(query.id)
            return now.index, now.by_pair.get((query.source, query.destination))

        return keys, run

    def check_pair(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        query = req.intention

        def run() -> tuple[int, IntentionCheckResponse]:
            now = view.current()
            allowed = check(
                now.rows, query.source, query.destination, default_allow=default_allow()
            )
            return now.index, IntentionCheckResponse(allowed=allowed)

        return keys, run

    return {LIST_METHOD: list_all, MATCH_METHOD: match, GET_METHOD: get, CHECK_METHOD: check_pair}


_FIELDS = msgspec.structs.fields(Intention)


def filter_view(ixn: Intention) -> dict[str, Any]:
    """An intention as `?filter` sees it: every field, the empty ones the JSON
    leaves out included (`Description == ""` holds for one without)."""
    return {f.encode_name: msgspec.to_builtins(getattr(ixn, f.name)) for f in _FIELDS}


# ----- ACLs ---------------------------------------------------------------------


def can_read(authz: Authorizer, ixn: Intention) -> bool:
    """Consul's Intention.CanRead: intentions read on either end."""
    return authz.intention_read(ixn.source_name) or authz.intention_read(ixn.destination_name)


def precheck_read(method: str, request: ReadRequest, resolved: ResolvedToken) -> None:
    """The refusals Consul makes before reading (403)."""
    authz = resolved.authorizer
    query = request.intention
    if method == MATCH_METHOD:
        for name in query.names:
            if name and not authz.intention_read(name):
                raise resolved.deny("intention", "read", name)
    elif method == CHECK_METHOD and not authz.service_read(query.destination):
        raise resolved.deny("service", "read", query.destination)


def postcheck_read(method: str, resolved: ResolvedToken, value: Any) -> None:
    """A Get of an intention the token may not read is a 403, decided once it
    is found (one that is not there is a 404 for anyone, as in Consul)."""
    if method != GET_METHOD or not isinstance(value, Intention):
        return
    if not can_read(resolved.authorizer, value):
        raise resolved.deny("intention", "read", value.destination_name)


def filter_intentions(authz: Authorizer, rows: list[Intention]) -> tuple[list[Intention], bool]:
    """The rows of a list the token may read, and whether any was dropped."""
    kept = [row for row in rows if can_read(authz, row)]
    if len(kept) == len(rows):
        return rows, False
    return kept, True
