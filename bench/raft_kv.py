"""KV PUT throughput and latency through the Raft leader of 3 servers, vs one LocalLog server.

Three server processes (bench/raft_server.py: ServerEndpoints + RaftLog +
RPCServer, SQLite logs with WAL and synchronous=FULL in a temporary
directory) replicate every write; the baseline is one server process whose
writes go through LocalLog (no replication, no disk), started in the same
run. Load comes from this process, as a client agent would send it:
`EndpointsClient.write` ("Apply" over one mutual-TLS RPC connection) with 1
and with 32 concurrent writers, aimed at the leader. Rounds alternate between
the two systems so machine drift hits both. Prints medians of writes/s, p50
and p99 per setting and the Raft/baseline ratios.

    .venv/bin/python bench/raft_kv.py [--seconds 5] [--rounds 2] [--value-bytes 128]

Asserts nothing about speed. raft_multiplier 1 (timing only affects elections
and heartbeats here, not the write path); snapshot_threshold is Consul's
default, so long runs include snapshots.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import uvloop

from proconsul.rpc import RPCClient
from proconsul.rpc.codec import EndpointsClient
from proconsul.rpc.testing import CertFiles, make_pki, tls_settings
from proconsul.rpc.tls import client_context
from proconsul.structs.catalog import KVEntry
from proconsul.structs.commands import KVSRequest

CONCURRENCY = (1, 32)
HELPER = str(Path(__file__).with_name("raft_server.py"))
STARTUP_DEADLINE_S = 30.0


@dataclass
class Result:
    writes_per_s: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(args: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, HELPER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def find_leader(client: RPCClient, addresses: list[str]) -> str:
    end = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < end:
        for address in addresses:
            try:
                raw = await client.call(address, "Bench.Leader", b"", 2.0)
            except (ConnectionError, TimeoutError):
                continue
            leader = msgspec.msgpack.decode(raw, type=str)
            if leader:
                return leader
        await asyncio.sleep(0.1)
    raise RuntimeError("no leader elected")


async def load(
    endpoints: EndpointsClient, address: str, writers: int, seconds: float, value: bytes, tag: str
) -> Result:
    for i in range(100):  # warm up: connection, caches, the leader's pipeline
        await endpoints.write(address, put(f"warm/{tag}/{i}", value))
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def writer(n: int) -> None:
        seq = 0
        while True:
            start = time.perf_counter()
            if start > end:
                return
            _, result = await endpoints.write(address, put(f"bench/{tag}/{n}/{seq}", value))
            latencies.append(time.perf_counter() - start)
            if result is not True:
                raise RuntimeError(f"write refused: {result!r}")
            seq += 1

    began = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(writers)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return Result(
        writes_per_s=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    )


def put(key: str, value: bytes) -> KVSRequest:
    return KVSRequest(op="set", dir_ent=KVEntry(key=key, value=value))


async def measure(args: argparse.Namespace, tmp: Path) -> None:
    pki_dir = str(tmp / "pki")
    ports = [free_port() for _ in range(3)]
    peers = ",".join(f"s{i}=127.0.0.1:{port}" for i, port in enumerate(ports))
    procs: list[subprocess.Popen[str]] = []
    try:
        for i, port in enumerate(ports):
            data_dir = tmp / f"s{i}"
            flags = [f"--id=s{i}", f"--port={port}", f"--pki={pki_dir}", f"--peers={peers}"]
            procs.append(spawn([*flags, f"--data-dir={data_dir}"]))
        local_port = free_port()
        procs.append(spawn(["--local", f"--port={local_port}", f"--pki={pki_dir}"]))
        client = RPCClient(
            client_context(
                tls_settings(
                    ca_file=os.path.join(pki_dir, "ca.pem"),
                    cert=CertFiles(
                        os.path.join(pki_dir, "client.pem"), os.path.join(pki_dir, "client-key.pem")
                    ),
                    verify_outgoing=True,
                    verify_server_hostname=True,
                )
            ),
            "server.dc1.consul",
        )
        endpoints = EndpointsClient(client)
        leader = await find_leader(client, [f"127.0.0.1:{p}" for p in ports])
        targets = {"raft": leader, "local": f"127.0.0.1:{local_port}"}
        results: dict[tuple[str, int], list[Result]] = {}
        value = os.urandom(args.value_bytes // 2).hex().encode()[: args.value_bytes]
        for round_no in range(args.rounds):
            for writers in CONCURRENCY:
                order = ("raft", "local") if round_no % 2 == 0 else ("local", "raft")
                for system in order:
                    tag = f"{system}-{round_no}-{writers}"
                    result = await load(
                        endpoints, targets[system], writers, args.seconds, value, tag
                    )
                    results.setdefault((system, writers), []).append(result)
        await client.close()
    finally:
        stop(procs)
    report(results, args)


def report(results: dict[tuple[str, int], list[Result]], args: argparse.Namespace) -> None:
    def median(system: str, writers: int) -> Result:
        runs = results[(system, writers)]
        return Result(
            statistics.median(r.writes_per_s for r in runs),
            statistics.median(r.p50_ms for r in runs),
            statistics.median(r.p99_ms for r in runs),
        )

    print(
        f"KV PUT, {args.value_bytes}-byte values, {args.seconds:g}s x {args.rounds} rounds "
        f"(medians), mutual TLS, {os.cpu_count()} CPUs"
    )
    print(f"{'writers':>7} {'system':>16} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for writers in CONCURRENCY:
        raft, local = median("raft", writers), median("local", writers)
        for name, r in (("raft, 3 servers", raft), ("LocalLog, 1", local)):
            print(
                f"{writers:>7} {name:>16} {r.writes_per_s:>10.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
            )
        print(
            f"{writers:>7} {'ratio':>16} {raft.writes_per_s / local.writes_per_s:>10.2f} "
            f"{raft.p50_ms / local.p50_ms:>8.2f} {raft.p99_ms / local.p99_ms:>8.2f}"
            "   (raft / baseline)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--value-bytes", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raft-kv-bench-") as tmp:
        pki = make_pki(Path(tmp) / "pki")
        pki.issue("server", "server")
        pki.issue("client", "client")
        uvloop.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
