"""Config entries: the six kinds the service mesh control plane reads.

Job: the plain data of `proxy-defaults`, `service-defaults`,
`service-intentions`, `service-router`, `service-splitter` and
`service-resolver`, with Consul's JSON field names, and `decode_config_entry`,
which turns a user's dict (a `PUT /v1/config` body, a `consul config write`
file, an entry of `config_entries.bootstrap`) into one of them. Also the
legacy `Intention` row the `/v1/connect/intentions` API shows.

Rules:
- The union is tagged on `Kind`; fields are snake_case here and PascalCase on
  the wire (`rename=pascal`, with `name=` where Consul spells an acronym the
  table in naming.py does not know: `ExternalSNI`, `JSONFormat`, `SourceNS`).
- Keys may come in either spelling, field by field: `ServiceSubset`,
  `service_subset` and `serviceSubset` all name one field. Renaming follows
  the struct's own shape, so user data is never renamed: subset names,
  header names under `Set`, `Meta` keys and the opaque `Config` keep theirs.
- A key that names no field is refused with Consul's text
  (`invalid config key "Routes[0].Foo"`); so is a bad kind or a missing one.
- Like Consul's decoder, input is read weakly where HCL1 needs it: a list of
  one object where an object is expected is that object, an object where a
  list is expected is a list of one, numbers and strings convert both ways
  (`Weight = "75"`, `Meta = { build = 42 }`).
- Nested objects Consul always shows (`MeshGateway`, `Expose`,
  `TransparentProxy`) are always encoded, even empty; other empty fields are
  left out.
- This module only shapes data. Normalizing and the rules of each kind live in
  connect/config_entries.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from proconsul.structs.duration import Duration
from proconsul.structs.duration import dec_hook as _duration_hook
from proconsul.structs.duration import enc_hook as _duration_out
from proconsul.structs.naming import pascal, shape_keys

PROXY_DEFAULTS = "proxy-defaults"
SERVICE_DEFAULTS = "service-defaults"
SERVICE_INTENTIONS = "service-intentions"
SERVICE_ROUTER = "service-router"
SERVICE_SPLITTER = "service-splitter"
SERVICE_RESOLVER = "service-resolver"
# How Go encodes a zero time.Time (an intention's CreatedAt when not set).
GO_ZERO_TIME = "0001-01-01T00:00:00Z"


class ConfigEntryError(ValueError):
    """An entry that cannot be decoded or is not valid. The message is Consul's
    text where Consul has one; `field` names the offending field
    (`Splits[0].Weight`, `Name`), or is empty for the entry as a whole."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class _Part(msgspec.Struct, rename=pascal, omit_defaults=True, forbid_unknown_fields=True):
    """A nested object of an entry."""


class _Entry(
    msgspec.Struct,
    tag_field="Kind",
    rename=pascal,
    omit_defaults=True,
    forbid_unknown_fields=True,
):
    """Fields every kind has. `Kind` is the union's tag, so it is no field here.
    Each kind ends with `Meta`, `CreateIndex` and `ModifyIndex`, declared in
    the kind itself so that they come last in its JSON, as in
    Consul's."""

    KIND: ClassVar[str] = ""

    name: str = ""
    namespace: str = ""
    partition: str = ""
    if TYPE_CHECKING:  # for the type checker only: every kind declares them, last
        meta: dict[str, str] = {}
        create_index: int = 0
        modify_index: int = 0

    @property
    def kind(self) -> str:
        return self.KIND


# ----------------------------------------------------------- shared parts


class MeshGatewayConfig(_Part):
    mode: str = ""  # "", none, local, remote


class TransparentProxyConfig(_Part):
    outbound_listener_port: int = 0
    dialed_directly: bool = False


class ExposePath(_Part):
    listener_port: int = 0
    path: str = ""
    local_path_port: int = 0
    protocol: str = ""


class ExposeConfig(_Part):
    checks: bool = False
    paths: list[ExposePath] = []


class AccessLogsConfig(_Part):
    enabled: bool = False
    disable_listener_logs: bool = False
    type: str = ""
    path: str = ""
    json_format: str = msgspec.field(default="", name="JSONFormat")
    text_format: str = ""


class EnvoyExtension(_Part):
    name: str = ""
    required: bool = False
    arguments: dict[str, Any] = {}
    consul_version: str = ""
    envoy_version: str = ""


