"""Gossip scenarios on the deterministic simulator (see gossipnet.py).

Each test runs per seed (conftest.py); a failure prints the seed and the
`--seed=N` command that replays it exactly. Invariants (a member never thinks
itself dead, incarnations never go back, queues stay bounded, ...) are checked
by the simulator after every step, in every scenario.
"""

from __future__ import annotations

import math
from functools import partial

import pytest

from proconsul.gossip import GossipParams, State, lan, local
from proconsul.gossip.actions import MemberEventKind
from proconsul.gossip.crypto import EncryptionPolicy, Keyring
from proconsul.gossip.params import (
    retransmit_limit,
    suspicion_max_timeout,
    suspicion_min_timeout,
)

from .gossipnet import NetConfig, Simulation, converged, start_pool

LOSSY = NetConfig(loss=0.01, duplicate=0.01, delay_min=0.0005, delay_max=0.01)


def detection_bound(params: GossipParams, n: int) -> float:
    """Upper bound on crash -> every member has declared it failed.

    Every member probes each other member once per round of n-1 probes, so some
    member probes the crashed one within a round; the probe takes one interval;
    the suspicion lasts at most its maximum; then the dead message spreads in a
    few gossip rounds (each member sends it retransmit_limit times).
    """
    min_t = suspicion_min_timeout(params.suspicion_mult, n, params.probe_interval)
    max_t = suspicion_max_timeout(params.suspicion_max_timeout_mult, min_t)
    probe_round = (n - 1) * params.probe_interval
    spread = retransmit_limit(params.retransmit_mult, n) * params.gossip_interval * 2
    return probe_round + params.probe_interval + max_t + spread


def formed_pool(
    seed: int, n: int, params: GossipParams, net: NetConfig | None = None
) -> tuple[Simulation, list[str]]:
    """A pool of n members that has converged on a clean network; then `net` applies."""
    sim = Simulation(seed, params)
    names = start_pool(sim, n)
    sim.run_until_true(lambda: converged(sim, names), timeout=60 + n * 0.1, poll=0.5)
    if net is not None:
        sim.net = net
    return sim, names


def test_same_seed_same_run() -> None:
    runs = []
    for _ in range(2):
        sim = Simulation(7, local(), LOSSY)
        names = start_pool(sim, 12)
        sim.run_for(5)
        sim.crash(names[3])
        sim.run_for(15)
        runs.append([(round(e.time, 9), e.viewer, e.kind, e.subject) for e in sim.events])
    assert runs[0] == runs[1]


def test_pool_of_50_converges(seed: int) -> None:
    sim = Simulation(seed, local(), LOSSY)
    names = start_pool(sim, 50)
    took = sim.run_until_true(lambda: converged(sim, names), timeout=60, poll=0.5)
    # Everyone agrees on the same alive set, which is the whole pool.
    want = sorted(names)
    for name in names:
        assert sim.alive_set(name) == want
    assert took < 60
    assert not sim.fails_about(names[0])


@pytest.mark.single_seed
def test_pool_of_500_converges(seed: int) -> None:
    sim = Simulation(seed, lan(), NetConfig(loss=0.01), record_events=False)
    names = start_pool(sim, 500, stagger=0.02)
    took = sim.run_until_true(lambda: converged(sim, names), timeout=120, poll=2.0)
    assert took < 120
    assert sim.alive_set(names[-1]) == sorted(names)


def test_crashed_member_declared_dead_within_bound(seed: int) -> None:
    params = local()
    n = 30
    sim, names = formed_pool(seed, n, params, LOSSY)
    victim = names[7]
    crashed_at = sim.now
    sim.crash(victim)
    bound = detection_bound(params, n)
    others = [x for x in names if x != victim]
    took = sim.run_until_true(
        lambda: all(sim.state_in(x, victim) == State.DEAD for x in others), timeout=bound, poll=0.1
    )
    assert took <= bound
    viewers = {e.viewer for e in sim.fails_about(victim, since=crashed_at)}
    assert viewers == set(others)
    # Nobody else was accused of failing along the way.
    assert all(e.subject == victim for e in sim.events if e.kind is MemberEventKind.FAIL)


