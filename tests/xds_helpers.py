"""Building proxy snapshots for the xDS tests: a mesh CA, leaves, instances, chains.

A real CA (connect/ca.py) signs real leaves with the service's SPIFFE ID, so
tests can check that what Envoy receives verifies; chains come from the real
compiler over real config entries.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from proconsul.connect.ca import generate_root, root_row, trust_domain
from proconsul.connect.config_entries import parse_config_entry
from proconsul.connect.discovery_chain import ChainEntries, compile_chain
from proconsul.connect.intentions import intentions_of
from proconsul.structs.catalog import (
    CheckServiceNode,
    ConnectProxyConfig,
    HealthCheck,
    Node,
    NodeService,
    Upstream,
    Weights,
)
from proconsul.structs.config_entries import Intention, ServiceIntentions
from proconsul.structs.connect import CARoot, IssuedCert
from proconsul.tls.certs import LeafSpec, issue_leaf, load_ca
from proconsul.xds.snapshot import (
    LeafCert,
    ProxySnapshot,
    UpstreamSnapshot,
    service_spiffe_id,
)

CLUSTER_ID = "11111111-2222-3333-4444-555555555555"
TRUST_DOMAIN = trust_domain(CLUSTER_ID)
DC = "dc1"


@dataclass(frozen=True)
class MeshCA:
    root: CARoot
    cert_pem: str
    key_pem: str
    leaves: dict[str, LeafCert] = field(default_factory=dict, compare=False)

    def leaf(self, service: str) -> LeafCert:
        """The service's leaf: one per service, so snapshots differ only where meant."""
        if service not in self.leaves:
            self.leaves[service] = self.issue(service)
        return self.leaves[service]

    def issue(self, service: str) -> LeafCert:
        ca = load_ca(self.cert_pem, self.key_pem)
        spec = LeafSpec(
            common_name=service,
            valid_for=timedelta(hours=72),
            uris=(service_spiffe_id(TRUST_DOMAIN, DC, service),),
        )
        pair = issue_leaf(ca, spec, now=datetime.now(UTC))
        return LeafCert(pair.cert_pem, pair.key_pem)

    def issued(self, service: str, index: int = 0) -> IssuedCert:
        """The service's leaf as the agent's CA view hands it out (`IssuedCert`)."""
        leaf = self.leaf(service)
        now = datetime.now(UTC)
        return IssuedCert(
            serial_number="01",
            cert_pem=leaf.cert_pem,
            private_key_pem=leaf.key_pem,
            service=service,
            valid_after=now,
            valid_before=now + timedelta(hours=72),
            modify_index=index,
        )


def mesh_ca(seed: int = 1) -> MeshCA:
    pair = generate_root(cluster_id=CLUSTER_ID, now=datetime.now(UTC), rng=random.Random(seed))
    return MeshCA(root_row(pair.cert_pem, cluster_id=CLUSTER_ID), pair.cert_pem, pair.key_pem)


def sidecar(
    service: str,
    *,
    port: int = 21000,
    local_port: int = 8080,
    upstreams: Sequence[Upstream] = (),
    address: str = "",
) -> NodeService:
    return NodeService(
        service=f"{service}-sidecar-proxy",
        id=f"{service}-sidecar-proxy",
        kind="connect-proxy",
        port=port,
        address=address,
        proxy=ConnectProxyConfig(
            destination_service_name=service,
            destination_service_id=service,
            local_service_address="127.0.0.1",
            local_service_port=local_port,
            upstreams=list(upstreams),
        ),
    )


def instance(
    service: str,
    address: str,
    port: int,
    *,
    node: str = "node1",
    status: str = "passing",
    meta: dict[str, str] | None = None,
    weights: Weights | None = None,
) -> CheckServiceNode:
    """A row of `/v1/health/connect/<service>`: the service's proxy on a node."""
    proxy = NodeService(
        service=f"{service}-sidecar-proxy",
        id=f"{service}-sidecar-proxy",
        kind="connect-proxy",
        address=address,
        port=port,
        meta=meta or {},
        weights=weights or Weights(),
        proxy=ConnectProxyConfig(destination_service_name=service),
    )
    check = HealthCheck(node=node, check_id="c", status=status, service_id=proxy.id)
    return CheckServiceNode(Node(node=node, address=address), proxy, [check])


def entries(*raw: dict[str, Any]) -> ChainEntries:
    return ChainEntries.of(parse_config_entry(r) for r in raw)


def upstream(
    name: str,
    port: int,
    chain_entries: ChainEntries | None = None,
    endpoints: dict[str, Iterable[CheckServiceNode]] | None = None,
) -> UpstreamSnapshot:
    chain = compile_chain(
        name, chain_entries or ChainEntries(), datacenter=DC, trust_domain=TRUST_DOMAIN
    )
    return UpstreamSnapshot(
        upstream=Upstream(destination_name=name, local_bind_port=port),
        chain=chain,
        endpoints={tid: tuple(rows) for tid, rows in (endpoints or {}).items()},
    )


def intentions(destination: str, *sources: dict[str, Any]) -> tuple[Intention, ...]:
    entry = parse_config_entry(
        {"Kind": "service-intentions", "Name": destination, "Sources": list(sources)}
    )
    assert isinstance(entry, ServiceIntentions)
    return tuple(intentions_of([entry]))


def snapshot(
    ca: MeshCA,
    service: str,
    *,
    port: int = 21000,
    local_port: int = 8080,
    upstreams: Sequence[UpstreamSnapshot] = (),
    protocol: str = "tcp",
    ixns: Sequence[Intention] = (),
    default_allow: bool = True,
) -> ProxySnapshot:
    proxy = sidecar(
        service, port=port, local_port=local_port, upstreams=[u.upstream for u in upstreams]
    )
    return ProxySnapshot(
        proxy=proxy,
        datacenter=DC,
        trust_domain=TRUST_DOMAIN,
        roots=(ca.root,),
        leaf=ca.leaf(service),
        intentions=tuple(ixns),
        default_allow=default_allow,
        protocol=protocol,
        upstreams=tuple(upstreams),
    )


# The user's traffic shaping: api-v1/api-v2 told apart by meta.version, a
# header route to v2, and a 75/25 split that says which leg answered.
SHAPING_RESOLVER: dict[str, Any] = {
    "Kind": "service-resolver",
    "Name": "api",
    "DefaultSubset": "v1",
    "Subsets": {
        "v1": {"Filter": "Service.Meta.version == v1"},
        "v2": {"Filter": "Service.Meta.version == v2"},
    },
}
SHAPING_SPLITTER: dict[str, Any] = {
    "Kind": "service-splitter",
    "Name": "api",
    "Splits": [
        {
            "Weight": 75,
            "ServiceSubset": "v1",
            "ResponseHeaders": {"Set": {"x-api-version": "v1"}},
        },
        {
            "Weight": 25,
            "ServiceSubset": "v2",
            "ResponseHeaders": {"Set": {"x-api-version": "v2"}},
        },
    ],
}
SHAPING_ENTRIES = entries(
    {"Kind": "service-defaults", "Name": "api", "Protocol": "http"},
    SHAPING_RESOLVER,
    {
        "Kind": "service-router",
        "Name": "api",
        "Routes": [
            {
                "Match": {"HTTP": {"Header": [{"Name": "x-api-version", "Exact": "v2"}]}},
                "Destination": {"ServiceSubset": "v2", "NumRetries": 3, "RequestTimeout": "2s"},
            }
        ],
    },
    SHAPING_SPLITTER,
)
