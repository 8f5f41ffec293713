"""The fault suite's cluster: three server agents and one client agent, real processes.

Job: start them, each its own "host" with a data dir, find the leader, and do
to one host at a time what the nemesis asks: kill -9 and restart on the same
data dir, SIGSTOP and SIGCONT, and — where network namespaces can be made —
cut its cluster link and mend it.

Two networks, chosen at start:
- namespaces (root and iproute2's `ip`), built as
  tests/integration/test_partition_netns.py builds them: a hub namespace
  holds a bridge, the cluster network (10.78.0.0/24: gossip and RPC); each host
  is a namespace joined to it by a veth pair and has a /30 management link to
  the root namespace on which its HTTP API listens, so the harness reaches
  every host, a cut-off one included. A partition sets the hub end of a host's
  cluster veth down: its packets and those sent to it are dropped silently.
- loopback (anywhere): host i on 127.0.0.<base+i> for gossip, RPC and HTTP.
  Partitions are impossible there; `partition_note` says why they were skipped.

Agents run as tests/integration/test_cluster.py runs them: `proconsul agent`
with the "local" gossip profile, `performance { raft_multiplier = 1 }`,
autopilot's server_stabilization_time at 2 s, bootstrap_expect = 3, retry-join
of every other host; no TLS (the faults, not the handshakes, are under test
here). "Healthy" means every host up and connected, one leader named by all,
and three voters in the Raft configuration.

Rules: a host keeps its addresses, ports and data dir across restarts (the Raft
configuration holds the server address); each incarnation logs to its own file;
every wait has a deadline; `close` resumes, kills and removes everything this
object made — processes by their own pid, namespaces and links by their
random-tagged names — also after a failure. Traffic goes only to loopback
addresses and to the namespaces' own addresses.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.agent_process import free_gossip_port, free_port, proconsul_cmd
from tests.netns import Namespaces, ip

SERVERS = ("s0", "s1", "s2")
CLIENT = "c0"
CLUSTER_NET = "10.78.0"
START_DEADLINE_S = 30.0
STATUS_TIMEOUT_S = 1.0


@dataclass
class Host:
    name: str
    server: bool
    ip: str  # gossip and RPC bind here
    http_ip: str
    http_port: int
    serf_port: int
    server_port: int  # 0 on the client
    data_dir: Path
    netns: str | None = None
    hub_port: str | None = None  # the hub's end of its cluster veth (namespaces only)
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)
    frozen: bool = False
    cut: bool = False

    @property
    def raft_addr(self) -> str:
        return f"{self.ip}:{self.server_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http_ip}:{self.http_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout_s: float = STATUS_TIMEOUT_S) -> tuple[int, bytes]:
        """(status, body); OSError when no complete answer came."""
        req = urllib.request.Request(self.url + path)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except http.client.HTTPException as exc:  # a torn answer: a dying agent
            raise ConnectionError(f"{self.name}: {exc!r}") from None


def namespaces_unavailable() -> str | None:
    """Why partitions cannot run here, or None when they may."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's `ip`"
    return None


