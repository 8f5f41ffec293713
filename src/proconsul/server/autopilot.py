"""Autopilot's decisions: server health and Raft membership changes, as pure functions.

Job: from the leader's view of the world -- the servers gossip knows in this
datacenter (`ServerMember`), the latest Raft configuration with what the
leader knows of each server's log (`RaftView`), the previous round's health
and `now` -- compute every server's health (`evaluate`, the body of
`/v1/operator/autopilot/health`) and the membership changes to make
(`decide`), as Consul 1.16's autopilot does:
- an alive server not in the configuration is added as a non-voter, and
  promoted to voter once it has been healthy for `server_stabilization_time`;
- a server that left gossip gracefully is removed;
- with `cleanup_dead_servers`, a server gossip declares failed (or no longer
  knows) is removed once it has been so for `server_stabilization_time`, but
  only while the failed voters are a minority (a cluster of n voters tolerates
  (n - 1) // 2 losses) and never below `min_quorum` voters.

Rules:
- No I/O, no clock: `now` is handed in (any monotonic seconds; the adapter
  turns it into wall time for display). The leader never removes itself: a
  leaving leader hands leadership over first.
- `decide` returns changes in priority order; the adapter makes only the
  first one and asks again next round (Raft allows one change at a time).
- Health (Consul's): the leader is healthy while gossip has it alive; another
  server is healthy when alive, heard from within `last_contact_threshold`
  (plus `contact_allowance_s`, see RaftView), on the leader's term, and no
  more than `max_trailing_logs` entries behind the leader.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proconsul.raft.quorum import quorum_size


class SerfStatus(enum.StrEnum):
    """A server's gossip status as autopilot reports it ("none": gossip does not know it)."""

    ALIVE = "alive"
    FAILED = "failed"
    LEFT = "left"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class AutopilotConfig:
    """Consul's `autopilot { }` block, with units in the names."""

    cleanup_dead_servers: bool = True
    last_contact_threshold_s: float = 0.2
    max_trailing_logs: int = 250
    min_quorum: int = 0
    server_stabilization_time_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ServerMember:
    """A server of this datacenter as gossip shows it; `address` is its RPC host:port."""

    id: str
    name: str
    address: str
    status: SerfStatus
    version: str = ""


@dataclass(frozen=True, slots=True)
class RaftServer:
    """One server of the latest Raft configuration."""

    id: str
    address: str
    voter: bool


@dataclass(frozen=True, slots=True)
class LogProgress:
    """What the leader knows of one server's log."""

    # Seconds since the leader last heard from it (0 for the leader itself);
    # None when it never has.
    last_contact_s: float | None
    last_index: int
    last_term: int


@dataclass(frozen=True, slots=True)
class RaftView:
    """The leader's Raft state for one round."""

    leader_id: str
    term: int
    last_index: int
    servers: tuple[RaftServer, ...]
    progress: Mapping[str, LogProgress] = field(default_factory=dict)
    # Our leader hears from a follower once per heartbeat interval, so "last
    # contact" naturally reaches that long; this slack is added to the
    # configured threshold so an idle, healthy follower is not flagged.
    contact_allowance_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ServerHealth:
    """One server's health; `stable_since_s` and `status_since_s` are on the `now` clock."""

    id: str
    name: str
    address: str
    serf_status: SerfStatus
    version: str
    leader: bool
    voter: bool
    healthy: bool
    last_contact_s: float | None
    last_term: int
    last_index: int
    stable_since_s: float  # when `healthy` last changed
    status_since_s: float  # when `serf_status` last changed


@dataclass(frozen=True, slots=True)
class ClusterHealth:
    healthy: bool
    failure_tolerance: int
    servers: tuple[ServerHealth, ...]

    def by_id(self) -> dict[str, ServerHealth]:
        return {s.id: s for s in self.servers}


@dataclass(frozen=True, slots=True)
class AddServer:
    """Add a server as a non-voter (or voter), or re-address one already in."""

    id: str
    address: str
    voter: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Promote:
    id: str
    address: str
    reason: str


@dataclass(frozen=True, slots=True)
class RemoveServer:
    id: str
    reason: str


Action = AddServer | Promote | RemoveServer


def failure_tolerance(voters: int, healthy_voters: int) -> int:
    """How many more voters may fail before the cluster loses its quorum (never negative)."""
    return max(0, healthy_voters - quorum_size(voters)) if voters else 0


