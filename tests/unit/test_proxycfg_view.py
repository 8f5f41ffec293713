"""The proxy view's adapter: watches, publishing, following local proxies, errors, stop.

The agent's reads are stood in for by `FakeAgent`, a blocking store of
answers by (method, name) that wakes waiting reads when an answer changes,
as a server's blocking query does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from tests.xds_helpers import DC, TRUST_DOMAIN, instance, mesh_ca, sidecar

from proconsul.acl.authorizer import Authorizer
from proconsul.acl.resolved import ResolvedToken
from proconsul.acl.rules import parse_rules
from proconsul.agent import proxycfg
from proconsul.agent.proxycfg import ProxyCfgDeps, ProxyConfigManager
from proconsul.connect.config_entries import parse_config_entry
from proconsul.connect.discovery_chain import ChainEntries, compile_chain
from proconsul.rpc.errors import RemoteACLDenied
from proconsul.structs.catalog import NodeService, Upstream
from proconsul.structs.connect import IndexedCARoots, IssuedCert
from proconsul.structs.requests import QueryMeta, ReadRequest, ReadResponse
from proconsul.structs.service_config import ServiceConfigResponse
from proconsul.xds.snapshot import ProxySnapshot
from proconsul.xds.sources import SnapshotHub

CA = mesh_ca()
DEADLINE_S = 5.0
SECRET = "5ec2e7a0-0000-4000-8000-000000000001"
WEB_WRITER = ResolvedToken(
    "acc-web", Authorizer([parse_rules('service "web" { policy = "write" }')])
)
READER = ResolvedToken(
    "acc-read", Authorizer([parse_rules('service_prefix "" { policy = "read" }')])
)


def chain_of(name: str, *raw: dict[str, Any]) -> Any:
    entries = ChainEntries.of(parse_config_entry(r) for r in raw)
    return compile_chain(name, entries, datacenter=DC, trust_domain=TRUST_DOMAIN)


class FakeAgent:
    """Blocking answers by (method, name); every read is recorded with its token."""

    def __init__(self) -> None:
        self.index = 1
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.errors: dict[tuple[str, str], Exception] = {}
        self.changed = asyncio.Event()
        self.reads: list[tuple[str, str, str]] = []
        self.waiting: dict[tuple[str, str], int] = {}
        self.proxies: dict[str, tuple[NodeService, str]] = {}
        self.local_changed = asyncio.Event()
        self.resolved: ResolvedToken | None = WEB_WRITER

    def set(self, method: str, name: str, value: Any) -> None:
        self.index += 1
        self.answers[(method, name)] = (self.index, value)
        self.wake()

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def _answer(self, method: str, name: str, min_index: int) -> tuple[int, Any]:
        key = (method, name)
        self.waiting[key] = self.waiting.get(key, 0) + 1
        try:
            while True:
                if key in self.errors:
                    raise self.errors[key]
                index, value = self.answers.get(key, (0, None))
                if value is not None and index > min_index:
                    return index, value
                await self.changed.wait()
        finally:
            self.waiting[key] -= 1

    async def read(self, method: str, request: ReadRequest) -> ReadResponse:
        name = request.name or request.kind
        self.reads.append((method, name, request.options.token))
        index, value = await self._answer(method, name, request.options.min_index)
        return ReadResponse(QueryMeta(index), value)

    async def roots(self, min_index: int, wait_s: float) -> tuple[int, IndexedCARoots]:
        return await self._answer("roots", "", min_index)

    async def leaf(self, service: str, token: str, min_index: int, wait_s: float) -> IssuedCert:
        self.reads.append(("leaf", service, token))
        index, cert = await self._answer("leaf", service, min_index)
        return msgspec.structs.replace(cert, modify_index=index)

    async def resolve_token(self, secret: str) -> ResolvedToken | None:
        return self.resolved

    async def wait_local_change(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self.local_changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def local_change(self) -> None:
        self.local_changed.set()
        self.local_changed = asyncio.Event()

    def deps(self, hub: SnapshotHub, *, acl: bool = True) -> ProxyCfgDeps:
        return ProxyCfgDeps(
            datacenter=DC,
            acl_enabled=acl,
            default_policy="deny",
            hub=hub,
            proxies=lambda: dict(self.proxies),
            wait_local_change=self.wait_local_change,
            read=self.read,
            roots=self.roots,
            leaf=self.leaf,
            resolve_token=self.resolve_token,
        )

    def serve_mesh(self) -> None:
        """Everything web's sidecar (upstream api) needs, api with one instance."""
        roots = IndexedCARoots(
            active_root_id=CA.root.id, trust_domain=TRUST_DOMAIN, roots=[CA.root]
        )
        self.set("roots", "", roots)
        self.set("leaf", "web", CA.issued("web"))
        self.set("ConfigEntry.List", "service-intentions", [])
        self.set("ConfigEntry.ResolveServiceConfig", "web", ServiceConfigResponse())
        self.set("DiscoveryChain.Get", "api", chain_of("api"))
        self.set("Health.ConnectServiceNodes", "api", [instance("api", "10.0.0.1", 21000)])


