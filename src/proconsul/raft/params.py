"""Raft timing and sizing parameters, and the election-jitter formula.

Job: turn Consul's `performance { raft_multiplier }` (and the raft_* tuning
keys) into one frozen `RaftParams`, and hold the election jitter as pure
functions that the unit tests check from tables. The quorum rules live in
quorum.py; `quorum_size` and `quorum_commit_index` are re-exported here for
callers that import them from this module.

Rules:
- Times are seconds as floats; the core never reads a clock, it is handed `now`.
- Consul scales hashicorp/raft's base timings by the multiplier: heartbeat
  timeout 1 s, election timeout 1 s and leader lease 0.5 s at multiplier 1, and
  the default multiplier is 5. The leader sends heartbeats at a tenth of the
  heartbeat timeout, as hashicorp/raft does.
- The multiplier must be 1..10 (Consul refuses anything else); 0 means default.
- Snapshots: the core asks for one (`Ready.want_snapshot`) once
  `snapshot_threshold` entries were applied since the last; after it, the log
  keeps `trailing_logs` entries. `snapshot_interval` is Consul's
  raft_snapshot_interval and is the adapter's (server/raft_log.py): it checks
  the threshold at random times in [interval, 2 * interval), as hashicorp/raft
  does; 0 (the default here, for tests and simulations) snapshots as soon as
  the core asks. The agent passes Consul's 30s default from its config.
- Randomness comes only from the `random.Random` the caller passes in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from proconsul.raft.quorum import quorum_commit_index as quorum_commit_index
from proconsul.raft.quorum import quorum_size as quorum_size

if TYPE_CHECKING:
    # Only the type: randomness always comes from the caller's seeded instance.
    import random

DEFAULT_RAFT_MULTIPLIER = 5
MAX_RAFT_MULTIPLIER = 10

# hashicorp/raft's base timings, which Consul multiplies by raft_multiplier.
BASE_HEARTBEAT_TIMEOUT = 1.0
BASE_ELECTION_TIMEOUT = 1.0
BASE_LEADER_LEASE_TIMEOUT = 0.5

# Consul's documented defaults for the raft_* agent keys.
DEFAULT_SNAPSHOT_THRESHOLD = 16384
DEFAULT_TRAILING_LOGS = 10240
DEFAULT_SNAPSHOT_INTERVAL = 30.0  # seconds; what the agent config defaults to


@dataclass(frozen=True, slots=True)
class RaftParams:
    """Everything tunable about one Raft node. Build it with `params_from_multiplier`."""

    # A follower that hears nothing from a leader for a random time in
    # [election_timeout, 2 * election_timeout) starts a (pre-)vote.
    election_timeout: float
    # The leader sends heartbeats this often.
    heartbeat_interval: float
    # The leader steps down when it has not heard from a quorum for this long
    # (check-quorum); while it has, it may serve lease reads.
    leader_lease_timeout: float
    # Ask the state machine for a snapshot when this many entries were applied
    # since the last one.
    snapshot_threshold: int = DEFAULT_SNAPSHOT_THRESHOLD
    # Entries kept behind a snapshot so a slightly lagging follower catches up
    # from the log instead of needing the whole snapshot.
    trailing_logs: int = DEFAULT_TRAILING_LOGS
    # Seconds between the adapter's threshold checks (jittered up to 2x); 0
    # means snapshot as soon as the core asks. The core itself ignores it.
    snapshot_interval: float = 0.0
    # Replication batching: at most this many entries / bytes per AppendEntries.
    max_append_entries: int = 64
    max_append_bytes: int = 1 << 20
    # Pipelining: at most this many AppendEntries in flight to one follower.
    max_inflight_appends: int = 32
    # InstallSnapshot is sent in chunks of this many bytes.
    snapshot_chunk_bytes: int = 1 << 20
    # A follower refuses to buffer a snapshot larger than this.
    max_snapshot_bytes: int = 1 << 30
    # The leader refuses new proposals while this many bytes are uncommitted.
    max_uncommitted_bytes: int = 64 << 20
    # Linearizable reads waiting for a quorum round; past this, read_index refuses.
    max_pending_reads: int = 4096
    # Committed entries handed to the application per Ready, in bytes.
    max_committed_bytes_per_ready: int = 8 << 20
    # Pre-vote keeps a rejoining server from bumping the term of a healthy cluster.
    pre_vote: bool = True

    def __post_init__(self) -> None:
        if self.election_timeout <= 0 or self.heartbeat_interval <= 0:
            raise ValueError("raft timeouts must be positive")
        if self.heartbeat_interval >= self.election_timeout:
            raise ValueError("heartbeat_interval must be shorter than election_timeout")
        if self.leader_lease_timeout > self.election_timeout:
            # A lease longer than the shortest election timeout could let two
            # leaders both believe they hold it.
            raise ValueError("leader_lease_timeout must not exceed election_timeout")
        if self.max_append_entries < 1 or self.max_inflight_appends < 1:
            raise ValueError("replication batch and window must be at least 1")
        if self.snapshot_threshold < 1 or self.trailing_logs < 0:
            raise ValueError("snapshot_threshold must be >= 1 and trailing_logs >= 0")
        if self.snapshot_interval < 0:
            raise ValueError("snapshot_interval cannot be negative")
        if self.snapshot_chunk_bytes < 1:
            raise ValueError("snapshot_chunk_bytes must be at least 1")


def params_from_multiplier(
    raft_multiplier: int = DEFAULT_RAFT_MULTIPLIER,
    *,
    snapshot_threshold: int = DEFAULT_SNAPSHOT_THRESHOLD,
    trailing_logs: int = DEFAULT_TRAILING_LOGS,
    snapshot_interval: float = 0.0,
) -> RaftParams:
    """Consul's timing for `performance { raft_multiplier = N }` (0 means the default, 5),
    with the raft_snapshot_threshold / raft_trailing_logs / raft_snapshot_interval
    values (the agent passes its config's; see the module rules for interval 0)."""
    multiplier = raft_multiplier or DEFAULT_RAFT_MULTIPLIER
    if not 1 <= multiplier <= MAX_RAFT_MULTIPLIER:
        raise ValueError(
            f"raft_multiplier cannot be {raft_multiplier}. "
            f"Must be between 1 and {MAX_RAFT_MULTIPLIER}"
        )
    heartbeat_timeout = BASE_HEARTBEAT_TIMEOUT * multiplier
    return RaftParams(
        election_timeout=BASE_ELECTION_TIMEOUT * multiplier,
        heartbeat_interval=heartbeat_timeout / 10,
        leader_lease_timeout=BASE_LEADER_LEASE_TIMEOUT * multiplier,
        snapshot_threshold=snapshot_threshold,
        trailing_logs=trailing_logs,
        snapshot_interval=snapshot_interval,
    )


def election_timeout_range(base: float) -> tuple[float, float]:
    """The half-open interval [base, 2*base) a randomized election timeout is drawn from."""
    if base <= 0:
        raise ValueError("election timeout must be positive")
    return base, 2 * base


def random_election_timeout(rng: random.Random, base: float) -> float:
    """One draw from `election_timeout_range(base)`, using the caller's seeded rng."""
    low, high = election_timeout_range(base)
    return low + rng.random() * (high - low)
