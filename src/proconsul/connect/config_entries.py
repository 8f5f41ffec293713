"""The rules of the six config entry kinds: normalize, then validate.

Job: `parse_config_entry` turns a user's dict into a normalized, valid entry
(decode with structs/config_entries.py, then `normalize`, then `validate`);
`service_protocol` answers which protocol a service speaks from its
`service-defaults` and the global `proxy-defaults`.

Rules (Consul 1.16, open-source edition):
- service-intentions' own rules live with the intentions (intentions.py).
- Errors are `ConfigEntryError` with Consul's text where Consul has one
  (`the sum of all split weights must be 100, not 90.000000`,
  `invalid name ("web"), only "global" is supported`,
  `Sources[0].Action must be omitted if Permissions are specified`), and
  `field` naming the offending field. The first error found is raised.
- Normalizing is what Consul does on write: proxy-defaults is always named
  `global`; protocols are lowercased; HTTP methods uppercased; split weights
  rounded to 0.01; intention sources get `Type = "consul"`, their precedence,
  and are ordered by it, highest first.
- Stricter than Consul on one point, on purpose: a protocol must be one of
  tcp, http, http2, grpc (Consul stores any string and later treats an
  unknown one as opaque TCP).
- Checks that need other entries (a router on a TCP service, a split to a
  missing subset) belong to the discovery chain compiler, not here.
- Subset filters are carried as text; `check_filter`, when given, says
  whether one parses. `check_subset_filter` is the check servers and the
  config loader pass: the filter must compile against the rows a subset
  selects (structs/filter.py, against Consul's ServiceEntry shape).
- Namespaces and partitions are Enterprise features: only `default` (or
  nothing) is accepted.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import NoReturn

from proconsul.connect.intentions import (
    WILDCARD,
    check_headers,
    check_intentions,
    check_methods,
    check_paths,
    normalize_intentions,
)
from proconsul.structs.catalog import CheckServiceNode
from proconsul.structs.config_entries import (
    ConfigEntry,
    ConfigEntryError,
    ProxyDefaults,
    ServiceDefaults,
    ServiceIntentions,
    ServiceResolver,
    ServiceRouter,
    ServiceSplitter,
    decode_config_entry,
)
from proconsul.structs.duration import format_duration
from proconsul.structs.filter import cached_filter

__all__ = [
    "HTTP_PROTOCOLS",
    "PROTOCOLS",
    "ConfigEntryError",
    "check_subset_filter",
    "normalize",
    "parse_config_entry",
    "service_protocol",
    "validate",
]

PROTOCOLS = ("tcp", "http", "http2", "grpc")
HTTP_PROTOCOLS = frozenset({"http", "http2", "grpc"})  # those that allow L7 routing
DEFAULT_PROTOCOL = "tcp"
RETRY_CONDITIONS = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
LB_POLICIES = frozenset({"", "random", "round_robin", "least_request", "ring_hash", "maglev"})
HASH_FIELDS = frozenset({"header", "cookie", "query_parameter"})
PROXY_MODES = frozenset({"", "direct", "transparent"})
MESH_GATEWAY_MODES = frozenset({"", "none", "local", "remote"})
MUTUAL_TLS_MODES = frozenset({"", "strict", "permissive"})
# Consul's limits on Meta and on an intention's description.
META_MAX_PAIRS = 64
META_KEY_MAX = 128
META_VALUE_MAX = 512
# A subset name is an SNI label: lowercase DNS label characters.
_SUBSET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

FilterCheck = Callable[[str], None]  # raises ValueError when a filter does not parse


def parse_config_entry(raw: object, *, check_filter: FilterCheck | None = None) -> ConfigEntry:
    """A user's dict as a normalized, valid entry, or ConfigEntryError."""
    return validate(normalize(decode_config_entry(raw)), check_filter=check_filter)


def check_subset_filter(text: str) -> None:
    """Raise FilterError (a ValueError) unless a resolver subset's filter compiles
    against the rows it selects: health rows (`Service.Meta.version == v1`)."""
    cached_filter(text, CheckServiceNode)


