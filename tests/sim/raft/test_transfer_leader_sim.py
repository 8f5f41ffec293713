"""Targeted leadership transfer (`POST /v1/operator/raft/transfer-leader?id=`) in the simulator.

Three servers under client load on a reordering, duplicating network; every few
virtual seconds the leader is asked to hand leadership to a named follower
(TimeoutNow: the target campaigns at once, skipping pre-vote and the other
voters' leader stickiness). Each time the named server must lead within one
election timeout, far sooner than an election after a leader loss would
take, and the usual invariants hold throughout (one leader per term, log
matching, state-machine safety, durability), with a linearizable KV history
at the end. A transfer to a server that is not a voter is refused.
"""

from __future__ import annotations

from proconsul.raft.ready import Rejected
from tests.lincheck import check
from tests.sim.raft.raft_harness import SimConfig, Simulation

CONFIG = SimConfig(
    servers=3,
    duration=20.0,
    partitions=False,
    crashes=False,
    stalls=False,
    transfers=False,
    crash_after_ready=0.0,
    crash_before_sync=0.0,
    # No loss: a lost TimeoutNow makes a transfer time out (as in hashicorp/raft),
    # and this test wants every transfer to land.
    drop=0.0,
    randomize=False,
)
TRANSFER_EVERY_S = 2.5


def test_transfer_to_a_named_follower(seed: int) -> None:
    sim = Simulation(seed, CONFIG)
    handovers: list[tuple[float, str, str | None]] = []  # (asked at, target, leader after)
    refused: list[object] = []

    def ask(round_no: int) -> None:
        leader = sim.current_leader()
        if leader is None:
            return
        node = sim.servers[leader].node
        assert node is not None
        followers = [sid for sid in sim.ids if sid != leader]
        target = followers[round_no % len(followers)]
        if not refused:
            refused.append(node.transfer_leadership("nobody"))
        result = node.transfer_leadership(target)
        assert result is None, result
        sim.after_input(leader)
        asked_at = sim.now

        def verify() -> None:
            handovers.append((asked_at, target, sim.current_leader()))

        sim.at(asked_at + sim.params.election_timeout, verify)

    for round_no in range(int(CONFIG.duration / TRANSFER_EVERY_S) - 1):
        sim.at(2.0 + round_no * TRANSFER_EVERY_S, lambda n=round_no: ask(n))
    sim.run()
    assert check(sim.history).ok
    assert isinstance(refused[0], Rejected)
    assert len(handovers) >= 5
    missed = [(at, target, got) for at, target, got in handovers if got != target]
    assert missed == [], f"seed {seed}: {missed}\n{sim.describe()}"
    assert sim.counters.get("ok_put", 0) + sim.counters.get("ok_cas", 0) > 20
