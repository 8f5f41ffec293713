"""Shared bench plumbing: start processes on free ports, wait for them, run wrk.

Benchmarks print figures and ratios; they assert nothing about speed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {deadline_s}s")


def http(method: str, url: str, body: Any = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return bytes(resp.read())


def start_dev_agent(cpu: str | None = "0") -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "proconsul", "agent", "-dev", "-http-port", str(port)]
    cmd += ["-dns-port", "-1", "-grpc-port", "-1", "-log-level", "warn"]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", cpu, *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/v1/status/leader")
    return proc, base


def pinned(cmd: list[str], cpu: str) -> list[str]:
    """`cmd` run on CPU `cpu` where taskset exists."""
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") else cmd


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(text)
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(
    url: str, seconds: int, connections: int, cpu: str | None = "1", threads: int = 1
) -> WrkResult:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", cpu, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    return WrkResult(rps, p50, p99)


# ----- server clusters and spread load (raft_failover.py, stale_reads.py) ----------------

if TYPE_CHECKING:
    from tests.gossip_agents import GossipPool, Member


def server_pool(tmp: Path, base: int, raft_multiplier: int, count: int = 3) -> GossipPool:
    """`count` server agents (bootstrap_expect = count) on 127.0.0.<base>..., not started.

    Each keeps its serf and server ports across restarts (the Raft configuration
    holds the server address); gossip uses the fast "local" profile.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.agent_process import free_port as free_port_on
    from tests.gossip_agents import GossipPool

    pool = GossipPool(tmp, count, base=base, log_level="warn")
    for member in pool.members:
        member.args += ["-server", "-bootstrap-expect", str(count)]
        member.args += ["-server-port", str(free_port_on(member.ip))]
        member.args += ["-hcl", f"performance {{ raft_multiplier = {raft_multiplier} }}"]
    return pool


def leader_view(member: Member, timeout_s: float = 1.0) -> str:
    """The server address `member` names as leader ("" for none)."""
    status, _, body = member.running.request("GET", "/v1/status/leader", timeout_s=timeout_s)
    if status != 200:
        raise RuntimeError(f"{member.name}: /v1/status/leader answered {status}")
    return str(json.loads(body))


def agreed_leader(members: list[Member], deadline_s: float, other_than: str = "") -> str:
    """The leader address every one of `members` names, once they agree on one."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            views = {leader_view(m) for m in members}
        except (OSError, RuntimeError):
            views = set()
        if len(views) == 1:
            (leader,) = views
            if leader and leader != other_than:
                return leader
        time.sleep(0.02)
    raise RuntimeError(f"no agreed leader among {[m.name for m in members]} in {deadline_s}s")


_SPREAD_LUA = """
-- One wrk thread per address, in order: all of a thread's connections go to it.
local next_thread = 1
function setup(thread)
  thread.addr = addrs[next_thread]
  next_thread = next_thread + 1
end
"""


def run_wrk_spread(
    urls: list[str], seconds: int, connections: int, cpu: str | None = "1"
) -> WrkResult:
    """wrk with one thread per URL (same path, other hosts); wrk merges the latencies."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    lines = ["local addrs = {}"]
    for url in urls:
        host, port = urllib.parse.urlsplit(url).netloc.rsplit(":", 1)
        lines.append(f'addrs[#addrs + 1] = wrk.lookup("{host}", "{port}")[1]')
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + _SPREAD_LUA)
    threads = len(urls)
    cmd = ["wrk", f"-t{threads}", f"-c{max(connections, threads)}", f"-d{seconds}s"]
    cmd += ["--latency", "-s", script.name, urls[0]]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", cpu, *cmd]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        Path(script.name).unlink()
    return parse_wrk(out)


def parse_wrk(out: str) -> WrkResult:
    """Requests/s, p50 and p99 from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    if "Non-2xx or 3xx responses" in out:
        # Errors answer fast: counting them as throughput would flatter the server.
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    errors = re.search(r"^\s+Socket errors:.*$", out, re.M)
    if errors is not None:
        print(f"wrk: {errors.group(0).strip()}", file=sys.stderr)
    return WrkResult(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)))


def run_wrk_script(
    url: str, seconds: int, connections: int, script: str, cpu: str | None = "1"
) -> WrkResult:
    """wrk with one thread, `connections` keep-alive connections and a Lua `script`
    (e.g. one that builds PUT requests); fails when any request did not answer 2xx/3xx."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", file.name, url]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", cpu, *cmd]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        Path(file.name).unlink()
    return parse_wrk(out)


def print_comparison(
    column: str,
    ours: tuple[str, list[WrkResult]],
    baseline: tuple[str, list[WrkResult]],
    ratio_label: str,
    target: float,
) -> None:
    """Median req/s, p50 and p99 of alternating wrk rounds, and the throughput ratio."""
    width = max(12, len(ours[0]) + 3, len(baseline[0]) + 3)
    print(f"{column:<{width}}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}   (medians)")
    for name, results in (ours, baseline):
        rps = median(r.requests_per_s for r in results)
        p50 = median(r.p50_ms for r in results)
        p99 = median(r.p99_ms for r in results)
        print(f"{name:<{width}}{rps:>10.0f}{p50:>10.2f}{p99:>10.2f}")
    ratio = median(r.requests_per_s for r in ours[1]) / median(
        r.requests_per_s for r in baseline[1]
    )
    print(f"throughput ratio {ratio_label}: {ratio:.2f} (target >= {target})")
