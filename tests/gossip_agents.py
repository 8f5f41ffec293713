"""Pools of real gossiping agents, each on its own loopback address, for tests and benches.

Job: start `proconsul agent` processes named n0, n1, … on 127.0.0.<base+i>
(their own "machines"), each with a data dir, a serf port that stays the same
across restarts, the fast "local" gossip profile and optional encryption, and
read what each one sees of the pool.

Rules: waits go through `wait_for` with deadlines; nothing sleeps blindly.
A restarted agent keeps its name, address, serf port and data dir.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proconsul.gossip import GossipParams, lan, local
from proconsul.gossip.params import suspicion_max_timeout, suspicion_min_timeout
from tests.agent_process import AgentProcess, free_gossip_port, start_agent, wait_for

STATUS = {1: "alive", 2: "leaving", 3: "left", 4: "failed"}
LEADER_DEADLINE_S = 10.0


@dataclass
class Member:
    name: str
    ip: str
    serf_port: int
    data_dir: Path
    args: list[str] = field(default_factory=list)
    agent: AgentProcess | None = None

    @property
    def serf_addr(self) -> str:
        return f"{self.ip}:{self.serf_port}"

    @property
    def running(self) -> AgentProcess:
        assert self.agent is not None, f"{self.name} is not running"
        return self.agent


def detection_bound(params: GossipParams, n: int) -> float:
    """Longest time, from the parameters, until every member marks a crashed one failed.

    Worst case: the crashed member is probed last in a round that was just
    reshuffled (two rounds of `n - 1` probes), the probe times out, and the
    suspicion runs its full Lifeguard maximum with no confirmations; plus a
    second of dissemination and scheduling slack on a loaded machine.
    """
    low = suspicion_min_timeout(params.suspicion_mult, n, params.probe_interval)
    high = suspicion_max_timeout(params.suspicion_max_timeout_mult, low)
    return 2 * (n - 1) * params.probe_interval + params.probe_timeout + high + 1.0


class GossipPool:
    """Agents n0..n{count-1}; n0 can be a server so member changes reach its catalog."""

    def __init__(
        self,
        tmp_path: Path,
        count: int,
        *,
        base: int,
        key: str | None = None,
        server_first: bool = False,
        extra: Sequence[str] = (),
        log_level: str = "info",
        profile: str = "local",
        seeds: Sequence[str] | None = None,
    ) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.tmp_path = tmp_path
        self.key = key
        self.params = local() if profile == "local" else lan()
        # Names every member retry-joins (all the others when None).
        self.seeds = list(seeds) if seeds is not None else None
        self.server_first = server_first
        self.members: list[Member] = []
        for i in range(count):
            ip = f"127.0.0.{base + i}"
            member = Member(f"n{i}", ip, free_gossip_port(ip), tmp_path / f"n{i}")
            member.args = [
                "-node",
                member.name,
                "-bind",
                ip,
                "-serf-lan-port",
                str(member.serf_port),
                "-data-dir",
                str(member.data_dir),
                "-hcl",
                f'gossip_lan {{ profile = "{profile}" }}',
                "-retry-interval",
                "1s",
                "-log-level",
                log_level,
                *extra,
            ]
            if server_first and i == 0:
                member.args += [
                    "-server",
                    "-bootstrap-expect",
                    "1",
                    "-hcl",
                    "performance { raft_multiplier = 1 }",
                ]
            self.members.append(member)

    def __getitem__(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def join_args(self, member: Member) -> list[str]:
        out: list[str] = []
        for other in self.members:
            if other is not member and (self.seeds is None or other.name in self.seeds):
                out += ["-retry-join", other.serf_addr]
        return out

    def start(
        self, member: Member, *args: str, key: str | None = None, join: bool = True
    ) -> AgentProcess:
        encrypt = key if key is not None else self.key
        argv = [*member.args, *(self.join_args(member) if join else []), *args]
        if encrypt:
            argv += ["-encrypt", encrypt]
        agent = start_agent(self.tmp_path, *argv, dev=False)
        member.agent = agent
        if self.server_first and member is self.members[0]:
            # A lone server elects itself; its catalog is readable once it leads.
            wait_for(lambda: agent.get_json("/v1/status/leader"), LEADER_DEADLINE_S)
        return agent

    def start_all(self) -> None:
        for member in self.members:
            self.start(member)

    def kill(self, member: Member) -> None:
        agent = member.running
        agent.signal(signal.SIGKILL)
        agent.proc.wait(timeout=10)

    def stop(self, member: Member) -> None:
        member.running.stop()

    def stop_all(self) -> None:
        for member in self.members:
            if member.agent is not None:
                member.agent.stop()

    def running(self) -> list[Member]:
        return [m for m in self.members if m.agent is not None and m.agent.proc.poll() is None]

    @staticmethod
    def view(member: Member) -> dict[str, str]:
        """Member name -> status word, as `member` sees the pool."""
        rows = member.running.get_json("/v1/agent/members")
        return {row["Name"]: STATUS.get(row["Status"], "?") for row in rows}

    def wait_statuses(
        self, expected: dict[str, str], deadline_s: float, viewers: Sequence[Member] | None = None
    ) -> float:
        """Until every viewer sees each named member in its expected status; returns seconds."""
        start = time.monotonic()
        watchers = list(viewers) if viewers is not None else self.running()

        def done() -> bool:
            for viewer in watchers:
                view = self.view(viewer)
                if any(view.get(name) != status for name, status in expected.items()):
                    return False
            return True

        try:
            wait_for(done, deadline_s, interval_s=0.05)
        except AssertionError as exc:
            views = {v.name: self.view(v) for v in watchers if v.agent is not None}
            message = f"expected {expected} within {deadline_s}s; views: {views}"
            raise AssertionError(message) from exc
        return time.monotonic() - start

    def all_alive(self, deadline_s: float = 15.0) -> None:
        self.wait_statuses({m.name: "alive" for m in self.members}, deadline_s)

    def failure_events(self) -> int:
        """`EventMemberFailed` lines in every log so far (a failure leaves a trace)."""
        total = 0
        for path in self.tmp_path.glob("agent-*.log"):
            total += path.read_text(errors="replace").count("EventMemberFailed")
        return total

    def metric(self, member: Member, name: str) -> float:
        gauges = member.running.get_json("/v1/agent/metrics")["Gauges"]
        for gauge in gauges:
            if gauge["Name"] == name:
                return float(gauge["Value"])
        return 0.0
