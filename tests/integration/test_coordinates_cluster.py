"""Network coordinates on a real server and client: gossip probes feed Vivaldi,
agents send their coordinates, servers batch them into the catalog;
`/v1/coordinate/*`, `?near=_agent`, `proconsul rtt`, and a prepared query run
through the client (its reads forwarded over RPC)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.agent_process import (
    AgentProcess,
    free_gossip_port,
    free_port,
    proconsul_cmd,
    start_agent,
    wait_for,
)


def call(agent: AgentProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, _, raw = agent.request(method, path, body)
    text = raw.decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def rtt(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        proconsul_cmd("rtt", "-http-addr", agent.http_addr, *args),
        capture_output=True,
        text=True,
        timeout=30,
    )


def coordinates(agent: AgentProcess) -> dict[str, dict[str, Any]]:
    status, rows = call(agent, "GET", "/v1/coordinate/nodes")
    assert status == 200, rows
    return {row["Node"]: row for row in rows}


def test_coordinates_from_gossip_to_the_api_and_rtt(tmp_path: Path) -> None:
    serf_port = free_gossip_port()
    server = start_agent(
        tmp_path,
        "-server",
        "-bootstrap-expect",
        "1",
        "-node",
        "coord-server",
        "-bind",
        "127.0.0.1",
        "-serf-lan-port",
        str(serf_port),
        "-server-port",
        str(free_port()),
        "-data-dir",
        str(tmp_path / "server-data"),
        "-hcl",
        "performance { raft_multiplier = 1 }",
        dev=False,
    )
    client = None
    try:
        client = start_agent(
            tmp_path,
            "-node",
            "coord-client",
            "-bind",
            "127.0.0.1",
            "-data-dir",
            str(tmp_path / "client-data"),
            "-retry-join",
            f"127.0.0.1:{serf_port}",
            dev=False,
        )
        # Both agents send theirs a few seconds in; servers apply every 5 s.
        wait_for(lambda: set(coordinates(client)) == {"coord-server", "coord-client"}, 40)
        rows = coordinates(server)
        for row in rows.values():
            coord = row["Coord"]
            assert set(coord) == {"Vec", "Error", "Adjustment", "Height"}
            assert len(coord["Vec"]) == 8 and row["Segment"] == ""
        # The probes between the two are timed: each agent's own coordinate
        # (live from its gossip core) gains confidence.
        for agent in (client, server):
            wait_for(
                lambda agent=agent: agent.get_json("/v1/agent/self")["Coord"]["Error"] < 1.5, 30
            )

        own = client.get_json("/v1/agent/self")["Coord"]
        assert len(own["Vec"]) == 8 and own["Height"] >= 10e-6
        status, one = call(client, "GET", "/v1/coordinate/node/coord-server")
        assert status == 200 and [r["Node"] for r in one] == ["coord-server"]
        assert call(client, "GET", "/v1/coordinate/node/nope") == (404, "")

        # ?near=_agent: the asking agent's own node first.
        for agent, me in ((client, "coord-client"), (server, "coord-server")):
            status, nodes = call(agent, "GET", "/v1/catalog/nodes?near=_agent")
            assert status == 200 and nodes[0]["Node"] == me
        status, nodes = call(client, "GET", "/v1/catalog/nodes?near=coord-server")
        assert [n["Node"] for n in nodes] == ["coord-server", "coord-client"]

        done = rtt(client, "coord-server")
        assert done.returncode == 0, done.stderr
        assert re.fullmatch(
            r"Estimated coord-server <-> coord-client rtt: \d+\.\d{3} ms "
            r"\(using LAN coordinates\)\n",
            done.stdout,
        ), done.stdout
        done = rtt(server, "coord-client", "coord-server")
        assert done.stdout.startswith("Estimated coord-client <-> coord-server rtt: ")
        done = rtt(client, "nope")
        assert (done.returncode, done.stderr) == (
            1,
            'Could not find a coordinate for node "nope"\n',
        )
        done = rtt(client)
        assert done.returncode == 1
        assert done.stderr.startswith("One or two node names must be specified")

        # A prepared query through the client: reads forwarded, Near by coordinates.
        query = {"Name": "near-consul", "Service": {"Service": "consul", "Near": "_agent"}}
        status, created = call(client, "POST", "/v1/query", query)
        assert status == 200, created
        status, result = call(client, "GET", "/v1/query/near-consul/execute")
        assert status == 200, result
        assert [n["Node"]["Node"] for n in result["Nodes"]] == ["coord-server"]
    finally:
        if client is not None:
            client.stop()
        server.stop()