class ChaosCluster:
    """Hosts s0-s2 (servers) and c0 (client); not started until `start_all`."""

    def __init__(self, tmp: Path, *, base: int, want_partitions: bool = True) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.netns: Namespaces | None = None
        self.partition_note = ""
        names = [*SERVERS, CLIENT]
        if want_partitions:
            self.partition_note = namespaces_unavailable() or ""
            if not self.partition_note:
                netns = Namespaces("pch", "pq", CLUSTER_NET, "10.214")
                self.netns = netns
                try:
                    netns.probe()
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    self.partition_note = f"cannot create a network namespace with a bridge: {exc}"
                    netns.close()
                    self.netns = None
        else:
            self.partition_note = "partitions not asked for"
        self.hosts: list[Host] = []
        if self.netns is not None:
            mgmt = self.netns.free_management_prefix()
            for i, name in enumerate(names):
                netns, cluster_ip, http_ip, hub_end = self.netns.add_host(i, mgmt)
                # Every namespace has its own port space: Consul's default ports serve.
                host = Host(name, name in SERVERS, cluster_ip, http_ip, 8500, 8301, 0, tmp / name)
                host.server_port = 8300 if host.server else 0
                host.netns, host.hub_port = netns, hub_end
                self.hosts.append(host)
        else:
            for i, name in enumerate(names):
                addr = f"127.0.0.{base + i}"
                server_port = free_port(addr) if name in SERVERS else 0
                host = Host(
                    name,
                    name in SERVERS,
                    addr,
                    addr,
                    free_port(addr),
                    free_gossip_port(addr),
                    server_port,
                    tmp / name,
                )
                self.hosts.append(host)

    @property
    def partitions(self) -> bool:
        return self.netns is not None

    @property
    def servers(self) -> list[Host]:
        return [h for h in self.hosts if h.server]

    def __getitem__(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def by_raft_addr(self, address: str) -> Host | None:
        return next((h for h in self.servers if h.raft_addr == address), None)

    # ----- processes ---------------------------------------------------------------------

    def command(self, host: Host) -> list[str]:
        argv = [
            "-node",
            host.name,
            "-bind",
            host.ip,
            "-client",
            host.http_ip,
            "-http-port",
            str(host.http_port),
            "-serf-lan-port",
            str(host.serf_port),
            "-dns-port",
            "-1",
            "-grpc-port",
            "-1",
            "-data-dir",
            str(host.data_dir),
            "-retry-interval",
            "1s",
            "-log-level",
            "info",
            "-hcl",
            'gossip_lan { profile = "local" }',
        ]
        if host.server:
            argv += ["-server", "-bootstrap-expect", str(len(SERVERS))]
            argv += ["-server-port", str(host.server_port)]
            argv += ["-hcl", "performance { raft_multiplier = 1 }"]
            # As test_cluster.py: a returning server is a voter again soon.
            argv += ["-hcl", 'autopilot { server_stabilization_time = "2s" }']
        for other in self.hosts:
            if other is not host:
                argv += ["-retry-join", f"{other.ip}:{other.serf_port}"]
        command = proconsul_cmd("agent", *argv)
        if host.netns is not None:
            # `ip netns exec` execs the command, so the pid is the agent's.
            command = ["ip", "netns", "exec", host.netns, *command]
        return command

    def start(self, host: Host) -> None:
        log_path = self.tmp / f"{host.name}-{len(host.logs) + 1}.log"
        host.logs.append(log_path)
        with open(log_path, "wb") as log_file:  # the child keeps its own descriptor
            host.proc = subprocess.Popen(
                self.command(host), stdout=log_file, stderr=subprocess.STDOUT, cwd=self.tmp
            )
        host.frozen = False

    def wait_ready(self, host: Host, deadline_s: float = START_DEADLINE_S) -> None:
        """Until its HTTP API answers (a client that knows no server yet answers 500)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if host.proc is None or host.proc.poll() is not None:
                raise AssertionError(f"{host.name} exited; see {host.logs[-1]}")
            try:
                host.get("/v1/status/leader")
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{host.name} did not answer within {deadline_s}s")

    def start_all(self) -> None:
        for host in self.hosts:
            self.start(host)
        for host in self.hosts:
            self.wait_ready(host)
        self.wait_healthy(START_DEADLINE_S)

    def kill(self, host: Host) -> None:
        assert host.proc is not None
        host.proc.send_signal(signal.SIGKILL)
        host.proc.wait(timeout=10)
        host.frozen = False

    def restart(self, host: Host) -> None:
        self.start(host)
        self.wait_ready(host)

    def freeze(self, host: Host) -> None:
        assert host.proc is not None
        host.frozen = True
        host.proc.send_signal(signal.SIGSTOP)

    def thaw(self, host: Host) -> None:
        assert host.proc is not None
        host.proc.send_signal(signal.SIGCONT)
        host.frozen = False

    def cut_off(self, host: Host) -> None:
        assert self.netns is not None and host.hub_port is not None
        host.cut = True
        ip("-n", self.netns.hub, "link", "set", host.hub_port, "down")

    def mend(self, host: Host) -> None:
        assert self.netns is not None and host.hub_port is not None
        ip("-n", self.netns.hub, "link", "set", host.hub_port, "up")
        host.cut = False

    def heal_all(self) -> None:
        """Undo every fault still in place: resume, reconnect, restart."""
        for host in self.hosts:
            if host.frozen and host.running():
                self.thaw(host)
            if host.cut:
                self.mend(host)
        for host in self.hosts:
            if not host.running():
                self.restart(host)

    # ----- leadership --------------------------------------------------------------------

    def leader_view(self, host: Host) -> str:
        status, body = host.get("/v1/status/leader")
        if status != 200:
            raise RuntimeError(f"{host.name}: /v1/status/leader answered {status} {body!r}")
        return str(json.loads(body))

    def agreed_leader(self, among: Sequence[Host]) -> Host | None:
        """The server every one of `among` names, if they agree on a reachable one."""
        try:
            views = {self.leader_view(h) for h in among}
        except (OSError, RuntimeError, ValueError):
            return None
        if len(views) != 1:
            return None
        leader = self.by_raft_addr(views.pop())
        if leader is None or leader.frozen or leader.cut or not leader.running():
            return None
        return leader

    def voters(self, leader: Host) -> list[str]:
        """The voters of the Raft configuration, by host name, as `leader` has it."""
        status, body = leader.get("/v1/operator/raft/configuration")
        if status != 200:
            return []
        rows = json.loads(body)["Servers"]
        return sorted(row["Node"] for row in rows if row["Voter"])

    def wait_healthy(self, deadline_s: float) -> Host:
        """Every host up and connected, all four agreeing on one leader, and all
        three servers voters again (autopilot removes a server gossip marked
        failed, during a long partition say, and re-adds it as a non-voter
        first: a fault on a two-voter cluster would cost quorum at once)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            up = all(h.running() and not h.frozen and not h.cut for h in self.hosts)
            leader = self.agreed_leader(self.hosts) if up else None
            try:
                if leader is not None and self.voters(leader) == list(SERVERS):
                    return leader
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        views = {}
        for h in self.hosts:
            try:
                views[h.name] = self.leader_view(h)
            except (OSError, RuntimeError, ValueError) as exc:
                views[h.name] = f"<{exc}>"
        raise AssertionError(f"cluster not healthy within {deadline_s}s; leader views {views}")

    # ----- the end -----------------------------------------------------------------------

    def close(self) -> None:
        for host in self.hosts:
            proc = host.proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a stopped process must not linger
                proc.send_signal(signal.SIGKILL)  # nothing left to check: be quick
                proc.wait(timeout=10)
        if self.netns is not None:
            self.netns.close()
