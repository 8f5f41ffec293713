"""server/connect_ca_rpc.py on one leader's store: signing checks (ACL on the
CSR's service, another service, the datacenter), the TTL from the stored
configuration, and configuration writes: validation, a plain update, and a
rotation (old root kept inactive, new root active with the cross-signed
certificate, new leaves chained to it)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from proconsul.acl.authorizer import Authorizer, PermissionDenied
from proconsul.acl.resolved import ResolvedToken
from proconsul.acl.rules import parse_rules
from proconsul.connect.ca import generate_root, leaf_csr, trust_domain
from proconsul.rpc import ErrorCode, RPCError
from proconsul.server.connect_ca import ensure_ca_root
from proconsul.server.connect_ca_rpc import ConnectCAEndpoints
from proconsul.server.leader_router import LeaderRouter
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.commands import ApplyResult, Command
from proconsul.structs.connect import CAConfiguration
from proconsul.structs.rpc import CAConfigRequest, CASignRequest
from proconsul.tls.certs import load_certificates

NOW = datetime.now(UTC)


class Leader:
    """One store, a log that applies at the next index, and the CA endpoints,
    with tokens: "web" (service:write on web), "ops" (operator:write)."""

    def __init__(self, ca_config: dict[str, Any] | None = None) -> None:
        self.store = StateStore()
        self.fsm = FSM(self.store)
        self.index = 0
        self.tokens = {
            "web": ResolvedToken(
                "acc-web", Authorizer([parse_rules('service "web" { policy = "write" }')])
            ),
            "ops": ResolvedToken("acc-ops", Authorizer([parse_rules('operator = "write"')])),
        }
        router = cast(LeaderRouter, object())  # the endpoints' own methods never route
        self.ca = ConnectCAEndpoints(
            self.store, router, "dc1", resolve=self.tokens.__getitem__, leader_write=self.apply
        )
        self.ca_config = ca_config or {}

    async def apply(self, command: Command) -> tuple[int, ApplyResult]:
        self.index += 1
        return self.index, self.fsm.apply(self.index, command)

    async def start(self) -> None:
        await ensure_ca_root(
            self.store, self.apply, NOW, random.Random(1), ca_config=self.ca_config
        )

    def csr(self, service: str, dc: str = "dc1") -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        domain = self.store.ca.trust_domain()
        return leaf_csr(key, trust_domain=domain, datacenter=dc, service=service)


async def leader(ca_config: dict[str, Any] | None = None) -> Leader:
    found = Leader(ca_config)
    await found.start()
    return found


async def test_sign_checks_the_csrs_service_and_datacenter() -> None:
    lead = await leader({"leaf_cert_ttl": "2h"})
    issued = lead.ca.sign(CASignRequest(csr=lead.csr("web"), token="web", service="web"))
    assert issued.service == "web" and issued.valid_before - issued.valid_after == timedelta(
        hours=2
    )
    # A CSR naming another service: refused on that service, with Consul's text.
    with pytest.raises(PermissionDenied) as denied:
        lead.ca.sign(CASignRequest(csr=lead.csr("db"), token="web"))
    assert str(denied.value) == (
        "Permission denied: token with AccessorID 'acc-web' lacks permission "
        "'service:write' on \"db\""
    )
    # A request for web carrying a CSR for db is refused even with the right.
    lead.tokens["all"] = ResolvedToken(
        "acc-all", Authorizer([parse_rules('service_prefix "" { policy = "write" }')])
    )
    with pytest.raises(RPCError) as bad:
        lead.ca.sign(CASignRequest(csr=lead.csr("db"), token="all", service="web"))
    assert bad.value.code == ErrorCode.BAD_QUERY and "'db', not 'web'" in bad.value.message
    with pytest.raises(RPCError, match="different datacenter: dc9, we are dc1"):
        lead.ca.sign(CASignRequest(csr=lead.csr("web", dc="dc9"), token="web"))


async def test_configuration_is_validated_and_needs_operator_write() -> None:
    lead = await leader()
    with pytest.raises(PermissionDenied, match="operator:write"):
        await lead.ca.set_configuration(CAConfigRequest(CAConfiguration(), token="web"))
    bad = CAConfiguration(config={"LeafCertTTL": "90h", "IntermediateCertTTL": "100h"})
    with pytest.raises(RPCError, match=r"3 \* LeafCertTTL \(>=270h0m0s\)"):
        await lead.ca.set_configuration(CAConfigRequest(bad, token="ops"))
    roots_before = lead.store.ca.roots_index()
    good = CAConfiguration(config={"LeafCertTTL": "5h"})
    await lead.ca.set_configuration(CAConfigRequest(good, token="ops"))
    _, stored = lead.store.ca_config()
    assert stored is not None and stored.config["LeafCertTTL"] == "5h"
    assert lead.store.ca.roots_index() == roots_before  # no key given: no rotation
    issued = lead.ca.sign(CASignRequest(csr=lead.csr("web"), token="web"))
    assert issued.valid_before - issued.valid_after == timedelta(hours=5)


async def test_a_new_key_rotates_with_a_cross_signed_root() -> None:
    lead = await leader()
    old = lead.store.ca.active_root()
    assert old is not None
    cluster = lead.store.ca.cluster_id
    new = generate_root(cluster_id=cluster, now=NOW, rng=random.Random(9))
    config = CAConfiguration(config={"PrivateKey": new.key_pem, "RootCert": new.cert_pem})
    await lead.ca.set_configuration(CAConfigRequest(config, token="ops"))
    roots = lead.store.ca.view()
    assert [r.active for r in roots.roots] == [False, True]
    active = roots.roots[1]
    assert active.id != old.id and active.intermediate_certs and len(active.intermediate_certs) == 1
    _, stored = lead.store.ca_config()
    assert stored is not None and "PrivateKey" not in stored.config
    assert new.key_pem not in repr(stored)
    issued = lead.ca.sign(CASignRequest(csr=lead.csr("web"), token="web"))
    assert len(load_certificates(issued.cert_pem)) == 2
    # The same root again changes nothing.
    before = lead.store.ca.roots_index()
    await lead.ca.set_configuration(CAConfigRequest(config, token="ops"))
    assert lead.store.ca.roots_index() == before
    # A key alone makes a root for it; a root of another cluster is refused.
    key_only = generate_root(cluster_id=cluster, now=NOW, rng=random.Random(10)).key_pem
    await lead.ca.set_configuration(
        CAConfigRequest(CAConfiguration(config={"PrivateKey": key_only}), token="ops")
    )
    assert len(lead.store.ca.roots) == 3
    foreign = generate_root(
        cluster_id="aaaaaaaa-0000-0000-0000-000000000000", now=NOW, rng=random.Random(11)
    )
    with pytest.raises(RPCError, match="URI SAN must be the cluster's signing ID"):
        await lead.ca.set_configuration(
            CAConfigRequest(
                CAConfiguration(
                    config={"PrivateKey": foreign.key_pem, "RootCert": foreign.cert_pem}
                ),
                token="ops",
            )
        )
    assert trust_domain(cluster) == roots.trust_domain
