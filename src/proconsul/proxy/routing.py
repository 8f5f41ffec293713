"""HTTP routes from an Envoy RouteConfiguration, compiled once per version.

Job: `compile_routes` turns a RouteConfiguration into a `RouteTable`;
`RouteTable.select(request)` gives the first matching `Route`, and
`Route.pick(draw)` the cluster (and its header changes) a request goes to.

Rules (Envoy's):
- Virtual hosts by domain: exact, then `*.suffix`/`prefix.*`, then `*`.
- Routes in order; the first whose path (prefix, exact `path`, or
  `safe_regex` on the path), headers and query parameters all match wins.
  `case_sensitive: false` folds the path comparison.
- A route goes to one cluster or to `weighted_clusters`: `pick(draw)` with
  `draw` uniform in [0, 1) chooses a leg in proportion to its weight.
- Timeout: the route's `timeout`, 15 s when unset (Envoy's default), 0 is
  none. Retries: `retry_on` of `5xx`, `gateway-error`, `connect-failure`,
  `retriable-status-codes` (with its codes); `num_retries` defaults to 1.
- Header changes: `*_headers_to_add` (append or overwrite) and
  `*_headers_to_remove`, route level then weighted-cluster level.
- Pure. What else a route may ask (redirects, direct responses, ...) is
  `Unsupported`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proconsul.proxy.matchers import (
    RequestView,
    StrMatch,
    Unsupported,
    compile_regex,
    header_matcher,
    string_matcher,
)

DEFAULT_TIMEOUT_S = 15.0
# HeaderValueOption.HeaderAppendAction
APPEND_IF_EXISTS_OR_ADD, ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD = 0, 1, 2
KNOWN_RETRY_ON = frozenset({"5xx", "gateway-error", "connect-failure", "retriable-status-codes"})


@dataclass(frozen=True)
class HeaderChanges:
    """(name, value, overwrite) to add, names to remove; names lower case."""

    add: tuple[tuple[str, str, bool], ...] = ()
    remove: tuple[str, ...] = ()
    # Precomputed for the HTTP proxy: header lines to add, names it drops.
    lines: bytes = field(init=False, default=b"", compare=False)
    dropped: frozenset[bytes] = field(init=False, default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        lines = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v, _ in self.add)
        dropped = {n.encode("latin-1") for n in self.remove}
        dropped |= {k.encode("latin-1") for k, _, over in self.add if over}
        object.__setattr__(self, "lines", lines)
        object.__setattr__(self, "dropped", frozenset(dropped))

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)

    def then(self, other: HeaderChanges) -> HeaderChanges:
        return HeaderChanges(self.add + other.add, self.remove + other.remove)


NO_CHANGES = HeaderChanges()


@dataclass(frozen=True)
class RetryPolicy:
    num_retries: int = 0
    on_5xx: bool = False
    on_gateway_error: bool = False
    on_connect_failure: bool = False
    statuses: frozenset[int] = frozenset()

    def retries_status(self, status: int) -> bool:
        if self.on_5xx and status >= 500:
            return True
        if self.on_gateway_error and status in (502, 503, 504):
            return True
        return status in self.statuses


NO_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Leg:
    """Where a request goes: a cluster and the changes made on its way."""

    cluster: str
    request_headers: HeaderChanges
    response_headers: HeaderChanges


@dataclass(frozen=True)
class Route:
    matches: Callable[[RequestView], bool]
    legs: tuple[Leg, ...]
    cumulative: tuple[int, ...]  # running weight totals, for `pick`
    timeout_s: float  # 0: none
    retry: RetryPolicy
    prefix_rewrite: str
    match_prefix: str  # what prefix_rewrite replaces

    def pick(self, draw: float) -> Leg:
        if len(self.legs) == 1:
            return self.legs[0]
        point = draw * self.cumulative[-1]
        return self.legs[bisect.bisect_right(self.cumulative, point)]


@dataclass(frozen=True)
class VirtualHost:
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class RouteTable:
    name: str
    hosts: tuple[VirtualHost, ...]

    def select(self, request: RequestView) -> Route | None:
        host = self._host(request.headers.get("host", ""))
        if host is None:
            return None
        for route in host.routes:
            if route.matches(request):
                return route
        return None

    def _host(self, authority: str) -> VirtualHost | None:
        if len(self.hosts) == 1 and self.hosts[0].domains == ("*",):
            return self.hosts[0]
        name = authority.lower()
        fallback = None
        for host in self.hosts:
            for domain in host.domains:
                if domain == name:
                    return host
                if domain == "*":
                    fallback = fallback or host
                elif (domain.startswith("*") and name.endswith(domain[1:])) or (
                    domain.endswith("*") and name.startswith(domain[:-1])
                ):
                    fallback = host if fallback is None else fallback
        return fallback


def header_changes(to_add: Any, to_remove: Any) -> HeaderChanges:
    add = []
    for option in to_add:
        action = option.append_action
        if action == ADD_IF_ABSENT:
            raise Unsupported("header append_action ADD_IF_ABSENT is not supported")
        overwrite = action == OVERWRITE_IF_EXISTS_OR_ADD
        if option.HasField("append") and not option.append.value:
            overwrite = True  # the deprecated spelling of OVERWRITE
        add.append((option.header.key.lower(), option.header.value, overwrite))
    return HeaderChanges(tuple(add), tuple(name.lower() for name in to_remove))


def _path_match(match: Any) -> tuple[Callable[[str], bool], str]:
    fold = match.HasField("case_sensitive") and not match.case_sensitive.value
    kind = match.WhichOneof("path_specifier")
    if kind == "prefix":
        prefix = match.prefix.lower() if fold else match.prefix
        if fold:
            return (lambda p: p.lower().startswith(prefix)), match.prefix
        return (lambda p: p.startswith(prefix)), match.prefix
    if kind == "path":
        exact = match.path.lower() if fold else match.path
        return ((lambda p: p.lower() == exact) if fold else (lambda p: p == exact)), ""
    if kind == "safe_regex":
        compiled = compile_regex(match.safe_regex.regex)
        return (lambda p: compiled.fullmatch(p) is not None), ""
    raise Unsupported(f"route path match {kind or 'empty'!r} is not supported")


def _query_match(param: Any) -> Callable[[dict[str, str]], bool]:
    name = param.name
    kind = param.WhichOneof("query_parameter_match_specifier")
    if kind == "present_match":
        present = bool(param.present_match)
        return lambda q: (name in q) == present
    if kind == "string_match":
        match: StrMatch = string_matcher(param.string_match)
        return lambda q: name in q and match(q[name])
    raise Unsupported(f"query parameter match {kind or 'empty'!r} is not supported")


def parse_query(query: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            out.setdefault(key, value)
    return out


def compile_match(match: Any) -> tuple[Callable[[RequestView], bool], str]:
    path, prefix = _path_match(match)
    headers = tuple(header_matcher(h) for h in match.headers)
    queries = tuple(_query_match(q) for q in match.query_parameters)
    if not headers and not queries:
        return (lambda req: path(req.path)), prefix

    def matches(req: RequestView) -> bool:
        if not path(req.path) or not all(h(req) for h in headers):
            return False
        if queries:
            params = parse_query(req.query)
            return all(q(params) for q in queries)
        return True

    return matches, prefix


def _retry(action: Any) -> RetryPolicy:
    if not action.HasField("retry_policy"):
        return NO_RETRY
    policy = action.retry_policy
    kinds = {k.strip() for k in policy.retry_on.split(",") if k.strip()}
    unknown = kinds - KNOWN_RETRY_ON
    if unknown:
        raise Unsupported(f"retry_on {','.join(sorted(unknown))!r} is not supported")
    count = policy.num_retries.value if policy.HasField("num_retries") else 1
    statuses = (
        frozenset(policy.retriable_status_codes)
        if "retriable-status-codes" in kinds
        else frozenset()
    )
    return RetryPolicy(
        num_retries=count,
        on_5xx="5xx" in kinds,
        on_gateway_error="gateway-error" in kinds,
        on_connect_failure="connect-failure" in kinds,
        statuses=statuses,
    )


def compile_route(route: Any) -> Route:
    if route.WhichOneof("action") != "route":
        raise Unsupported(f"route action {route.WhichOneof('action')!r} is not supported")
    action = route.route
    matches, prefix = compile_match(route.match)
    own_request = header_changes(route.request_headers_to_add, route.request_headers_to_remove)
    own_response = header_changes(route.response_headers_to_add, route.response_headers_to_remove)
    kind = action.WhichOneof("cluster_specifier")
    legs: list[Leg] = []
    weights: list[int] = []
    if kind == "cluster":
        legs.append(Leg(action.cluster, own_request, own_response))
        weights.append(1)
    elif kind == "weighted_clusters":
        for leg in action.weighted_clusters.clusters:
            weight = leg.weight.value
            if weight <= 0:
                continue
            request = header_changes(leg.request_headers_to_add, leg.request_headers_to_remove)
            response = header_changes(leg.response_headers_to_add, leg.response_headers_to_remove)
            legs.append(Leg(leg.name, own_request.then(request), own_response.then(response)))
            weights.append(weight)
        if not legs:
            raise Unsupported("weighted_clusters without a positive weight")
    else:
        raise Unsupported(f"route cluster specifier {kind or 'empty'!r} is not supported")
    cumulative, total = [], 0
    for weight in weights:
        total += weight
        cumulative.append(total)
    timeout = (
        action.timeout.ToNanoseconds() / 1e9 if action.HasField("timeout") else DEFAULT_TIMEOUT_S
    )
    return Route(
        matches=matches,
        legs=tuple(legs),
        cumulative=tuple(cumulative),
        timeout_s=timeout,
        retry=_retry(action),
        prefix_rewrite=action.prefix_rewrite,
        match_prefix=prefix,
    )


def compile_routes(config: Any) -> RouteTable:
    hosts = tuple(
        VirtualHost(
            domains=tuple(d.lower() for d in host.domains),
            routes=tuple(compile_route(r) for r in host.routes),
        )
        for host in config.virtual_hosts
    )
    return RouteTable(config.name, hosts)


def rewrite_path(route: Route, path: str) -> str:
    """The path after `prefix_rewrite` (the matched prefix replaced)."""
    if not route.prefix_rewrite or not route.match_prefix:
        return path
    return route.prefix_rewrite + path[len(route.match_prefix) :]
