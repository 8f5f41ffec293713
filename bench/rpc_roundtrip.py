"""RPC round-trip benchmark: a small echo call over mutual TLS vs plaintext.

The server runs in its own process (pinned to CPU 0 when taskset exists),
the callers in this one (CPU 1), both on uvloop. Each round measures, for 1
and for 32 concurrent callers sharing the client's one multiplexed
connection, calls/s and p50/p99 latency; TLS and plaintext servers run side by
side in the same run and rounds alternate between them so drift hits both.
Prints the medians over rounds and the TLS/plaintext ratios.

TLS here is what the walkthrough configures: verify_incoming,
verify_outgoing and verify_server_hostname, certificates from proconsul.tls.

    .venv/bin/python bench/rpc_roundtrip.py [--seconds 3] [--rounds 3] [--payload 64]

Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from proconsul.rpc import PeerInfo, RPCClient, RPCServer
from proconsul.rpc.testing import CertFiles, make_pki, tls_settings
from proconsul.rpc.tls import client_context, server_context

CONCURRENCY = (1, 32)


@dataclass
class Result:
    calls_per_s: float
    p50_ms: float
    p99_ms: float


# --- server process ---------------------------------------------------------------


async def echo(payload: bytes, peer: PeerInfo) -> bytes:
    return payload


async def serve(pki_dir: str, mode: str) -> None:
    ctx = None
    if mode == "tls":
        ctx = server_context(
            tls_settings(
                ca_file=os.path.join(pki_dir, "ca.pem"),
                cert=_files(pki_dir, "server"),
                verify_incoming=True,
            )
        )
    server = RPCServer({"Echo": echo}, ssl_context=ctx)
    _, port = await server.start("127.0.0.1", 0)
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    await server.close()


def _files(pki_dir: str, name: str) -> CertFiles:
    return CertFiles(os.path.join(pki_dir, f"{name}.pem"), os.path.join(pki_dir, f"{name}-key.pem"))


def start_server(pki_dir: str, mode: str) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, __file__, "--serve", mode, "--pki", pki_dir]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


# --- load -----------------------------------------------------------------------------


async def load(
    client: RPCClient, port: int, callers: int, seconds: float, payload: bytes
) -> Result:
    address = ("127.0.0.1", port)
    for _ in range(200):  # warm up: dial, handshake, caches
        await client.call(address, "Echo", payload, 10)
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def caller() -> None:
        while True:
            start = time.perf_counter()
            if start > end:
                return
            await client.call(address, "Echo", payload, 10)
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return Result(
        calls_per_s=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    )


async def measure(args: argparse.Namespace, pki_dir: str) -> None:
    plain_proc, plain_port = start_server(pki_dir, "plain")
    tls_proc, tls_port = start_server(pki_dir, "tls")
    tls_ctx = client_context(
        tls_settings(
            ca_file=os.path.join(pki_dir, "ca.pem"),
            cert=_files(pki_dir, "client"),
            verify_outgoing=True,
            verify_server_hostname=True,
        )
    )
    payload = b"x" * args.payload
    results: dict[tuple[str, int], list[Result]] = {}
    try:
        for round_no in range(args.rounds):
            for callers in CONCURRENCY:
                for mode in ("plain", "tls") if round_no % 2 == 0 else ("tls", "plain"):
                    client = (
                        RPCClient(tls_ctx, "server.dc1.consul") if mode == "tls" else RPCClient()
                    )
                    port = tls_port if mode == "tls" else plain_port
                    result = await load(client, port, callers, args.seconds, payload)
                    await client.close()
                    results.setdefault((mode, callers), []).append(result)
    finally:
        for proc in (plain_proc, tls_proc):
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=10)
    report(results, args)


def report(results: dict[tuple[str, int], list[Result]], args: argparse.Namespace) -> None:
    def median(mode: str, callers: int) -> Result:
        runs = results[(mode, callers)]
        return Result(
            statistics.median(r.calls_per_s for r in runs),
            statistics.median(r.p50_ms for r in runs),
            statistics.median(r.p99_ms for r in runs),
        )

    print(
        f"echo, {args.payload}-byte payload, {args.seconds:g}s x {args.rounds} rounds "
        f"(medians), one connection, uvloop"
    )
    print(f"{'callers':>7} {'mode':>9} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for callers in CONCURRENCY:
        plain, tls = median("plain", callers), median("tls", callers)
        for mode, r in (("plaintext", plain), ("mTLS", tls)):
            print(
                f"{callers:>7} {mode:>9} {r.calls_per_s:>10.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f}"
            )
        ratios = (
            f"{tls.calls_per_s / plain.calls_per_s:>10.2f} "
            f"{tls.p50_ms / plain.p50_ms:>8.2f} {tls.p99_ms / plain.p99_ms:>8.2f}"
        )
        print(f"{callers:>7} {'ratio':>9} {ratios}   (TLS / plaintext)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--serve", choices=("plain", "tls"), help=argparse.SUPPRESS)
    parser.add_argument("--pki", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(serve(args.pki, args.serve))
        return
    with tempfile.TemporaryDirectory(prefix="rpc-bench-") as tmp:
        pki = make_pki(Path(tmp))
        pki.issue("server", "server")
        pki.issue("client", "client")
        if shutil.which("taskset"):
            os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
        uvloop.run(measure(args, tmp))


if __name__ == "__main__":
    main()
