"""Intention propagation to Envoy-like ADS streams, and what each connected proxy costs.

One `-dev` agent (pinned to CPU 0, ACLs off) with N `api` instances, each with
a sidecar (`api-<i>-sidecar-proxy`); N delta ADS streams, one per proxy, speak
Envoy's side (tests/ads_client.py) from this process (pinned to CPU 1): they
subscribe to clusters and listeners, and ACK everything. A round flips the
intention web -> api between deny and allow with the same HTTP call
`intention create -deny web api` makes (PUT /v1/connect/intentions/exact)
and measures, per stream, the time from just before that call to the ACK
of the listener version carrying the new RBAC.

The baseline, in the same run: a bare grpc.aio delta ADS server (this file,
`--baseline-server`, also pinned to CPU 0) holding the same N streams, which
pushes one prebuilt listener to every stream when poked over HTTP. It is the
floor of Python gRPC fan-out with the same clients, so the ratio says what
the agent adds (the intention write through Raft, the proxy views'
rebuild, translation and the diff) over merely sending the bytes.

Then the cost: the agent's RSS and CPU with no proxies, with N proxies
registered and their streams connected (idle for `--idle-s`), reported per
proxy.

    .venv/bin/python bench/xds_propagation.py [--streams 1,10,100] [--rounds 10]

Consul's published anchor: a change reaches 172k proxies in under 1 s on large
hardware. Target here: p99 under 1 s at 100 streams. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from _harness import cpu_seconds, free_port, http, pinned, rss_mb, wait_http
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from tests.ads_client import DeltaEnvoy

from proconsul.xds.common import CLUSTER_TYPE, LISTENER_TYPE

READ_TIMEOUT_S = 30.0


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ----- the agent -------------------------------------------------------------


class Agent:
    def __init__(self) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port()
        cmd = [sys.executable, "-m", "proconsul", "agent", "-dev", "-log-level", "warn"]
        cmd += ["-http-port", str(self.http_port), "-dns-port", "-1"]
        cmd += ["-grpc-port", str(self.grpc_port)]
        self.proc = subprocess.Popen(
            pinned(cmd, "0"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.http_port}"
        wait_http(self.base + "/v1/status/leader")

    def register_api(self, count: int) -> list[str]:
        for i in range(count):
            body = {
                "Name": "api",
                "ID": f"api-{i}",
                "Port": 9000 + i,
                "Connect": {"SidecarService": {}},
            }
            http("PUT", self.base + "/v1/agent/service/register", body)
        return [f"api-{i}-sidecar-proxy" for i in range(count)]

    def intention(self, action: str) -> None:
        url = self.base + "/v1/connect/intentions/exact?source=web&destination=api"
        http("PUT", url, {"Action": action})

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


# ----- the baseline: a bare delta ADS server ---------------------------------


def baseline_listener(version: int) -> Any:
    listener = listener_pb2.Listener(name=f"public_listener:0.0.0.0:{20000}")
    listener.stat_prefix = f"v{version}"
    return listener


class BareADS(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Pushes the current listener to every stream at once; ignores ACKs."""

    def __init__(self) -> None:
        self.version = 0
        self.streams: list[asyncio.Queue[int]] = []

    def poke(self) -> None:
        self.version += 1
        for queue in self.streams:
            queue.put_nowait(self.version)

    async def DeltaAggregatedResources(self, requests: Any, context: Any) -> Any:
        queue: asyncio.Queue[int] = asyncio.Queue()
        self.streams.append(queue)

        async def drain() -> None:
            async for _ in requests:
                pass

        reader = asyncio.ensure_future(drain())
        try:
            while True:
                version = await queue.get()
                listener = baseline_listener(version)
                response = discovery_pb2.DeltaDiscoveryResponse(
                    type_url=LISTENER_TYPE, system_version_info=str(version), nonce=str(version)
                )
                resource = response.resources.add()
                resource.name = listener.name
                resource.version = str(version)
                resource.resource.Pack(listener)
                yield response
        finally:
            reader.cancel()
            self.streams.remove(queue)


async def serve_baseline(grpc_port: int, http_port: int) -> None:
    from aiohttp import web

    ads = BareADS()
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()

    async def poke(request: web.Request) -> web.Response:
        ads.poke()
        return web.json_response(len(ads.streams))

    app = web.Application()
    app.router.add_put("/poke", poke)
    app.router.add_get("/v1/status/leader", poke)  # readiness for wait_http (pokes nobody yet)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    await asyncio.Event().wait()


class Baseline:
    def __init__(self) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        cmd = [sys.executable, __file__, "--baseline-server", str(self.grpc_port)]
        cmd += [str(self.http_port)]
        self.proc = subprocess.Popen(pinned(cmd, "0"))
        self.base = f"http://127.0.0.1:{self.http_port}"
        wait_http(self.base + "/v1/status/leader")

    def poke(self) -> None:
        http("PUT", self.base + "/poke")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


# ----- the streams -----------------------------------------------------------


