"""Pieces of the server's Raft log that need no event loop.

Job: the status value the HTTP layer reads (`/v1/status/leader`,
`/v1/status/peers`, `X-Consul-KnownLeader`, `X-Consul-LastContact`), and the
state rebuild that peers.json recovery runs over the stored log.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from proconsul.raft.core import RaftNode
from proconsul.raft.messages import Configuration, Entry, EntryType, Snapshot
from proconsul.raft.ready import Role
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore


@dataclasses.dataclass(frozen=True)
class RaftStatus:
    """What `/v1/status/*`, `X-Consul-KnownLeader` and `X-Consul-LastContact` need."""

    id: str
    address: str
    role: str  # "leader", "follower", "candidate", "pre-candidate"
    term: int
    leader_id: str | None
    leader_address: str | None
    # 0 on the leader; seconds since the leader was last heard from; None if never.
    last_contact_s: float | None
    commit_index: int
    applied_index: int
    last_index: int
    snapshot_index: int
    configuration: Configuration

    @property
    def known_leader(self) -> bool:
        return self.leader_id is not None

    def peers(self) -> list[str]:
        """Voters' RPC addresses: the body of `/v1/status/peers`."""
        return [s.address for s in self.configuration.servers if s.voter]


def rebuild_state(snapshot: Snapshot | None, entries: Sequence[Entry]) -> bytes:
    """Store snapshot bytes after `snapshot` plus every command in `entries` (peers.json)."""
    store = StateStore()
    fsm = FSM(store)
    if snapshot is not None:
        fsm.restore(snapshot.data)
    for entry in entries:
        if entry.type is EntryType.COMMAND:
            fsm.apply_bytes(entry.index, entry.data)
    return fsm.snapshot()


def last_contact_s(node: RaftNode) -> float | None:
    """0 on the leader; seconds since the leader was last heard from; None if never."""
    if node.role is Role.LEADER:
        return 0.0
    if node.last_leader_contact is None:
        return None
    # The core's clock is time.monotonic() as of its last tick.
    return max(0.0, time.monotonic() - node.last_leader_contact)


def status_of(
    node: RaftNode, address: str, applied_index: int, leader_address: str | None
) -> RaftStatus:
    contact = last_contact_s(node)
    return RaftStatus(
        id=node.id,
        address=address,
        role=node.role.value,
        term=node.term,
        leader_id=node.leader_id,
        leader_address=leader_address,
        last_contact_s=contact,
        commit_index=node.log.commit,
        applied_index=applied_index,
        last_index=node.log.last_index(),
        snapshot_index=node.snapshot.meta.index if node.snapshot else 0,
        configuration=node.configuration,
    )
