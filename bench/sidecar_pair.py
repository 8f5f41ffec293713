"""What a sidecar pair costs: web's and api's built-in proxies against direct calls and HAProxy.

Three paths to the same backend, in the same run, rounds alternating:
- direct: wrk -> backend;
- proconsul: wrk -> web's sidecar (upstream listener, plaintext) -> mTLS ->
  api's sidecar (public listener, RBAC allows web) -> backend; two
  `python -m proconsul.proxy` processes fed by an in-process xDS server with
  hand-built snapshots (tests/proxy_helpers.py, a real mesh CA);
- haproxy: wrk -> HAProxy A -> mTLS (the same CA and leaves) -> HAProxy B ->
  backend (Debian's haproxy, one thread each, the C reference).
Each in L4 (tcp_proxy / `mode tcp`) and L7 (http_connection_manager /
`mode http`), on a small response (12 bytes) and a 64 KiB one. The backend
is a uvloop protocol answering a fixed response (far faster than either
pair). Servers run on CPU 0, wrk on CPU 1.

Per setting: throughput with `--connections` keep-alive connections, and
latency with one connection (p50/p99 of requests one after another: the
time a pair adds, without queueing). Printed: req/s, p50 and p99 per path,
the latency the pair adds over direct, throughput as a ratio to HAProxy, the
CPU both proxies use per 1k req/s (vCPU) during the throughput run, and
their RSS.

    .venv/bin/python bench/sidecar_pair.py [--seconds 5] [--rounds 1] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from _harness import (  # noqa: E402
    WrkResult,
    cpu_seconds,
    free_port,
    parse_wrk,
    pinned,
    rss_mb,
    wait_http,
)

SMALL = b"hello world\n"
BIG = bytes(range(256)) * 256  # 64 KiB
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SERVER_CPU, LOAD_CPU = "0", "1"


# ------------------------------------------------------------------ backend


def backend_main(port: int) -> None:
    """A keep-alive HTTP/1.1 server: GET /big gets 64 KiB, anything else 12 bytes."""
    import uvloop

    def response(body: bytes) -> bytes:
        head = f"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n\r\n"
        return head.encode() + body

    small, big = response(SMALL), response(BIG)

    class Backend(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
                big_one = head.startswith(b"GET /big")
                self.transport.write(big if big_one else small)  # type: ignore[attr-defined]

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Backend, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    uvloop.run(serve())


# ---------------------------------------------------------------- processes


def spawn(cmd: list[str], cpu: str = SERVER_CPU) -> subprocess.Popen[bytes]:
    return subprocess.Popen(pinned(cmd, cpu), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_port(port: int, deadline_s: float = 20.0) -> None:
    import socket

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wrk(url: str, seconds: int, connections: int) -> WrkResult:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    out = subprocess.run(pinned(cmd, LOAD_CPU), capture_output=True, text=True, check=True)
    return parse_wrk(out.stdout)


# ------------------------------------------------------------ the xDS side


class XdsThread:
    """The agent's real xDS server with hand-built snapshots, on its own loop."""

    def __init__(self) -> None:
        from tests.proxy_helpers import Mesh

        self.loop = asyncio.new_event_loop()
        self.mesh = Mesh()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self.mesh.start(), self.loop).result(10)

    def publish(self, snap: object) -> None:
        self.loop.call_soon_threadsafe(self.mesh.publish, snap)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.mesh.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class Pair:
    """Two proxy processes (or two HAProxies) and the URL wrk calls."""

    url: str
    procs: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def proconsul_pair(xds: XdsThread, mode: str, backend: int) -> Pair:
    from tests.proxy_helpers import Ports, api_snapshot, web_snapshot
    from tests.xds_helpers import entries, intentions, mesh_ca

    ca = mesh_ca()
    ports = Ports.pick(api_local=backend)
    chain = entries({"Kind": "service-defaults", "Name": "api", "Protocol": "http"})
    xds.publish(web_snapshot(ca, ports, protocol=mode, chain=chain if mode == "http" else None))
    allow = intentions("api", {"Name": "web", "Action": "allow"})
    xds.publish(api_snapshot(ca, ports.api_public, backend, protocol=mode, ixns=allow))
    procs = []
    for proxy_id, service in (("web-sidecar-proxy", "web"), ("api-sidecar-proxy", "api")):
        admin = free_port()
        cmd = [sys.executable, "-m", "proconsul.proxy", "-proxy-id", proxy_id, "-service", service]
        cmd += ["-grpc-addr", xds.mesh.address, "-admin-bind", f"127.0.0.1:{admin}"]
        cmd += ["-log-level", "warn"]
        procs.append(spawn(cmd))
        wait_http(f"http://127.0.0.1:{admin}/ready")
    url = f"http://127.0.0.1:{ports.web_upstream}/"
    wait_http(url)
    return Pair(url, procs)


