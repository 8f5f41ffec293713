"""Three server agents, each in its own network namespace, cut apart and healed for real.

Job: check what a network partition does to a real cluster. The side without
a quorum refuses writes (an error, never an acknowledgement), the majority
keeps or elects a leader and accepts writes, and once the network heals the
cut-off server catches up, gossip sees every server alive again and the
cluster has exactly one leader. Run once with a follower cut off and once
with the leader cut off. Agent logs are kept in the test's tmp dir.

Topology (root only; the module skips without root or without `ip netns`):
- a hub namespace holds a bridge; each server namespace joins it through a
  veth pair. That is the cluster network (10.77.0.0/24): gossip and Raft.
- each server namespace also has a /30 veth link to the root namespace, the
  management network, where its HTTP API listens. So this process reaches
  every agent, the cut-off one included, with plain urllib.
A partition sets the hub end of a server's cluster veth down: its packets to
the peers and theirs to it are dropped silently, as when a cable is pulled.

Names carry a random tag so concurrent runs do not collide; the fixture
finalizer stops the agents and deletes every namespace and link even when a
test fails. Waits poll with deadlines; nothing sleeps blindly.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.agent_process import AgentProcess, proconsul_cmd, wait_for
from tests.netns import Namespaces, ip

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2's `ip`",
)

CLUSTER_NET = "10.77.0"
# Every namespace has its own port space, so Consul's default ports serve.
HTTP_PORT = 8500
SERF_PORT = 8301
SERVER_PORT = 8300
START_DEADLINE_S = 30.0
DEADLINE_S = 20.0
# raft_multiplier 1: a follower gives up on a silent leader after 1-2 s and
# runs a pre-vote and a vote round; a leader without a quorum steps down after
# its 0.5 s lease. The rest is slack for a loaded 2-CPU machine.
ELECTION_BOUND_S = 10.0
# A write reaching a server that knows no leader is held for rpc_hold_timeout
# (7 s) and then refused with "No cluster leader"; this covers it with slack.
MINORITY_WRITE_TIMEOUT_S = 15.0
# After a heal the cut-off server hears from the leader on a fresh connection:
# the RPC client drops one whose peer stopped acknowledging (rpc/client.py,
# DEAD_PEER_TIMEOUT_S = 10 s) and the Raft sender redials within its 1 s
# backoff. Without that the kernel's retransmit backoff (minutes, for long
# partitions) decided when the leader's messages got through.
CATCH_UP_DEADLINE_S = 15.0


@dataclass
class Server:
    name: str
    netns: str
    cluster_ip: str
    http_ip: str
    hub_port: str  # the hub's end of this server's cluster veth: down = cut off
    data_dir: Path
    agent: AgentProcess | None = None

    @property
    def raft_addr(self) -> str:
        return f"{self.cluster_ip}:{SERVER_PORT}"

    @property
    def running(self) -> AgentProcess:
        assert self.agent is not None, f"{self.name} is not running"
        return self.agent


class Lab:
    """The namespaces, links and agents of one run; `close` undoes whatever was made."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.net = Namespaces("pcp", "pc", CLUSTER_NET, "10.213")
        self.servers: list[Server] = []

    def probe(self) -> None:
        """The first steps, whose failure means this machine cannot host the test."""
        self.net.probe()

    def build(self) -> None:
        mgmt = self.net.free_management_prefix()
        for i in range(3):
            netns, cluster_ip, http_ip, hub_end = self.net.add_host(i, mgmt)
            self.servers.append(
                Server(f"s{i}", netns, cluster_ip, http_ip, hub_end, self.tmp_path / f"s{i}")
            )

    def start(self, server: Server) -> None:
        joins: list[str] = []
        for other in self.servers:
            if other is not server:
                joins += ["-retry-join", f"{other.cluster_ip}:{SERF_PORT}"]
        command = proconsul_cmd(
            "agent",
            "-server",
            "-bootstrap-expect",
            "3",
            "-node",
            server.name,
            "-bind",
            server.cluster_ip,
            "-client",
            server.http_ip,
            "-http-port",
            str(HTTP_PORT),
            "-dns-port",
            "-1",
            "-grpc-port",
            "-1",
            "-data-dir",
            str(server.data_dir),
            "-retry-interval",
            "1s",
            "-hcl",
            'gossip_lan { profile = "local" }',
            "-hcl",
            "performance { raft_multiplier = 1 }",
            *joins,
        )
        log_path = self.tmp_path / f"{server.name}.log"
        with open(log_path, "wb") as log_file:  # the child keeps its own descriptor
            # `ip netns exec` execs the command, so the pid is the agent's.
            proc = subprocess.Popen(
                ["ip", "netns", "exec", server.netns, *command],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.tmp_path,
            )
        server.agent = AgentProcess(proc, HTTP_PORT, log_path, host=server.http_ip)

    def start_all(self) -> None:
        for server in self.servers:
            self.start(server)
        for server in self.servers:
            agent = server.running

            def ready(agent: AgentProcess = agent) -> bool:
                if agent.proc.poll() is not None:
                    raise AssertionError(f"agent exited:\n{agent.log_text()}")
                status, _, _ = agent.request("GET", "/v1/status/leader", timeout_s=1.0)
                return status == 200

            wait_for(ready, START_DEADLINE_S)

    def cut(self, server: Server) -> None:
        ip("-n", self.net.hub, "link", "set", server.hub_port, "down")

    def heal(self, server: Server) -> None:
        ip("-n", self.net.hub, "link", "set", server.hub_port, "up")

    def by_raft_addr(self, address: str) -> Server | None:
        return next((s for s in self.servers if s.raft_addr == address), None)

    def close(self) -> None:
        for server in self.servers:
            agent = server.agent
            if agent is not None and agent.proc.poll() is None:
                agent.signal(signal.SIGKILL)  # nothing left to check; be quick
                agent.proc.wait(timeout=10)
        self.net.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("partition"))
    try:
        try:
            lab.probe()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot create a network namespace with a bridge: {exc}")
        lab.build()
        lab.start_all()
        agreed_leader(lab, lab.servers, START_DEADLINE_S)
        yield lab
    finally:
        lab.close()


