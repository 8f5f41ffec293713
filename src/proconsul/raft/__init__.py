"""Raft consensus for Proconsul servers: a pure core plus its durable storage.

`core.RaftNode` decides, `ready.Ready` carries its decisions to the adapter,
`storage.SQLiteStorage` keeps the log, hard state and snapshots under
data_dir/raft (with `storage_api.MemoryStorage` as its in-memory twin for the
simulator). See DESIGN.md, "Raft".

How an asyncio adapter drives the core (one task owns the node; nothing else
touches it):

    state = storage.load()                    # after apply_peers_json(...)
    fsm.restore(state.snapshot)               # if there is one
    node = RaftNode(my_id, state, params_from_multiplier(m), random.Random())
    if state.is_empty() and should_bootstrap:
        node.bootstrap(configuration)

    loop:  wake on a timer (heartbeat_interval / 2), an incoming message,
           a proposal / read / membership request, or a finished disk write
        node.tick(monotonic())
        node.step(msg) / node.propose(data) / node.read_index(ctx) / ...
        while node.has_ready():
            rd = node.ready()
            await to_thread(persist_ready, storage, rd)   # durable first
            send rd.messages                               # then talk
            apply rd.committed_entries; resolve futures by (index, term)
            answer rd.read_states once fsm.applied >= index; fail rd.dropped_reads
            if rd.compact_through: storage.compact(rd.compact_through)
            node.advance(rd)
            if rd.want_snapshot: meta = node.prepare_snapshot(); data = fsm.dump();
                                 write it in the background, then node.snapshot_done(...)

A proposal succeeded iff the entry applied at its index has its term; an
entry of another term at that index means it was overwritten (fail the caller).
"""

from proconsul.raft.core import RaftError, RaftNode
from proconsul.raft.messages import Configuration, Entry, EntryType, HardState, Server, Snapshot
from proconsul.raft.params import RaftParams, params_from_multiplier
from proconsul.raft.ready import (
    NotLeader,
    PersistentState,
    Proposal,
    ReadState,
    Ready,
    Rejected,
    Role,
    Status,
)
from proconsul.raft.storage_api import MemoryStorage, RaftStorage, persist_ready

__all__ = [
    "Configuration",
    "Entry",
    "EntryType",
    "HardState",
    "MemoryStorage",
    "NotLeader",
    "PersistentState",
    "Proposal",
    "RaftError",
    "RaftNode",
    "RaftParams",
    "RaftStorage",
    "ReadState",
    "Ready",
    "Rejected",
    "Role",
    "Server",
    "Snapshot",
    "Status",
    "params_from_multiplier",
    "persist_ready",
]
