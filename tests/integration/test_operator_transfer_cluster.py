"""Leadership transfer and usage on three real servers (127.0.0.251-253).

- `POST /v1/operator/raft/transfer-leader?id=<follower>` sent to the other
  follower (so it is forwarded to the leader) answers `{"Success": true}` and
  every server then reports the named one as leader; `proconsul operator
  raft transfer-leader` with no -id prints `Success` and moves leadership
  off the current leader; an ID that is not a voter is a 500 naming it.
- `GET /v1/operator/usage` counts services, instances (a proxy under
  ConnectServiceInstances) and nodes, with the read's index.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.agent_process import proconsul_cmd, wait_for
from tests.gossip_agents import GossipPool
from tests.integration.test_cluster import agreed_leader, server_at
from tests.integration.test_raft_operator import server_pool

DEADLINE_S = 30.0


def test_transfer_leader_and_usage(tmp_path: Path) -> None:
    pool: GossipPool = server_pool(tmp_path, 3, 251, 3)
    try:
        pool.start_all()
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
        assert (
            server_at(pool, agreed_leader(pool, DEADLINE_S, other_than=target_leader)) is not target
        )

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
    finally:
        pool.stop_all()