# ----- reading the cluster ---------------------------------------------------------------


def leader_view(server: Server) -> str:
    """The Raft address `server` believes leads ("" for none)."""
    status, _, body = server.running.request("GET", "/v1/status/leader", timeout_s=2.0)
    if status != 200:
        raise RuntimeError(f"{server.name}: /v1/status/leader answered {status} {body!r}")
    return str(json.loads(body))


def agreed_leader(
    lab: Lab, group: Sequence[Server], deadline_s: float, other_than: str = ""
) -> Server:
    """The member of `group` that every member of `group` reports as leader."""

    def agreed() -> Server | None:
        views = {leader_view(s) for s in group}
        if len(views) != 1:
            return None
        (address,) = views
        leader = lab.by_raft_addr(address)
        if leader is None or leader not in group or address == other_than:
            return None
        return leader

    try:
        return wait_for(agreed, deadline_s)
    except AssertionError as exc:
        views = {s.name: safe_leader_view(s) for s in lab.servers}
        raise AssertionError(
            f"no agreed leader in {deadline_s}s; views {views}; logs in {lab.tmp_path}"
        ) from exc


def safe_leader_view(server: Server) -> str:
    try:
        return leader_view(server)
    except (OSError, RuntimeError) as exc:
        return f"<{exc}>"


def assert_exactly_one_leader(lab: Lab) -> Server:
    """All three agree on one leader, and each one's Raft configuration says the same."""
    leader = agreed_leader(lab, lab.servers, DEADLINE_S)
    for server in lab.servers:
        rows = server.running.get_json("/v1/operator/raft/configuration")["Servers"]
        assert sorted(row["Address"] for row in rows) == sorted(s.raft_addr for s in lab.servers)
        assert all(row["Voter"] for row in rows), (server.name, rows)
        flagged = [row["Address"] for row in rows if row["Leader"]]
        assert flagged == [leader.raft_addr], (server.name, rows)
    return leader


