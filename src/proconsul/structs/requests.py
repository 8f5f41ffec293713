"""Requests and responses of the server endpoints (Consul's RPC layer).

The HTTP API turns each read into a `ReadRequest` for a named endpoint; on a dev
agent or a server the endpoint runs in-process, on a client agent it will be
forwarded to a server over RPC, so these are plain msgspec structs.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proconsul.structs.intentions import IntentionQuery
from proconsul.structs.txn import TxnOp

# Consul's blocking query wait (`?wait`): 5 minutes unless asked, at most 10.
# Servers add up to 1/16 of jitter; callers size their timeouts to outlast it.
DEFAULT_WAIT_S = 300.0
MAX_WAIT_S = 600.0


class QueryOptions(msgspec.Struct):
    datacenter: str = ""
    token: str = ""
    min_index: int = 0  # ?index: block until the result's index passes it
    max_query_time_s: float = 0.0  # ?wait; 0 means the default
    allow_stale: bool = False
    require_consistent: bool = False
    filter: str = ""  # ?filter: Consul's filter expression (structs/filter.py)


class ReadRequest(msgspec.Struct):
    """One read. Which fields matter depends on the endpoint (see ServerEndpoints)."""

    name: str = ""  # service, node or KV key/prefix
    tags: list[str] = []
    passing_only: bool = False
    node_meta: dict[str, str] = {}
    state: str = ""  # health state filter
    separator: str = ""  # KV ?keys
    kind: str = ""  # config entry kind (ConfigEntry.Get, ConfigEntry.List)
    # ConfigEntry.ResolveServiceConfig: the proxy's upstreams (destination
    # names) and its registration's mesh gateway mode.
    upstreams: list[str] = []
    mesh_gateway_mode: str = ""
    intention: IntentionQuery = msgspec.field(default_factory=IntentionQuery)  # "Intention.*"
    # "PreparedQuery.Execute": ?near= (a node, or "_agent": `source_node`, the
    # agent that asked) and ?limit= (0: all).
    near: str = ""
    limit: int = 0
    source_node: str = ""
    txn_ops: list[TxnOp] = []  # "Txn.Read": a read-only transaction's operations
    options: QueryOptions = msgspec.field(default_factory=QueryOptions)


class QueryMeta(msgspec.Struct):
    index: int
    known_leader: bool = True
    last_contact_ms: int = 0
    # Rows were left out because the token may not read them (the
    # X-Consul-Results-Filtered-By-ACLs header).
    results_filtered_by_acls: bool = False


class ReadResponse(msgspec.Struct):
    meta: QueryMeta
    value: Any
