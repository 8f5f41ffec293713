"""Operator paths on real server processes: removing a stopped server from Raft,
and a lone server waiting for `bootstrap_expect`.

- Four servers (127.0.0.161-164, bootstrap_expect = 3, autopilot's
  cleanup_dead_servers off so only the operator removes anything) become four
  voters. A follower is killed and removed with `DELETE
  /v1/operator/raft/peer?id=<id>`, then another with `proconsul operator raft
  remove-peer -id=<id>`; after each, the configuration and `operator raft
  list-peers` no longer name it and the survivors still take writes.
- A lone server with bootstrap_expect = 2 (127.0.0.166) stays leaderless:
  `/v1/status/leader` answers "" and a KV PUT answers 500 "No cluster leader"
  (after the server held it for rpc_hold_timeout). Once a second server
  (127.0.0.167) joins, they elect a leader and the PUT succeeds.

Every wait has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.agent_process import free_port, proconsul_cmd, wait_for
from tests.gossip_agents import GossipPool, Member
from tests.integration.test_cluster import agreed_leader, kv_put, kv_value, server_at

DEADLINE_S = 30.0
# A write with no leader is held for rpc_hold_timeout (7 s) before it fails.
NO_LEADER_PUT_TIMEOUT_S = 20.0


def server_pool(tmp_path: Path, count: int, base: int, expect: int, *hcl: str) -> GossipPool:
    pool = GossipPool(tmp_path, count, base=base)
    for member in pool.members:
        member.args += ["-server", "-bootstrap-expect", str(expect)]
        member.args += ["-server-port", str(free_port(member.ip))]
        member.args += ["-hcl", "performance { raft_multiplier = 1 }"]
        for fragment in hcl:
            member.args += ["-hcl", fragment]
    return pool


@pytest.fixture
def four_servers(tmp_path: Path) -> Iterator[GossipPool]:
    autopilot = 'autopilot {\n cleanup_dead_servers = false\n server_stabilization_time = "1s"\n}'
    pool = server_pool(tmp_path, 4, 161, 3, autopilot)
    try:
        pool.start_all()
        yield pool
    finally:
        pool.stop_all()


def raft_ids(member: Member) -> dict[str, str]:
    """Node name -> Raft server ID of the voters in `member`'s configuration."""
    config = member.running.get_json("/v1/operator/raft/configuration")
    return {row["Node"]: row["ID"] for row in config["Servers"] if row["Voter"]}


def listed_peers(member: Member) -> list[str]:
    """Node names in `proconsul operator raft list-peers` through `member`."""
    out = subprocess.run(
        proconsul_cmd("operator", "raft", "list-peers", "-http-addr", member.running.url),
        capture_output=True,
        text=True,
        check=True,
        timeout=DEADLINE_S,
    ).stdout.splitlines()
    assert out[0].split()[:3] == ["Node", "ID", "Address"]
    return sorted(line.split()[0] for line in out[1:])


def a_follower(pool: GossipPool, running: list[Member]) -> Member:
    leader = server_at(pool, agreed_leader(pool, DEADLINE_S))
    return next(m for m in running if m is not leader)


def test_remove_stopped_servers_by_http_and_cli(four_servers: GossipPool) -> None:
    pool = four_servers
    everyone = ["n0", "n1", "n2", "n3"]

    def all_voters() -> dict[str, str] | None:
        found = raft_ids(pool["n0"])
        return found if sorted(found) == everyone else None

    ids = wait_for(all_voters, DEADLINE_S)

    # 1. Through the HTTP API.
    first = a_follower(pool, pool.members)
    pool.kill(first)
    survivors = [m for m in pool.members if m is not first]
    viewer = survivors[0]
    status, _, body = viewer.running.request(
        "DELETE", f"/v1/operator/raft/peer?id={ids[first.name]}", timeout_s=DEADLINE_S
    )
    assert (status, body) == (200, b""), (status, body)
    rest = sorted(m.name for m in survivors)
    wait_for(lambda: sorted(raft_ids(viewer)) == rest, DEADLINE_S)
    assert listed_peers(viewer) == rest
    kv_put(viewer, "operator/after-http", "1")

    # 2. Through the CLI.
    second = a_follower(pool, survivors)
    pool.kill(second)
    survivors = [m for m in survivors if m is not second]
    viewer = survivors[0]
    removed = subprocess.run(
        proconsul_cmd(
            "operator",
            "raft",
            "remove-peer",
            f"-id={ids[second.name]}",
            "-http-addr",
            viewer.running.url,
        ),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == f'Removed peer with id "{ids[second.name]}"'
    rest = sorted(m.name for m in survivors)
    wait_for(lambda: sorted(raft_ids(viewer)) == rest, DEADLINE_S)
    assert listed_peers(viewer) == rest
    # Two voters of two: the cluster still commits, on both survivors.
    kv_put(viewer, "operator/after-cli", "2")
    for member in survivors:
        wait_for(lambda m=member: kv_value(m, "operator/after-cli", "?stale") == "2", DEADLINE_S)


def test_lone_server_waits_for_bootstrap_expect(tmp_path: Path) -> None:
    pool = server_pool(tmp_path, 2, 166, 2)
    first, second = pool.members
    try:
        pool.start(first, join=False)
        assert first.running.get_json("/v1/status/leader") == ""
        status, _, body = first.running.request(
            "PUT", "/v1/kv/operator/early", "1", timeout_s=NO_LEADER_PUT_TIMEOUT_S
        )
        assert status == 500 and b"No cluster leader" in body, (status, body)
        # Still no leader after the hold: one server never bootstraps expect = 2.
        assert first.running.get_json("/v1/status/leader") == ""
        assert "bootstrapping cluster" not in first.running.log_text()

        pool.start(second)  # joins the first by retry_join
        leader = agreed_leader(pool, DEADLINE_S)
        assert server_at(pool, leader) in pool.members
        assert sorted(raft_ids(first)) == ["n0", "n1"]
        kv_put(first, "operator/late", "1")
        assert kv_value(second, "operator/late") == "1"
    finally:
        pool.stop_all()