def kv_put(server: Server, key: str, value: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Status and body of a KV PUT; (0, reason) when no answer came in time."""
    try:
        status, _, body = server.running.request("PUT", f"/v1/kv/{key}", value, timeout_s=timeout_s)
    except OSError as exc:  # timeouts and refused connections alike
        return 0, repr(exc).encode()
    return status, body


def assert_written(server: Server, key: str, value: str) -> None:
    status, body = kv_put(server, key, value)
    assert (status, body) == (200, b"true"), (server.name, key, status, body)


def assert_refused(server: Server, key: str) -> None:
    """A write to a server without a quorum gets an error, never an acknowledgement."""
    status, body = kv_put(server, key, "lost", MINORITY_WRITE_TIMEOUT_S)
    assert status != 200, (server.name, key, status, body)
    # Consul's answer when no leader is reachable within rpc_hold_timeout.
    assert (status, body) == (500, b"No cluster leader"), (server.name, status, body)


def stale_value(server: Server, key: str) -> str | None:
    """`key` as `server` itself has it (`?stale` answers from its own store)."""
    status, _, body = server.running.request("GET", f"/v1/kv/{key}?stale", timeout_s=2.0)
    if status == 404:
        return None
    assert status == 200, (server.name, status, body)
    return base64.b64decode(json.loads(body)[0]["Value"]).decode()


def wait_caught_up(server: Server, written: dict[str, str]) -> None:
    def caught_up() -> bool:
        return all(stale_value(server, k) == v for k, v in written.items())

    wait_for(caught_up, CATCH_UP_DEADLINE_S)


def wait_all_alive(lab: Lab) -> None:
    """Every server's gossip sees all three alive again."""

    def alive() -> bool:
        for server in lab.servers:
            rows = server.running.get_json("/v1/agent/members")
            if sorted(row["Name"] for row in rows if row["Status"] == 1) != ["s0", "s1", "s2"]:
                return False
        return True

    wait_for(alive, DEADLINE_S)


# ----- the tests, in order on one cluster -----------------------------------------------


def test_connected_cluster_has_one_leader_and_replicates(lab: Lab) -> None:
    assert_exactly_one_leader(lab)
    written = {f"net/connected/{s.name}": s.name for s in lab.servers}
    for server in lab.servers:  # followers forward to the leader
        assert_written(server, f"net/connected/{server.name}", server.name)
    for server in lab.servers:
        wait_caught_up(server, written)


def test_cut_off_follower_refuses_writes_and_catches_up(lab: Lab) -> None:
    leader = assert_exactly_one_leader(lab)
    cut = next(s for s in lab.servers if s is not leader)
    majority = [s for s in lab.servers if s is not cut]
    written: dict[str, str] = {}
    lab.cut(cut)
    try:
        # The follower hears no leader any more and gives up on it.
        wait_for(lambda: leader_view(cut) == "", ELECTION_BOUND_S)
        # A ?stale read still answers from its own store, and says no leader is known.
        status, headers, _ = cut.running.request("GET", "/v1/kv/net/none?stale", timeout_s=2.0)
        assert (status, headers["X-Consul-KnownLeader"]) == (404, "false"), headers
        assert int(headers["X-Consul-LastContact"]) > 0
        assert_refused(cut, "net/follower/lost")
        # Its failed campaigns disturb nobody: the majority keeps its leader.
        assert agreed_leader(lab, majority, DEADLINE_S) is leader
        for server in majority:
            key = f"net/follower/{server.name}"
            assert_written(server, key, server.name)
            written[key] = server.name
        assert stale_value(cut, next(iter(written))) is None  # it really is cut off
    finally:
        lab.heal(cut)
    wait_caught_up(cut, written)
    wait_all_alive(lab)
    # Pre-vote and leader stickiness: the returning follower deposes no one.
    assert assert_exactly_one_leader(lab) is leader
    for server in lab.servers:
        assert stale_value(server, "net/follower/lost") is None, server.name


def test_cut_off_leader_steps_down_majority_elects_and_it_catches_up(lab: Lab) -> None:
    old = assert_exactly_one_leader(lab)
    majority = [s for s in lab.servers if s is not old]
    written: dict[str, str] = {}
    lab.cut(old)
    try:
        new = agreed_leader(lab, majority, ELECTION_BOUND_S, other_than=old.raft_addr)
        # Without a quorum the old leader's lease runs out and it stops leading.
        wait_for(lambda: leader_view(old) != old.raft_addr, ELECTION_BOUND_S)
        wait_for(lambda: "cluster leadership lost" in old.running.log_text(), DEADLINE_S)
        assert_refused(old, "net/leader/lost")
        for server in majority:
            key = f"net/leader/{server.name}"
            assert_written(server, key, server.name)
            written[key] = server.name
        assert stale_value(old, next(iter(written))) is None
    finally:
        lab.heal(old)
    wait_caught_up(old, written)
    wait_all_alive(lab)
    assert assert_exactly_one_leader(lab) is new
    # Nothing the minority was asked to write ever shows up.
    for server in lab.servers:
        assert stale_value(server, "net/leader/lost") is None, server.name