def service_protocol(
    service_defaults: ServiceDefaults | None, proxy_defaults: ProxyDefaults | None
) -> str:
    """The protocol a service speaks: its service-defaults, else proxy-defaults'
    `Config.protocol`, else tcp."""
    if service_defaults is not None and service_defaults.protocol:
        return service_defaults.protocol.lower()
    if proxy_defaults is not None:
        protocol = proxy_defaults.config.get("protocol")
        if isinstance(protocol, str) and protocol:
            return protocol.lower()
    return DEFAULT_PROTOCOL


# ------------------------------------------------------------------ normalize


def normalize(entry: ConfigEntry) -> ConfigEntry:
    """A copy of `entry` as Consul stores it (see the module's rules)."""
    entry = copy.deepcopy(entry)
    if isinstance(entry, ProxyDefaults):
        if entry.name not in ("", "global"):
            _fail(f'invalid name ("{entry.name}"), only "global" is supported', "Name")
        entry.name = "global"
    elif isinstance(entry, ServiceDefaults):
        entry.protocol = entry.protocol.lower()
    elif isinstance(entry, ServiceRouter):
        for route in entry.routes:
            if route.match is not None and route.match.http is not None:
                route.match.http.methods = [m.upper() for m in route.match.http.methods]
    elif isinstance(entry, ServiceSplitter):
        for split in entry.splits:
            split.weight = _scaled(split.weight) / 100
    elif isinstance(entry, ServiceIntentions):
        normalize_intentions(entry)
    return entry


# ------------------------------------------------------------------- validate


def validate(
    entry: ConfigEntry,
    *,
    check_filter: FilterCheck | None = None,
    intentions_api: bool = False,
) -> ConfigEntry:
    """`entry` itself when it is valid; else ConfigEntryError. Expects `normalize`
    first. `intentions_api`: a write of the intentions API, whose sources may
    carry the Legacy* fields."""
    _check_enterprise_meta(entry.namespace, entry.partition, "")
    if isinstance(entry, ProxyDefaults):
        _check_proxy_defaults(entry)
    elif not entry.name:
        _fail("Name is required", "Name")
    _check_meta(entry.meta)
    if isinstance(entry, ServiceDefaults):
        _check_service_defaults(entry)
    elif isinstance(entry, ServiceIntentions):
        check_intentions(entry, legacy_fields_allowed=intentions_api)
    elif isinstance(entry, ServiceRouter):
        _check_router(entry)
    elif isinstance(entry, ServiceSplitter):
        _check_splitter(entry)
    elif isinstance(entry, ServiceResolver):
        _check_resolver(entry, check_filter)
    return entry


def _fail(message: str, field: str = "") -> NoReturn:
    raise ConfigEntryError(message, field)


def _check_enterprise_meta(namespace: str, partition: str, where: str) -> None:
    for key, value in (("Namespace", namespace), ("Partition", partition)):
        if value not in ("", "default"):
            _fail(
                f'{where}{key}: "{value}" needs Consul Enterprise; only "default" exists',
                f"{where}{key}",
            )


def _check_meta(meta: dict[str, str]) -> None:
    if len(meta) > META_MAX_PAIRS:
        _fail(f"Meta exceeds maximum element count {META_MAX_PAIRS}", "Meta")
    for key, value in meta.items():
        if len(key) > META_KEY_MAX:
            _fail(f'Meta key "{key}" exceeds maximum length {META_KEY_MAX}', "Meta")
        if len(value) > META_VALUE_MAX:
            _fail(f'Meta value for key "{key}" exceeds maximum length {META_VALUE_MAX}', "Meta")


def _check_protocol(protocol: str, field: str) -> None:
    if protocol and protocol.lower() not in PROTOCOLS:
        _fail(f'{field}: unknown protocol "{protocol}"; use one of {", ".join(PROTOCOLS)}', field)


