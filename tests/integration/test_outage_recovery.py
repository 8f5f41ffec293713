"""Consul's outage recovery with peers.json, on real server processes.

Three servers (127.0.0.122-124, bootstrap_expect = 3) elect a leader and take
some KV writes. Then the whole cluster stops, and one server (n2) is gone for
good: the operator writes `data_dir/raft/peers.json` on the two that remain,
listing only them (`[{id, address, non_voter}]`, ids and addresses as
`/v1/operator/raft/configuration` showed them), and starts those two again.
They must elect a leader between themselves (two of two, not two of three),
keep every acknowledged write, take new ones, and delete peers.json once it
is applied so the next restart does not force the configuration again.
(Two of three would elect without peers.json too; what shows the recovery is
the configuration: two voters, n2 gone, so two of two is the quorum.)

Every wait has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path

from tests.agent_process import free_port, wait_for
from tests.gossip_agents import GossipPool, Member

BASE = 122
DEADLINE_S = 20.0
SERVERS = ("n0", "n1", "n2")
KEPT = ("n0", "n1")


def make_servers(tmp_path: Path) -> GossipPool:
    pool = GossipPool(tmp_path, len(SERVERS), base=BASE)
    for member in pool.members:
        member.args += [
            "-server",
            "-bootstrap-expect",
            str(len(SERVERS)),
            "-server-port",
            str(free_port(member.ip)),  # the same across restarts: peers.json names it
            "-hcl",
            "performance { raft_multiplier = 1 }",
        ]
    return pool


def agreed_leader(pool: GossipPool, names: Sequence[str]) -> str:
    """The leader address every named server reports, once they agree on one."""

    def agreed() -> str | None:
        views = {pool[name].running.get_json("/v1/status/leader") for name in names}
        if len(views) == 1:
            (leader,) = views
            return leader or None
        return None

    return wait_for(agreed, DEADLINE_S)


def kv_put(member: Member, key: str, value: str) -> None:
    status, _, body = member.running.request("PUT", f"/v1/kv/{key}", value)
    assert (status, body) == (200, b"true"), (status, body)


def kv_value(member: Member, key: str, query: str = "") -> str | None:
    status, _, body = member.running.request("GET", f"/v1/kv/{key}{query}")
    if status != 200:
        return None
    return base64.b64decode(json.loads(body)[0]["Value"]).decode()


def peers_json_path(member: Member) -> Path:
    return member.data_dir / "raft" / "peers.json"


def test_two_survivors_recover_from_peers_json(tmp_path: Path) -> None:
    pool = make_servers(tmp_path)
    try:
        pool.start_all()
        agreed_leader(pool, SERVERS)
        written = {f"outage/{i}": str(i) for i in range(5)}
        for key, value in written.items():
            kv_put(pool["n0"], key, value)
        config = pool["n1"].running.get_json("/v1/operator/raft/configuration")
        rows = {row["Node"]: row for row in config["Servers"]}
        assert sorted(rows) == list(SERVERS)
        # Every server holds the writes before the outage (stale: its own copy).
        for name in SERVERS:
            wait_for(
                lambda n=name: all(  # type: ignore[misc]
                    kv_value(pool[n], k, "?stale") == v for k, v in written.items()
                ),
                DEADLINE_S,
            )

        # The outage: every server stops; n2 never comes back.
        for name in SERVERS:
            pool.stop(pool[name])
        peers = [
            {"id": rows[n]["ID"], "address": rows[n]["Address"], "non_voter": False} for n in KEPT
        ]
        for name in KEPT:
            peers_json_path(pool[name]).write_text(json.dumps(peers))
        for name in KEPT:
            pool.start(pool[name])

        leader = agreed_leader(pool, KEPT)
        assert leader in {rows[n]["Address"] for n in KEPT}
        for name in KEPT:
            member = pool[name]
            assert not peers_json_path(member).exists(), name
            assert "raft: recovered from peers.json" in member.running.log_text()
            assert sorted(member.running.get_json("/v1/status/peers")) == sorted(
                rows[n]["Address"] for n in KEPT
            )
            for key, value in written.items():
                assert kv_value(member, key, "?consistent") == value, (name, key)
        after = pool["n1"].running.get_json("/v1/operator/raft/configuration")
        assert sorted(row["Node"] for row in after["Servers"]) == list(KEPT)

        # Two of two is a quorum now: new writes commit and reach both.
        kv_put(pool["n1"], "outage/after", "yes")
        for name in KEPT:
            wait_for(
                lambda n=name: kv_value(pool[n], "outage/after", "?stale") == "yes",  # type: ignore[misc]
                DEADLINE_S,
            )

        # Applied once: a later restart runs on the recovered log, peers.json gone.
        pool.stop(pool["n0"])
        pool.start(pool["n0"])
        agreed_leader(pool, KEPT)
        assert "peers.json" not in pool["n0"].running.log_text()
        assert kv_value(pool["n0"], "outage/after", "?consistent") == "yes"
    finally:
        pool.stop_all()