class HTTPHeaderModifiers(_Part):
    """Header changes on a route or split; the maps are keyed by header name."""

    add: dict[str, str] = {}
    set: dict[str, str] = {}
    remove: list[str] = []


class HTTPHeaderMatch(_Part):
    """One header criterion, in router matches and intention permissions alike."""

    name: str = ""
    present: bool = False
    exact: str = ""
    prefix: str = ""
    suffix: str = ""
    regex: str = ""
    invert: bool = False


# ------------------------------------------------ proxy- and service-defaults


class ProxyDefaults(_Entry, tag=PROXY_DEFAULTS):
    KIND: ClassVar[str] = PROXY_DEFAULTS

    config: dict[str, Any] = {}  # opaque proxy config: `protocol`, timeouts, ...
    mode: str = ""  # "", direct, transparent
    transparent_proxy: TransparentProxyConfig = msgspec.field(
        default_factory=TransparentProxyConfig
    )
    mutual_tls_mode: str = ""
    mesh_gateway: MeshGatewayConfig = msgspec.field(default_factory=MeshGatewayConfig)
    expose: ExposeConfig = msgspec.field(default_factory=ExposeConfig)
    access_logs: AccessLogsConfig | None = None
    envoy_extensions: list[EnvoyExtension] = []
    failover_policy: dict[str, Any] | None = None
    meta: dict[str, str] = {}
    create_index: int = 0
    modify_index: int = 0


class UpstreamLimits(_Part):
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_concurrent_requests: int | None = None


class PassiveHealthCheck(_Part):
    interval: Duration | None = None
    max_failures: int = 0
    enforcing_consecutive_5xx: int | None = msgspec.field(
        default=None, name="EnforcingConsecutive5xx"
    )


class UpstreamConfig(_Part):
    name: str = ""
    namespace: str = ""
    partition: str = ""
    peer: str = ""
    envoy_listener_json: str = msgspec.field(default="", name="EnvoyListenerJSON")
    envoy_cluster_json: str = msgspec.field(default="", name="EnvoyClusterJSON")
    protocol: str = ""
    connect_timeout_ms: int = 0
    limits: UpstreamLimits | None = None
    passive_health_check: PassiveHealthCheck | None = None
    mesh_gateway: MeshGatewayConfig | None = None
    balance_outbound_connections: str = ""


class UpstreamConfiguration(_Part):
    overrides: list[UpstreamConfig] = []
    defaults: UpstreamConfig | None = None


class DestinationConfig(_Part):
    addresses: list[str] = []
    port: int = 0


class ServiceDefaults(_Entry, tag=SERVICE_DEFAULTS):
    KIND: ClassVar[str] = SERVICE_DEFAULTS

    protocol: str = ""
    mode: str = ""
    transparent_proxy: TransparentProxyConfig = msgspec.field(
        default_factory=TransparentProxyConfig
    )
    mutual_tls_mode: str = ""
    mesh_gateway: MeshGatewayConfig = msgspec.field(default_factory=MeshGatewayConfig)
    expose: ExposeConfig = msgspec.field(default_factory=ExposeConfig)
    external_sni: str = msgspec.field(default="", name="ExternalSNI")
    upstream_config: UpstreamConfiguration | None = None
    destination: DestinationConfig | None = None
    max_inbound_connections: int = 0
    local_connect_timeout_ms: int = 0
    local_request_timeout_ms: int = 0
    balance_inbound_connections: str = ""
    envoy_extensions: list[EnvoyExtension] = []
    meta: dict[str, str] = {}
    create_index: int = 0
    modify_index: int = 0


# ------------------------------------------------------- service-intentions


class IntentionHTTPPermission(_Part):
    path_exact: str = ""
    path_prefix: str = ""
    path_regex: str = ""
    header: list[HTTPHeaderMatch] = []
    methods: list[str] = []


class IntentionPermission(_Part):
    action: str = ""
    http: IntentionHTTPPermission | None = None


class SourceIntention(_Part):
    name: str = ""
    peer: str = ""
    namespace: str = ""
    partition: str = ""
    sameness_group: str = ""
    action: str = ""  # L4; omitted when Permissions (L7) are given
    permissions: list[IntentionPermission] = []
    precedence: int = 0  # read-only: computed when the entry is normalized
    type: str = ""  # "consul", the only type
    description: str = ""
    legacy_id: str = ""
    legacy_meta: dict[str, str] = {}
    legacy_create_time: str = ""
    legacy_update_time: str = ""


