"""Writes forwarded to a leader that stops answering, on real server processes.

Three servers (127.0.0.186-188, raft_multiplier 1). The leader is frozen
(SIGSTOP, as a GC stall or a half-open partition would leave it) and a write
is sent at once through a follower, which still forwards to the frozen
leader: the follower gives up once a new leader is elected and answers
within rpc_hold_timeout -- a 500 saying the outcome is unknown, or success
if the write reached the new leader -- instead of hanging until the old
leader wakes up. Then the leader is killed (kill -9) under a stream of
writes sent to a follower's RPC port, as a client agent sends them: the
forwards that fail are answered as errors, and no log holds a traceback.

Every wait has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.gossip_agents import GossipPool, Member
from tests.integration.test_cluster import agreed_leader, agreed_leader_among, server_at
from tests.integration.test_raft_operator import server_pool

from proconsul.rpc import RPCClient, RPCError
from proconsul.rpc.codec import EndpointsClient
from proconsul.structs.catalog import KVEntry
from proconsul.structs.commands import KVSRequest

DEADLINE_S = 30.0
HOLD_S = 7.0  # Consul's default rpc_hold_timeout
MARGIN_S = 1.5


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[GossipPool]:
    pool = server_pool(tmp_path, 3, 186, 3)
    try:
        pool.start_all()
        yield pool
    finally:
        for member in pool.members:
            if member.agent is not None and member.running.proc.poll() is None:
                member.running.signal(signal.SIGCONT)
        pool.stop_all()


def test_a_write_forwarded_to_a_frozen_leader_is_answered_within_the_hold(
    servers: GossipPool,
) -> None:
    pool = servers
    old_address = agreed_leader(pool, DEADLINE_S)
    old = server_at(pool, old_address)
    follower = next(m for m in pool.members if m is not old)
    status, _, body = follower.running.request("PUT", "/v1/kv/frozen/warmup", "1")
    assert (status, body) == (200, b"true")

    old.running.signal(signal.SIGSTOP)
    started = time.monotonic()
    status, _, body = follower.running.request(
        "PUT", "/v1/kv/frozen/during", "1", timeout_s=HOLD_S + MARGIN_S
    )
    took = time.monotonic() - started
    assert took < HOLD_S + MARGIN_S, took
    assert status == 200 or (status == 500 and b"outcome is unknown" in body), (status, body)

    # The cluster goes on without the frozen server.
    names = [m.name for m in pool.members if m is not old]
    agreed_leader_among(pool, names, DEADLINE_S, other_than=old_address)
    status, _, body = follower.running.request("PUT", "/v1/kv/frozen/after", "1")
    assert (status, body) == (200, b"true")
    old.running.signal(signal.SIGCONT)


def server_port(member: Member) -> int:
    return int(member.args[member.args.index("-server-port") + 1])


def test_writes_forwarded_while_the_leader_dies_log_no_traceback(servers: GossipPool) -> None:
    """Writes sent to a follower's RPC port (as a client agent sends them),
    which forwards them to a leader that is then killed."""
    pool = servers
    old = server_at(pool, agreed_leader(pool, DEADLINE_S))
    follower = next(m for m in pool.members if m is not old)
    address = f"{follower.ip}:{server_port(follower)}"

    async def write_until_the_new_leader_answers() -> list[str]:
        client = RPCClient(None, "")
        endpoints = EndpointsClient(client)
        outcomes: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        try:
            n = 0
            while loop.time() < deadline:
                n += 1
                if n == 20:
                    old.running.proc.kill()  # kill -9: forwards in flight fail
                command = KVSRequest(op="set", dir_ent=KVEntry(key=f"dying/{n}", value=b"1"))
                try:
                    await endpoints.write(address, command, timeout_s=HOLD_S + MARGIN_S)
                    outcomes.append("ok")
                except RPCError as exc:
                    outcomes.append(exc.message)
                if n > 20 and outcomes[-20:] == ["ok"] * 20:
                    break
        finally:
            await client.close()
        return outcomes

    outcomes = asyncio.run(write_until_the_new_leader_answers())
    assert outcomes[-1] == "ok", outcomes
    for member in pool.members:
        text = member.running.log_text()
        where = text.find("Traceback")
        assert where < 0, (member.name, text[max(0, where - 300) : where + 1500])
