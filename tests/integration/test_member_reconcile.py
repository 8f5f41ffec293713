"""The leader's reconcile from the catalog side, on a real server process.

One server (127.0.0.169, bootstrap_expect = 1, a data dir). Through
/v1/catalog/register it gets a node with a `serfHealth` check that is no
gossip member ("ghost": as if reaped while no leader watched) and a node
without one ("external": registered with no agent). The server restarts on
its data dir; on gaining leadership its full reconcile pass deregisters the
ghost and leaves the external node and itself alone. Every wait has a
deadline; nothing sleeps blindly.
"""

from __future__ import annotations

from pathlib import Path

from tests.agent_process import free_port, wait_for
from tests.gossip_agents import GossipPool, Member

DEADLINE_S = 20.0


def nodes(member: Member) -> set[str]:
    return {row["Node"] for row in member.running.get_json("/v1/catalog/nodes")}


def register(member: Member, node: str, checks: list[dict[str, str]]) -> None:
    body = {"Node": node, "Address": "10.9.9.9", "Checks": checks}
    status, _, reply = member.running.request("PUT", "/v1/catalog/register", body)
    assert (status, reply) == (200, b"true"), (status, reply)


def test_reaped_node_is_deregistered_when_leadership_is_gained(tmp_path: Path) -> None:
    pool = GossipPool(tmp_path, 1, base=169, server_first=True)
    (server,) = pool.members
    server.args += ["-server-port", str(free_port(server.ip))]
    try:
        pool.start(server)
        wait_for(lambda: "n0" in nodes(server), DEADLINE_S)
        serf = {"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "critical"}
        register(server, "ghost", [serf])
        register(server, "external", [{"CheckID": "disk", "Name": "disk", "Status": "passing"}])
        # The periodic pass is a minute away: both are still there.
        assert {"ghost", "external"} <= nodes(server)

        pool.stop(server)
        pool.start(server)
        wait_for(lambda: "ghost" not in nodes(server), DEADLINE_S)
        assert {"n0", "external"} <= nodes(server)
        assert "deregistering reaped member: member=ghost" in server.running.log_text()
    finally:
        pool.stop_all()
