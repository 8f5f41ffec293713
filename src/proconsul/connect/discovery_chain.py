"""The discovery chain compiler: router -> splitter -> resolver, for one service.

Job: `compile_chain` turns the config entries that shape traffic to a service
(its `service-router`, the `service-splitter`s and `service-resolver`s it
reaches, and the protocol from `service-defaults`/`proxy-defaults`) into a
`CompiledDiscoveryChain`, the value `/v1/discovery-chain/:service` shows and
proxies are configured from. `ChainEntries` is the set of entries it reads;
`instances_for` picks a target's instances with a filter evaluator passed in,
and `select_health_rows` is the one to pass for health rows: Consul's filter
language (structs/filter.py) over `CheckServiceNode`.

Rules (Consul 1.16, open-source: namespace and partition are `default`):
- The chain starts at the service's router if it has one, else at its
  splitter, else at its resolver. A router always ends with a catch-all route
  (`PathPrefix = "/"`) to the service itself.
- A route or split naming a subset goes straight to that subset's resolver;
  one naming only a service goes to that service's splitter, if it has one,
  else to its resolver. A split to another service that has its own splitter
  is flattened into this one: weights multiply, header changes merge (the
  outer split's request headers first, its response headers last).
- A resolver follows its redirect unless that changes nothing (a redirect to
  dc2 of a service already in dc2); a loop is an error. Then it follows its
  `DefaultSubset` when no subset was asked for; a subset it does not define
  is an error. `ConnectTimeout` defaults to 5s. Failover lists targets in
  order, never the primary one twice.
- Routers and splitters need an HTTP-based protocol (http, http2, grpc);
  every service the chain reaches must speak the chain's protocol. Errors
  are `ChainError` with Consul's texts.
- Target ids are `[<subset>.]<svc>.<ns>.<ap>.<dc>`; SNI is
  `[<subset>.]<svc>.<ns>.<dc>.internal.<trust domain>`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from proconsul.connect.config_entries import HTTP_PROTOCOLS, service_protocol
from proconsul.structs.catalog import CheckServiceNode
from proconsul.structs.config_entries import (
    ConfigEntry,
    HTTPHeaderModifiers,
    MeshGatewayConfig,
    ProxyDefaults,
    ServiceDefaults,
    ServiceResolver,
    ServiceResolverFailover,
    ServiceResolverSubset,
    ServiceRoute,
    ServiceRouteDestination,
    ServiceRouteHTTPMatch,
    ServiceRouteMatch,
    ServiceRouter,
    ServiceSplit,
    ServiceSplitter,
)
from proconsul.structs.discovery_chain import (
    NODE_RESOLVER,
    NODE_ROUTER,
    NODE_SPLITTER,
    CompiledDiscoveryChain,
    DiscoveryFailover,
    DiscoveryGraphNode,
    DiscoveryResolver,
    DiscoveryRoute,
    DiscoverySplit,
    DiscoveryTarget,
)
from proconsul.structs.duration import Duration, enc_hook
from proconsul.structs.filter import cached_filter

DEFAULT = "default"  # the only namespace and partition without Enterprise
DEFAULT_CONNECT_TIMEOUT = Duration(5.0)

T = TypeVar("T")


class ChainError(ValueError):
    """The entries do not make a valid chain (Consul's ConfigEntryGraphError)."""


@dataclass
class ChainEntries:
    """The config entries a compilation may read, by service name."""

    routers: dict[str, ServiceRouter] = field(default_factory=dict)
    splitters: dict[str, ServiceSplitter] = field(default_factory=dict)
    resolvers: dict[str, ServiceResolver] = field(default_factory=dict)
    service_defaults: dict[str, ServiceDefaults] = field(default_factory=dict)
    proxy_defaults: ProxyDefaults | None = None

    @classmethod
    def of(cls, entries: Iterable[ConfigEntry]) -> ChainEntries:
        """Sort entries by kind; intentions and unknown kinds are not the chain's."""
        out = cls()
        for entry in entries:
            if isinstance(entry, ServiceRouter):
                out.routers[entry.name] = entry
            elif isinstance(entry, ServiceSplitter):
                out.splitters[entry.name] = entry
            elif isinstance(entry, ServiceResolver):
                out.resolvers[entry.name] = entry
            elif isinstance(entry, ServiceDefaults):
                out.service_defaults[entry.name] = entry
            elif isinstance(entry, ProxyDefaults):
                out.proxy_defaults = entry
        return out

    def protocol(self, service: str) -> str:
        return service_protocol(self.service_defaults.get(service), self.proxy_defaults)

    def mesh_gateway_mode(self, service: str) -> str:
        defaults = self.service_defaults.get(service)
        if defaults is not None and defaults.mesh_gateway.mode:
            return defaults.mesh_gateway.mode
        return self.proxy_defaults.mesh_gateway.mode if self.proxy_defaults else ""


def target_id(service: str, subset: str, datacenter: str) -> str:
    prefix = f"{subset}." if subset else ""
    return f"{prefix}{service}.{DEFAULT}.{DEFAULT}.{datacenter}"


def target_sni(service: str, subset: str, datacenter: str, trust_domain: str) -> str:
    prefix = f"{subset}." if subset else ""
    return f"{prefix}{service}.{DEFAULT}.{datacenter}.internal.{trust_domain}"


def compile_chain(
    service: str, entries: ChainEntries, *, datacenter: str, trust_domain: str
) -> CompiledDiscoveryChain:
    """The compiled chain for `service` as seen from `datacenter`, or ChainError."""
    return _Compiler(service, entries, datacenter, trust_domain).compile()


def instances_for(
    target: DiscoveryTarget,
    instances: Sequence[T],
    select: Callable[[str, Sequence[T]], Sequence[T]],
) -> list[T]:
    """The instances of `target.service` that belong to the target: all of them
    without a subset filter, else those `select(filter_text, instances)` keeps.
    Health (passing only, or warning too: `target.subset.only_passing`) is the
    caller's, as it is for any other health read."""
    if not target.subset.filter:
        return list(instances)
    return list(select(target.subset.filter, instances))


def select_health_rows(
    filter_text: str, rows: Sequence[CheckServiceNode]
) -> list[CheckServiceNode]:
    """The health rows a subset's filter keeps (`Service.Meta.version == v1`),
    evaluated as `?filter=` is on /v1/health/service. The filter was checked
    when the resolver was written (`check_subset_filter`)."""
    return cached_filter(filter_text, CheckServiceNode).select(
        rows, msgspec.to_builtins(rows, enc_hook=enc_hook)
    )


@dataclass(frozen=True)
class _Want:
    """A service (and subset) in a datacenter, before its resolver is applied."""

    service: str
    subset: str
    datacenter: str


class _Compiler:
    def __init__(
        self, service: str, entries: ChainEntries, datacenter: str, trust_domain: str
    ) -> None:
        self.service = service
        self.entries = entries
        self.datacenter = datacenter
        self.trust_domain = trust_domain
        self.protocol = entries.protocol(service)
        self.nodes: dict[str, DiscoveryGraphNode] = {}
        self.targets: dict[str, DiscoveryTarget] = {}
        self.uses_l7 = False  # a router or splitter shaped the chain

    def compile(self) -> CompiledDiscoveryChain:
        if self.service in self.entries.routers:
            start = self._router(self.entries.routers[self.service])
        else:
            start = self._splitter_or_resolver(_Want(self.service, "", self.datacenter))
        if self.uses_l7 and self.protocol not in HTTP_PROTOCOLS:
            raise ChainError(
                f'discovery chain "{self.service}" uses a protocol "{self.protocol}" '
                "that does not permit advanced routing or splitting behavior"
            )
        for target in self.targets.values():
            other = self.entries.protocol(target.service)
            if other != self.protocol:
                raise ChainError(
                    f'discovery chain "{self.service}" uses inconsistent protocols; service '
                    f'"{target.service}" has "{other}" which is not "{self.protocol}"'
                )
        start_node = self.nodes[start]
        return CompiledDiscoveryChain(
            service_name=self.service,
            namespace=DEFAULT,
            partition=DEFAULT,
            datacenter=self.datacenter,
            default=start_node.resolver is not None and start_node.resolver.default,
            protocol=self.protocol,
            start_node=start,
            nodes=dict(sorted(self.nodes.items())),
            targets=dict(sorted(self.targets.items())),
        )

    # -------------------------------------------------------------- router

    def _router(self, router: ServiceRouter) -> str:
        self.uses_l7 = True
        catch_all = ServiceRoute(
            match=ServiceRouteMatch(http=ServiceRouteHTTPMatch(path_prefix="/")),
            destination=ServiceRouteDestination(
                service=router.name, namespace=DEFAULT, partition=DEFAULT
            ),
        )
        routes = []
        for route in [*router.routes, catch_all]:
            destination = route.destination or ServiceRouteDestination()
            want = _Want(
                destination.service or router.name, destination.service_subset, self.datacenter
            )
            # A route naming a subset is not split any further.
            next_node = self._resolver(want) if want.subset else self._splitter_or_resolver(want)
            routes.append(DiscoveryRoute(definition=route, next_node=next_node))
        name = f"{router.name}.{DEFAULT}.{DEFAULT}"
        key = f"{NODE_ROUTER}:{name}"
        self.nodes[key] = DiscoveryGraphNode(type=NODE_ROUTER, name=name, routes=routes)
        return key

    # ------------------------------------------------------------ splitter

    def _splitter_or_resolver(self, want: _Want) -> str:
        splitter = self.entries.splitters.get(want.service)
        if want.subset or splitter is None:
            return self._resolver(want)
        self.uses_l7 = True
        name = f"{splitter.name}.{DEFAULT}.{DEFAULT}"
        key = f"{NODE_SPLITTER}:{name}"
        if key not in self.nodes:
            splits = self._flatten(splitter, None, 100.0, (splitter.name,))
            self.nodes[key] = DiscoveryGraphNode(type=NODE_SPLITTER, name=name, splits=splits)
        return key

    def _flatten(
        self,
        splitter: ServiceSplitter,
        parent: ServiceSplit | None,
        share: float,
        path: tuple[str, ...],
    ) -> list[DiscoverySplit]:
        out: list[DiscoverySplit] = []
        for split in splitter.splits:
            definition = _merge_split(split, parent)
            weight = round(split.weight * share / 100, 2)
            service = split.service or splitter.name
            nested = self.entries.splitters.get(service)
            if not split.service_subset and service != splitter.name and nested is not None:
                if service in path:
                    raise ChainError(
                        "detected circular service-splitter references: "
                        + " -> ".join([*path, service])
                    )
                out += self._flatten(nested, definition, weight, (*path, service))
                continue
            next_node = self._resolver(_Want(service, split.service_subset, self.datacenter))
            out.append(DiscoverySplit(definition=definition, weight=weight, next_node=next_node))
        return out

    # ------------------------------------------------------------ resolver

    def _resolve(self, want: _Want) -> tuple[_Want, ServiceResolver | None]:
        """Follow redirects, then the default subset; check the subset exists."""
        seen = [want]
        while True:
            resolver = self.entries.resolvers.get(want.service)
            redirect = resolver.redirect if resolver is not None else None
            if redirect is None:
                break
            service = redirect.service or want.service
            subset = redirect.service_subset or (want.subset if service == want.service else "")
            redirected = _Want(service, subset, redirect.datacenter or want.datacenter)
            if redirected == want:
                break  # a redirect already applied: `web` sent to dc2 is web in dc2
            want = redirected
            seen.append(want)
            if want in seen[:-1]:
                loop = " -> ".join(target_id(w.service, w.subset, w.datacenter) for w in seen)
                raise ChainError(f"detected circular resolver redirect: {loop}")
        if not want.subset and resolver is not None and resolver.default_subset:
            want = _Want(want.service, resolver.default_subset, want.datacenter)
        if want.subset and (resolver is None or want.subset not in resolver.subsets):
            raise ChainError(
                f'service "{want.service}" does not have a subset named "{want.subset}"'
            )
        return want, resolver

    def _resolver(self, want: _Want) -> str:
        want, resolver = self._resolve(want)
        target = self._target(want, resolver)
        key = f"{NODE_RESOLVER}:{target.id}"
        if key in self.nodes:
            return key
        failover = None
        if resolver is not None:
            rule = resolver.failover.get(want.subset) or resolver.failover.get("*")
            if rule is not None:
                failover = self._failover(want, rule)
        self.nodes[key] = DiscoveryGraphNode(
            type=NODE_RESOLVER,
            name=target.id,
            resolver=DiscoveryResolver(
                default=resolver is None,
                connect_timeout=target.connect_timeout,
                request_timeout=resolver.request_timeout if resolver is not None else None,
                target=target.id,
                failover=failover,
                load_balancer=resolver.load_balancer if resolver is not None else None,
            ),
        )
        return key

    def _failover(self, primary: _Want, rule: ServiceResolverFailover) -> DiscoveryFailover | None:
        if rule.targets:
            wants = [
                _Want(
                    t.service or primary.service,
                    t.service_subset,
                    t.datacenter or primary.datacenter,
                )
                for t in rule.targets
            ]
        else:
            service = rule.service or primary.service
            subset = rule.service_subset or (primary.subset if service == primary.service else "")
            datacenters = rule.datacenters or [primary.datacenter]
            wants = [_Want(service, subset, dc) for dc in datacenters]
        ids: list[str] = []
        primary_id = target_id(primary.service, primary.subset, primary.datacenter)
        for want in wants:
            resolved, resolver = self._resolve(want)
            target = self._target(resolved, resolver)
            if target.id != primary_id and target.id not in ids:
                ids.append(target.id)
        return DiscoveryFailover(targets=ids) if ids else None

    def _target(self, want: _Want, resolver: ServiceResolver | None) -> DiscoveryTarget:
        tid = target_id(want.service, want.subset, want.datacenter)
        if tid in self.targets:
            return self.targets[tid]
        timeout = DEFAULT_CONNECT_TIMEOUT
        if resolver is not None and resolver.connect_timeout:
            timeout = resolver.connect_timeout
        subset = resolver.subsets[want.subset] if resolver is not None and want.subset else None
        # Mesh gateways only carry traffic to other datacenters.
        remote = want.datacenter != self.datacenter
        sni = target_sni(want.service, want.subset, want.datacenter, self.trust_domain)
        target = DiscoveryTarget(
            id=tid,
            service=want.service,
            service_subset=want.subset,
            namespace=DEFAULT,
            partition=DEFAULT,
            datacenter=want.datacenter,
            mesh_gateway=MeshGatewayConfig(
                mode=self.entries.mesh_gateway_mode(want.service) if remote else ""
            ),
            subset=copy.copy(subset) if subset is not None else ServiceResolverSubset(),
            connect_timeout=timeout,
            sni=sni,
            name=sni,
        )
        self.targets[tid] = target
        return target


def _merge_headers(
    first: HTTPHeaderModifiers | None, then: HTTPHeaderModifiers | None
) -> HTTPHeaderModifiers | None:
    """Header changes of `first` followed by `then`: later sets and adds win."""
    if first is None or then is None:
        return copy.deepcopy(then if first is None else first)
    return HTTPHeaderModifiers(
        add={**first.add, **then.add},
        set={**first.set, **then.set},
        remove=[*first.remove, *(name for name in then.remove if name not in first.remove)],
    )


def _merge_split(split: ServiceSplit, parent: ServiceSplit | None) -> ServiceSplit:
    """`split` as it acts when reached through `parent`: a request passes the
    parent first, a response passes it last."""
    merged = copy.deepcopy(split)
    if parent is not None:
        merged.request_headers = _merge_headers(parent.request_headers, split.request_headers)
        merged.response_headers = _merge_headers(split.response_headers, parent.response_headers)
    return merged