def _check_modes(entry: ProxyDefaults | ServiceDefaults) -> None:
    if entry.mode not in PROXY_MODES:
        _fail(f'invalid proxy mode: "{entry.mode}"', "Mode")
    if entry.mesh_gateway.mode not in MESH_GATEWAY_MODES:
        _fail(f'invalid mesh gateway mode: "{entry.mesh_gateway.mode}"', "MeshGateway.Mode")
    if entry.mutual_tls_mode not in MUTUAL_TLS_MODES:
        _fail(f'invalid mutual_tls_mode: "{entry.mutual_tls_mode}"', "MutualTLSMode")


def _check_proxy_defaults(entry: ProxyDefaults) -> None:
    if entry.name != "global":
        _fail(f'invalid name ("{entry.name}"), only "global" is supported', "Name")
    protocol = entry.config.get("protocol", "")
    if not isinstance(protocol, str):
        _fail("Config.protocol: must be a string", "Config.protocol")
    _check_protocol(str(protocol), "Config.protocol")
    _check_modes(entry)


def _check_service_defaults(entry: ServiceDefaults) -> None:
    if entry.name == WILDCARD:
        _fail("service-defaults name must be the name of a service, and not a wildcard", "Name")
    _check_protocol(entry.protocol, "Protocol")
    _check_modes(entry)
    if entry.balance_inbound_connections not in ("", "exact_balance"):
        _fail(
            "invalid value for balance_inbound_connections: " + entry.balance_inbound_connections,
            "BalanceInboundConnections",
        )
    upstreams = entry.upstream_config
    if upstreams is not None and entry.destination is not None:
        _fail(
            "UpstreamConfig and Destination are mutually exclusive for service defaults",
            "Destination",
        )
    if upstreams is not None:
        for index, override in enumerate(upstreams.overrides):
            if not override.name:
                _fail(
                    f"UpstreamConfig.Overrides[{index}]: Name is required",
                    f"UpstreamConfig.Overrides[{index}].Name",
                )
            _check_protocol(override.protocol, f"UpstreamConfig.Overrides[{index}].Protocol")
        if upstreams.defaults is not None:
            if upstreams.defaults.name:
                _fail(
                    "error in upstream defaults: Name must be empty",
                    "UpstreamConfig.Defaults.Name",
                )
            _check_protocol(upstreams.defaults.protocol, "UpstreamConfig.Defaults.Protocol")
    if entry.destination is not None:
        if not entry.destination.addresses:
            _fail("Destination must contain at least one valid address", "Destination.Addresses")
        if not 1 <= entry.destination.port <= 65535:
            _fail(f"Invalid Port number {entry.destination.port}", "Destination.Port")


# ------------------------------------------------- router, splitter, resolver


def _check_router(entry: ServiceRouter) -> None:
    for i, route in enumerate(entry.routes):
        at = f"Route[{i}]"  # Consul's router texts say Route[i], the field is Routes[i]
        field = f"Routes[{i}].Match.HTTP."
        rewritable = False
        http = route.match.http if route.match is not None else None
        if http is not None:
            paths = check_paths(http.path_exact, http.path_prefix, http.path_regex, f"{at} ", field)
            rewritable = bool(http.path_exact or http.path_prefix)
            if paths > 1:
                _fail(
                    f"{at} should only contain at most one of PathExact, PathPrefix, or PathRegex",
                    field.rstrip("."),
                )
            check_headers(http.header, f"{at} Header", f"{field}Header")
            for j, param in enumerate(http.query_param):
                where = f"{field}QueryParam[{j}]"
                if not param.name:
                    _fail(f"{at} QueryParam[{j}] missing required Name field", f"{where}.Name")
                if sum(1 for c in (param.present, param.exact, param.regex) if c) != 1:
                    _fail(
                        f"{at} QueryParam[{j}] should only contain one of Present, Exact, or Regex",
                        where,
                    )
            check_methods(http.methods, f"{at} Methods", f"{field}Methods")
        destination = route.destination
        if destination is None:
            continue
        where = f"Routes[{i}].Destination."
        _check_enterprise_meta(destination.namespace, destination.partition, where)
        if destination.prefix_rewrite and not rewritable:
            _fail(
                f"{at} cannot make use of PrefixRewrite without configuring either "
                "PathExact or PathPrefix",
                f"{where}PrefixRewrite",
            )
        for condition in destination.retry_on:
            if condition not in RETRY_CONDITIONS:
                _fail(f'{at} contains an invalid retry condition: "{condition}"', f"{where}RetryOn")


