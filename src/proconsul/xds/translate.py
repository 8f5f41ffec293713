"""One proxy snapshot -> the Envoy resources of its sidecar, with versions.

Job: `translate` runs the translator modules (listeners, clusters, load
assignments, routes, secrets) over a snapshot and returns `Resources`: per
xDS type URL, resource name -> `Resource` (the message, packed, and its
version). The ADS server only compares versions and sends packed bytes.

Rules:
- Pure: the same snapshot gives the same resources and versions, byte for
  byte (deterministic serialization), in any process.
- A resource's version is a hash of its serialized content, so only what
  changed is new; a type's version (state-of-the-world `version_info`) is a
  hash of its resources' names and versions.
- A snapshot that cannot be expressed (a chain with a node type a route
  cannot follow) raises `TranslateError`; the server keeps the last good
  resources and logs it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2

from proconsul.xds.clusters import load_assignments, local_app_cluster, upstream_clusters
from proconsul.xds.common import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    TYPE_ORDER,
    message_class,
    pack,
)
from proconsul.xds.listeners import public_listener, upstream_listeners
from proconsul.xds.routes import RouteError, route_configurations
from proconsul.xds.secrets import leaf_secret, roots_secret
from proconsul.xds.snapshot import ProxySnapshot

VERSION_CHARS = 16


class TranslateError(ValueError):
    """The snapshot cannot be turned into Envoy configuration."""


@dataclass(frozen=True)
class Resource:
    name: str
    version: str
    packed: any_pb2.Any


@dataclass(frozen=True)
class Resources:
    """Per type URL, the resources by name."""

    by_type: Mapping[str, Mapping[str, Resource]]

    def of(self, type_url: str) -> Mapping[str, Resource]:
        return self.by_type.get(type_url, {})

    def type_version(self, type_url: str, names: Iterable[str] | None = None) -> str:
        """The version of a whole set of one type (all of it, or `names` of it)."""
        chosen = self.of(type_url)
        wanted = sorted(chosen) if names is None else sorted(n for n in names if n in chosen)
        digest = hashlib.sha256()
        for name in wanted:
            digest.update(f"{name}\0{chosen[name].version}\0".encode())
        return digest.hexdigest()[:VERSION_CHARS]

    def unpacked(self, type_url: str) -> dict[str, Any]:
        """name -> typed message (for tests and debugging)."""
        cls = message_class(type_url)
        out = {}
        for name, resource in self.of(type_url).items():
            message = cls()
            resource.packed.Unpack(message)
            out[name] = message
        return out


def version_of(message: Any) -> str:
    data = message.SerializeToString(deterministic=True)
    return hashlib.sha256(data).hexdigest()[:VERSION_CHARS]


def _index(messages: Iterable[Any], name_of: str = "name") -> dict[str, Resource]:
    out = {}
    for message in messages:
        name = getattr(message, name_of)
        out[name] = Resource(name=name, version=version_of(message), packed=pack(message))
    return out


def translate(snapshot: ProxySnapshot) -> Resources:
    try:
        listeners = [public_listener(snapshot), *upstream_listeners(snapshot)]
        routes = route_configurations(snapshot)
    except RouteError as err:
        raise TranslateError(str(err)) from None
    clusters = [local_app_cluster(snapshot), *upstream_clusters(snapshot)]
    secrets = [leaf_secret(snapshot.service, snapshot.leaf), roots_secret(snapshot.roots)]
    by_type = {
        CLUSTER_TYPE: _index(clusters),
        ENDPOINT_TYPE: _index(load_assignments(snapshot), "cluster_name"),
        LISTENER_TYPE: _index(listeners),
        ROUTE_TYPE: _index(routes),
        SECRET_TYPE: _index(secrets),
    }
    assert tuple(by_type) == TYPE_ORDER
    return Resources(by_type)
