"""Small Envoy building blocks the translator modules share.

Job: type URLs, `Any` packing, the ADS config source, durations, regex
matchers, socket addresses and filters, so each translator module says what
it builds and not how protobuf spells it.

Rules: pure (no I/O); every builder returns a new message.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# The order a change is pushed in: clusters before their endpoints, listeners
# before their routes, secrets last (Envoy asks for them once it sees them used).
TYPE_ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)
# Types a client subscribes to as a whole; the others it names resource by resource.
WILDCARD_TYPES = frozenset({LISTENER_TYPE, CLUSTER_TYPE})
# The proxy's /stats text readout holding the version it applied of each type
# (Envoy's names for clusters and listeners), so a version the agent reports
# can be compared with the proxy's.
VERSION_STATS = {
    CLUSTER_TYPE: "cluster_manager.cds.version_text",
    ENDPOINT_TYPE: "cluster_manager.eds.version_text",
    LISTENER_TYPE: "listener_manager.lds.version_text",
    ROUTE_TYPE: "listener_manager.rds.version_text",
    SECRET_TYPE: "sds.version_text",
}


def pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def ads_source() -> Any:
    """`{ads: {}, resource_api_version: V3}`: fetch over the same ADS stream."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def duration_s(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def duration_ms(milliseconds: int) -> duration_pb2.Duration:
    return duration_s(milliseconds / 1000)


def regex(pattern: str) -> Any:
    """A RE2 matcher (Envoy's `safe_regex`)."""
    return regex_pb2.RegexMatcher(regex=pattern)


def string_match(*, exact: str = "", prefix: str = "", suffix: str = "", pattern: str = "") -> Any:
    """A StringMatcher with exactly one of its criteria set."""
    if exact:
        return string_pb2.StringMatcher(exact=exact)
    if prefix:
        return string_pb2.StringMatcher(prefix=prefix)
    if suffix:
        return string_pb2.StringMatcher(suffix=suffix)
    return string_pb2.StringMatcher(safe_regex=regex(pattern))


def socket_address(address: str, port: int) -> Any:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def filter_of(name: str, config: Any) -> Any:
    """A network filter with its typed config."""
    return listener_components_pb2.Filter(name=name, typed_config=pack(config))


_GO_META = frozenset(r"\.+*?()|[]{}^$")


def quote_meta(text: str) -> str:
    """`text` as a regex matching itself literally, escaping what Go's
    regexp.QuoteMeta escapes (Python's re.escape escapes more, e.g. `-`)."""
    return "".join(f"\\{ch}" if ch in _GO_META else ch for ch in text)


def message_class(type_url: str) -> Any:
    """The generated message class of one of the five served types, else None."""
    classes = {
        LISTENER_TYPE: listener_pb2.Listener,
        CLUSTER_TYPE: cluster_pb2.Cluster,
        ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
        ROUTE_TYPE: route_pb2.RouteConfiguration,
        SECRET_TYPE: secret_pb2.Secret,
    }
    return classes.get(type_url)
