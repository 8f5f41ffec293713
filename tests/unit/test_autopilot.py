"""server/autopilot.py from tables: health, failure tolerance and membership
decisions and the JSON shapes agent/autopilot_loop.py renders."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import pytest

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
    failure_tolerance,
)
from proconsul.server.autopilot_loop import (
    AutopilotLoop,
    config_json,
    file_settings,
    health_json,
    settings_config,
    state_json,
)
from proconsul.structs.autopilot import AutopilotSettings

ALIVE, FAILED, LEFT = SerfStatus.ALIVE, SerfStatus.FAILED, SerfStatus.LEFT
CONFIG = AutopilotConfig(server_stabilization_time_s=10.0)
TERM, LAST = 3, 500
FRESH = LogProgress(last_contact_s=0.05, last_index=LAST, last_term=TERM)


def member(sid: str, status: SerfStatus = ALIVE, address: str = "") -> ServerMember:
    return ServerMember(sid, f"node-{sid}", address or f"10.0.0.{sid[1:]}:8300", status, "1.16.0")


def view(
    voters: str, nonvoters: str = "", progress: dict[str, LogProgress] | None = None
) -> RaftView:
    """Servers named s1, s2, ... ("s1 s2" voters); s1 leads; followers fresh by default."""
    servers = [RaftServer(s, f"10.0.0.{s[1:]}:8300", True) for s in voters.split()]
    servers += [RaftServer(s, f"10.0.0.{s[1:]}:8300", False) for s in nonvoters.split()]
    found = {s.id: FRESH for s in servers if s.id != "s1"}
    found.update(progress or {})
    return RaftView("s1", TERM, LAST, tuple(servers), found, contact_allowance_s=0.2)


def run(
    raft: RaftView,
    members: list[ServerMember],
    *,
    previous: ClusterHealth | None = None,
    now: float = 100.0,
    config: AutopilotConfig = CONFIG,
) -> tuple[ClusterHealth, list[Action]]:
    health = evaluate(previous, members, raft, config, now)
    return health, decide(health, members, raft, config, now)


@pytest.mark.parametrize(
    ("voters", "healthy_voters", "tolerance"),
    [(0, 0, 0), (1, 1, 0), (2, 2, 0), (3, 3, 1), (3, 2, 0), (4, 4, 1), (5, 5, 2), (5, 3, 0)],
)
def test_failure_tolerance(voters: int, healthy_voters: int, tolerance: int) -> None:
    assert failure_tolerance(voters, healthy_voters) == tolerance


@pytest.mark.parametrize(
    ("progress", "status", "healthy"),
    [
        (FRESH, ALIVE, True),
        (FRESH, FAILED, False),
        (FRESH, LEFT, False),
        (replace(FRESH, last_contact_s=0.39), ALIVE, True),  # threshold 0.2 + allowance 0.2
        (replace(FRESH, last_contact_s=0.41), ALIVE, False),
        (replace(FRESH, last_contact_s=None), ALIVE, False),
        (replace(FRESH, last_term=TERM - 1), ALIVE, False),
        (replace(FRESH, last_index=LAST - 250), ALIVE, True),  # max_trailing_logs
        (replace(FRESH, last_index=LAST - 251), ALIVE, False),
    ],
)
def test_follower_health(progress: LogProgress, status: SerfStatus, healthy: bool) -> None:
    health, _ = run(view("s1 s2", progress={"s2": progress}), [member("s1"), member("s2", status)])
    s2 = health.by_id()["s2"]
    assert s2.healthy is healthy
    assert s2.serf_status is status
    assert health.healthy is healthy
    assert health.by_id()["s1"].healthy and health.by_id()["s1"].leader


def test_health_fields_and_unknown_server() -> None:
    health, _ = run(view("s1 s2 s3"), [member("s1"), member("s2")])
    s1, s2, s3 = health.servers
    assert (s1.last_contact_s, s1.last_term, s1.last_index) == (0.0, TERM, LAST)
    assert (s2.name, s2.version, s2.voter, s2.leader) == ("node-s2", "1.16.0", True, False)
    assert (s3.name, s3.serf_status, s3.healthy) == ("", SerfStatus.NONE, False)
    assert (health.healthy, health.failure_tolerance) == (False, 0)


def test_stable_since_carries_over_while_health_holds() -> None:
    raft = view("s1 s2")
    members = [member("s1"), member("s2")]
    first, _ = run(raft, members, now=10.0)
    second, _ = run(raft, members, previous=first, now=20.0)
    assert second.by_id()["s2"].stable_since_s == 10.0
    stale = view("s1 s2", progress={"s2": replace(FRESH, last_term=1)})
    third, _ = run(stale, members, previous=second, now=30.0)
    assert third.by_id()["s2"].stable_since_s == 30.0  # flipped to unhealthy
    fourth, _ = run(raft, members, previous=third, now=35.0)
    assert fourth.by_id()["s2"].stable_since_s == 35.0  # and back


# (name, voters, nonvoters, members, previous-round time or None, now, actions)
Case = tuple[str, str, str, list[ServerMember], float | None, float, list[Action]]
DECISIONS: list[Case] = [
    ("steady", "s1 s2 s3", "", [member("s1"), member("s2"), member("s3")], None, 100.0, []),
    (
        "new server is added as a non-voter",
        "s1 s2",
        "",
        [member("s1"), member("s2"), member("s3")],
        None,
        100.0,
        [AddServer("s3", "10.0.0.3:8300", False, "new server")],
    ),
    (
        "a failed or left server is not added",
        "s1 s2",
        "",
        [member("s1"), member("s2"), member("s3", FAILED), member("s4", LEFT)],
        None,
        100.0,
        [],
    ),
    (
        "a moved server is re-addressed, keeping its vote",
        "s1 s2",
        "",
        [member("s1"), member("s2", address="10.9.9.9:8300")],
        None,
        100.0,
        [AddServer("s2", "10.9.9.9:8300", True, "server address changed")],
    ),
    (
        "non-voter not yet stable",
        "s1 s2",
        "s3",
        [member("s1"), member("s2"), member("s3")],
        95.0,
        100.0,
        [],
    ),
    (
        "non-voter stable for the stabilization time is promoted",
        "s1 s2",
        "s3",
        [member("s1"), member("s2"), member("s3")],
        90.0,
        100.0,
        [Promote("s3", "10.0.0.3:8300", "server stabilized")],
    ),
    (
        "left server is removed at once",
        "s1 s2 s3",
        "",
        [member("s1"), member("s2"), member("s3", LEFT)],
        None,
        100.0,
        [RemoveServer("s3", "server left the cluster")],
    ),
    (
        "left leader is not removed by itself",
        "s1 s2",
        "",
        [member("s1", LEFT), member("s2")],
        None,
        100.0,
        [],
    ),
    (
        "failed voter waits for the stabilization time",
        "s1 s2 s3",
        "",
        [member("s1"), member("s2"), member("s3", FAILED)],
        95.0,
        100.0,
        [],
    ),
    (
        "failed voter is removed after it",
        "s1 s2 s3",
        "",
        [member("s1"), member("s2"), member("s3", FAILED)],
        90.0,
        100.0,
        [RemoveServer("s3", "dead server")],
    ),
    (
        "server unknown to gossip counts as failed",
        "s1 s2 s3",
        "",
        [member("s1"), member("s2")],
        90.0,
        100.0,
        [RemoveServer("s3", "dead server")],
    ),
    (
        "two failed of three voters: not a minority, nothing removed",
        "s1 s2 s3",
        "",
        [member("s1"), member("s2", FAILED), member("s3", FAILED)],
        90.0,
        100.0,
        [],
    ),
    (
        "two failed of five voters are removed",
        "s1 s2 s3 s4 s5",
        "",
        [member("s1"), member("s2"), member("s3"), member("s4", FAILED), member("s5", FAILED)],
        90.0,
        100.0,
        [RemoveServer("s4", "dead server"), RemoveServer("s5", "dead server")],
    ),
    (
        "failed of two voters: (2 - 1) // 2 = 0 may go",
        "s1 s2",
        "",
        [member("s1"), member("s2", FAILED)],
        90.0,
        100.0,
        [],
    ),
    (
        "failed non-voter is removed whatever the voters",
        "s1 s2",
        "s3",
        [member("s1"), member("s2"), member("s3", FAILED)],
        90.0,
        100.0,
        [RemoveServer("s3", "dead non-voter")],
    ),
    (
        "order: leaves, adds, promotions, dead servers",
        "s1 s2 s3 s4 s5",
        "s6",
        [
            member("s1"),
            member("s2"),
            member("s3"),
            member("s4", FAILED),
            member("s5", LEFT),
            member("s6"),
            member("s7"),
        ],
        90.0,
        100.0,
        [
            RemoveServer("s5", "server left the cluster"),
            AddServer("s7", "10.0.0.7:8300", False, "new server"),
            Promote("s6", "10.0.0.6:8300", "server stabilized"),
            RemoveServer("s4", "dead server"),
        ],
    ),
]


@pytest.mark.parametrize("case", DECISIONS, ids=[c[0] for c in DECISIONS])
def test_decide(case: Case) -> None:
    _, voters, nonvoters, members, before, now, expected = case
    raft = view(voters, nonvoters)
    previous = None
    if before is not None:
        previous, _ = run(raft, members, now=before)
    _, actions = run(raft, members, previous=previous, now=now)
    assert actions == expected


@pytest.mark.parametrize(
    ("min_quorum", "expected"),
    [(0, ["s4", "s5"]), (3, ["s4", "s5"]), (4, ["s4"]), (5, [])],
)
def test_min_quorum_stops_dead_server_removal(min_quorum: int, expected: list[str]) -> None:
    members = [member("s1"), member("s2"), member("s3"), member("s4", FAILED)]
    members.append(member("s5", FAILED))
    config = replace(CONFIG, min_quorum=min_quorum)
    raft = view("s1 s2 s3 s4 s5")
    previous, _ = run(raft, members, now=0.0, config=config)
    _, actions = run(raft, members, previous=previous, now=100.0, config=config)
    assert [a.id for a in actions] == expected


def test_cleanup_dead_servers_off() -> None:
    config = replace(CONFIG, cleanup_dead_servers=False)
    members = [member("s1"), member("s2"), member("s3", FAILED)]
    raft = view("s1 s2 s3")
    previous, _ = run(raft, members, now=0.0, config=config)
    _, actions = run(raft, members, previous=previous, now=100.0, config=config)
    assert actions == []


def test_unhealthy_nonvoter_is_not_promoted() -> None:
    members = [member("s1"), member("s2"), member("s3")]
    raft = view("s1 s2", "s3", progress={"s3": replace(FRESH, last_index=0)})
    previous, _ = run(raft, members, now=0.0)
    _, actions = run(raft, members, previous=previous, now=100.0)
    assert actions == []


def test_json_shapes() -> None:
    """Consul's field names and value formats for health, state and configuration."""
    raft = view("s1 s2", "s3")
    health, _ = run(raft, [member("s1"), member("s2"), member("s3")], now=time.monotonic())
    body = health_json(health)
    assert (body["Healthy"], body["FailureTolerance"]) == (True, 0)
    leader = body["Servers"][0]
    assert list(leader) == [
        "ID",
        "Name",
        "Address",
        "SerfStatus",
        "Version",
        "Leader",
        "LastContact",
        "LastTerm",
        "LastIndex",
        "Healthy",
        "Voter",
        "StableSince",
    ]
    assert (leader["LastContact"], leader["SerfStatus"], leader["Leader"]) == ("0s", "alive", True)
    assert body["Servers"][1]["LastContact"] == "50ms"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", leader["StableSince"])

    state = state_json(health)
    assert (state["Leader"], state["Voters"]) == ("s1", ["s1", "s2"])
    assert [s["Status"] for s in state["Servers"].values()] == ["leader", "voter", "non-voter"]
    assert state["Servers"]["s2"]["NodeStatus"] == "alive"

    config = config_json(file_settings(AutopilotConfig()))
    assert (config["LastContactThreshold"], config["ServerStabilizationTime"]) == ("200ms", "10s")
    assert (config["CleanupDeadServers"], config["MaxTrailingLogs"], config["MinQuorum"]) == (
        True,
        250,
        0,
    )


def test_replicated_settings_round_trip_to_the_running_config() -> None:
    config = AutopilotConfig(
        cleanup_dead_servers=False,
        last_contact_threshold_s=0.25,
        max_trailing_logs=10,
        min_quorum=3,
        server_stabilization_time_s=90.0,
    )
    settings = file_settings(config)
    assert (settings.last_contact_threshold, settings.server_stabilization_time) == (
        "250ms",
        "1m30s",
    )
    assert settings_config(settings) == config
    body = config_json(settings)
    assert (body["CreateIndex"], body["ModifyIndex"], body["RedundancyZoneTag"]) == (0, 0, "")


def test_the_loop_runs_with_the_replicated_settings_once_set() -> None:
    stored: list[AutopilotSettings] = []
    loop = AutopilotLoop(
        None,  # type: ignore[arg-type]  # neither Raft nor gossip is touched here
        None,  # type: ignore[arg-type]
        "dc1",
        AutopilotConfig(),
        stored=lambda: stored[-1] if stored else None,
    )
    assert loop.config == AutopilotConfig()
    stored.append(AutopilotSettings(min_quorum=3, last_contact_threshold="1s"))
    assert (loop.config.min_quorum, loop.config.last_contact_threshold_s) == (3, 1.0)