def test_no_false_positive_at_10_percent_loss(seed: int) -> None:
    """Lifeguard: 10 simulated minutes at 10% datagram loss, Consul's LAN defaults.

    Streams also fail 10% of the time, so the TCP fallback ping cannot paper
    over every lost probe; suspicions happen and must all be refuted in time.
    """
    net = NetConfig(loss=0.10, duplicate=0.01, delay_min=0.0005, delay_max=0.01, tcp_failure=0.10)
    sim, names = formed_pool(seed, 50, lan(), net)
    start = sim.now
    sim.run_for(600)
    fails = [e for e in sim.events if e.kind is MemberEventKind.FAIL and e.time >= start]
    assert fails == [], f"healthy members declared failed: {fails[:5]}"
    stats = [sim.nodes[x].core.stats() for x in names]
    assert sum(s["suspects"] for s in stats) > 0, "the scenario never exercised a suspicion"
    assert converged(sim, names)


@pytest.mark.parametrize("mode", ["freeze", "lag"])
def test_slow_member_causes_no_false_positives(seed: int, mode: str) -> None:
    """A member whose processing stalls must not get healthy members declared dead.

    freeze: it stops for 0.5-2 s at a time, at random (GC pauses).
    lag: for two minutes it handles everything 0.3-1 s late, in order (CPU
    starvation), so acks reach it after its probe timeout. Lifeguard's local
    health score must rise and keep it from accusing the healthy.
    """
    params = local()
    sim, names = formed_pool(seed, 30, params, LOSSY)
    slow = names[4]
    start = sim.now
    if mode == "freeze":
        t = start
        while t < start + 120:
            pause = sim.rng.uniform(0.5, 2.0)
            sim.at(t, partial(sim.stall, slow, pause))
            t += pause + sim.rng.uniform(0.1, 1.0)
    else:
        sim.lag(slow, 120, 0.3, 1.0)
    before = sim.nodes[slow].core.stats()
    peak = 0
    while sim.now < start + 120:
        sim.run_for(0.5)
        peak = max(peak, sim.nodes[slow].core.awareness)
    after = sim.nodes[slow].core.stats()
    wrongly = [
        e
        for e in sim.events
        if e.kind is MemberEventKind.FAIL and e.subject != slow and e.time >= start
    ]
    assert wrongly == [], f"healthy members declared failed: {wrongly[:5]}"
    probes = after["probes"] - before["probes"]
    failures = after["probe_failures"] - before["probe_failures"]
    assert failures <= 0.2 * probes, f"{failures} of {probes} probes by the slow member failed"
    if mode == "lag":
        assert peak >= 2, "the slow member never grew its awareness score"
    # Once it runs normally again the pool is whole.
    sim.run_until_true(lambda: converged(sim, names), timeout=60, poll=0.5)


@pytest.mark.parametrize("asymmetric", [False, True], ids=["both-ways", "one-way"])
def test_partition_heals_and_pool_remerges(seed: int, asymmetric: bool) -> None:
    params = local()
    sim, names = formed_pool(seed, 20, params, LOSSY)
    left, right = names[:10], names[10:]
    if asymmetric:
        # Right cannot reach left; left still reaches right.
        for a in right:
            for b in left:
                sim.block(a, b)
    else:
        sim.partition(left, right)
    # Long enough for each side to declare the other dead and forget it.
    sim.run_until_true(
        lambda: all(sim.state_in(left[0], x) == State.DEAD for x in right[:3]),
        timeout=120,
        poll=0.5,
    )
    sim.run_for(params.gossip_to_the_dead_time + 2 * params.probe_interval * len(names))
    sim.heal()
    bound = 10 * params.reconnect_interval + 2 * params.push_pull_interval + 30
    took = sim.run_until_true(lambda: converged(sim, names), timeout=bound, poll=0.5)
    assert took <= bound


