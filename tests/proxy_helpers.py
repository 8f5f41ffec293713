"""The built-in proxy against the real ADS server, in-process, with hand-built snapshots.

`Mesh` runs the agent's real `XDSServer` on a free port over a `SnapshotHub`;
`start_proxy` runs the real proxy (`proxy/command.py` `serve`) as an ADS
client of it; `web_api` builds the walkthrough's pair of snapshots (web with
an upstream `api`, api behind its public listener) on 127.0.0.1 ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from proconsul.connect.discovery_chain import ChainEntries
from proconsul.proxy.ads_client import AgentTarget
from proconsul.proxy.command import ProxyOptions, Running, serve
from proconsul.structs.catalog import CheckServiceNode
from proconsul.structs.config_entries import Intention
from proconsul.xds.server import Listen, XDSServer
from proconsul.xds.snapshot import ProxySnapshot
from proconsul.xds.sources import SnapshotHub
from tests.agent_process import free_port
from tests.xds_helpers import MeshCA, instance, snapshot, upstream

API_TARGET = "api.default.default.dc1"


async def allow_all(token: str, proxy_id: str) -> None:
    return None


class Mesh:
    def __init__(self) -> None:
        self.hub = SnapshotHub(unknown_wait_s=5.0)
        self.server = XDSServer(self.hub, allow_all)
        self.address = ""

    async def start(self, port: int = 0) -> None:
        self.server = XDSServer(self.hub, allow_all)
        await self.server.start([Listen(f"127.0.0.1:{port}")])
        self.address = self.server.bound[0]

    async def stop(self) -> None:
        await self.server.stop(0.2)

    def publish(self, snap: ProxySnapshot) -> None:
        self.hub.publish(snap)


@dataclass
class ProxyHandle:
    running: Running
    stop: asyncio.Event
    task: asyncio.Task[int]

    @property
    def runtime(self) -> Any:
        return self.running.runtime

    async def close(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, 15)


async def start_proxy(mesh: Mesh, proxy_id: str, service: str, drain_s: float = 2.0) -> ProxyHandle:
    options = ProxyOptions(
        proxy_id=proxy_id,
        cluster=service,
        target=AgentTarget(mesh.address),
        admin_host="127.0.0.1",
        admin_port=0,
        drain_s=drain_s,
    )
    stop = asyncio.Event()
    started: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.get_running_loop().create_task(serve(options, stop, started))
    done, _ = await asyncio.wait({started, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if started not in done:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise AssertionError("the proxy did not start")
    return ProxyHandle(started.result(), stop, task)


def on_loopback(snap: ProxySnapshot, port: int) -> ProxySnapshot:
    """The snapshot with its public listener on 127.0.0.1:`port`."""
    proxy = msgspec.structs.replace(snap.proxy, address="127.0.0.1", port=port)
    return dataclasses.replace(snap, proxy=proxy)


@dataclass
class Ports:
    web_public: int
    web_upstream: int
    api_public: int
    web_local: int
    api_local: int

    @classmethod
    def pick(cls, web_local: int = 0, api_local: int = 0) -> Ports:
        return cls(
            free_port(),
            free_port(),
            free_port(),
            web_local or free_port(),
            api_local or free_port(),
        )


def web_snapshot(
    ca: MeshCA,
    ports: Ports,
    *,
    protocol: str = "tcp",
    endpoints: dict[str, Sequence[CheckServiceNode]] | None = None,
    chain: ChainEntries | None = None,
) -> ProxySnapshot:
    rows = (
        endpoints
        if endpoints is not None
        else {API_TARGET: [instance("api", "127.0.0.1", ports.api_public)]}
    )
    api = upstream(
        "api", ports.web_upstream, chain, endpoints={k: list(v) for k, v in rows.items()}
    )
    snap = snapshot(
        ca,
        "web",
        port=ports.web_public,
        local_port=ports.web_local,
        upstreams=[api],
        protocol=protocol,
    )
    return on_loopback(snap, ports.web_public)


def api_snapshot(
    ca: MeshCA,
    port: int,
    local_port: int,
    *,
    protocol: str = "tcp",
    ixns: Sequence[Intention] = (),
    default_allow: bool = False,
    service: str = "api",
    proxy_id: str = "",
) -> ProxySnapshot:
    snap = snapshot(
        ca,
        service,
        port=port,
        local_port=local_port,
        protocol=protocol,
        ixns=ixns,
        default_allow=default_allow,
    )
    if proxy_id:
        snap = dataclasses.replace(snap, proxy=msgspec.structs.replace(snap.proxy, id=proxy_id))
    return on_loopback(snap, port)
