"""The short seeded fault run, for CI: 3 servers and 1 client under faults, then checked.

One run (tests/chaos/harness.py) per module, under a minute: a leader kill, a
follower kill, a SIGSTOP of the leader and, where network namespaces can be
made, a partition of the leader and one of a follower, in a seeded order with
seeded durations (kills 1-2 s down, stops 2-4 s, partitions 3-5 s), while
writers and register clients talk to all four agents. Each test below is one
check on that run; a failing one prints the run's summary, whose first line
has the seed: `CHAOS_SEED=N` replays the schedule (the default seed is fixed,
so CI is repeatable); `CHAOS_NETNS=0` keeps the agents on loopback addresses
(no partitions) where namespaces could be made.

Every check is strict except two that fail on known defects being fixed
elsewhere, marked xfail(strict=False) with the reason: requests held past
rpc_hold_timeout by a forwarded hop to a leader that stopped answering (seen
here when a partition catches requests in flight; the long run,
bench/chaos.py, with 5-15 s stops, shows the frozen-leader form), and
tracebacks logged for expected transport failures. Each has a strict twin
that allows that defect and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.chaos.harness import ChaosConfig, ChaosRun, Verdicts, judge, run_chaos, summary
from tests.chaos.history import explain

# The run itself takes a minute or two on 2 slow cores; the checks take seconds.
pytestmark = pytest.mark.timeout(300)

DEFAULT_SEED = 1


@dataclass
class Judged:
    run: ChaosRun
    verdicts: Verdicts
    text: str


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Judged]:
    seed = int(os.environ.get("CHAOS_SEED", DEFAULT_SEED))
    # CHAOS_NETNS=0 runs on loopback addresses even where namespaces could be made.
    netns = os.environ.get("CHAOS_NETNS", "1") != "0"
    config = ChaosConfig(seed=seed, want_partitions=netns)
    run = run_chaos(tmp_path_factory.mktemp("chaos"), config)
    verdicts = judge(run)
    text = summary(run, verdicts)
    print(text)
    yield Judged(run, verdicts, text)


def test_the_schedule_ran_and_the_cluster_recovered(chaos: Judged) -> None:
    assert chaos.run.nemesis_error == "", chaos.text
    done = {f.name for f in chaos.run.faults}
    assert {"kill-leader", "kill-follower", "stop-leader"} <= done, chaos.text
    assert chaos.verdicts.counts["acked unique writes"] > 0, chaos.text


def test_a_partition_was_exercised(chaos: Judged) -> None:
    if chaos.run.partition_note:
        pytest.skip(f"no partition in this run: {chaos.run.partition_note}")
    assert any(f.kind == "partition" for f in chaos.run.faults), chaos.text


def test_no_acknowledged_write_lost(chaos: Judged) -> None:
    assert chaos.verdicts.lost == {}, f"{chaos.verdicts.lost}\n{chaos.text}"


def test_every_register_history_is_linearizable(chaos: Judged) -> None:
    verdicts = chaos.verdicts
    assert verdicts.linearizable, chaos.text
    bad = []
    for key in verdicts.not_linearizable:
        result = verdicts.linearizable[key]
        verdict = "undecided (search budget spent)" if result is None else "not linearizable"
        bad.append(f"{key}: {verdict}; events around where the search got stuck:")
        bad += explain(chaos.run.events, key, result, chaos.run.t0)
    assert bad == [], "\n".join([*bad, chaos.text])


def test_replicas_identical_after_healing(chaos: Judged) -> None:
    assert chaos.verdicts.replica_diffs == [], f"{chaos.verdicts.replica_diffs[:20]}\n{chaos.text}"


# The known defect (frozen leader) and its partition forms: the same forwarded
# hop to a leader that stopped answering (history.py, `hangs`).
KNOWN_HANG_CAUSES = ("frozen-leader", "cut-off-leader", "cut-off-follower")


def test_no_hang_past_rpc_hold_timeout_but_the_known_one(chaos: Judged) -> None:
    other = [h for h in chaos.verdicts.hangs if h.cause not in KNOWN_HANG_CAUSES]
    assert other == [], chaos.text


@pytest.mark.xfail(
    strict=False,
    reason="known defect, being fixed in server/leader_router.py: a request forwarded to the "
    "leader waits on that leader after it stopped answering (SIGSTOP: until it resumes; "
    "partition on either side: until the link heals or the RPC dead-peer timeout, 10 s), "
    "past rpc_hold_timeout, although the others elected a new leader",
)
def test_no_hang_past_rpc_hold_timeout(chaos: Judged) -> None:
    assert chaos.verdicts.hangs == [], chaos.text


def test_no_traceback_in_the_logs_but_the_known_one(chaos: Judged) -> None:
    other = [t for t in chaos.verdicts.tracebacks if not t.known]
    assert other == [], chaos.text


@pytest.mark.xfail(
    strict=False,
    reason="known defect, being fixed in server/leader_router.py: a forwarded write whose hop "
    "to the leader fails with ConnectionError (an expected transport failure) escapes the "
    "Apply handler and is logged as 'rpc: Apply handler failed' at ERROR with a traceback",
)
def test_no_traceback_in_the_logs_for_an_expected_failure(chaos: Judged) -> None:
    assert chaos.verdicts.tracebacks == [], chaos.text