def haproxy_pair(tmp: Path, mode: str, backend: int) -> Pair:
    from tests.xds_helpers import mesh_ca

    ca = mesh_ca()
    (tmp / "ca.pem").write_text(ca.cert_pem)
    for service in ("web", "api"):
        leaf = ca.issue(service)
        path = tmp / f"{service}.pem"
        path.write_text(leaf.cert_pem + leaf.key_pem)
        path.chmod(0o600)
    front, middle = free_port(), free_port()
    common = (
        "global\n  nbthread 1\n  tune.ssl.default-dh-param 2048\n"
        f"defaults\n  mode {mode}\n  timeout connect 5s\n  timeout client 60s\n"
        "  timeout server 60s\n"
    )
    reuse = "  http-reuse always\n" if mode == "http" else ""
    web = (
        common
        + f"frontend f\n  bind 127.0.0.1:{front}\n  default_backend b\n"
        + f"backend b\n{reuse}  server api 127.0.0.1:{middle} ssl crt {tmp / 'web.pem'}"
        + f" ca-file {tmp / 'ca.pem'} verify required\n"
    )
    api = (
        common
        + f"frontend f\n  bind 127.0.0.1:{middle} ssl crt {tmp / 'api.pem'}"
        + f" ca-file {tmp / 'ca.pem'} verify required\n  default_backend b\n"
        + f"backend b\n{reuse}  server app 127.0.0.1:{backend}\n"
    )
    procs = []
    for name, text in (("web", web), ("api", api)):
        config = tmp / f"haproxy-{name}-{mode}.cfg"
        config.write_text(text)
        procs.append(spawn([HAPROXY, "-db", "-f", str(config)]))
    wait_port(front)
    url = f"http://127.0.0.1:{front}/"
    wait_http(url)
    return Pair(url, procs)


# ---------------------------------------------------------------- the run


@dataclass
class Figures:
    throughput: list[WrkResult]
    latency: list[WrkResult]
    cpu_per_1k: list[float]  # vCPU of both proxies per 1k req/s
    rss_mb: list[float]  # both proxies, after the run


def measure(
    pair_url: str, pids: list[int], size: str, seconds: int, connections: int, out: Figures
) -> None:
    url = pair_url + ("big" if size == "64k" else "small")
    used = [cpu_seconds(p) for p in pids]
    started = time.monotonic()
    result = wrk(url, seconds, connections)
    elapsed = time.monotonic() - started
    if pids:
        busy = sum(cpu_seconds(p) for p in pids) - sum(used)
        out.cpu_per_1k.append(busy / elapsed / (result.requests_per_s / 1000))
        out.rss_mb.append(sum(rss_mb(p) for p in pids))
    out.throughput.append(result)
    out.latency.append(wrk(url, seconds, 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--modes", default="tcp,http")
    parser.add_argument("--sizes", default="small,64k")
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        backend_main(args.backend)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    backend = free_port()
    backend_proc = spawn([sys.executable, __file__, "--backend", str(backend)])
    wait_http(f"http://127.0.0.1:{backend}/")
    xds = XdsThread()
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-pair-"))
    print(f"load average before: {os.getloadavg()}")
    rows = []
    try:
        for mode in args.modes.split(","):
            pairs = {
                "direct": Pair(f"http://127.0.0.1:{backend}/", []),
                "proconsul": proconsul_pair(xds, mode, backend),
                "haproxy": haproxy_pair(tmp, mode, backend),
            }
            try:
                for size in args.sizes.split(","):
                    figures = {name: Figures([], [], [], []) for name in pairs}
                    for round_number in range(args.rounds):
                        order = list(pairs)
                        if round_number % 2:
                            order.reverse()
                        for name in order:
                            pair = pairs[name]
                            pids = [p.pid for p in pair.procs]
                            measure(
                                pair.url, pids, size, args.seconds, args.connections, figures[name]
                            )
                    rows.append((mode, size, figures))
            finally:
                for pair in pairs.values():
                    pair.stop()
    finally:
        xds.stop()
        backend_proc.terminate()
        backend_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}")
    report(rows, args.connections)


def report(rows: list[tuple[str, str, dict[str, Figures]]], connections: int) -> None:
    print(
        f"\n{'mode':>4} {'size':>5} {'path':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
        f"  {'1-conn p50':>10} {'p99':>7}  {'vCPU/1k':>7} {'RSS MB':>6}"
    )
    for mode, size, figures in rows:
        for name, f in figures.items():
            cpu = f"{median(f.cpu_per_1k):7.3f}" if f.cpu_per_1k else f"{'':>7}"
            rss = f"{median(f.rss_mb):6.1f}" if f.rss_mb else f"{'':>6}"
            print(
                f"{mode:>4} {size:>5} {name:>9} "
                f"{median(r.requests_per_s for r in f.throughput):8.0f} "
                f"{median(r.p50_ms for r in f.throughput):7.2f} "
                f"{median(r.p99_ms for r in f.throughput):7.2f}  "
                f"{median(r.p50_ms for r in f.latency):10.3f} "
                f"{median(r.p99_ms for r in f.latency):7.3f}  {cpu} {rss}"
            )
    print(f"\nadded over direct (one connection); throughput ratio at {connections} connections:")
    for mode, size, figures in rows:
        direct, ours, theirs = figures["direct"], figures["proconsul"], figures["haproxy"]

        def added(f: Figures, q: str, direct: Figures = direct) -> float:
            mine = median(getattr(r, q) for r in f.latency)
            return mine - median(getattr(r, q) for r in direct.latency)

        ratio = median(r.requests_per_s for r in ours.throughput) / median(
            r.requests_per_s for r in theirs.throughput
        )
        print(
            f"  {mode} {size:>5}: proconsul +{added(ours, 'p50_ms'):.3f} ms p50, "
            f"+{added(ours, 'p99_ms'):.3f} ms p99; haproxy +{added(theirs, 'p50_ms'):.3f} ms p50, "
            f"+{added(theirs, 'p99_ms'):.3f} ms p99; throughput proconsul/haproxy {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
