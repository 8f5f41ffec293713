"""The proxy snapshot: everything one sidecar's Envoy configuration is made from.

Job: `ProxySnapshot` is the value the agent's proxy view (proxycfg) hands the
xDS side for one local connect-proxy: the proxy's registration, the mesh CA's
roots and the proxy's leaf, the intentions towards its service, and per
upstream the compiled discovery chain with the instances of each chain target.
The translator (xds/translate.py) turns one snapshot into Envoy resources;
the ADS server (xds/server.py) serves them.

Rules:
- A snapshot is a value: frozen, built whole by its producer, never changed
  after. A change is a new snapshot.
- `upstreams[i].endpoints` is keyed by chain target id and already holds what
  Envoy should see for that target: the target's instances (its subset filter
  applied) with their checks; the connect endpoints of a service are its
  proxies, so each row's address and port are the proxy's. Health is judged
  here from the checks (xds/clusters.py): critical is unhealthy.
- `intentions` are those whose destination is the proxy's service or `*`;
  `default_allow` is what applies when none matches (see
  DESIGN.md, "Config entries, intentions and the discovery chain").
- The leaf's private key never shows in a repr or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proconsul.structs.catalog import CheckServiceNode, NodeService, Upstream
from proconsul.structs.config_entries import Intention
from proconsul.structs.connect import CARoot
from proconsul.structs.discovery_chain import CompiledDiscoveryChain

DEFAULT_NAMESPACE = "default"
DEFAULT_BIND_ADDRESS = "127.0.0.1"  # upstream listeners and the local app, unless given
PUBLIC_BIND_ADDRESS = "0.0.0.0"  # the public listener of a proxy registered without an address
DEFAULT_LOCAL_CONNECT_TIMEOUT_MS = 5000


def service_spiffe_id(trust_domain: str, datacenter: str, service: str) -> str:
    """The SPIFFE ID a service's leaf certificate carries as its URI SAN."""
    return f"spiffe://{trust_domain}/ns/{DEFAULT_NAMESPACE}/dc/{datacenter}/svc/{service}"


@dataclass(frozen=True)
class LeafCert:
    """The proxy's certificate (PEM, the chain to the root excluded) and its key."""

    cert_pem: str
    key_pem: str = field(repr=False)

    def __repr__(self) -> str:
        return f"LeafCert(cert_pem=<{len(self.cert_pem)} chars>, key_pem=<redacted>)"


@dataclass(frozen=True)
class UpstreamSnapshot:
    """One upstream of the proxy: its registration, its chain, its targets' instances."""

    upstream: Upstream
    chain: CompiledDiscoveryChain
    endpoints: Mapping[str, tuple[CheckServiceNode, ...]] = field(default_factory=dict)

    @property
    def envoy_id(self) -> str:
        """How listeners and route configurations name the upstream: `api`, or
        `api?dc=dc2` for one pinned to another datacenter (Consul's UpstreamID)."""
        name = self.upstream.destination_name
        dc = self.upstream.datacenter
        return f"{name}?dc={dc}" if dc else name

    @property
    def bind_address(self) -> str:
        return self.upstream.local_bind_address or DEFAULT_BIND_ADDRESS


@dataclass(frozen=True)
class ProxySnapshot:
    """One connect-proxy's whole configuration input, as of one moment."""

    proxy: NodeService  # kind connect-proxy, its `Proxy` block filled
    datacenter: str
    trust_domain: str  # `<cluster id>.consul`
    roots: tuple[CARoot, ...]
    leaf: LeafCert
    intentions: tuple[Intention, ...] = ()
    default_allow: bool = True  # no matching intention: allow (ACLs off, or default_policy allow)
    protocol: str = "tcp"  # the destination service's protocol
    upstreams: tuple[UpstreamSnapshot, ...] = ()

    @property
    def proxy_id(self) -> str:
        return self.proxy.id

    @property
    def service(self) -> str:
        """The destination service: the one this sidecar fronts."""
        return self.proxy.proxy.destination_service_name

    @property
    def config(self) -> Mapping[str, Any]:
        """The opaque proxy config (`bind_address`, `local_connect_timeout_ms`, ...)."""
        return self.proxy.proxy.config

    @property
    def public_address(self) -> str:
        bind = self.config.get("bind_address")
        return str(bind) if bind else (self.proxy.address or PUBLIC_BIND_ADDRESS)

    @property
    def public_port(self) -> int:
        bind = self.config.get("bind_port")
        return _as_int(bind, self.proxy.port) if bind else self.proxy.port

    @property
    def local_address(self) -> str:
        return self.proxy.proxy.local_service_address or DEFAULT_BIND_ADDRESS

    @property
    def local_port(self) -> int:
        return self.proxy.proxy.local_service_port

    @property
    def local_connect_timeout_ms(self) -> int:
        value = self.config.get("local_connect_timeout_ms")
        return _as_int(value, DEFAULT_LOCAL_CONNECT_TIMEOUT_MS)

    @property
    def spiffe_id(self) -> str:
        return service_spiffe_id(self.trust_domain, self.datacenter, self.service)


def _as_int(value: object, default: int) -> int:
    """An opaque config value as a number (HCL and JSON give ints, floats or text)."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return default
    return default
