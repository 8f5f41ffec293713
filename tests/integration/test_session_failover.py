"""Sessions across a leader change, on three real servers.

Unlike Consul, whose lock-delays live in each server's memory, ours are
replicated state (DESIGN.md, "Sessions and locks"): a lock released by a
session's destroy stays delayed when the leader that applied the destroy is
killed, and the new leader refuses the acquire until the delay ends. A TTL
session survives the leader change (the new leader grants a full grace).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.agent_process import wait_for
from tests.gossip_agents import GossipPool
from tests.integration.test_cluster import agreed_leader, server_at
from tests.integration.test_raft_operator import server_pool

DEADLINE_S = 30.0
LOCK_DELAY_S = 10


def test_lock_delay_and_ttl_survive_the_leader(tmp_path: Path) -> None:
    pool: GossipPool = server_pool(tmp_path, 3, 196, 3)
    try:
        pool.start_all()
        old_address = agreed_leader(pool, DEADLINE_S)
        leader = server_at(pool, old_address)
        follower = next(m for m in pool.members if m is not leader)
        api = follower.running

        def create(body: dict[str, object]) -> str:
            status, _, reply = api.request("PUT", "/v1/session/create", body)
            assert status == 200, reply
            return str(json.loads(reply)["ID"])

        holder = create({"LockDelay": f"{LOCK_DELAY_S}s"})
        waiter = create({})
        ttl = create({"TTL": "10s"})
        assert api.request("PUT", f"/v1/kv/job?acquire={holder}", "a")[2] == b"true"
        assert api.request("PUT", f"/v1/session/destroy/{holder}")[0] == 200
        destroyed_at = time.monotonic()

        pool.kill(leader)
        agreed_leader(pool, DEADLINE_S, other_than=old_address)
        # The new leader knows the delay: refused until it has passed.
        refused = api.request("PUT", f"/v1/kv/job?acquire={waiter}", "b")
        assert refused[:1] == (200,) and refused[2] == b"false", refused
        assert time.monotonic() - destroyed_at < LOCK_DELAY_S

        def acquired() -> bool:
            return api.request("PUT", f"/v1/kv/job?acquire={waiter}", "b")[2] == b"true"

        wait_for(acquired, DEADLINE_S, interval_s=0.5)
        assert time.monotonic() - destroyed_at >= LOCK_DELAY_S - 1.0
        # The TTL session lived through the change and is still renewable.
        status, _, reply = api.request("PUT", f"/v1/session/renew/{ttl}")
        assert status == 200 and json.loads(reply)[0]["ID"] == ttl
    finally:
        pool.stop_all()
