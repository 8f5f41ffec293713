"""Gossip parameters and the timing formulas SWIM and Lifeguard derive from them.

Job: hold every tunable of the gossip pool in one frozen value, with Consul's
LAN defaults (`lan()`) and a fast profile for tests (`local()`), and provide the
small pure formulas the core uses: suspicion timeouts, the retransmit limit,
push-pull interval scaling and awareness scaling.

Rules:
- Times are float seconds. Nothing here reads a clock.
- The defaults are Consul's: memberlist's LAN config, the serf settings Consul
  overrides (reconnect timeout 72h, leave propagate delay 3s, queue depth 4096,
  dead node reclaim 30s) and serf's own defaults for the rest.
- Formulas are written to be checked against a table and a naive version in
  tests; keep them free of side effects.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# memberlist does not scale the push-pull interval until the pool is larger than
# this; each doubling past it adds one more interval.
PUSH_PULL_SCALE_THRESHOLD = 32


@dataclass(frozen=True, slots=True)
class GossipParams:
    """Every knob of the gossip pool. Build with `lan()` or `local()` and `replace`."""

    # Failure detection (SWIM + Lifeguard).
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    awareness_max_multiplier: int = 8
    # Dissemination.
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead_time: float = 30.0
    retransmit_mult: int = 4
    push_pull_interval: float = 30.0
    udp_buffer_size: int = 1400
    tcp_timeout: float = 10.0
    # Membership bookkeeping (serf level).
    dead_node_reclaim_time: float = 30.0
    reconnect_interval: float = 30.0
    reconnect_timeout: float = 72 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    reap_interval: float = 15.0
    leave_propagate_delay: float = 3.0
    # Bounds.
    meta_max_size: int = 512
    event_buffer: int = 512
    user_event_size_limit: int = 512
    min_queue_depth: int = 4096
    max_pending_acks: int = 4096
    push_pull_max_events: int = 512

    def replace(self, **changes: Any) -> GossipParams:
        """A copy with some fields changed, validated."""
        updated = dataclasses.replace(self, **changes)
        updated.validate()
        return updated

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        positive = (
            "probe_interval",
            "probe_timeout",
            "gossip_interval",
            "push_pull_interval",
            "reconnect_interval",
            "reap_interval",
            "tcp_timeout",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"gossip parameter {name} must be positive")
        if self.probe_timeout > self.probe_interval:
            raise ValueError("gossip parameter probe_timeout must not exceed probe_interval")
        at_least_one = (
            "suspicion_mult",
            "suspicion_max_timeout_mult",
            "awareness_max_multiplier",
            "retransmit_mult",
            "gossip_nodes",
            "event_buffer",
        )
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"gossip parameter {name} must be at least 1")
        if self.indirect_checks < 0:
            raise ValueError("gossip parameter indirect_checks must not be negative")
        # A datagram must hold at least one full-size alive message after the
        # encryption overhead, or metadata could never travel.
        if self.udp_buffer_size < 2 * self.meta_max_size:
            raise ValueError("gossip parameter udp_buffer_size is too small for the metadata limit")
        # serf refuses user events above 9 KiB whatever the configuration says.
        if not 1 <= self.user_event_size_limit <= 9 * 1024:
            raise ValueError("gossip parameter user_event_size_limit must be 1..9216 bytes")


def lan() -> GossipParams:
    """Consul's LAN defaults."""
    return GossipParams()


def local() -> GossipParams:
    """A fast profile for tests on one machine: short intervals, same shape.

    Probe timeout and gossip interval follow memberlist's loopback profile, the
    probe interval is halved, and the serf-level timers (reconnect, reap, leave
    delay) shrink so partition and restart scenarios take seconds, not minutes.
    """
    return GossipParams(
        probe_interval=0.5,
        probe_timeout=0.2,
        indirect_checks=3,
        # Kept at the LAN value: it also sets how many independent confirmations
        # Lifeguard waits for (mult - 2), and 1 would let a single echo of a
        # suspicion cut the timeout to its minimum.
        suspicion_mult=4,
        gossip_interval=0.1,
        gossip_to_the_dead_time=5.0,
        retransmit_mult=3,
        push_pull_interval=5.0,
        tcp_timeout=1.0,
        dead_node_reclaim_time=5.0,
        reconnect_interval=2.0,
        reconnect_timeout=120.0,
        tombstone_timeout=120.0,
        reap_interval=1.0,
        leave_propagate_delay=0.5,
    )


def suspicion_min_timeout(suspicion_mult: int, n: int, probe_interval: float) -> float:
    """The shortest time a suspicion may last: mult * max(1, log10(N)) * interval.

    memberlist clamps the node scale to at least 1 so that pools under ten
    members still wait `mult` whole probe intervals before declaring a death.
    """
    node_scale = max(1.0, math.log10(max(1, n)))
    return suspicion_mult * node_scale * probe_interval


def suspicion_max_timeout(max_timeout_mult: int, min_timeout: float) -> float:
    """The longest a suspicion lasts when nobody confirms it."""
    return max_timeout_mult * min_timeout


def suspicion_expected_confirmations(suspicion_mult: int, n: int) -> int:
    """How many independent confirmations drive the timeout down to its minimum.

    memberlist expects `suspicion_mult - 2` and none at all when the pool is too
    small to produce that many other members (the timeout then starts at min).
    """
    k = suspicion_mult - 2
    if n - 2 < k:
        return 0
    return max(0, k)


def suspicion_timeout(
    confirmations: int, expected: int, min_timeout: float, max_timeout: float
) -> float:
    """Total suspicion time after `confirmations` independent confirmations (Lifeguard).

    Starts at `max_timeout` and shrinks toward `min_timeout` as
    log(c + 1) / log(expected + 1); with no confirmations expected it is `min_timeout`.
    """
    if expected < 1:
        return min_timeout
    c = min(max(confirmations, 0), expected)
    frac = math.log(c + 1.0) / math.log(expected + 1.0)
    raw = max_timeout - frac * (max_timeout - min_timeout)
    # Millisecond resolution, rounded down, as memberlist computes it.
    timeout = math.floor(raw * 1000.0) / 1000.0
    return max(timeout, min_timeout)


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times each broadcast is sent: mult * ceil(log10(N + 1))."""
    return retransmit_mult * math.ceil(math.log10(max(0, n) + 1))


def push_pull_interval(base_interval: float, n: int) -> float:
    """The push-pull interval for a pool of N members.

    Unchanged up to 32 members; beyond that one extra interval per doubling, so
    full-state syncs cost each member roughly the same bandwidth at any size.
    """
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return base_interval
    mult = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return base_interval * mult


def scale_by_awareness(timeout: float, score: int) -> float:
    """Lifeguard local health: a node that has been missing acks waits longer."""
    return timeout * (score + 1)