def server_is_healthy(
    member: ServerMember | None,
    progress: LogProgress | None,
    raft: RaftView,
    server_id: str,
    config: AutopilotConfig,
) -> bool:
    if member is None or member.status is not SerfStatus.ALIVE:
        return False
    if server_id == raft.leader_id:
        return True
    if progress is None or progress.last_contact_s is None:
        return False
    if progress.last_contact_s > config.last_contact_threshold_s + raft.contact_allowance_s:
        return False
    if progress.last_term != raft.term:
        return False
    return raft.last_index - progress.last_index <= config.max_trailing_logs


def evaluate(
    previous: ClusterHealth | None,
    members: Sequence[ServerMember],
    raft: RaftView,
    config: AutopilotConfig,
    now: float,
) -> ClusterHealth:
    """Every configured server's health this round, carrying the since-times over."""
    known = {m.id: m for m in members}
    before = previous.by_id() if previous is not None else {}
    servers: list[ServerHealth] = []
    for server in raft.servers:
        member = known.get(server.id)
        progress = raft.progress.get(server.id)
        healthy = server_is_healthy(member, progress, raft, server.id, config)
        status = member.status if member is not None else SerfStatus.NONE
        old = before.get(server.id)
        stable_since = old.stable_since_s if old is not None and old.healthy == healthy else now
        status_since = old.status_since_s if old is not None and old.serf_status == status else now
        if server.id == raft.leader_id:
            last_contact: float | None = 0.0
            last_term, last_index = raft.term, raft.last_index
        elif progress is not None:
            last_contact = progress.last_contact_s
            last_term, last_index = progress.last_term, progress.last_index
        else:
            last_contact, last_term, last_index = None, 0, 0
        servers.append(
            ServerHealth(
                id=server.id,
                name=member.name if member is not None else "",
                address=server.address,
                serf_status=status,
                version=member.version if member is not None else "",
                leader=server.id == raft.leader_id,
                voter=server.voter,
                healthy=healthy,
                last_contact_s=last_contact,
                last_term=last_term,
                last_index=last_index,
                stable_since_s=stable_since,
                status_since_s=status_since,
            )
        )
    voters = [s for s in servers if s.voter]
    tolerance = failure_tolerance(len(voters), sum(1 for s in voters if s.healthy))
    return ClusterHealth(
        healthy=all(s.healthy for s in servers),
        failure_tolerance=tolerance,
        servers=tuple(servers),
    )


def decide(
    health: ClusterHealth,
    members: Sequence[ServerMember],
    raft: RaftView,
    config: AutopilotConfig,
    now: float,
) -> list[Action]:
    """The membership changes due, most urgent first (see the module rules)."""
    stabilization = config.server_stabilization_time_s
    configured = {s.id: s for s in raft.servers}
    actions: list[Action] = []
    # 1. Graceful leaves: the server is gone by its own choice.
    for server in health.servers:
        if server.serf_status is SerfStatus.LEFT and not server.leader:
            actions.append(RemoveServer(server.id, "server left the cluster"))
    # 2. New servers (and servers that came back at another address).
    for member in sorted(members, key=lambda m: m.id):
        if member.status is not SerfStatus.ALIVE:
            continue
        current = configured.get(member.id)
        if current is None:
            actions.append(AddServer(member.id, member.address, False, "new server"))
        elif current.address != member.address and member.id != raft.leader_id:
            actions.append(
                AddServer(member.id, member.address, current.voter, "server address changed")
            )
    # 3. Promotions of non-voters that stayed healthy long enough.
    for server in health.servers:
        if (
            not server.voter
            and server.healthy
            and now - server.stable_since_s >= stabilization
            and server.id in configured
        ):
            actions.append(Promote(server.id, server.address, "server stabilized"))
    # 4. Dead servers, within what the cluster can safely lose.
    if config.cleanup_dead_servers:
        actions.extend(_dead_server_removals(health, config, now))
    return actions


def _dead_server_removals(
    health: ClusterHealth, config: AutopilotConfig, now: float
) -> list[RemoveServer]:
    dead = [
        s
        for s in health.servers
        if s.serf_status in (SerfStatus.FAILED, SerfStatus.NONE)
        and not s.leader
        and now - s.status_since_s >= config.server_stabilization_time_s
    ]
    out = [RemoveServer(s.id, "dead non-voter") for s in dead if not s.voter]
    dead_voters = [s for s in dead if s.voter]
    voters = sum(1 for s in health.servers if s.voter)
    # All or nothing, as Consul: if the dead voters are not a minority the
    # cluster cannot have a working quorum view of them; touch none.
    if not dead_voters or len(dead_voters) > (voters - 1) // 2:
        return out
    remaining = voters
    for server in dead_voters:
        if remaining - 1 < max(config.min_quorum, 1):
            break
        out.append(RemoveServer(server.id, "dead server"))
        remaining -= 1
    return out