class ServiceIntentions(_Entry, tag=SERVICE_INTENTIONS):
    """Intentions towards one destination (`Name`, or `*` for every service)."""

    KIND: ClassVar[str] = SERVICE_INTENTIONS

    sources: list[SourceIntention] = []
    jwt: dict[str, Any] | None = msgspec.field(default=None, name="JWT")
    meta: dict[str, str] = {}
    create_index: int = 0
    modify_index: int = 0


# --------------------------------------------------------- service-router


class QueryParamMatch(_Part):
    name: str = ""
    present: bool = False
    exact: str = ""
    regex: str = ""


class ServiceRouteHTTPMatch(_Part):
    path_exact: str = ""
    path_prefix: str = ""
    path_regex: str = ""
    case_insensitive: bool = False
    header: list[HTTPHeaderMatch] = []
    query_param: list[QueryParamMatch] = []
    methods: list[str] = []


class ServiceRouteMatch(_Part):
    http: ServiceRouteHTTPMatch | None = None


class ServiceRouteDestination(_Part):
    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    partition: str = ""
    prefix_rewrite: str = ""
    request_timeout: Duration | None = None
    idle_timeout: Duration | None = None
    num_retries: int = 0
    retry_on_connect_failure: bool = False
    retry_on: list[str] = []
    retry_on_status_codes: list[int] = []
    request_headers: HTTPHeaderModifiers | None = None
    response_headers: HTTPHeaderModifiers | None = None


class ServiceRoute(_Part):
    match: ServiceRouteMatch | None = None
    destination: ServiceRouteDestination | None = None


class ServiceRouter(_Entry, tag=SERVICE_ROUTER):
    KIND: ClassVar[str] = SERVICE_ROUTER

    routes: list[ServiceRoute] = []
    meta: dict[str, str] = {}
    create_index: int = 0
    modify_index: int = 0


# ------------------------------------------------------- service-splitter


class ServiceSplit(_Part):
    weight: float = 0.0  # percent, to 0.01
    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    partition: str = ""
    request_headers: HTTPHeaderModifiers | None = None
    response_headers: HTTPHeaderModifiers | None = None


class ServiceSplitter(_Entry, tag=SERVICE_SPLITTER):
    KIND: ClassVar[str] = SERVICE_SPLITTER

    splits: list[ServiceSplit] = []
    meta: dict[str, str] = {}
    create_index: int = 0
    modify_index: int = 0


# ------------------------------------------------------- service-resolver


class ServiceResolverSubset(_Part):
    filter: str = ""  # a filter expression, carried as text
    only_passing: bool = False


class ServiceResolverRedirect(_Part):
    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    partition: str = ""
    datacenter: str = ""
    peer: str = ""


class ServiceResolverFailoverTarget(_Part):
    service: str = ""
    service_subset: str = ""
    partition: str = ""
    namespace: str = ""
    datacenter: str = ""
    peer: str = ""


class ServiceResolverFailover(_Part):
    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    datacenters: list[str] = []
    targets: list[ServiceResolverFailoverTarget] = []


class RingHashConfig(_Part):
    minimum_ring_size: int = 0
    maximum_ring_size: int = 0


class LeastRequestConfig(_Part):
    choice_count: int = 0


class CookieConfig(_Part):
    session: bool = False
    ttl: Duration | None = None
    path: str = ""


class HashPolicy(_Part):
    field: str = ""
    field_value: str = ""
    cookie_config: CookieConfig | None = None
    source_ip: bool = False
    terminal: bool = False


class LoadBalancer(_Part):
    policy: str = ""
    ring_hash_config: RingHashConfig | None = None
    least_request_config: LeastRequestConfig | None = None
    hash_policies: list[HashPolicy] = []


