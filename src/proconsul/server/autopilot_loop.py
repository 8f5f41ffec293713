"""Autopilot on a server agent: runs server/autopilot.py's decisions on the Raft leader.

Job: `run()` is a leader duty (server/leader_duties.py): every round
(`ROUND_S`) while this server leads, gather the servers gossip
knows in this datacenter (tags role=consul, dc, id, port) and the leader's
Raft view (latest configuration, each follower's progress), let the pure
module compute health and the changes due, and make the first change through
RaftLog (add as non-voter, promote, remove). Also renders Consul's JSON for
`/v1/operator/autopilot/health`, `/state` and `/configuration`.

Rules:
- One membership change per round, each with a deadline; a failed change is
  logged and retried next round (the pure module asks for it again).
- Health since-times use the monotonic clock; only the JSON shows wall time.
- Health is kept only while leading: a new leader starts from scratch, so a
  promotion or a dead-server removal waits a full stabilization time again.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from proconsul.gossip import GossipCore, State
from proconsul.server.autopilot import (
    Action,
    AddServer,
    AutopilotConfig,
    ClusterHealth,
    LogProgress,
    Promote,
    RaftServer,
    RaftView,
    RemoveServer,
    SerfStatus,
    ServerMember,
    decide,
    evaluate,
)
from proconsul.structs.autopilot import AutopilotSettings
from proconsul.structs.duration import format_duration, parse_duration

if TYPE_CHECKING:
    from proconsul.config.schema import Autopilot
    from proconsul.server.raft_log import RaftLog

log = logging.getLogger("proconsul.agent")

ROUND_S = 0.5
CHANGE_TIMEOUT_S = 10.0

_SERF_STATUS = {
    State.ALIVE: SerfStatus.ALIVE,
    State.SUSPECT: SerfStatus.ALIVE,  # serf still reports a suspect member alive
    State.DEAD: SerfStatus.FAILED,
    State.LEFT: SerfStatus.LEFT,
}


def autopilot_config(block: Autopilot) -> AutopilotConfig:
    return AutopilotConfig(
        cleanup_dead_servers=block.cleanup_dead_servers,
        last_contact_threshold_s=float(block.last_contact_threshold),
        max_trailing_logs=block.max_trailing_logs,
        min_quorum=block.min_quorum,
        server_stabilization_time_s=float(block.server_stabilization_time),
    )


def server_members(core: GossipCore, datacenter: str) -> list[ServerMember]:
    """The servers of `datacenter` gossip knows, in any state (tags as in info.member)."""
    found: list[ServerMember] = []
    for member in core.members():
        tags = member.tags
        if (
            tags.get("role") == "consul"
            and tags.get("dc") == datacenter
            and tags.get("id")
            and tags.get("port", "").isdigit()
        ):
            found.append(
                ServerMember(
                    id=tags["id"],
                    name=member.name,
                    address=f"{member.addr[0]}:{tags['port']}",
                    status=_SERF_STATUS.get(member.state, SerfStatus.NONE),
                    version=tags.get("build", "").split(":", 1)[0],
                )
            )
    return found


def raft_view(raft: RaftLog) -> RaftView:
    status = raft.status()
    servers = tuple(
        RaftServer(s.id, s.address, s.voter) for s in raft.latest_configuration().servers
    )
    progress = {
        peer: LogProgress(p.last_contact_s, p.match_index, p.match_term)
        for peer, p in raft.follower_progress().items()
    }
    return RaftView(
        leader_id=raft.id,
        term=status.term,
        last_index=status.last_index,
        servers=servers,
        progress=progress,
        # Heard from at least once per heartbeat interval, plus a beat of jitter.
        contact_allowance_s=2 * raft.params.heartbeat_interval,
    )


def _wall_time(mono_s: float) -> str:
    """A monotonic instant as RFC 3339 UTC, like Go's time.Time in JSON."""
    wall = time.time() - (time.monotonic() - mono_s)
    stamp = datetime.datetime.fromtimestamp(wall, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".") + "Z"


def health_json(health: ClusterHealth) -> dict[str, Any]:
    """The body of `/v1/operator/autopilot/health` (Consul's OperatorHealthReply)."""
    return {
        "Healthy": health.healthy,
        "FailureTolerance": health.failure_tolerance,
        "Servers": [
            {
                "ID": s.id,
                "Name": s.name,
                "Address": s.address,
                "SerfStatus": s.serf_status.value,
                "Version": s.version,
                "Leader": s.leader,
                "LastContact": format_duration(s.last_contact_s or 0.0),
                "LastTerm": s.last_term,
                "LastIndex": s.last_index,
                "Healthy": s.healthy,
                "Voter": s.voter,
                "StableSince": _wall_time(s.stable_since_s),
            }
            for s in health.servers
        ],
    }


