"""The agent's central service config (agent/central_config.py) against real
server endpoints over a StateStore: a proxy is merged with proxy-defaults and
service-defaults as the entries change, always from the user's own
registration, with Consul's precedence; only connect proxies are resolved;
watches stop with their proxy; servers that do not answer never hold a
registration up."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from tests.unit.test_config_endpoints import plain, write

from proconsul.agent import central_config
from proconsul.agent.central_config import (
    CentralConfig,
    merged_service,
    request_key,
)
from proconsul.server.endpoints import ServerEndpoints
from proconsul.structs.catalog import CONNECT_PROXY_KIND, ConnectProxyConfig, NodeService, Upstream
from proconsul.structs.requests import ReadRequest, ReadResponse
from proconsul.structs.service_config import ServiceConfigResponse

PROXY_DEFAULTS = {
    "Kind": "proxy-defaults",
    "Name": "global",
    "Config": {"protocol": "http", "local_connect_timeout_ms": 1000},
}
WEB_DEFAULTS = {"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"}
API_DEFAULTS = {"Kind": "service-defaults", "Name": "api", "Protocol": "http2"}
WAIT_S = 5.0


def web_proxy(*upstreams: Upstream) -> NodeService:
    """web's sidecar as the user registered it: its own connect timeout, and
    upstream db with its own protocol."""
    return NodeService(
        id="web-sidecar-proxy",
        service="web-sidecar-proxy",
        kind=CONNECT_PROXY_KIND,
        port=21000,
        proxy=ConnectProxyConfig(
            destination_service_name="web",
            destination_service_id="web",
            config={"local_connect_timeout_ms": 5},
            upstreams=list(upstreams)
            or [
                Upstream(destination_name="api", destination_type="service", local_bind_port=8081),
                Upstream(destination_name="db", local_bind_port=8082, config={"protocol": "tcp"}),
            ],
        ),
    )


class World:
    """Real endpoints; the agent side's merged registrations arrive in `merged`."""

    def __init__(self, enabled: bool = True) -> None:
        self.endpoints: ServerEndpoints = plain()
        self.merged: asyncio.Queue[tuple[str, NodeService]] = asyncio.Queue()
        self.reads = 0
        self.central = CentralConfig(
            enabled=enabled,
            read=self.read,
            on_merged=lambda sid, service: self.merged.put_nowait((sid, service)),
            token_for=lambda token: token,
            rng=random.Random(7),
        )

    async def read(self, method: str, request: ReadRequest) -> ReadResponse:
        self.reads += 1
        return await self.endpoints.read(method, request)

    async def put(self, raw: dict[str, Any]) -> None:
        await self.endpoints.write(write("upsert", raw))

    async def delete(self, raw: dict[str, Any]) -> None:
        await self.endpoints.write(write("delete", raw))

    async def next_merged(self) -> NodeService:
        service_id, service = await asyncio.wait_for(self.merged.get(), WAIT_S)
        assert service_id == service.id
        return service


def upstream_configs(service: NodeService) -> dict[str, dict[str, Any]]:
    return {u.destination_name: u.config for u in service.proxy.upstreams}


def watch_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("central-config")]


def test_request_key_names_the_destination_and_service_upstreams_once() -> None:
    proxy = web_proxy(
        Upstream(destination_name="api", local_bind_port=1),
        Upstream(destination_name="api", local_bind_port=2, datacenter="dc2"),
        Upstream(destination_name="lookup", destination_type="prepared_query", local_bind_port=3),
    )
    key = request_key(proxy, "secret-token")
    request = key.read_request()
    assert (request.name, request.upstreams, request.options.token) == (
        "web",
        ["api"],
        "secret-token",
    )
    assert "secret-token" not in repr(key)


def test_merged_service_leaves_the_users_registration_alone() -> None:
    user = web_proxy()
    resolved = ServiceConfigResponse(proxy_config={"protocol": "http"})
    merged = merged_service(user, resolved)
    assert merged.proxy.config == {"protocol": "http", "local_connect_timeout_ms": 5}
    assert user.proxy.config == {"local_connect_timeout_ms": 5}
    assert merged_service(user, None) is user


