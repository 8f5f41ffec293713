"""The values that cross between the pure Raft core and its adapter.

Job: `Ready` is everything the core wants done, as one frozen value; the
other classes are the answers of the core's input methods and the state the
adapter loads at start.

The Ready contract (the adapter must follow it, in this order):

1. `snapshot`: if set, make it durable (atomically), REPLACE THE WHOLE STORED
   LOG with it (delete every stored entry), and restore the state machine from
   `snapshot.data`.
2. `entries` and `hard_state`: make them durable together, atomically: first
   delete every stored entry with index >= entries[0].index (a truncation),
   then store the entries; store hard_state if it is not None. `must_sync`
   says whether an fsync is required (False when only the commit hint moved).
3. Only then send `messages` (they may acknowledge the entries above or carry
   the vote just recorded; sending earlier breaks Raft's safety).
4. Apply `committed_entries` to the state machine, in order. They are already
   durable (in storage or in this Ready's `entries`).
5. Answer each `read_states` item once the state machine has applied at least
   `index`; fail each `dropped_reads` context (leadership was lost).
6. `compact_through`: when non-zero, stored entries up to that index may be
   deleted (a durable snapshot already covers them).
7. `want_snapshot`: the log has grown past the threshold; call
   `RaftNode.prepare_snapshot()` after `advance` and serialize the state
   machine at once (it then reflects exactly the returned meta's index); store
   it durably (this part may run in the background) and call `snapshot_done`,
   or `snapshot_failed`. It is raised again only after more entries applied.
8. Call `RaftNode.advance(ready)`. Only one Ready may be outstanding; the core
   may be stepped and ticked while the adapter works on it.

`soft_state` and `configuration` are informational (who leads, who is in the
cluster and at which address) and need not be persisted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from proconsul.raft.messages import Configuration, Entry, HardState, Message, Snapshot


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the adapter may want to react to (leadership changes)."""

    role: Role
    leader_id: str | None
    term: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """A confirmed linearizable read: serve `ctx` once applied index >= `index`."""

    ctx: bytes
    index: int


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the adapter; see the module docstring for the order."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    must_sync: bool = False
    messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    dropped_reads: tuple[bytes, ...] = ()
    configuration: Configuration | None = None
    compact_through: int = 0
    want_snapshot: bool = False

    def is_empty(self) -> bool:
        return not (
            self.soft_state
            or self.hard_state
            or self.snapshot
            or self.entries
            or self.messages
            or self.committed_entries
            or self.read_states
            or self.dropped_reads
            or self.configuration
            or self.compact_through
            or self.want_snapshot
        )


@dataclass(frozen=True, slots=True)
class PersistentState:
    """What storage hands the core at start: the durable hard state, newest snapshot, and log.

    `entries` are contiguous; they may begin at or before the snapshot's index
    (trailing logs kept behind a snapshot), the core drops those it does not need.
    """

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()

    def is_empty(self) -> bool:
        """True for a server that was never bootstrapped and never joined a cluster."""
        return self.hard_state.term == 0 and self.snapshot is None and not self.entries


@dataclass(frozen=True, slots=True)
class Proposal:
    """An accepted proposal: it succeeded iff the entry committed at `index` has this `term`."""

    index: int
    term: int


@dataclass(frozen=True, slots=True)
class NotLeader:
    """Refused because this server is not the leader; `leader_id` is the best guess, if any."""

    leader_id: str | None
    leader_address: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Refused by the leader for a reason the caller can report (busy, transfer, …)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Status:
    """A read-only picture of a node, for operator endpoints, metrics and tests."""

    id: str
    role: Role
    term: int
    vote: str
    leader_id: str | None
    commit_index: int
    applied_index: int
    last_index: int
    last_term: int
    snapshot_index: int
    configuration: Configuration
    configuration_index: int
    committed_configuration: Configuration
    # When this follower last heard from its leader (None: never); the adapter
    # turns it into X-Consul-LastContact.
    last_leader_contact: float | None