def state_json(health: ClusterHealth) -> dict[str, Any]:
    """The body of `/v1/operator/autopilot/state` (Consul's AutopilotState).

    Without redundancy zones (Enterprise) the optimistic tolerance is the
    plain one: we do not claim more than we can show."""
    leader = next((s.id for s in health.servers if s.leader), "")
    return {
        "Healthy": health.healthy,
        "FailureTolerance": health.failure_tolerance,
        "OptimisticFailureTolerance": health.failure_tolerance,
        "Servers": {
            s.id: {
                "ID": s.id,
                "Name": s.name,
                "Address": s.address,
                "NodeStatus": s.serf_status.value,
                "Version": s.version,
                "LastContact": format_duration(s.last_contact_s or 0.0),
                "LastTerm": s.last_term,
                "LastIndex": s.last_index,
                "Healthy": s.healthy,
                "StableSince": _wall_time(s.stable_since_s),
                "ReadReplica": False,
                "Status": "leader" if s.leader else "voter" if s.voter else "non-voter",
                "Meta": {},
                "NodeType": "voter",
            }
            for s in health.servers
        },
        "Leader": leader,
        "Voters": [s.id for s in health.servers if s.voter],
    }


def file_settings(config: AutopilotConfig) -> AutopilotSettings:
    """A server's `autopilot { }` block in the replicated shape (indexes 0)."""
    return AutopilotSettings(
        cleanup_dead_servers=config.cleanup_dead_servers,
        last_contact_threshold=format_duration(config.last_contact_threshold_s),
        max_trailing_logs=config.max_trailing_logs,
        min_quorum=config.min_quorum,
        server_stabilization_time=format_duration(config.server_stabilization_time_s),
    )


def settings_config(settings: AutopilotSettings) -> AutopilotConfig:
    """The configuration autopilot runs with, from the replicated settings
    (their durations were checked before they entered the log)."""
    return AutopilotConfig(
        cleanup_dead_servers=settings.cleanup_dead_servers,
        last_contact_threshold_s=float(parse_duration(settings.last_contact_threshold)),
        max_trailing_logs=settings.max_trailing_logs,
        min_quorum=settings.min_quorum,
        server_stabilization_time_s=float(parse_duration(settings.server_stabilization_time)),
    )


def config_json(settings: AutopilotSettings) -> dict[str, Any]:
    """The body of `/v1/operator/autopilot/configuration`: the settings set
    through the API (replicated through Raft), else the servers' own
    `autopilot { }` block with index 0."""
    found: dict[str, Any] = msgspec.to_builtins(settings)
    return found


class AutopilotLoop:
    """Built on every server; `run()` runs only while this server leads."""

    def __init__(
        self,
        raft: RaftLog,
        core: GossipCore,
        datacenter: str,
        config: AutopilotConfig,
        stored: Callable[[], AutopilotSettings | None] = lambda: None,
    ) -> None:
        """`config` is the server's file; `stored` the settings replicated
        through Raft, which win when present (read every round)."""
        self.raft = raft
        self.core = core
        self.datacenter = datacenter
        self.file_config = config
        self._stored = stored
        self.health: ClusterHealth | None = None
        self.changes = 0
        self.change_errors = 0

    @property
    def config(self) -> AutopilotConfig:
        stored = self._stored()
        return self.file_config if stored is None else settings_config(stored)

    def stats(self) -> dict[str, int]:
        return {"changes": self.changes, "change_errors": self.change_errors}

    async def run(self) -> None:
        self.health = None  # a new term starts from scratch (module rules)
        while True:
            try:
                await self.round()
            except Exception as exc:
                log.warning("agent: autopilot round failed: %s", exc)
            await asyncio.sleep(ROUND_S)

    def current_health(self) -> ClusterHealth:
        """Health as of now (only meaningful on the leader); evaluating is cheap
        and keeps the since-times, so the API need not wait for a round."""
        members = server_members(self.core, self.datacenter)
        now = time.monotonic()
        self.health = evaluate(self.health, members, raft_view(self.raft), self.config, now)
        return self.health

    async def round(self) -> None:
        now = time.monotonic()
        members = server_members(self.core, self.datacenter)
        view = raft_view(self.raft)
        self.health = evaluate(self.health, members, view, self.config, now)
        actions = decide(self.health, members, view, self.config, now)
        if actions:
            await self._make(actions[0])

    async def _make(self, action: Action) -> None:
        try:
            if isinstance(action, AddServer):
                kind = "voter" if action.voter else "non-voter"
                log.info(
                    "agent: autopilot: adding server %s at %s as %s (%s)",
                    action.id,
                    action.address,
                    kind,
                    action.reason,
                )
                await self.raft.add_server(
                    action.id, action.address, action.voter, CHANGE_TIMEOUT_S
                )
            elif isinstance(action, Promote):
                log.info("agent: autopilot: promoting server %s to voter", action.id)
                await self.raft.add_server(action.id, action.address, True, CHANGE_TIMEOUT_S)
            elif isinstance(action, RemoveServer):
                log.info("agent: autopilot: removing server %s (%s)", action.id, action.reason)
                await self.raft.remove_server(action.id, CHANGE_TIMEOUT_S)
            self.changes += 1
        except Exception as exc:
            # Rejected (a change in flight, leadership moving) or timed out:
            # the next round looks again.
            self.change_errors += 1
            log.warning("agent: autopilot: %s failed: %s", type(action).__name__, exc)
