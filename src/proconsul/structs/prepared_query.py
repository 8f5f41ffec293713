"""Prepared queries: the stored definition, and what executing one answers.

Shapes and JSON names are Consul 1.16's (`/v1/query`): a `PreparedQuery`
names a service with filters (tags with `!` negation, `OnlyPassing`, node and
service meta, `Near`), a failover policy and a DNS TTL; a query with a
`Template` of type `name_prefix_match` answers every name its `Name` prefixes,
rendered per lookup (query/template.py). Rows stored in the state store carry
their raft indexes; `Token` is the token the query executes with, shown only to
management tokens (`<hidden>` to others, DESIGN.md, "Prepared queries").
"""

from __future__ import annotations

import msgspec

from proconsul.structs.catalog import CheckServiceNode
from proconsul.structs.naming import pascal

REDACTED_TOKEN = "<hidden>"  # Consul's stand-in for a query token a reader may not see
TEMPLATE_NAME_PREFIX_MATCH = "name_prefix_match"


class QueryFailover(msgspec.Struct, rename=pascal):
    nearest_n: int = 0
    datacenters: list[str] = []


class QueryConnect(msgspec.Struct, rename=pascal):
    enabled: bool = False


class ServiceQuery(msgspec.Struct, rename=pascal):
    service: str = ""
    failover: QueryFailover = msgspec.field(default_factory=QueryFailover)
    ignore_check_ids: list[str] = msgspec.field(default_factory=list, name="IgnoreCheckIDs")
    only_passing: bool = False
    near: str = ""
    tags: list[str] = []
    node_meta: dict[str, str] = {}
    service_meta: dict[str, str] = {}
    connect: QueryConnect = msgspec.field(default_factory=QueryConnect)


class QueryTemplate(msgspec.Struct, rename=pascal):
    type: str = ""
    regexp: str = ""
    remove_empty_tags: bool = False


class QueryDNS(msgspec.Struct, rename=pascal):
    ttl: str = ""


class PreparedQuery(msgspec.Struct, rename=pascal):
    id: str = ""
    name: str = ""
    session: str = ""
    token: str = ""
    template: QueryTemplate = msgspec.field(default_factory=QueryTemplate)
    service: ServiceQuery = msgspec.field(default_factory=ServiceQuery)
    dns: QueryDNS = msgspec.field(default_factory=QueryDNS)
    create_index: int = 0
    modify_index: int = 0

    def __repr__(self) -> str:  # the execution token is a secret
        return f"PreparedQuery(id={self.id!r}, name={self.name!r}, service={self.service!r})"


class ExecuteResponse(msgspec.Struct, rename=pascal):
    """`/v1/query/:id/execute`: the instances, in the order a client should use them."""

    service: str
    nodes: list[CheckServiceNode]
    dns: QueryDNS
    datacenter: str
    failovers: int = 0


class ExplainResponse(msgspec.Struct, rename=pascal):
    """`/v1/query/:id/explain`: the query as it would run (a template rendered)."""

    query: PreparedQuery
