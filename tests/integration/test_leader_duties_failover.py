"""Leader duties follow leadership, on real server processes.

Three servers (127.0.0.181-183, bootstrap_expect = 3, raft_multiplier 1, ACLs
and Connect on so every duty exists). The leader runs every duty (its
/v1/agent/metrics say which run and how many terms started each); the
followers run none. The leader is frozen (SIGSTOP): a new leader is elected,
starts every duty, and its member reconcile marks the frozen server's
serfHealth critical. The old leader is thawed (SIGCONT): it learns it lost
the leadership and its duties stop.

Every wait has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.agent_process import wait_for
from tests.gossip_agents import GossipPool, Member
from tests.integration.test_cluster import agreed_leader, agreed_leader_among, server_at
from tests.integration.test_raft_operator import server_pool

DEADLINE_S = 30.0
ONE_SHOTS = ("register-self", "ca-root", "acl-establish")
LOOPS = ("acl-reap", "session-ttl", "member-reconcile", "autopilot")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[GossipPool]:
    pool = server_pool(
        tmp_path,
        3,
        181,
        3,
        "connect { enabled = true }",
        'acl { enabled = true\n default_policy = "allow" }',
    )
    try:
        pool.start_all()
        yield pool
    finally:
        for member in pool.members:
            if member.agent is not None:
                member.running.signal(signal.SIGCONT)
        pool.stop_all()


def duty_metrics(pool: GossipPool, member: Member) -> dict[str, tuple[float, float]]:
    """Duty name -> (running now, terms started)."""
    return {
        name: (
            pool.metric(member, f"proconsul.leader.duty.{name}.running"),
            pool.metric(member, f"proconsul.leader.duty.{name}.starts"),
        )
        for name in (*ONE_SHOTS, *LOOPS)
    }


def leads_with_every_duty(pool: GossipPool, member: Member) -> bool:
    found = duty_metrics(pool, member)
    return all(starts >= 1 for _, starts in found.values()) and all(
        found[name][0] == 1.0 for name in LOOPS
    )


def serf_status(member: Member, node: str) -> str:
    checks = member.running.get_json(f"/v1/health/node/{node}")
    return next((c["Status"] for c in checks if c["CheckID"] == "serfHealth"), "")


def test_duties_move_with_the_leadership(servers: GossipPool) -> None:
    pool = servers
    old_address = agreed_leader(pool, DEADLINE_S)
    old = server_at(pool, old_address)
    followers = [m for m in pool.members if m is not old]
    wait_for(lambda: leads_with_every_duty(pool, old), DEADLINE_S)
    for follower in followers:
        assert all(value == (0.0, 0.0) for value in duty_metrics(pool, follower).values())

    old.running.signal(signal.SIGSTOP)
    names = [m.name for m in followers]
    new_address = agreed_leader_among(pool, names, DEADLINE_S, other_than=old_address)
    new = server_at(pool, new_address)
    wait_for(lambda: leads_with_every_duty(pool, new), DEADLINE_S)
    # Member reconcile runs on the new leader: the frozen server is marked failed.
    wait_for(lambda: serf_status(new, old.name) == "critical", DEADLINE_S)

    old.running.signal(signal.SIGCONT)
    wait_for(lambda: old.running.get_json("/v1/status/leader") == new_address, DEADLINE_S)
    wait_for(
        lambda: all(running == 0.0 for running, _ in duty_metrics(pool, old).values()),
        DEADLINE_S,
    )
    # ... while the new leader keeps them, and the old one's serfHealth recovers.
    assert leads_with_every_duty(pool, new)
    wait_for(lambda: serf_status(new, old.name) == "passing", DEADLINE_S)
