"""The long fault run: the CI fault suite's harness (tests/chaos/), for minutes, with a report.

Three `proconsul agent -server` processes and one client agent (raft_multiplier
1; in network namespaces when run as root with `ip`, else on 127.0.0.<base>..),
writers and register clients on all four agents, and a seeded nemesis drawing
from the whole menu one fault at a time: kill -9 of the leader or a follower
(3-10 s down, then restarted on its data dir), SIGSTOP/SIGCONT (5-15 s) and,
with namespaces, a partition cutting one server off (5-15 s), 3-8 s of quiet
between faults. Faults start until `--minutes` have passed; then everything is
healed and checked as in CI.

Prints: the faults applied, unavailability per fault type (median and max of
the longest stretch without an acknowledged write from the fault's start to
3 s after it healed), counts of operations and outcomes, lost acknowledged
writes (must be 0), the linearizability verdict per register key, replica
differences, requests unanswered past rpc_hold_timeout + 3 s while a leader
existed, and tracebacks in the agents' logs. Exit status 1 when a correctness
check fails (lost writes, linearizability, replicas, recovery).

    .venv/bin/python bench/chaos.py [--minutes 10] [--seed N] [--base 241] [--keep]

Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos.harness import ChaosConfig, judge, run_chaos, summary
from tests.chaos.history import explain
from tests.chaos.workload import WorkloadConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh one, printed")
    parser.add_argument("--base", type=int, default=241, help="first address 127.0.0.<base>")
    parser.add_argument("--keep", action="store_true", help="keep the agents' logs on success")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    print(f"seed {seed}, {args.minutes:g} minutes of faults", flush=True)
    config = ChaosConfig(
        seed=seed,
        long=True,
        minutes=args.minutes,
        base=args.base,
        heal_deadline_s=60.0,
        workload=WorkloadConfig(pause_s=0.1, request_timeout_s=30.0, epoch_s=20.0),
    )
    tmp = Path(tempfile.mkdtemp(prefix="proconsul-chaos-"))
    run = run_chaos(tmp, config)
    verdicts = judge(run)
    print(summary(run, verdicts))
    for key in verdicts.not_linearizable:
        print(f"{key}: events around where the linearizability search got stuck:")
        print("\n".join(explain(run.events, key, verdicts.linearizable[key], run.t0)[:60]))
    broken = bool(
        run.nemesis_error or verdicts.lost or verdicts.not_linearizable or verdicts.replica_diffs
    )
    if broken or args.keep:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
