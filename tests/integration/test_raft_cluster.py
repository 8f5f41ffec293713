"""Three Raft servers in one process: real RPC sockets on 127.0.0.1 with mutual
TLS, real SQLite logs in temporary data dirs, raft_multiplier 1.

Each server is what a server agent will run: StateStore + FSM, a RaftLog,
ServerEndpoints over a LeaderRouter, and one RPCServer carrying both the
endpoint handlers and Raft.Step (only for server certificates). "Crashing" a
server closes its sockets and cancels its Raft tasks at once; a restart opens
the same data dir on the same port. Waits are event- or deadline-bound.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proconsul.raft import Server, params_from_multiplier
from proconsul.raft.messages import RequestVote, encode
from proconsul.raft.params import RaftParams
from proconsul.rpc import ErrorCode, Handler, RPCClient, RPCError, RPCServer
from proconsul.rpc.codec import EndpointsClient
from proconsul.rpc.testing import CertFiles, TestPKI, make_pki, tls_settings
from proconsul.rpc.tls import client_context, server_context
from proconsul.server.endpoints import ServerEndpoints
from proconsul.server.leader_router import LeaderRouter
from proconsul.server.raft_errors import NotLeaderError, RaftStoppedError
from proconsul.server.raft_log import RaftLog
from proconsul.server.raft_rpc import raft_handlers
from proconsul.server.raft_transport import STEP_METHOD, encode_batch
from proconsul.server.rpc_handlers import endpoint_handlers
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import KVEntry
from proconsul.structs.commands import KVSRequest

DEADLINE_S = 10.0
# Election timeout is 1-2 s at multiplier 1, plus a pre-vote round.
FAILOVER_BOUND_S = 5.0


def put(key: str, value: str) -> KVSRequest:
    return KVSRequest(op="set", dir_ent=KVEntry(key=key, value=value.encode()))


def client_for(pki: TestPKI, cert: CertFiles) -> RPCClient:
    settings = tls_settings(
        ca_file=pki.ca_file, cert=cert, verify_outgoing=True, verify_server_hostname=True
    )
    return RPCClient(client_context(settings), "server.dc1.consul")


@dataclass
class Member:
    id: str
    data_dir: Path
    port: int = 0
    store: StateStore = field(default_factory=StateStore)
    raft: RaftLog | None = None
    rpc: RPCServer | None = None
    client: RPCClient | None = None
    endpoints: ServerEndpoints | None = None
    forwarder: LeaderRouter | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> RaftLog:
        assert self.raft is not None, f"{self.id} is not running"
        return self.raft

    def value(self, key: str) -> bytes | None:
        _, entry = self.store.kv_get(key)
        return entry.value if entry is not None else None


class Cluster:
    def __init__(self, root: Path, pki: TestPKI, params: RaftParams) -> None:
        self.pki = pki
        self.params = params
        self.server_cert = pki.issue("server", "server")
        self.members = [Member(f"server-{i}", root / f"server-{i}") for i in range(3)]

    def configuration(self) -> list[Server]:
        return [Server(m.id, m.address) for m in self.members]

    async def listen(self, m: Member) -> dict[str, Handler]:
        handlers: dict[str, Handler] = {}  # filled once Raft exists; looked up per request
        settings = tls_settings(
            ca_file=self.pki.ca_file, cert=self.server_cert, verify_incoming=True
        )
        m.rpc = RPCServer(handlers, ssl_context=server_context(settings))
        _, m.port = await m.rpc.start("127.0.0.1", m.port)
        return handlers

    async def start(self, m: Member, handlers: dict[str, Handler] | None = None) -> None:
        if handlers is None:
            handlers = await self.listen(m)
        m.store = StateStore()
        m.client = client_for(self.pki, self.server_cert)
        m.raft = RaftLog(
            m.id, m.address, FSM(m.store), m.client, data_dir=m.data_dir, params=self.params
        )
        await m.raft.start()
        m.forwarder = LeaderRouter(m.raft, EndpointsClient(m.client), hold_timeout_s=2.0)
        m.endpoints = ServerEndpoints(m.store, m.forwarder, "dc1")
        handlers.update(endpoint_handlers(m.endpoints))
        handlers.update(raft_handlers(m.raft, m.endpoints, require_server_cert=True))

    async def boot(self) -> None:
        handlers = [await self.listen(m) for m in self.members]
        for m, h in zip(self.members, handlers, strict=True):
            await self.start(m, h)
        for m in self.members:
            assert m.log.bootstrap(self.configuration())

    async def crash(self, m: Member) -> None:
        """Everything closed at once, like kill -9 (the disk keeps what was fsynced)."""
        assert m.rpc is not None and m.client is not None
        await m.rpc.close()
        await m.log.close()
        await m.client.close()
        m.raft = m.rpc = m.client = None

    def running(self) -> list[Member]:
        return [m for m in self.members if m.raft is not None]

    async def leader(
        self, among: list[Member] | None = None, other_than: str | None = None
    ) -> Member:
        """The one leader every running member agrees on."""
        among = among or self.running()
        ids = await asyncio.gather(
            *(m.log.wait_for_leader(DEADLINE_S, other_than=other_than) for m in among)
        )
        assert len(set(ids)) == 1, f"members disagree on the leader: {ids}"
        leader = next(m for m in self.members if m.id == ids[0])
        assert leader.log.is_leader()
        assert [m.id for m in among if m.log.is_leader()] == [leader.id]
        return leader

    async def all_applied(self, index: int, among: list[Member] | None = None) -> None:
        await asyncio.gather(
            *(m.log.wait_applied(index, DEADLINE_S) for m in among or self.running())
        )

    async def close(self) -> None:
        for m in self.running():
            await self.crash(m)


@pytest.fixture
async def cluster_factory(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Cluster]]:
    pki = make_pki(tmp_path / "pki")
    made: list[Cluster] = []

    def make(**params: int) -> Cluster:
        cluster = Cluster(tmp_path, pki, params_from_multiplier(1, **params))
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        await cluster.close()


async def test_three_servers_elect_replicate_forward_and_refuse_clients(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory()
    await cluster.boot()
    leader = await cluster.leader()
    followers = [m for m in cluster.members if m is not leader]

    # A write through the leader's ServerEndpoints lands in all three stores.
    assert leader.endpoints is not None
    index, result = await leader.endpoints.write(put("app/one", "1"))
    assert result is True
    await cluster.all_applied(index)
    assert [m.value("app/one") for m in cluster.members] == [b"1"] * 3
    assert all(m.store.kv_get("app/one")[0] == index for m in cluster.members)

    # Sent to a follower (in-process, and over RPC as a client agent would): forwarded.
    follower = followers[0]
    assert follower.endpoints is not None and follower.forwarder is not None
    index, result = await follower.endpoints.write(put("app/two", "2"))
    assert result is True
    caller = client_for(cluster.pki, cluster.pki.issue("client", "client"))
    try:
        index, result = await EndpointsClient(caller).write(follower.address, put("app/three", "3"))
        assert result is True
        assert follower.forwarder.forwarded == 2
        await cluster.all_applied(index)
        for m in cluster.members:
            assert (m.value("app/two"), m.value("app/three")) == (b"2", b"3")

        # A client certificate from the same CA cannot speak Raft: refused, no effect.
        term = follower.log.status().term
        vote = encode(RequestVote(term + 50, "intruder", follower.id, 10**6, term + 50))
        with pytest.raises(RPCError) as refused:
            await caller.call(follower.address, STEP_METHOD, encode_batch("x:1", [vote]), 5.0)
        assert refused.value.code == ErrorCode.PERMISSION_DENIED
        # One-way, as servers send it: refused too. The call after it on the same
        # connection is answered only after the one-way frame was handled.
        await caller.notify(follower.address, STEP_METHOD, encode_batch("x:1", [vote]), 5.0)
        with pytest.raises(RPCError):
            await caller.call(follower.address, STEP_METHOD, encode_batch("x:1", [vote]), 5.0)
    finally:
        await caller.close()
    assert follower.log.status().term == term
    assert follower.log.status().leader_id == leader.id

    # ?consistent: the leader confirms with a quorum; a follower points at the leader.
    barrier = await leader.log.read_barrier(DEADLINE_S)
    assert barrier >= index
    with pytest.raises(NotLeaderError) as not_leader:
        await follower.log.read_barrier(DEADLINE_S)
    assert not_leader.value.leader_address == leader.address

    # Status, as /v1/status/* and the X-Consul-* headers will read it.
    for m in cluster.members:
        status = m.log.status()
        assert status.known_leader and status.leader_address == leader.address
        assert sorted(status.peers()) == sorted(x.address for x in cluster.members)
        assert status.last_contact_s is not None and status.last_contact_s < 1.0
    assert leader.log.status().last_contact_s == 0.0

    # Replicas at the same index hold byte-identical state.
    await cluster.all_applied(leader.log.status().commit_index)
    assert len({m.store.snapshot() for m in cluster.members}) == 1

    # Membership: remove a follower, write without it, add it back; it catches up.
    gone = followers[1]
    await leader.log.remove_server(gone.id, DEADLINE_S)
    assert leader.log.configuration()[1].ids() == tuple(
        m.id for m in cluster.members if m is not gone
    )
    index, _ = await leader.endpoints.write(put("app/four", "4"))
    await leader.log.add_server(gone.id, gone.address, timeout_s=DEADLINE_S)
    await cluster.all_applied(index)
    assert gone.value("app/four") == b"4"
    assert len(leader.log.configuration()[1].servers) == 3

    # A leaving leader hands over to a caught-up follower.
    successor = await leader.log.transfer_leadership(timeout_s=DEADLINE_S)
    assert successor != leader.id
    assert (await cluster.leader(other_than=leader.id)).id == successor


async def test_leader_crash_failover_and_restart_catches_up_by_snapshot(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(snapshot_threshold=8, trailing_logs=4)
    await cluster.boot()
    old = await cluster.leader()
    assert old.endpoints is not None
    acknowledged: dict[str, bytes] = {}
    for i in range(30):
        _, result = await old.endpoints.write(put(f"k/{i}", f"v{i}"))
        assert result is True
        acknowledged[f"k/{i}"] = f"v{i}".encode()

    crashed_at = time.monotonic()
    await cluster.crash(old)
    survivors = cluster.running()
    new = await cluster.leader(survivors, other_than=old.id)
    elapsed = time.monotonic() - crashed_at
    assert new is not old
    assert elapsed < FAILOVER_BOUND_S, f"failover took {elapsed:.1f}s"

    # Every acknowledged write survived.
    barrier = await new.log.read_barrier(DEADLINE_S)
    await cluster.all_applied(barrier, survivors)
    for m in survivors:
        assert {k: m.value(k) for k in acknowledged} == acknowledged

    # More writes, so the survivors compact past everything the old leader holds.
    assert new.endpoints is not None
    for i in range(30, 60):
        _, result = await new.endpoints.write(put(f"k/{i}", f"v{i}"))
        assert result is True
        acknowledged[f"k/{i}"] = f"v{i}".encode()
    assert new.log.status().snapshot_index > 30

    # Restart from the data dir: its own snapshot and log first, then the leader's snapshot.
    await cluster.start(old)
    assert old.log.fsm.restores == 1 and old.store.kvs, "did not recover from its snapshot"
    await cluster.all_applied(new.log.status().commit_index)
    assert {k: old.value(k) for k in acknowledged} == acknowledged
    assert old.log.stats()["snapshots_installed"] >= 1
    assert new.log.stats()["core_snapshots_sent"] >= 1
    assert (await cluster.leader()) is new
    await cluster.all_applied(new.log.status().commit_index)
    assert len({m.store.snapshot() for m in cluster.members}) == 1


async def test_minority_refuses_then_peers_json_recovers_a_lone_survivor(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory()
    await cluster.boot()
    survivor = await cluster.leader()
    assert survivor.endpoints is not None
    index, _ = await survivor.endpoints.write(put("before", "outage"))
    await cluster.all_applied(index)
    for m in cluster.members:
        if m is not survivor:
            await cluster.crash(m)

    # Alone, the old leader loses its lease: the barrier fails instead of answering stale.
    with pytest.raises(NotLeaderError):
        await survivor.log.read_barrier(DEADLINE_S)
    assert not survivor.log.is_leader()
    with pytest.raises(NotLeaderError):
        await survivor.log.apply(put("during", "outage"))

    # Outage recovery: stop it, write peers.json naming only itself, start it again.
    await cluster.crash(survivor)
    peers = survivor.data_dir / "raft" / "peers.json"
    peers.write_text(json.dumps([{"id": survivor.id, "address": survivor.address}]))
    await cluster.start(survivor)
    assert not peers.exists()
    assert (await cluster.leader([survivor])) is survivor
    assert survivor.value("before") == b"outage"
    assert survivor.endpoints is not None
    index, result = await survivor.endpoints.write(put("after", "recovery"))
    assert result is True and survivor.value("after") == b"recovery"
    _, configuration = survivor.log.configuration()
    assert configuration.ids() == (survivor.id,)


async def test_a_storage_failure_stops_raft_and_fails_waiters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore()
    fatal: list[BaseException] = []
    client = RPCClient()
    raft = RaftLog(
        "solo",
        "127.0.0.1:1",
        FSM(store),
        client,
        data_dir=tmp_path,
        params=params_from_multiplier(1),
        on_fatal=fatal.append,
    )
    await raft.start()
    try:
        assert raft.bootstrap([Server("solo", "127.0.0.1:1")])
        await raft.wait_for_leader(DEADLINE_S)
        index, _ = await raft.apply(put("k", "v"))
        assert store.kv_get("k")[0] == index

        def broken(*args: object) -> None:
            raise OSError("disk on fire")

        storage = raft._storage
        assert storage is not None
        monkeypatch.setattr(storage, "save", broken)
        with pytest.raises(RaftStoppedError):
            await raft.apply(put("k", "never acknowledged"))
        assert isinstance(raft.failed, OSError) and fatal == [raft.failed]
        _, kept = store.kv_get("k")
        assert kept is not None and kept.value == b"v"
        assert not raft.is_leader()
        with pytest.raises(RaftStoppedError):
            await raft.apply(put("k", "refused at once"))
    finally:
        await raft.close()
        await client.close()