def test_central_changes_merge_again_from_the_users_registration() -> None:
    async def body() -> None:
        world = World()
        for raw in (PROXY_DEFAULTS, WEB_DEFAULTS, API_DEFAULTS):
            await world.put(raw)
        user = web_proxy()
        # Before the agent answers reads, the proxy is held as written.
        assert world.central.track(user, "") == user
        world.central.start()
        merged = await world.next_merged()
        # registration > service-defaults > proxy-defaults
        assert merged.proxy.config == {"protocol": "grpc", "local_connect_timeout_ms": 5}
        # upstream > central: db keeps its own protocol, api takes its service-defaults'.
        assert upstream_configs(merged) == {"api": {"protocol": "http2"}, "db": {"protocol": "tcp"}}
        assert world.central.user_registration(user.id) == user

        await world.delete(WEB_DEFAULTS)
        merged = await world.next_merged()
        assert merged.proxy.config == {"protocol": "http", "local_connect_timeout_ms": 5}
        # Nothing central left: exactly what the user wrote, not an earlier merge.
        await world.delete(API_DEFAULTS)
        await world.next_merged()
        await world.delete(PROXY_DEFAULTS)
        merged = await world.next_merged()
        assert merged.proxy == user.proxy
        # The same registration again (a reload) keeps the watch and the merge.
        before = world.reads
        assert world.central.track(user, "") == merged
        await world.put(API_DEFAULTS)
        merged = await world.next_merged()
        assert upstream_configs(merged)["api"] == {"protocol": "http2"}
        assert world.reads == before + 1
        await world.central.close()

    asyncio.run(body())


def test_a_changed_registration_restarts_its_watch_and_deregistration_stops_it() -> None:
    async def body() -> None:
        world = World()
        await world.put(API_DEFAULTS)
        await world.put({"Kind": "service-defaults", "Name": "cache", "Protocol": "grpc"})
        world.central.start()
        world.central.track(web_proxy(Upstream(destination_name="api", local_bind_port=1)), "")
        merged = await world.next_merged()
        assert upstream_configs(merged) == {"api": {"protocol": "http2"}}
        (task,) = watch_tasks()
        # A new upstream: the held row merges the last answer at once, and the
        # new request's answer follows.
        wider = web_proxy(
            Upstream(destination_name="api", local_bind_port=1),
            Upstream(destination_name="cache", local_bind_port=2),
        )
        held = world.central.track(wider, "")
        assert upstream_configs(held) == {"api": {"protocol": "http2"}, "cache": {}}
        merged = await world.next_merged()
        assert upstream_configs(merged) == {
            "api": {"protocol": "http2"},
            "cache": {"protocol": "grpc"},
        }
        await asyncio.wait([task], timeout=WAIT_S)
        assert task.cancelled()
        (task,) = watch_tasks()
        world.central.forget(wider.id)
        assert world.central.user_registration(wider.id) is None
        await asyncio.wait([task], timeout=WAIT_S)
        assert task.cancelled() and not watch_tasks()
        await world.put({**API_DEFAULTS, "Protocol": "grpc"})
        await asyncio.sleep(0.05)
        assert world.merged.empty()

    asyncio.run(body())


def test_only_proxies_and_only_when_enabled() -> None:
    async def body() -> None:
        world = World()
        await world.put(PROXY_DEFAULTS)
        world.central.start()
        plain_service = NodeService(id="web", service="web", port=8080)
        assert world.central.track(plain_service, "") is plain_service
        assert world.central.user_registration("web") is None

        disabled = World(enabled=False)
        await disabled.put(PROXY_DEFAULTS)
        disabled.central.start()
        user = web_proxy()
        assert disabled.central.track(user, "") is user
        await disabled.central.prime([(user, "")])
        await asyncio.sleep(0.05)
        assert disabled.reads == 0 and disabled.merged.empty()
        await world.central.close()

    asyncio.run(body())


def test_servers_that_do_not_answer_never_hold_a_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(central_config, "FIRST_ANSWER_WAIT_S", 0.2)
    monkeypatch.setattr(central_config, "RETRY_MIN_S", 0.05)

    async def body() -> None:
        world = World()
        await world.put(PROXY_DEFAULTS)
        reachable = asyncio.Event()
        calls = failures = 0

        async def unreachable_then_real(method: str, request: ReadRequest) -> ReadResponse:
            nonlocal calls, failures
            calls += 1
            if not reachable.is_set():
                if calls == 1:
                    await asyncio.Event().wait()  # a server that never answers
                failures += 1
                raise ConnectionError("No known Consul servers")
            return await world.endpoints.read(method, request)

        world.central._read = unreachable_then_real
        world.central.start()
        user = web_proxy()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await world.central.prime([(user, "")])
        assert loop.time() - started < 1.0
        assert world.central.track(user, "") == user  # as written, for now
        await asyncio.sleep(0.3)  # the watch retries meanwhile
        assert failures >= 2 and world.merged.empty()
        reachable.set()
        merged = await world.next_merged()
        assert merged.proxy.config["protocol"] == "http"
        await world.central.close()

    asyncio.run(body())


def test_a_primed_answer_is_merged_at_registration() -> None:
    async def body() -> None:
        world = World()
        await world.put(PROXY_DEFAULTS)
        world.central.start()
        user = web_proxy()
        await world.central.prime([(user, "")])
        held = world.central.track(user, "")
        assert held.proxy.config["protocol"] == "http"
        # The watch starts from the primed answer's index: no second merge.
        await asyncio.sleep(0.05)
        assert world.merged.empty()
        await world.central.close()

    asyncio.run(body())