def web_proxy() -> NodeService:
    return sidecar("web", upstreams=[Upstream(destination_name="api", local_bind_port=8081)])


class Running:
    def __init__(self, fake: FakeAgent, hub: SnapshotHub, manager: ProxyConfigManager) -> None:
        self.fake, self.hub, self.manager = fake, hub, manager

    def start(self) -> AsyncIterator[ProxySnapshot]:
        """Start the views over what the fake serves; web's sidecar's snapshots."""
        self.manager.start()
        return self.hub.watch("web-sidecar-proxy")

    async def next_snapshot(
        self, watch: AsyncIterator[ProxySnapshot], want: Any = lambda s: True
    ) -> ProxySnapshot:
        async with asyncio.timeout(DEADLINE_S):
            while True:
                snapshot = await anext(watch)
                if want(snapshot):
                    return snapshot


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    fake = FakeAgent()
    hub = SnapshotHub(unknown_wait_s=DEADLINE_S)
    manager = ProxyConfigManager(fake.deps(hub))
    fake.proxies["web-sidecar-proxy"] = (web_proxy(), SECRET)
    yield Running(fake, hub, manager)
    await manager.close()


def api_hosts(snapshot: ProxySnapshot) -> list[str]:
    (up,) = snapshot.upstreams
    return [row.service.address for rows in up.endpoints.values() for row in rows]


async def test_first_snapshot_is_whole_and_changes_follow(running: Running) -> None:
    running.fake.serve_mesh()
    watch = running.start()
    first = await running.next_snapshot(watch)
    assert api_hosts(first) == ["10.0.0.1"]  # the first snapshot waited for the upstream
    assert first.default_allow is False and first.trust_domain == TRUST_DOMAIN
    # Every read carried the proxy's token.
    assert {token for _, _, token in running.fake.reads} == {SECRET}
    running.fake.set(
        "Health.ConnectServiceNodes",
        "api",
        [instance("api", "10.0.0.1", 21000), instance("api", "10.0.0.2", 21000, node="n2")],
    )
    second = await running.next_snapshot(watch)
    assert api_hosts(second) == ["10.0.0.1", "10.0.0.2"]
    ixn = parse_config_entry(
        {
            "Kind": "service-intentions",
            "Name": "web",
            "Sources": [{"Name": "api", "Action": "allow"}],
        }
    )
    running.fake.set("ConfigEntry.List", "service-intentions", [ixn])
    third = await running.next_snapshot(watch)
    assert [i.source_name for i in third.intentions] == ["api"]


async def test_a_burst_of_changes_is_coalesced(running: Running) -> None:
    running.fake.serve_mesh()
    watch = running.start()
    await running.next_snapshot(watch)
    before = running.manager.stats()["publishes"]
    for n in range(2, 40):
        hosts = [instance("api", f"10.0.0.{i}", 21000, node=f"n{i}") for i in range(1, n)]
        running.fake.set("Health.ConnectServiceNodes", "api", hosts)
        await asyncio.sleep(0)  # let the watch deliver each one
    last = await running.next_snapshot(watch, lambda s: len(api_hosts(s)) == 38)
    assert len(api_hosts(last)) == 38
    assert running.manager.stats()["publishes"] - before < 10


