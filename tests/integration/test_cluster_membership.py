"""Raft membership by autopilot, on real processes on 127.0.0.141-144.

One cluster (servers n0-n2, client n3), tests in order: two servers
bootstrap (bootstrap_expect = 2) and a third that starts later with the same
config joins (added as a non-voter, promoted once stable; health and the
autopilot configuration read through the client); kill -9 of a follower gets
it removed after the stabilization time while the cluster stays writable; it
comes back and is added again; `proconsul leave` on the leader hands
leadership over and removes it; SIGTERM with leave_on_terminate removes
another. Every wait has a deadline; a short server_stabilization_time keeps
the file fast.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from tests.agent_process import free_port, proconsul_cmd, wait_for
from tests.gossip_agents import GossipPool, Member, detection_bound
from tests.integration.test_cluster import (
    agreed_leader,
    agreed_leader_among,
    kv_put,
    kv_value,
    server_at,
)

STABILIZATION_S = 2.0
DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GossipPool]:
    found = GossipPool(tmp_path_factory.mktemp("membership"), 4, base=141)
    for member in found.members[:3]:  # n3 is a client
        member.args += [
            "-server",
            "-bootstrap-expect",
            "2",
            "-server-port",
            str(free_port(member.ip)),
            "-hcl",
            "performance { raft_multiplier = 1 }",
            "-hcl",
            f'autopilot {{ server_stabilization_time = "{STABILIZATION_S:.0f}s" }}',
            "-hcl",
            "leave_on_terminate = true",
        ]
    try:
        yield found
    finally:
        found.stop_all()


def voters(member: Member) -> dict[str, bool]:
    """Node name -> Voter, from the member's /v1/operator/raft/configuration."""
    config = member.running.get_json("/v1/operator/raft/configuration")
    return {row["Node"]: row["Voter"] for row in config["Servers"]}


def wait_voters(viewer: Member, expected: dict[str, bool], deadline_s: float) -> None:
    try:
        wait_for(lambda: voters(viewer) == expected, deadline_s)
    except AssertionError as exc:
        raise AssertionError(f"expected {expected}, have {voters(viewer)}") from exc


def test_third_server_joins_as_voter(pool: GossipPool) -> None:
    n0, n1, n2, client = pool.members
    pool.start(n0)
    pool.start(n1)
    agreed_leader(pool, DEADLINE_S)
    wait_voters(n0, {"n0": True, "n1": True}, DEADLINE_S)
    kv_put(n0, "membership/a", "1")

    pool.start(n2)
    # Added as a non-voter first, promoted after the stabilization time.
    wait_voters(n2, {"n0": True, "n1": True, "n2": True}, DEADLINE_S)
    assert kv_value(n2, "membership/a", "?stale") == "1"
    # It joined the existing cluster rather than bootstrapping one of its own.
    assert "bootstrapping cluster" not in n2.running.log_text()
    leader = server_at(pool, agreed_leader(pool, DEADLINE_S))
    assert "as non-voter (new server)" in leader.running.log_text()

    pool.start(client)

    def healthy() -> dict[str, Any] | None:
        # Through a client: it asks a server, which asks the leader.
        status, _, body = client.running.request("GET", "/v1/operator/autopilot/health")
        found: dict[str, Any] = json.loads(body)
        return found if status == 200 else None

    health = wait_for(healthy, DEADLINE_S)
    assert health["Healthy"] is True and health["FailureTolerance"] == 1
    servers = health["Servers"]
    assert sorted(s["Name"] for s in servers) == ["n0", "n1", "n2"]
    assert [s["Name"] for s in servers if s["Leader"]] == [leader.name]
    assert all(s["SerfStatus"] == "alive" and s["Voter"] and s["Healthy"] for s in servers)
    assert set(servers[0]) == {
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
    }
    state = client.running.get_json("/v1/operator/autopilot/state")
    assert state["Leader"] == next(s["ID"] for s in servers if s["Leader"])
    assert sorted(state["Voters"]) == sorted(state["Servers"]) == sorted(s["ID"] for s in servers)
    pretty = subprocess.run(
        proconsul_cmd("operator", "autopilot", "state", "-http-addr", client.running.url),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert pretty.splitlines()[:2] == [
        "Healthy:                      true",
        "Failure Tolerance:            1",
    ]
    assert pretty.count("      Status:          leader\n") == 1
    assert pretty.count("      Status:          voter\n") == 2

    config = client.running.get_json("/v1/operator/autopilot/configuration")
    assert config["ServerStabilizationTime"] == "2s" and config["CleanupDeadServers"] is True
    shown = subprocess.run(
        proconsul_cmd("operator", "autopilot", "get-config", "-http-addr", n1.running.url),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert shown[:5] == [
        "CleanupDeadServers = true",
        "LastContactThreshold = 200ms",
        "MaxTrailingLogs = 250",
        "MinQuorum = 0",
        "ServerStabilizationTime = 2s",
    ]


def test_dead_server_removed_after_stabilization(pool: GossipPool) -> None:
    leader = server_at(pool, agreed_leader(pool, DEADLINE_S))
    servers = pool.members[:3]
    victim = next(m for m in servers if m is not leader)
    survivors = [m for m in servers if m is not victim]
    pool.kill(victim)
    kv_put(survivors[0], "membership/b", "2")  # 2 of 3 voters: still writable
    bound = detection_bound(pool.params, 3) + STABILIZATION_S + 5.0
    wait_voters(survivors[0], {m.name: True for m in survivors}, bound)
    kv_put(survivors[1], "membership/c", "3")
    assert "removing server" in leader.running.log_text()

    # It comes back (same data dir): added again, promoted again.
    pool.start(victim)
    wait_voters(victim, {m.name: True for m in servers}, DEADLINE_S)
    wait_for(lambda: kv_value(victim, "membership/c", "?stale") == "3", DEADLINE_S)


def test_leader_leaves_gracefully(pool: GossipPool) -> None:
    leader = server_at(pool, agreed_leader(pool, DEADLINE_S))
    others = [m for m in pool.members[:3] if m is not leader]
    subprocess.run(
        proconsul_cmd("leave", "-http-addr", leader.running.url),
        check=True,
        capture_output=True,
        timeout=DEADLINE_S,
    )
    assert leader.running.proc.wait(timeout=DEADLINE_S) == 0
    log_text = leader.running.log_text()
    assert "removed from the Raft configuration" in log_text, log_text[-3000:]
    wait_voters(others[0], {m.name: True for m in others}, DEADLINE_S)
    new = agreed_leader_among(pool, [m.name for m in others], DEADLINE_S)
    assert server_at(pool, new) in others
    kv_put(others[0], "membership/d", "4")


def test_sigterm_with_leave_on_terminate(pool: GossipPool) -> None:
    running = [m for m in pool.members[:3] if m.agent is not None and m.agent.proc.poll() is None]
    assert len(running) == 2
    leaving, last = running
    leaving.running.signal(signal.SIGTERM)
    assert leaving.running.proc.wait(timeout=DEADLINE_S) == 0
    assert "removed from the Raft configuration" in leaving.running.log_text()
    wait_voters(last, {last.name: True}, DEADLINE_S)
    wait_for(lambda: last.running.get_json("/v1/status/leader"), DEADLINE_S)
    kv_put(last, "membership/e", "5")
    assert kv_value(last, "membership/d") == "4"
    client = pool["n3"]
    assert kv_value(client, "membership/e") == "5"
    health = client.running.get_json("/v1/operator/autopilot/health")
    assert [(s["Name"], s["Leader"]) for s in health["Servers"]] == [(last.name, True)]