def _scaled(weight: float) -> int:
    """A weight in 0.01% units, as Consul counts it (rounded, half away from zero)."""
    scaled = abs(weight) * 100
    whole = int(scaled + 0.5)
    return whole if weight >= 0 else -whole


def _check_splitter(entry: ServiceSplitter) -> None:
    if not entry.splits:
        _fail("no splits configured", "Splits")
    seen: set[tuple[str, str, str, str]] = set()
    for i, split in enumerate(entry.splits):
        _check_enterprise_meta(split.namespace, split.partition, f"Splits[{i}].")
        if not 0 <= split.weight <= 100:
            _fail(f"Splits[{i}].Weight must be between 0 and 100", f"Splits[{i}].Weight")
        key = (split.service or entry.name, split.service_subset, split.namespace, split.partition)
        if key in seen:
            _fail(
                'split destination occurs more than once: service="{}", subset="{}", '
                'namespace="{}", partition="{}"'.format(*key),
                f"Splits[{i}]",
            )
        seen.add(key)
    total = sum(_scaled(split.weight) for split in entry.splits)
    if total != 100 * 100:
        _fail(f"the sum of all split weights must be 100, not {total / 100:f}", "Splits")


def _check_resolver(entry: ServiceResolver, check_filter: FilterCheck | None) -> None:
    for name, subset in entry.subsets.items():
        if not name:
            _fail("Subset defined with empty name", "Subsets")
        if not _SUBSET_NAME.match(name):
            _fail(
                f'Subset "{name}" is invalid: must be a valid DNS label '
                "(lowercase letters, digits and '-')",
                f"Subsets[{name}]",
            )
        if subset.filter and check_filter is not None:
            try:
                check_filter(subset.filter)
            except ValueError as err:
                _fail(
                    f'Filter for subset "{name}" is not a valid expression: {err}',
                    f"Subsets[{name}].Filter",
                )
    if entry.default_subset and entry.default_subset not in entry.subsets:
        _fail(f'DefaultSubset "{entry.default_subset}" is not a valid subset', "DefaultSubset")
    if entry.redirect is not None:
        _check_redirect(entry)
    for key, failover in entry.failover.items():
        at = f'Bad Failover["{key}"]'
        field = f"Failover[{key}]"
        if key != WILDCARD and key not in entry.subsets:
            _fail(f"{at}: not a valid subset", field)
        if not (
            failover.service
            or failover.service_subset
            or failover.namespace
            or failover.datacenters
            or failover.targets
        ):
            _fail(
                f"{at}: one of Service, ServiceSubset, Namespace, Targets, "
                "or Datacenters is required",
                field,
            )
        same_service = failover.service in ("", entry.name)
        if (
            failover.service_subset
            and same_service
            and failover.service_subset not in entry.subsets
        ):
            _fail(
                f'{at}: ServiceSubset "{failover.service_subset}" is not a valid subset '
                f'of "{failover.service}"',
                field,
            )
        for other, name in (
            (failover.datacenters, "Datacenters"),
            (failover.service_subset, "ServiceSubset"),
            (failover.service, "Service"),
        ):
            if other and failover.targets:
                _fail(f"{at}: Targets cannot be set with {name}", field)
        for i, target in enumerate(failover.targets):
            if target.peer and (target.service_subset or target.datacenter):
                other_name = "ServiceSubset" if target.service_subset else "Datacenter"
                _fail(f"{at}.Targets[{i}]: Peer cannot be set with {other_name}", field)
            same = target.service in ("", entry.name)
            if target.service_subset and same and target.service_subset not in entry.subsets:
                _fail(
                    f'{at}.Targets[{i}]: ServiceSubset "{target.service_subset}" '
                    f'is not a valid subset of "{entry.name}"',
                    field,
                )
        if any(not dc for dc in failover.datacenters):
            _fail(f"{at}.Datacenters: found empty datacenter", field)
    for name, timeout in (
        ("ConnectTimeout", entry.connect_timeout),
        ("RequestTimeout", entry.request_timeout),
    ):
        if timeout is not None and timeout < 0:
            _fail(f"Bad {name} '{format_duration(timeout)}', must be >= 0", name)
    if entry.load_balancer is not None:
        _check_load_balancer(entry)


