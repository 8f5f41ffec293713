"""The proxy view's pure half: the latest inputs of one proxy, what to watch, the snapshot.

How it fits: DESIGN.md, "xDS". `agent/proxycfg.py` keeps blocking watches
open and stores each answer here (`ProxyInputs.store`); `wanted_watches`
says which watches the inputs call for (the chains name the targets whose
instances are watched); `build_snapshot` turns the inputs into the
`ProxySnapshot` the xDS server serves.

Rules:
- No I/O, no clock: values in, values out. The adapter owns the tasks.
- A snapshot needs the roots (with a trust domain), the leaf, the
  intentions and the resolved service config; until then `build_snapshot`
  answers None. An upstream whose chain has not arrived is left out; a chain
  target whose instances have not arrived has none. `complete()` says
  whether every wanted watch has answered (the adapter holds the first
  snapshot back a little for it, so Envoy's first view is whole).
- The resolved central config is merged under the registration
  (`merge_service_config`: the registration wins), so the snapshot's proxy
  carries the protocol and upstream config Consul would give it.
- Instances are watched per (service, datacenter), all health states, as
  Consul's proxycfg does; each target keeps those its subset filter selects,
  and the translator judges health from the checks (critical is
  unhealthy, warning too under the subset's `OnlyPassing`).
- Prepared-query upstreams get no chain (Consul's prepared-query upstreams
  are not served yet); a chain is compiled in the agent's datacenter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from proconsul.connect.discovery_chain import instances_for, select_health_rows
from proconsul.connect.intentions import WILDCARD, default_allow, intentions_of
from proconsul.connect.service_config import merge_service_config
from proconsul.structs.catalog import CheckServiceNode, NodeService, Upstream
from proconsul.structs.config_entries import ServiceIntentions
from proconsul.structs.connect import IndexedCARoots, IssuedCert
from proconsul.structs.discovery_chain import CompiledDiscoveryChain
from proconsul.structs.service_config import ServiceConfigResponse
from proconsul.xds.snapshot import LeafCert, ProxySnapshot, UpstreamSnapshot

ROOTS = "roots"
LEAF = "leaf"
INTENTIONS = "intentions"
CONFIG = "config"
CHAIN = "chain"
HEALTH = "health"
DEFAULT_PROTOCOL = "tcp"


@dataclass(frozen=True, order=True)
class WatchKey:
    """One blocking watch of a proxy view. `name` is the service (leaf,
    config, health) or upstream (chain); `datacenter` is a health target's
    ("" for the agent's own); `upstreams` the names the config read asks about."""

    kind: str
    name: str = ""
    datacenter: str = ""
    upstreams: tuple[str, ...] = ()

    def label(self) -> str:
        """How log lines name the watch: `roots`, `chain api`, `health api dc2`."""
        return " ".join(part for part in (self.kind, self.name, self.datacenter) if part)


def is_service_upstream(upstream: Upstream) -> bool:
    return upstream.destination_type in ("", "service")


@dataclass
class ProxyInputs:
    """The latest answer of every watch of one proxy (None: not yet)."""

    proxy: NodeService
    datacenter: str
    acl_enabled: bool
    default_policy: str
    roots: IndexedCARoots | None = None
    leaf: IssuedCert | None = None
    intention_entries: tuple[ServiceIntentions, ...] | None = None
    service_config: ServiceConfigResponse | None = None
    chains: dict[str, CompiledDiscoveryChain] = field(default_factory=dict)
    instances: dict[tuple[str, str], tuple[CheckServiceNode, ...]] = field(default_factory=dict)
    delivered: set[WatchKey] = field(default_factory=set)  # watches that answered at least once

    @property
    def service(self) -> str:
        return self.proxy.proxy.destination_service_name

    def store(self, key: WatchKey, value: object) -> bool:
        """Keep a watch's answer; True when it differs from what was kept."""
        if key.kind == ROOTS:
            assert isinstance(value, IndexedCARoots)
            changed = value != self.roots
            self.roots = value
        elif key.kind == LEAF:
            assert isinstance(value, IssuedCert)
            changed = value != self.leaf
            self.leaf = value
        elif key.kind == INTENTIONS:
            assert isinstance(value, list | tuple)
            entries = tuple(e for e in value if isinstance(e, ServiceIntentions))
            changed = entries != self.intention_entries
            self.intention_entries = entries
        elif key.kind == CONFIG:
            assert isinstance(value, ServiceConfigResponse)
            changed = value != self.service_config
            self.service_config = value
        elif key.kind == CHAIN:
            assert isinstance(value, CompiledDiscoveryChain)
            changed = value != self.chains.get(key.name)
            self.chains[key.name] = value
        elif key.kind == HEALTH:
            assert isinstance(value, list | tuple)
            rows = tuple(value)
            where = (key.name, key.datacenter)
            changed = rows != self.instances.get(where)
            self.instances[where] = rows
        else:
            raise ValueError(f"unknown watch kind {key.kind!r}")
        self.delivered.add(key)
        return changed

    def drop(self, key: WatchKey) -> None:
        """Forget what a watch that is no longer wanted delivered."""
        self.delivered.discard(key)
        if key.kind == CHAIN:
            self.chains.pop(key.name, None)
        elif key.kind == HEALTH:
            self.instances.pop((key.name, key.datacenter), None)
        elif key.kind == CONFIG:
            self.service_config = None
        elif key.kind == LEAF:
            self.leaf = None

    def reset(self) -> None:
        """Forget every answer (the token or the destination service changed)."""
        self.roots = self.leaf = self.intention_entries = self.service_config = None
        self.chains.clear()
        self.instances.clear()
        self.delivered.clear()

    def complete(self) -> bool:
        """Whether every watch the inputs call for has answered (chains and
        instances included): the first snapshot waits a little for this."""
        return wanted_watches(self) <= self.delivered


def service_upstream_names(proxy: NodeService) -> list[str]:
    """The destination names of the proxy's service upstreams, each once, in order."""
    names: list[str] = []
    for upstream in proxy.proxy.upstreams:
        if is_service_upstream(upstream) and upstream.destination_name not in names:
            names.append(upstream.destination_name)
    return names


def target_datacenter(target_dc: str, local_dc: str) -> str:
    return "" if target_dc in ("", local_dc) else target_dc


def wanted_watches(inputs: ProxyInputs) -> set[WatchKey]:
    """Every watch the proxy needs now: its own inputs, a chain per upstream,
    and the instances of every target of the chains that have arrived."""
    service = inputs.service
    upstreams = service_upstream_names(inputs.proxy)
    wanted = {
        WatchKey(ROOTS),
        WatchKey(LEAF, service),
        WatchKey(INTENTIONS),
        WatchKey(CONFIG, service, upstreams=tuple(upstreams)),
    }
    for name in upstreams:
        wanted.add(WatchKey(CHAIN, name))
        chain = inputs.chains.get(name)
        if chain is None:
            continue
        for target in chain.targets.values():
            dc = target_datacenter(target.datacenter, inputs.datacenter)
            wanted.add(WatchKey(HEALTH, target.service, dc))
    return wanted


def _upstream_snapshot(inputs: ProxyInputs, upstream: Upstream) -> UpstreamSnapshot | None:
    chain = inputs.chains.get(upstream.destination_name)
    if chain is None or not is_service_upstream(upstream):
        return None
    endpoints: dict[str, tuple[CheckServiceNode, ...]] = {}
    for target_id, target in chain.targets.items():
        dc = target_datacenter(target.datacenter, inputs.datacenter)
        rows = inputs.instances.get((target.service, dc), ())
        endpoints[target_id] = tuple(instances_for(target, rows, select_health_rows))
    return UpstreamSnapshot(upstream=upstream, chain=chain, endpoints=endpoints)


def build_snapshot(inputs: ProxyInputs) -> ProxySnapshot | None:
    """The proxy's snapshot from its latest inputs; None until the required ones arrived."""
    roots, leaf, config = inputs.roots, inputs.leaf, inputs.service_config
    entries = inputs.intention_entries
    if roots is None or not roots.trust_domain or leaf is None:
        return None
    if entries is None or config is None:
        return None
    service = inputs.service
    merged = merge_service_config(config, inputs.proxy.proxy)
    proxy = msgspec.structs.replace(inputs.proxy, proxy=merged)
    upstreams = [_upstream_snapshot(inputs, upstream) for upstream in merged.upstreams]
    return ProxySnapshot(
        proxy=proxy,
        datacenter=inputs.datacenter,
        trust_domain=roots.trust_domain,
        roots=tuple(roots.roots),
        leaf=LeafCert(cert_pem=leaf.cert_pem, key_pem=leaf.private_key_pem),
        intentions=tuple(intentions_of(e for e in entries if e.name in (service, WILDCARD))),
        default_allow=default_allow(inputs.acl_enabled, inputs.default_policy),
        protocol=str(merged.config.get("protocol") or DEFAULT_PROTOCOL),
        upstreams=tuple(u for u in upstreams if u is not None),
    )