class Stream:
    """One Envoy-like delta stream: subscribes, ACKs, timestamps listener ACKs."""

    def __init__(self, channel: Any, proxy_id: str) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.call = stub.DeltaAggregatedResources()
        self.envoy = DeltaEnvoy(self.call, proxy_id)
        self.listener_acks: asyncio.Queue[float] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def start(self, subscribe: Sequence[str]) -> None:
        for type_url in subscribe:
            await self.envoy.send(type_url)
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            response = await self.call.read()
            if response is grpc.aio.EOF:
                return
            await self.envoy.ack(response)
            if response.type_url == LISTENER_TYPE:
                self.listener_acks.put_nowait(time.perf_counter())

    async def settle(self, quiet_s: float = 0.5) -> None:
        """Drop ACK stamps until nothing arrives for `quiet_s`."""
        while True:
            try:
                await asyncio.wait_for(self.listener_acks.get(), quiet_s)
            except TimeoutError:
                return

    async def next_ack(self) -> float:
        return await asyncio.wait_for(self.listener_acks.get(), READ_TIMEOUT_S)

    async def close(self) -> None:
        self.call.cancel()
        if self.task is not None:
            self.task.cancel()


async def open_streams(
    grpc_port: int, proxy_ids: Sequence[str], subscribe: Sequence[str]
) -> tuple[Any, list[Stream]]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    streams = [Stream(channel, proxy_id) for proxy_id in proxy_ids]
    for stream in streams:
        await stream.start(subscribe)
    await asyncio.gather(*(stream.settle() for stream in streams))
    return channel, streams


async def measure(streams: list[Stream], trigger: Any, rounds: int) -> list[float]:
    """Per stream and round: seconds from just before `trigger(round)` to the ACK."""
    latencies: list[float] = []
    for number in range(rounds):
        started = time.perf_counter()
        await asyncio.to_thread(trigger, number)
        acks = await asyncio.gather(*(stream.next_ack() for stream in streams))
        latencies += [ack - started for ack in acks]
        await asyncio.gather(*(stream.settle(0.2) for stream in streams))
    return latencies


def summary(latencies: list[float]) -> tuple[float, float]:
    return statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000


async def run_size(count: int, rounds: int, idle_s: float) -> dict[str, float]:
    agent = Agent()
    baseline = Baseline()
    try:
        rss_empty, cpu_empty_start = rss_mb(agent.proc.pid), cpu_seconds(agent.proc.pid)
        time.sleep(idle_s)
        cpu_empty = cpu_seconds(agent.proc.pid) - cpu_empty_start
        proxy_ids = agent.register_api(count)
        agent.intention("allow")
        channel, streams = await open_streams(
            agent.grpc_port, proxy_ids, [CLUSTER_TYPE, LISTENER_TYPE]
        )
        rss_connected, cpu_idle_start = rss_mb(agent.proc.pid), cpu_seconds(agent.proc.pid)
        await asyncio.sleep(idle_s)
        cpu_idle = cpu_seconds(agent.proc.pid) - cpu_idle_start
        cpu_change_start = cpu_seconds(agent.proc.pid)
        ours = await measure(
            streams, lambda n: agent.intention("deny" if n % 2 == 0 else "allow"), rounds
        )
        cpu_change = cpu_seconds(agent.proc.pid) - cpu_change_start
        for stream in streams:
            await stream.close()
        await channel.close()

        base_channel, base_streams = await open_streams(
            baseline.grpc_port, proxy_ids, [LISTENER_TYPE]
        )
        theirs = await measure(base_streams, lambda n: baseline.poke(), rounds)
        for stream in base_streams:
            await stream.close()
        await base_channel.close()
    finally:
        agent.stop()
        baseline.stop()
    p50, p99 = summary(ours)
    b50, b99 = summary(theirs)
    return {
        "streams": count,
        "p50_ms": p50,
        "p99_ms": p99,
        "base_p50_ms": b50,
        "base_p99_ms": b99,
        "rss_per_proxy_kb": (rss_connected - rss_empty) * 1024 / count,
        "idle_cpu_ms_per_proxy_s": (cpu_idle - cpu_empty) * 1000 / count / idle_s,
        "change_cpu_ms_per_proxy": cpu_change * 1000 / rounds / count,
        "rss_mb": rss_connected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="1,10,100")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--baseline-server", nargs=2, type=int, metavar=("GRPC", "HTTP"))
    args = parser.parse_args()
    if args.baseline_server:
        asyncio.run(serve_baseline(*args.baseline_server))
        return
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    rows = []
    for count in (int(n) for n in args.streams.split(",")):
        rows.append(asyncio.run(run_size(count, args.rounds, args.idle_s)))
    print(
        f"{'streams':>8} {'p50 ms':>8} {'p99 ms':>8} {'base p50':>9} {'base p99':>9} "
        f"{'p50 ratio':>9} {'p99 ratio':>9} {'RSS/proxy KB':>12} {'idle CPU ms/s/proxy':>19} "
        f"{'CPU ms/change/proxy':>19}"
    )
    for row in rows:
        print(
            f"{row['streams']:>8} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
            f"{row['base_p50_ms']:>9.1f} {row['base_p99_ms']:>9.1f} "
            f"{row['p50_ms'] / row['base_p50_ms']:>9.1f} "
            f"{row['p99_ms'] / row['base_p99_ms']:>9.1f} "
            f"{row['rss_per_proxy_kb']:>12.0f} {row['idle_cpu_ms_per_proxy_s']:>19.3f} "
            f"{row['change_cpu_ms_per_proxy']:>19.2f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