class ServiceResolver(_Entry, tag=SERVICE_RESOLVER):
    KIND: ClassVar[str] = SERVICE_RESOLVER

    default_subset: str = ""
    subsets: dict[str, ServiceResolverSubset] = {}  # keyed by subset name
    redirect: ServiceResolverRedirect | None = None
    failover: dict[str, ServiceResolverFailover] = {}  # keyed by subset name or "*"
    connect_timeout: Duration | None = None
    request_timeout: Duration | None = None
    load_balancer: LoadBalancer | None = None
    meta: dict[str, str] = {}
    create_index: int = 0
    modify_index: int = 0


ConfigEntry = (
    ProxyDefaults
    | ServiceDefaults
    | ServiceIntentions
    | ServiceRouter
    | ServiceSplitter
    | ServiceResolver
)
KINDS: dict[str, type[ConfigEntry]] = {
    cls.KIND: cls
    for cls in (
        ProxyDefaults,
        ServiceDefaults,
        ServiceIntentions,
        ServiceRouter,
        ServiceSplitter,
        ServiceResolver,
    )
}


class Intention(msgspec.Struct, rename=pascal, omit_defaults=True):
    """One source of a `service-intentions` entry seen as a legacy intention row:
    the shape of `/v1/connect/intentions` and the unit intentions match on.

    Empty fields are left out of the JSON, as Consul's are (`ID` of an
    intention not made by the legacy create, `Description`, `Meta`, zero
    times, the open-source edition's partitions); rows made from an entry
    (connect/intentions.py) always carry their names, namespaces and type.
    """

    source_name: str = ""  # a body may leave them to the URL (`PUT .../exact`)
    destination_name: str = ""
    action: str = ""  # allow/deny; empty when permissions decide
    permissions: list[IntentionPermission] = []
    precedence: int = 0
    source_ns: str = msgspec.field(default="", name="SourceNS")
    destination_ns: str = msgspec.field(default="", name="DestinationNS")
    source_partition: str = ""
    destination_partition: str = ""
    source_peer: str = ""
    source_type: str = ""
    description: str = ""
    meta: dict[str, str] = {}
    id: str = ""  # the LegacyID of an intention made by the legacy create
    # Go's zero time unless the legacy API set them.
    created_at: str = GO_ZERO_TIME
    updated_at: str = GO_ZERO_TIME
    create_index: int = 0
    modify_index: int = 0


# ------------------------------------------------------------- decoding


def decode_config_entry(raw: Any) -> ConfigEntry:
    """One entry from a dict in CamelCase or snake_case, or ConfigEntryError.

    The text is Consul's for a missing or bad kind and for unknown keys; a value
    of the wrong type names its field (`Splits[0].Weight`).
    """
    if not isinstance(raw, dict):
        raise ConfigEntryError("config entry must be an object")
    kind = raw["Kind"] if "Kind" in raw else raw.get("kind")
    if kind is None:
        raise ConfigEntryError("Payload does not contain a kind/Kind key at the top level", "Kind")
    if not isinstance(kind, str):
        raise ConfigEntryError("Kind value in payload is not a string", "Kind")
    cls = KINDS.get(kind)
    if cls is None:
        raise ConfigEntryError(f"invalid config entry kind: {kind}", "Kind")
    body = {key: value for key, value in raw.items() if key not in ("Kind", "kind")}
    shaped, unknown = shape_keys(body, cls)
    if unknown:
        text = "; ".join(f'invalid config key "{path}"' for path in unknown)
        raise ConfigEntryError(text, unknown[0])
    shaped["Kind"] = kind
    try:
        entry: ConfigEntry = msgspec.convert(shaped, cls, dec_hook=_duration_hook, strict=False)
    except msgspec.ValidationError as err:
        message, field = _validation_text(str(err))
        raise ConfigEntryError(message, field) from None
    return entry


def encode_config_entry(entry: ConfigEntry) -> dict[str, Any]:
    """An entry as Consul's JSON shows it: `Kind` first, empty fields left out."""
    out: dict[str, Any] = msgspec.to_builtins(entry, enc_hook=_duration_out)
    return {"Kind": out.pop("Kind"), **out}


def _validation_text(text: str) -> tuple[str, str]:
    """msgspec's "Expected `float`, got `str` - at `$.Splits[0].Weight`" as
    ("Splits[0].Weight: Expected `float`, got `str`", "Splits[0].Weight")."""
    message, sep, where = text.partition(" - at `$")
    field = where.rstrip("`").lstrip(".") if sep else ""
    return (f"{field}: {message}" if field else message), field
