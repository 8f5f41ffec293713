"""Raft's data on the wire and on disk: entries, configurations, snapshots, RPC messages.

Job: one msgspec definition per value, encoded as msgpack for the RPC transport
and for the log, decoded with validation so a bad frame is a clear error and
never a half-built object.

Rules:
- APPEND-ONLY. Message tags and `EntryType` values are numbered; never reuse
  or renumber one, never remove or reorder a field. New fields go at the end,
  with a default, so an older server can still decode what a newer one sends.
  (Structs are `array_like`: fields travel by position, which is why order is
  part of the format.)
- Every message names its sender, its receiver and the sender's term.
- Values are frozen: the core hands them to the adapter and keeps them too.
"""

from __future__ import annotations

import enum

import msgspec


class EntryType(enum.IntEnum):
    """Kind of a log entry. Append-only numbering."""

    COMMAND = 0  # opaque state-machine command (a msgpack Command for Proconsul)
    CONFIGURATION = 1  # data is an encoded Configuration
    NOOP = 2  # written by every new leader so it can commit earlier terms (§5.4.2)


class Server(msgspec.Struct, frozen=True, array_like=True):
    """One member of the cluster configuration."""

    id: str
    address: str
    voter: bool = True


class Configuration(msgspec.Struct, frozen=True, array_like=True):
    """The cluster membership: who votes and who only receives the log."""

    servers: tuple[Server, ...] = ()

    def get(self, server_id: str) -> Server | None:
        for server in self.servers:
            if server.id == server_id:
                return server
        return None

    def is_voter(self, server_id: str) -> bool:
        server = self.get(server_id)
        return server is not None and server.voter

    def voter_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.servers if s.voter)

    def ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.servers)

    def with_server(self, server: Server) -> Configuration:
        """This configuration with `server` added, or replaced if its id is present."""
        kept = tuple(s for s in self.servers if s.id != server.id)
        return Configuration(servers=(*kept, server))

    def without(self, server_id: str) -> Configuration:
        return Configuration(servers=tuple(s for s in self.servers if s.id != server_id))


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """One log entry. `index` and `term` identify it (Raft's Log Matching property)."""

    index: int
    term: int
    type: EntryType
    data: bytes = b""


class HardState(msgspec.Struct, frozen=True, array_like=True):
    """What must survive a crash: the current term, the vote cast in it, and the commit index.

    `vote` is "" when no vote was cast in `term`. Term and vote must be durable
    before any message that depends on them is sent; `commit` is a hint that
    lets a restarted server apply sooner (losing it is safe).
    """

    term: int = 0
    vote: str = ""
    commit: int = 0


class SnapshotMeta(msgspec.Struct, frozen=True, array_like=True):
    """Identity of a snapshot: the last entry it covers and the configuration as of then."""

    index: int
    term: int
    configuration: Configuration
    configuration_index: int


class Snapshot(msgspec.Struct, frozen=True, array_like=True):
    """A state-machine snapshot: opaque bytes from the application plus their metadata."""

    meta: SnapshotMeta
    data: bytes


# ----- RPC messages (tags are append-only) ----------------------------------------------


class RequestVote(msgspec.Struct, frozen=True, array_like=True, tag=1):
    """Ask for a vote (or, with `pre_vote`, whether a vote would be granted; §9.6)."""

    term: int
    from_id: str
    to_id: str
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    # Set by a leadership transfer target: voters then ignore their leader lease.
    transfer: bool = False


class RequestVoteResponse(msgspec.Struct, frozen=True, array_like=True, tag=2):
    term: int
    from_id: str
    to_id: str
    granted: bool
    pre_vote: bool = False


class AppendEntries(msgspec.Struct, frozen=True, array_like=True, tag=3):
    """Replicate `entries` after (prev_log_index, prev_log_term); may be empty (a probe)."""

    term: int
    from_id: str
    to_id: str
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int