def _check_redirect(entry: ServiceResolver) -> None:
    redirect = entry.redirect
    assert redirect is not None
    if entry.failover:
        _fail("Redirect and Failover cannot both be set", "Redirect")
    fields = (
        redirect.service,
        redirect.service_subset,
        redirect.namespace,
        redirect.partition,
        redirect.datacenter,
        redirect.peer,
    )
    if not any(fields):
        _fail("Redirect is empty", "Redirect")
    if redirect.peer and redirect.service_subset:
        _fail("Redirect.Peer cannot be set with Redirect.ServiceSubset", "Redirect.Peer")
    if redirect.peer and redirect.datacenter:
        _fail("Redirect.Peer cannot be set with Redirect.Datacenter", "Redirect.Peer")
    if not redirect.service:
        for name, value in (
            ("ServiceSubset", redirect.service_subset),
            ("Namespace", redirect.namespace),
            ("Partition", redirect.partition),
            ("Peer", redirect.peer),
        ):
            if value:
                _fail(f"Redirect.{name} defined without Redirect.Service", f"Redirect.{name}")
    if (
        redirect.service_subset
        and redirect.service == entry.name
        and redirect.service_subset not in entry.subsets
    ):
        _fail(
            f'Redirect.ServiceSubset "{redirect.service_subset}" is not a valid subset '
            f'of "{entry.name}"',
            "Redirect.ServiceSubset",
        )


def _check_load_balancer(entry: ServiceResolver) -> None:
    lb = entry.load_balancer
    assert lb is not None
    if lb.policy not in LB_POLICIES:
        _fail(f'Bad LoadBalancer policy: "{lb.policy}" is not supported', "LoadBalancer.Policy")
    if lb.policy != "ring_hash" and lb.ring_hash_config is not None:
        _fail(
            "Bad LoadBalancer configuration. RingHashConfig specified for incompatible "
            f'load balancing policy "{lb.policy}"',
            "LoadBalancer.RingHashConfig",
        )
    if lb.policy != "least_request" and lb.least_request_config is not None:
        _fail(
            "Bad LoadBalancer configuration. LeastRequestConfig specified for incompatible "
            f'load balancing policy "{lb.policy}"',
            "LoadBalancer.LeastRequestConfig",
        )
    if lb.policy not in ("ring_hash", "maglev") and lb.hash_policies:
        _fail(
            "Bad LoadBalancer configuration: HashPolicies specified for non-hash-based "
            f'Policy: "{lb.policy}"',
            "LoadBalancer.HashPolicies",
        )
    for i, hp in enumerate(lb.hash_policies):
        at = f"Bad LoadBalancer HashPolicy[{i}]"
        field = f"LoadBalancer.HashPolicies[{i}]"
        if hp.field and hp.field not in HASH_FIELDS:
            _fail(f'{at}: "{hp.field}" is not a supported field', field)
        if hp.source_ip and hp.field:
            _fail(
                f'{at}: A single hash policy cannot hash both a source address and a "{hp.field}"',
                field,
            )
        if hp.source_ip and hp.field_value:
            _fail(f"{at}: A FieldValue cannot be specified when hashing SourceIP", field)
        if hp.field and not hp.field_value:
            _fail(f'{at}: Field "{hp.field}" was specified without a FieldValue', field)
        if hp.field_value and not hp.field:
            _fail(f"{at}: FieldValue requires a Field to apply to", field)
        if hp.cookie_config is not None:
            if hp.field != "cookie":
                _fail(f'{at}: cookie_config provided for "{hp.field}"', field)
            if hp.cookie_config.session and hp.cookie_config.ttl:
                _fail(f"{at}: a session cookie cannot have an associated TTL", field)