async def test_chain_targets_start_and_stop_their_watches(running: Running) -> None:
    running.fake.serve_mesh()
    running.fake.set("Health.ConnectServiceNodes", "api2", [instance("api2", "10.0.0.9", 21000)])
    watch = running.start()
    await running.next_snapshot(watch)
    redirect = {"Kind": "service-resolver", "Name": "api", "Redirect": {"Service": "api2"}}
    running.fake.set("DiscoveryChain.Get", "api", chain_of("api", redirect))
    moved = await running.next_snapshot(watch, lambda s: api_hosts(s) == ["10.0.0.9"])
    assert list(moved.upstreams[0].endpoints) == ["api2.default.default.dc1"]
    key = ("Health.ConnectServiceNodes", "api")
    async with asyncio.timeout(DEADLINE_S):
        while running.fake.waiting.get(key):
            await asyncio.sleep(0.01)  # the cancelled watch of api leaves its read


async def test_errors_are_logged_once_per_change_without_the_token(
    running: Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxycfg, "RETRY_MIN_S", 0.001)
    running.fake.serve_mesh()
    denied = RemoteACLDenied("Permission denied: token with AccessorID 'acc-web' lacks permission")
    running.fake.errors[("ConfigEntry.List", "service-intentions")] = denied
    watch = running.start()
    with caplog.at_level(logging.INFO, logger="proconsul.agent"):
        async with asyncio.timeout(DEADLINE_S):
            while running.manager.stats()["watch_errors"] < 5:
                await asyncio.sleep(0.01)
        del running.fake.errors[("ConfigEntry.List", "service-intentions")]
        running.fake.wake()
        await running.next_snapshot(watch)
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and "lacks permission" in failures[0].getMessage()
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text


async def test_the_leaf_needs_service_write_on_the_destination(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    running.fake.resolved = READER
    running.fake.serve_mesh()
    running.start()
    with caplog.at_level(logging.WARNING, logger="proconsul.agent"):
        async with asyncio.timeout(DEADLINE_S):
            while "lacks permission 'service:write' on \"web\"" not in caplog.text:
                await asyncio.sleep(0.01)
    assert ("leaf", "web", SECRET) not in running.fake.reads
    assert running.hub.current("web-sidecar-proxy") is None


async def test_deregistration_forgets_the_proxy_and_ends_its_watches(running: Running) -> None:
    running.fake.serve_mesh()
    watch = running.start()
    await running.next_snapshot(watch)
    assert running.manager.stats()["watches"] == 6
    del running.fake.proxies["web-sidecar-proxy"]
    running.fake.local_change()
    async with asyncio.timeout(DEADLINE_S):
        with pytest.raises(StopAsyncIteration):
            await anext(watch)
    assert running.manager.stats()["proxies"] == 0
    async with asyncio.timeout(DEADLINE_S):
        while any(running.fake.waiting.values()):
            await asyncio.sleep(0.01)


async def test_a_new_token_reads_everything_again(running: Running) -> None:
    running.fake.serve_mesh()
    watch = running.start()
    await running.next_snapshot(watch)
    other = "5ec2e7a0-0000-4000-8000-000000000002"
    running.fake.proxies["web-sidecar-proxy"] = (web_proxy(), other)
    running.fake.reads.clear()
    running.fake.local_change()
    async with asyncio.timeout(DEADLINE_S):
        while {t for _, _, t in running.fake.reads} != {other} or len(running.fake.reads) < 5:
            await asyncio.sleep(0.01)


async def test_close_cancels_every_task() -> None:
    fake = FakeAgent()
    hub = SnapshotHub(unknown_wait_s=DEADLINE_S)
    manager = ProxyConfigManager(fake.deps(hub))
    fake.proxies["web-sidecar-proxy"] = (web_proxy(), SECRET)
    manager.start()
    async with asyncio.timeout(DEADLINE_S):
        while not fake.waiting.get(("roots", "")):
            await asyncio.sleep(0.01)
    await manager.close()
    assert not any(fake.waiting.values())
    assert manager.stats()["proxies"] == 0