class AppendEntriesResponse(msgspec.Struct, frozen=True, array_like=True, tag=4):
    """Result of an AppendEntries.

    On success `match_index` is the last index the request proved equal to the
    leader's log. On rejection `reject_index` is the request's prev_log_index and
    (`conflict_index`, `conflict_term`) let the leader skip a whole term at once:
    conflict_term is the follower's term at reject_index (0 when its log is
    shorter) and conflict_index the first index it holds of that term (or its
    last index + 1).
    """

    term: int
    from_id: str
    to_id: str
    success: bool
    match_index: int = 0
    reject_index: int = 0
    conflict_index: int = 0
    conflict_term: int = 0


class Heartbeat(msgspec.Struct, frozen=True, array_like=True, tag=5):
    """Leader liveness, commit propagation and read-index confirmation rounds.

    `commit` is already capped at what this follower is known to match, so the
    follower may adopt it without a log check. `seq` numbers the round.
    """

    term: int
    from_id: str
    to_id: str
    commit: int
    seq: int


class HeartbeatResponse(msgspec.Struct, frozen=True, array_like=True, tag=6):
    term: int
    from_id: str
    to_id: str
    seq: int


class InstallSnapshot(msgspec.Struct, frozen=True, array_like=True, tag=7):
    """One chunk of the leader's snapshot for a follower whose next entry was compacted."""

    term: int
    from_id: str
    to_id: str
    meta: SnapshotMeta
    offset: int
    data: bytes
    total_size: int
    done: bool


class InstallSnapshotResponse(msgspec.Struct, frozen=True, array_like=True, tag=8):
    """`next_offset` asks for the next chunk; `done`: the follower now matches `match_index`."""

    term: int
    from_id: str
    to_id: str
    snapshot_index: int
    next_offset: int
    done: bool = False
    match_index: int = 0


class TimeoutNow(msgspec.Struct, frozen=True, array_like=True, tag=9):
    """Leadership transfer: start an election now, ignoring leader leases (§3.10)."""

    term: int
    from_id: str
    to_id: str


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
)


class MessageError(ValueError):
    """Bytes that are not a valid Raft message."""


# What msgspec may raise on hostile bytes. DecodeError (ValidationError is one)
# covers bad shapes, but a str that is not UTF-8 escapes as UnicodeDecodeError
# (a ValueError), and nesting past the recursion limit (even inside a trailing
# field an older decoder only skips) as RecursionError.
_DECODE_ERRORS = (msgspec.DecodeError, ValueError, TypeError, RecursionError, OverflowError)


_encoder = msgspec.msgpack.Encoder()
_message_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)
_configuration_decoder = msgspec.msgpack.Decoder(Configuration)


def encode(value: msgspec.Struct) -> bytes:
    """msgpack bytes for any struct in this module."""
    return _encoder.encode(value)


def decode_message(data: bytes) -> Message:
    """Decode one message, raising MessageError (never anything else) on bad input."""
    try:
        return _message_decoder.decode(data)
    except _DECODE_ERRORS as exc:
        raise MessageError(f"bad raft message: {exc}") from None


def encode_configuration(configuration: Configuration) -> bytes:
    return _encoder.encode(configuration)


def decode_configuration(data: bytes) -> Configuration:
    try:
        return _configuration_decoder.decode(data)
    except _DECODE_ERRORS as exc:
        raise MessageError(f"bad raft configuration: {exc}") from None


def well_formed(m: Message) -> bool:
    """Shape checks a correct peer always passes (indexes, terms, offsets in range)."""
    if m.term < 0:
        return False
    if isinstance(m, AppendEntries):
        if m.prev_log_index < 0 or m.prev_log_term < 0 or m.leader_commit < 0:
            return False
        term = m.prev_log_term
        for position, entry in enumerate(m.entries):
            if entry.index != m.prev_log_index + 1 + position or not term <= entry.term <= m.term:
                return False
            term = entry.term
        return True
    if isinstance(m, InstallSnapshot):
        return 0 <= m.offset <= m.total_size and m.meta.index > 0 and m.meta.term <= m.term
    if isinstance(m, Heartbeat):
        return m.commit >= 0
    return True
