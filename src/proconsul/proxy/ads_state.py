"""The client side of state-of-the-world ADS, as a pure state machine.

Job: `AdsState` takes each DiscoveryResponse, parses it (config.py), and
answers with the requests to send back (ACK or NACK, and subscription
changes) and, when accepted, the new `ProxyConfig`. The gRPC adapter
(ads_client.py) only moves messages.

Rules (Envoy's xDS protocol, state of the world):
- First requests: listeners and clusters as wildcards, endpoints, routes and
  secrets by name (none yet); the node rides on the first request only.
- A response whose resources all parse is accepted: the type's resources are
  replaced, and the ACK carries its version and nonce and the names we want.
  One that does not is NACKed: `error_detail` says why, `version_info` is the
  last accepted version, and nothing of it is used.
- When an accepted change makes us want other endpoints, routes or secrets
  (a new cluster, listener or SDS name), a request with the new names (and
  the type's latest nonce) follows.
- `ready` once listeners and clusters came and nothing they refer to is
  missing; after that every accepted response yields a config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2  # type: ignore[import-untyped]

from proconsul.proxy.config import (
    TYPES,
    ProxyConfig,
    Unsupported,
    parse_resources,
)
from proconsul.xds.common import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)

BY_NAME_TYPES = (ENDPOINT_TYPE, ROUTE_TYPE, SECRET_TYPE)
INVALID_ARGUMENT = 3  # google.rpc.Code


@dataclass
class Reaction:
    """What one response produced."""

    requests: list[Any] = field(default_factory=list)
    config: ProxyConfig | None = None  # set when a new config is to be applied
    nack: str = ""  # the reason, when the response was rejected


@dataclass
class AdsState:
    node_id: str
    cluster: str
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    nonces: dict[str, str] = field(default_factory=dict)
    subscribed: dict[str, list[str]] = field(default_factory=dict)
    config: ProxyConfig = field(default_factory=ProxyConfig)
    ready: bool = False
    acks: int = 0
    nacks: int = 0

    def node(self) -> Any:
        return base_pb2.Node(id=self.node_id, cluster=self.cluster)

    def initial_requests(self) -> list[Any]:
        """A (re)connected stream's first requests; what we hold counts as held."""
        self.nonces.clear()
        out = [self._request(type_url) for type_url in TYPES]
        out[0].node.CopyFrom(self.node())
        return out

    def on_response(self, response: Any) -> Reaction:
        type_url = response.type_url
        reaction = Reaction()
        self.nonces[type_url] = response.nonce
        try:
            parsed = parse_resources(type_url, response.resources)
        except Unsupported as err:
            self.nacks += 1
            reaction.nack = str(err)
            reaction.requests.append(self._request(type_url, error=str(err)))
            return reaction
        self.acks += 1
        self.accepted[type_url] = parsed
        self.versions[type_url] = response.version_info
        self.config = self._build()
        reaction.requests.append(self._request(type_url))
        for other in BY_NAME_TYPES:
            if other != type_url and self.config.wanted(other) != self.subscribed.get(other):
                reaction.requests.append(self._request(other))
        if not self.ready:
            self.ready = (
                LISTENER_TYPE in self.accepted
                and CLUSTER_TYPE in self.accepted
                and not self.config.missing()
            )
        if self.ready:
            reaction.config = self.config
        return reaction

    def _request(self, type_url: str, error: str = "") -> Any:
        names = self.config.wanted(type_url) if type_url in BY_NAME_TYPES else []
        self.subscribed[type_url] = names
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=names,
            version_info=self.versions.get(type_url, ""),
            response_nonce=self.nonces.get(type_url, ""),
        )
        if error:
            request.error_detail.CopyFrom(status_pb2.Status(code=INVALID_ARGUMENT, message=error))
        return request

    def _build(self) -> ProxyConfig:
        return ProxyConfig(
            listeners=self.accepted.get(LISTENER_TYPE, {}),
            clusters=self.accepted.get(CLUSTER_TYPE, {}),
            endpoints=self.accepted.get(ENDPOINT_TYPE, {}),
            routes=self.accepted.get(ROUTE_TYPE, {}),
            secrets=self.accepted.get(SECRET_TYPE, {}),
        )
