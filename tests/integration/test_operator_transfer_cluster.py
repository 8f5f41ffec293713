"""Leadership transfer and usage on three real servers (127.0.0.251-253).

- `POST /v1/operator/raft/transfer-leader?id=<follower>` sent to the other
  follower (so it is forwarded to the leader) answers `{"Success": true}` and
  every server then reports the named one as leader; `proconsul operator
  raft transfer-leader` with no -id prints `Success` and moves leadership
  off the current leader; an ID that is not a voter is a 500 naming it.
- `PUT /v1/operator/autopilot/configuration` with `?cas=` (true, then false
  for a stale index), a bad duration refused with 400, and `operator autopilot
  set-config`: the settings reach every server through Raft.
- `GET /v1/operator/usage` counts services, instances (a proxy under
  ConnectServiceInstances) and nodes, with the read's index.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from tests.agent_process import proconsul_cmd, wait_for
from tests.gossip_agents import GossipPool, Member
from tests.integration.test_cluster import agreed_leader, server_at
from tests.integration.test_raft_operator import server_pool

DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GossipPool]:
    pool = server_pool(tmp_path_factory.mktemp("operator"), 3, 251, 3)
    try:
        pool.start_all()
        yield pool
    finally:
        pool.stop_all()


def test_transfer_leader_and_usage(servers: GossipPool) -> None:
    pool = servers
    leader = server_at(pool, agreed_leader(pool, DEADLINE_S))

    def ids() -> dict[str, str] | None:
        config = leader.running.get_json("/v1/operator/raft/configuration")
        found = {row["Node"]: row["ID"] for row in config["Servers"] if row["Voter"]}
        return found if len(found) == 3 else None

    raft_ids = wait_for(ids, DEADLINE_S)
    target, other = [m for m in pool.members if m is not leader]
    status, _, body = other.running.request(
        "POST", f"/v1/operator/raft/transfer-leader?id={raft_ids[target.name]}"
    )
    assert (status, json.loads(body)) == (200, {"Success": True}), body
    target_leader = agreed_leader(pool, DEADLINE_S)
    assert server_at(pool, target_leader) is target

    moved = subprocess.run(
        proconsul_cmd("operator", "raft", "transfer-leader", "-http-addr", other.running.url),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert (moved.returncode, moved.stdout) == (0, "Success\n"), moved.stderr
    assert server_at(pool, agreed_leader(pool, DEADLINE_S, other_than=target_leader)) is not target

    status, _, body = other.running.request(
        "POST", "/v1/operator/raft/transfer-leader?id=no-such-server"
    )
    assert status == 500 and b"no-such-server" in body, (status, body)

    for sid, port in (("web1", 80), ("web2", 81)):
        reg = {
            "Node": "ext",
            "Address": "10.0.0.9",
            "Service": {"ID": sid, "Service": "web", "Port": port},
        }
        assert other.running.request("PUT", "/v1/catalog/register", reg)[0] == 200
    proxy = {
        "Node": "ext",
        "Address": "10.0.0.9",
        "Service": {
            "Kind": "connect-proxy",
            "ID": "web-proxy",
            "Service": "web-sidecar-proxy",
            "Port": 21000,
            "Proxy": {"DestinationServiceName": "web"},
        },
    }
    assert other.running.request("PUT", "/v1/catalog/register", proxy)[0] == 200
    status, headers, body = other.running.request("GET", "/v1/operator/usage")
    assert status == 200, body
    found = json.loads(body)
    usage = found["Usage"]["dc1"]
    assert usage["Services"] == 3  # consul, web, web-sidecar-proxy
    assert usage["ServiceInstances"] == 3 + 3  # + one consul instance per server
    assert usage["ConnectServiceInstances"]["connect-proxy"] == 1
    assert usage["BillableServiceInstances"] == 2
    assert usage["Nodes"] == 4
    assert found["Index"] == int(headers["X-Consul-Index"]) > 0


def autopilot_config(member: Member) -> dict[str, Any]:
    found: dict[str, Any] = member.running.get_json("/v1/operator/autopilot/configuration")
    return found


def test_autopilot_configuration_through_raft(servers: GossipPool) -> None:
    pool = servers
    leader = server_at(pool, agreed_leader(pool, DEADLINE_S))
    follower = next(m for m in pool.members if m is not leader)
    start = autopilot_config(follower)
    assert start["ModifyIndex"] == 0 and start["MinQuorum"] == 0  # each server's file
    wanted = {**start, "MaxTrailingLogs": 99, "LastContactThreshold": "300ms"}
    path = "/v1/operator/autopilot/configuration"
    assert follower.running.request("PUT", path + "?cas=0", wanted)[2] == b"true"
    assert follower.running.request("PUT", path + "?cas=0", wanted)[2] == b"false"
    status, _, body = follower.running.request("PUT", path, {"LastContactThreshold": "soon"})
    assert status == 400 and b"soon" in body, (status, body)
    changed = subprocess.run(
        proconsul_cmd(
            "operator",
            "autopilot",
            "set-config",
            "-min-quorum=3",
            "-cleanup-dead-servers=false",
            "-http-addr",
            follower.running.url,
        ),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert (changed.returncode, changed.stdout) == (0, "Configuration updated!\n"), changed.stderr
    # Replicated: every server answers from its own store (not its file).
    for member in pool.members:

        def applied(m: Member = member) -> bool:
            found = autopilot_config(m)
            return (
                found["MinQuorum"],
                found["CleanupDeadServers"],
                found["MaxTrailingLogs"],
                found["LastContactThreshold"],
            ) == (3, False, 99, "300ms") and found["ModifyIndex"] > 0

        wait_for(applied, DEADLINE_S)
    shown = subprocess.run(
        proconsul_cmd("operator", "autopilot", "get-config", "-http-addr", leader.running.url),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    ).stdout
    assert "MinQuorum = 3" in shown and "CleanupDeadServers = false" in shown
