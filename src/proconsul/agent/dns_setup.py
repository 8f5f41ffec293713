"""Start the agent's DNS interface from its config; reload it on SIGHUP.

Job: turn `RuntimeConfig` (`domain`, `alt_domain`, `dns_config`, `recursors`,
`ports.dns`, `addresses.dns`/`client_addr`, `acl.tokens.default`) into
`DnsSettings`, bind the listeners, and give the agent one handle with
`close()`, `reload(config)` and `stats()`.

Rules:
- `ports.dns = -1` (or `-dns-port -1`) means no DNS listener; the handle still
  works, with empty stats.
- Reads go through the agent's read path (`rpc_read`, as HTTP reads do), so a
  client agent will reach the servers over RPC unchanged. The answer cache is
  used only where the state store is local (servers, `-dev`), because only
  there can an index be checked for free.
- Reload changes answers (`dns_config`, domains, recursors) but not sockets,
  as in Consul.
- ACLs: every query reads with the agent's `default` token as it is at that
  moment (it can be replaced at run time), else anonymous; the server filters
  what the token may not see, so such a name is NXDOMAIN, as in Consul.
  Cached answers depend on `ACL_DEP`, whose "index" changes with the token
  and with the ACL tables, so a new token or policy is never answered from
  an old cache entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from proconsul.config.schema import RuntimeConfig
from proconsul.config.validation import parse_recursor
from proconsul.dns.core import DnsSettings
from proconsul.dns.server import ACL_DEP, DnsServer
from proconsul.state.acl_tables import POLICIES_KEY, ROLES_KEY, TOKENS_KEY
from proconsul.state.store import StateStore
from proconsul.structs.catalog import CheckServiceNode, Node
from proconsul.structs.prepared_query import ExecuteResponse
from proconsul.structs.requests import QueryOptions, ReadRequest, ReadResponse

log = logging.getLogger("proconsul.agent")


class ReadingAgent(Protocol):
    """What the catalog reader needs from the agent."""

    @property
    def store(self) -> StateStore | None: ...

    async def rpc_read(self, method: str, request: ReadRequest) -> ReadResponse: ...


class DnsAgent(ReadingAgent, Protocol):
    """What DNS needs from the agent."""

    config: RuntimeConfig

    def effective_token(self, secret: str) -> str: ...


def _fqdn(domain: str) -> str:
    domain = domain.strip().strip(".").lower()
    return domain + "." if domain else ""


def settings_from_config(config: RuntimeConfig) -> DnsSettings:
    dns = config.dns_config
    soa = dns.soa
    # Consul's key is `min_ttl`; accept whichever spelling the schema carries.
    soa_min: Any = getattr(soa, "min_ttl", None) or getattr(soa, "min", 0)
    return DnsSettings(
        domain=_fqdn(config.domain) or "consul.",
        alt_domain=_fqdn(config.alt_domain),
        datacenter=config.datacenter.lower(),
        node_ttl=int(dns.node_ttl),
        service_ttl={name: int(ttl) for name, ttl in dns.service_ttl.items()},
        only_passing=dns.only_passing,
        enable_truncate=dns.enable_truncate,
        udp_answer_limit=dns.udp_answer_limit,
        a_record_limit=dns.a_record_limit,
        node_meta_txt=dns.enable_additional_node_meta_txt,
        allow_stale=dns.allow_stale,
        soa_refresh=soa.refresh,
        soa_retry=soa.retry,
        soa_expire=soa.expire,
        soa_min_ttl=int(soa_min),
        recursors=tuple(dict.fromkeys(parse_recursor(r) for r in config.recursors)),
        recursor_timeout_s=float(dns.recursor_timeout) or 2.0,
        token=config.acl.tokens.default,
    )


class AgentCatalog:
    """`CatalogReader` over the agent's read path. Names match case-insensitively.

    `token` gives the secret to read with, per query; without it the settings'
    token (the config's `acl.tokens.default`) is used.
    """

    def __init__(
        self, agent: ReadingAgent, token: Callable[[], str] | None = None, node_name: str = ""
    ) -> None:
        self.agent = agent
        self._token = token
        self.node_name = node_name  # this agent: a prepared query's `Near: "_agent"`

    def index(self, key: str) -> int | None:
        store = self.agent.store
        if store is None:
            return None
        indexes = store.indexes
        if key == ACL_DEP:
            if self._token is None:
                return 0
            tables = (indexes.get(TOKENS_KEY, 0), indexes.get(POLICIES_KEY, 0))
            return hash((*tables, indexes.get(ROLES_KEY, 0), self._token()))
        return indexes.get(key, 0)

    def _request(
        self, settings: DnsSettings, name: str = "", tags: list[str] | None = None
    ) -> ReadRequest:
        token = settings.token if self._token is None else self._token()
        options = QueryOptions(token=token, allow_stale=settings.allow_stale)
        return ReadRequest(name=name, tags=tags or [], options=options)

    async def service_nodes(
        self, service: str, tag: str, settings: DnsSettings, connect: bool = False
    ) -> tuple[str, list[CheckServiceNode]]:
        tags = [tag] if tag else []
        read = self.agent.rpc_read
        method = "Health.ConnectServiceNodes" if connect else "Health.ServiceNodes"
        rows: list[CheckServiceNode] = (
            await read(method, self._request(settings, service, tags))
        ).value
        if rows:
            return service, rows
        names: dict[str, list[str]] = (
            await read("Catalog.ListServices", self._request(settings))
        ).value
        for name in names:
            if name != service and name.lower() == service:
                request = self._request(settings, name, tags)
                return name, (await read(method, request)).value
        return service, rows

    async def node(self, name: str, settings: DnsSettings) -> tuple[str, Node | None]:
        read = self.agent.rpc_read
        node, _ = (await read("Catalog.NodeServices", self._request(settings, name))).value
        if node is not None:
            return name, node
        for candidate in await self.nodes(settings):
            if candidate.node.lower() == name:
                return candidate.node, candidate
        return name, None

    async def nodes(self, settings: DnsSettings) -> list[Node]:
        response = await self.agent.rpc_read("Catalog.ListNodes", self._request(settings))
        nodes: list[Node] = response.value
        return nodes

    async def prepared_query(
        self, query: str, settings: DnsSettings
    ) -> tuple[str, str, list[CheckServiceNode]] | None:
        request = self._request(settings, query)
        request.source_node = self.node_name
        response = await self.agent.rpc_read("PreparedQuery.Execute", request)
        executed: ExecuteResponse | None = response.value
        if executed is None:
            return None
        return executed.service, executed.dns.ttl, executed.nodes


class DnsHandle:
    """The agent's grip on its DNS server (or on nothing, when DNS is off)."""

    def __init__(self, server: DnsServer | None) -> None:
        self.server = server

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return list(self.server.addresses) if self.server else []

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def reload(self, config: RuntimeConfig) -> None:
        if self.server is None:
            return
        try:
            self.server.reload(settings_from_config(config))
        except ValueError as exc:
            log.error("agent: DNS config not reloaded: %s", exc)

    def stats(self) -> dict[str, float]:
        if self.server is None:
            return {}
        return {f"consul.dns.{k}": float(v) for k, v in self.server.stats().items()}


async def start_dns(agent: DnsAgent) -> DnsHandle:
    """Bind DNS on every `addresses.dns` (or `client_addr`) host at `ports.dns`."""
    config = agent.config
    port = config.ports.dns
    if port is None or port < 0:
        return DnsHandle(None)
    catalog = AgentCatalog(agent, lambda: agent.effective_token(""), config.node_name)
    server = DnsServer(settings_from_config(config), catalog)
    try:
        for host in config.listen_addresses("dns"):
            if host.startswith("unix://"):
                log.warning("agent: DNS cannot listen on a unix socket; skipped %s", host)
                continue
            bound_host, bound_port = await server.listen(host, port)
            for network in ("udp", "tcp"):
                log.info(
                    "agent: Started DNS server: address=%s:%d network=%s",
                    bound_host,
                    bound_port,
                    network,
                )
    except BaseException:
        await server.close()
        raise
    return DnsHandle(server)
