"""DNS benchmark: A queries for web.service.consul with 10 healthy instances.

Runs, in one go and one after the other, the dev agent and dnsmasq serving the
same ten A records from a hosts file; each server pinned to one CPU, dnsperf
(the load, a separate process) pinned to another. Rounds alternate between the
two so drift hits both. Prints queries/s (median of the rounds), average
latency under full load, p50/p99 latency at a fixed offered load (the same for
both: a tenth of the slower server's rate), and our/dnsmasq ratios (target: qps ratio >= 0.3).

Queries carry EDNS0 (dnsperf -e) so both servers return all ten records; the
agent's non-EDNS UDP answers would be cut to `udp_answer_limit` (3) records.

    .venv/bin/python bench/dns_bench.py [--seconds 10] [--rounds 3]

Needs dnsmasq, dnsperf and taskset (Debian: apt-get install -y dnsmasq dnsperf).
Installs nothing; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query

NAME = "web.service.consul"
INSTANCES = 10
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Load:
    qps: float
    avg_ms: float
    lost: int


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    p999_ms: float
    count: int


def free_port() -> int:
    # A port free for both TCP and UDP (the agent binds both).
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu is not None else argv


def wait_dns(port: int, want: int, deadline_s: float = 20.0) -> None:
    query = dns.message.make_query(NAME, "A", use_edns=True, payload=4096)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
            if reply.answer and len(reply.answer[0]) == want:
                return
        except (OSError, dns.exception.Timeout):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"DNS on port {port} did not return {want} records in {deadline_s}s")


def put(url: str, body: object) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def wait_http(url: str, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {deadline_s}s")


@contextmanager
def agent(cpu: str | None) -> Iterator[int]:
    http_port, dns_port = free_port(), free_port()
    argv = [sys.executable, "-m", "proconsul", "agent", "-dev", "-log-level", "warn"]
    argv += ["-http-port", str(http_port), "-dns-port", str(dns_port), "-grpc-port", "-1"]
    proc = subprocess.Popen(
        pinned(cpu, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO
    )
    try:
        base = f"http://127.0.0.1:{http_port}"
        wait_http(base + "/v1/status/leader")
        for i in range(INSTANCES):
            service = {"Name": "web", "ID": f"web-{i}", "Address": f"10.0.0.{i + 1}", "Port": 80}
            put(base + "/v1/agent/service/register", service)
        wait_dns(dns_port, INSTANCES)
        yield dns_port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def dnsmasq(cpu: str | None, workdir: Path) -> Iterator[int]:
    hosts = workdir / "hosts"
    hosts.write_text("".join(f"10.0.0.{i + 1} {NAME}\n" for i in range(INSTANCES)))
    port = free_port()
    argv = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll"]
    argv += [f"--addn-hosts={hosts}", f"--port={port}", "--listen-address=127.0.0.1"]
    argv += ["--bind-interfaces", "--local-ttl=0", "--pid-file=", "--log-facility=-"]
    if os.geteuid() == 0:
        argv.append("--user=root")  # dnsmasq would otherwise drop to "nobody"
    proc = subprocess.Popen(pinned(cpu, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_dns(port, INSTANCES)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def dnsperf(
    port: int, qfile: Path, seconds: float, cpu: str | None, rate: int | None = None
) -> subprocess.CompletedProcess[str]:
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-e"]
    argv += ["-l", str(seconds), "-q", "100", "-t", "2"]
    if rate is not None:
        argv += ["-Q", str(rate), "-v"]
    return subprocess.run(pinned(cpu, argv), capture_output=True, text=True, check=True)


def load(port: int, qfile: Path, seconds: float, cpu: str | None) -> Load:
    out = dnsperf(port, qfile, seconds, cpu).stdout
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    avg = float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    return Load(qps, avg * 1000, lost)


def latency(port: int, qfile: Path, seconds: float, cpu: str | None, rate: int) -> Latency:
    out = dnsperf(port, qfile, seconds, cpu, rate).stdout
    samples = sorted(float(m) * 1000 for m in re.findall(r"^> \S+ \S+ \S+ ([\d.]+)$", out, re.M))
    if not samples:
        raise RuntimeError("dnsperf -v printed no per-query latencies")

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p * len(samples)))]

    return Latency(pct(0.50), pct(0.99), pct(0.999), len(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--load-cpu", default="1")
    args = parser.parse_args()

    missing = [tool for tool in ("dnsmasq", "dnsperf", "taskset") if not shutil.which(tool)]
    if missing:
        print(f"missing: {', '.join(missing)}. Install with:")
        print("  apt-get update && apt-get install -y dnsmasq dnsperf util-linux")
        raise SystemExit(2)
    cpus = os.cpu_count() or 1
    server_cpu: str | None = args.server_cpu
    load_cpu: str | None = args.load_cpu
    if cpus < 2:
        print("only one CPU: not pinning; the load generator competes with the server")
        server_cpu = load_cpu = None

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        qfile = workdir / "queries"
        qfile.write_text(f"{NAME} A\n")
        results: dict[str, list[Load]] = {"proconsul": [], "dnsmasq": []}
        with agent(server_cpu) as ours, dnsmasq(server_cpu, workdir) as theirs:
            ports = {"proconsul": ours, "dnsmasq": theirs}
            for port in ports.values():
                load(port, qfile, 1.0, load_cpu)  # warm up
            for _ in range(args.rounds):
                for name, port in ports.items():
                    results[name].append(load(port, qfile, args.seconds, load_cpu))
            qps = {name: statistics.median(r.qps for r in runs) for name, runs in results.items()}
            # Latency at the same offered load for both, a tenth of the slower one's
            # rate: dnsperf -v prints a line per query, which costs it CPU too.
            rate = int(min(qps.values()) / 10)
            lat = {
                name: latency(port, qfile, min(args.seconds, 5.0), load_cpu, rate)
                for name, port in ports.items()
            }

    print(f"A {NAME}, {INSTANCES} instances, EDNS0, server on CPU {server_cpu}, ")
    print(f"dnsperf on CPU {load_cpu}, {args.rounds} x {args.seconds:g}s rounds\n")
    print(f"{'':12}{'qps':>12}{'avg ms':>10}{'lost':>8}   p50/p99/p99.9 ms at {rate} qps")
    for name in ("proconsul", "dnsmasq"):
        runs = results[name]
        avg = statistics.median(r.avg_ms for r in runs)
        lost = sum(r.lost for r in runs)
        la = lat[name]
        print(
            f"{name:12}{qps[name]:>12,.0f}{avg:>10.3f}{lost:>8}   "
            f"{la.p50_ms:.3f} / {la.p99_ms:.3f} / {la.p999_ms:.3f}"
        )
    ratio = qps["proconsul"] / qps["dnsmasq"]
    p99_ratio = lat["proconsul"].p99_ms / lat["dnsmasq"].p99_ms
    print(f"\nqps ratio proconsul/dnsmasq: {ratio:.2f} (target >= 0.30)")
    print(f"p99 ratio proconsul/dnsmasq: {p99_ratio:.2f} (lower is better)")


if __name__ == "__main__":
    main()