def test_leave_and_fail_are_told_apart(seed: int) -> None:
    params = local()
    sim, names = formed_pool(seed, 12, params, LOSSY)
    leaver, crasher = names[2], names[5]
    sim.nodes[leaver].core.leave(sim.now)
    sim._after(sim.nodes[leaver])
    sim.run_until_true(
        lambda: sim.nodes[leaver].core.leave_propagated(), timeout=params.leave_propagate_delay * 4
    )
    sim.crash(leaver)
    sim.crash(crasher)
    others = [x for x in names if x not in (leaver, crasher)]
    sim.run_until_true(
        lambda: all(sim.state_in(x, crasher) == State.DEAD for x in others),
        timeout=detection_bound(params, 12),
    )
    for x in others:
        assert sim.state_in(x, leaver) == State.LEFT
    assert not sim.fails_about(leaver)
    assert {
        e.viewer for e in sim.events if e.subject == leaver and e.kind is MemberEventKind.LEAVE
    } >= set(others)


def test_metadata_update_and_user_event_reach_everyone(seed: int) -> None:
    params = local()
    net = NetConfig(loss=0.05, duplicate=0.05, delay_min=0.0005, delay_max=0.02)
    sim, names = formed_pool(seed, 40, params, net)
    changer, firer = sim.nodes[names[3]], sim.nodes[names[9]]
    new_tags = {"role": "consul", "dc": "dc1", "port": "8300", "build": "1.16.0"}
    changer.core.update_meta(new_tags, sim.now)
    sim._after(changer)
    ltime = firer.core.fire_event("deploy", b"v42", sim.now)
    sim._after(firer)

    def everyone_knows() -> bool:
        for node in sim.live():
            member = node.core.member(changer.name)
            if member is None or member.tags != new_tags:
                return False
            if not any(name == "deploy" for _, name, _ in node.user_events):
                return False
        return True

    sim.run_until_true(everyone_knows, timeout=30, poll=0.1)
    sim.run_for(10)
    for node in sim.live():
        # Delivered exactly once despite duplication and retransmission.
        assert [e for e in node.user_events if e[1] == "deploy"] == [(ltime, "deploy", b"v42")]
        updates = [
            e
            for e in sim.events
            if e.viewer == node.name
            and e.subject == changer.name
            and e.kind is MemberEventKind.UPDATE
        ]
        assert len(updates) == 1


def test_crashed_member_restarts_and_rejoins(seed: int) -> None:
    params = local()
    sim, names = formed_pool(seed, 15, params, LOSSY)
    victim = names[6]
    sim.crash(victim)
    others = [x for x in names if x != victim]
    sim.run_until_true(
        lambda: all(sim.state_in(x, victim) == State.DEAD for x in others),
        timeout=detection_bound(params, 15),
    )
    sim.restart(victim, join=[names[0]])
    sim.run_until_true(lambda: converged(sim, names), timeout=30, poll=0.2)
    # The fresh process started at incarnation 0 and refuted its own death.
    assert sim.nodes[victim].core.incarnation > 0


def test_key_rotation_without_failures(seed: int) -> None:
    """The three-step rollout from plaintext to encrypted, then install/use/remove
    of a new key, on a live pool: no member is ever marked failed."""
    params = local()
    sim, names = formed_pool(seed, 5, params, LOSSY)
    old_key, new_key = bytes(range(32)), bytes(range(1, 33))
    rings = {x: Keyring(old_key) for x in names}

    def roll(**flags: bool) -> None:
        for x in names:
            # One agent at a time, as a rolling restart would.
            sim.nodes[x].policy = EncryptionPolicy(rings[x], **flags)
            sim.run_for(3)

    roll(verify_incoming=False, verify_outgoing=False)
    roll(verify_incoming=False, verify_outgoing=True)
    roll(verify_incoming=True, verify_outgoing=True)
    for step in ("install", "use", "remove"):
        for x in names:
            ring = rings[x]
            if step == "install":
                ring.install(new_key)
            elif step == "use":
                ring.use(new_key)
            else:
                ring.remove(old_key)
            sim.run_for(1)
        sim.run_for(3)
    sim.run_for(20)
    assert not [e for e in sim.events if e.kind is MemberEventKind.FAIL]
    assert converged(sim, names)
    # Traffic really is sealed with the new key now.
    assert all(rings[x].keys() == (new_key,) for x in names)
    assert all(sim.nodes[x].refused == 0 for x in names)


def test_detection_bound_formula_is_sane() -> None:
    # Guard against the bound silently becoming meaningless.
    p = local()
    bound = detection_bound(p, 30)
    assert bound < 60
    assert math.isfinite(bound)
