"""agent/leaf_certs.py against an in-memory CA: the first leaf, blocking until
a renewal, renewal when the active root changes, the renewal window, and a
clean stop. The CA's side (signing, roots) is the real connect/ca.py code; only
the transport (read, call) is a function here."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from proconsul.agent import leaf_certs
from proconsul.agent.leaf_certs import LeafCerts, renew_after_s
from proconsul.connect.ca import (
    CAKeyPair,
    generate_root,
    leaf_authority_key_id,
    root_row,
    sign_service_leaf,
    trust_domain,
)
from proconsul.structs.connect import IndexedCARoots
from proconsul.structs.requests import QueryMeta, ReadRequest, ReadResponse
from proconsul.structs.rpc import CASignRequest
from proconsul.tls.certs import load_private_key

CLUSTER = "7f42f496-fbc7-8692-05ed-334aa5340c1e"


class FakeCA:
    """Roots at an index, a blocking roots read, and a signer."""

    def __init__(self) -> None:
        self.index = 10
        self.pairs: list[CAKeyPair] = []
        self.changed = asyncio.Event()
        self.signs: list[CASignRequest] = []
        self.rotate()

    def rotate(self) -> None:
        now = datetime.now(UTC)
        self.pairs.append(generate_root(cluster_id=CLUSTER, now=now, rng=random.Random()))
        self.index += 1
        self.changed.set()
        self.changed = asyncio.Event()

    def roots(self) -> IndexedCARoots:
        rows = [root_row(p.cert_pem, cluster_id=CLUSTER, active=False) for p in self.pairs]
        rows[-1].active = True
        return IndexedCARoots(rows[-1].id, trust_domain(CLUSTER), rows)

    async def read(self, method: str, request: ReadRequest) -> ReadResponse:
        assert method == "ConnectCA.Roots"
        if request.options.min_index >= self.index:
            await self.changed.wait()
        return ReadResponse(QueryMeta(index=self.index), self.roots())

    async def call(self, method: str, payload: bytes, timeout_s: float) -> bytes:
        assert method == "ConnectCA.Sign"
        request = msgspec.msgpack.decode(payload, type=CASignRequest)
        self.signs.append(request)
        pair = self.pairs[-1]
        issued = sign_service_leaf(
            pair.cert_pem,
            pair.key_pem,
            request.csr,
            trust_domain=trust_domain(CLUSTER),
            datacenter="dc1",
            service=request.service,
            valid_for=timedelta(hours=1),
            now=datetime.now(UTC),
        )
        issued.modify_index = issued.create_index = self.index
        return msgspec.msgpack.encode(issued)


def test_renewal_point_is_between_60_and_90_percent() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(hours=10)
    rng = random.Random(4)
    points = [renew_after_s(start, end, start, rng) / 3600 for _ in range(500)]
    assert 6.0 <= min(points) < 6.3 and 8.7 < max(points) <= 9.0
    # Already in the soft window: from now on; past 90%: at once.
    later = start + timedelta(hours=8)
    assert all(0 <= renew_after_s(start, end, later, rng) <= 3600 for _ in range(100))
    assert renew_after_s(start, end, start + timedelta(hours=9.5), rng) == 0


async def test_leaf_blocks_until_the_root_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leaf_certs, "CA_CHANGE_JITTER_S", 0.2)
    ca = FakeCA()
    certs = LeafCerts(datacenter="dc1", read=ca.read, call=ca.call, rng=random.Random(1))
    try:
        first = await certs.leaf("web", "token-1")
        assert first.service == "web" and first.private_key_pem
        assert ca.signs[0].token == "token-1" and ca.signs[0].service == "web"
        load_private_key(first.private_key_pem)
        assert "PRIVATE" not in repr(first)
        # A second request is served from memory: no new signature.
        again = await certs.leaf("web", "token-1")
        assert again is first and len(ca.signs) == 1
        # Blocking on the current index returns after the wait when nothing changes.
        same = await certs.leaf("web", "token-1", min_index=first.modify_index, wait_s=0.1)
        assert same is first
        waiter = asyncio.create_task(
            certs.leaf("web", "token-1", min_index=first.modify_index, wait_s=30)
        )
        await asyncio.sleep(0.05)
        assert not waiter.done()
        ca.rotate()
        renewed = await asyncio.wait_for(waiter, 5)
        assert renewed.modify_index > first.modify_index
        new_key_id = ca.roots().roots[-1].signing_key_id
        assert leaf_authority_key_id(renewed.cert_pem) == new_key_id
        assert leaf_authority_key_id(first.cert_pem) != new_key_id
        index, roots = await certs.roots()
        assert index == ca.index and len(roots.roots) == 2
    finally:
        await certs.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("connect-")]


async def test_first_leaf_error_reaches_the_caller() -> None:
    ca = FakeCA()

    async def refuse(method: str, payload: bytes, timeout_s: float) -> bytes:
        raise PermissionError("Permission denied")

    certs = LeafCerts(datacenter="dc1", read=ca.read, call=refuse)
    try:
        with pytest.raises(PermissionError):
            await certs.leaf("web", "")
        certs._call = ca.call  # the next request tries again
        assert (await certs.leaf("web", "")).service == "web"
    finally:
        await certs.close()


async def test_an_idle_leaf_is_dropped_not_renewed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leaf_certs, "IDLE_S", 0.0)
    monkeypatch.setattr(leaf_certs, "CA_CHANGE_JITTER_S", 0.05)
    ca = FakeCA()
    certs = LeafCerts(datacenter="dc1", read=ca.read, call=ca.call)
    try:
        await certs.leaf("web", "")
        ca.rotate()  # the renewal comes due at once
        deadline = asyncio.get_running_loop().time() + 5
        while certs.stats()["leaves"] and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert certs.stats()["leaves"] == 0 and len(ca.signs) == 1
    finally:
        await certs.close()
