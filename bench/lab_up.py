"""How long a fresh `proconsul lab up` takes to mesh traffic flowing, against its discovery stage.

The issue's target: a fresh `lab up` to mesh traffic flowing takes under 60 s on
2 cores. In one run this times, as a learner runs them (default intervals, a
subprocess each):

- the baseline: a fresh `lab up --stage discovery` (the four agents, the two
  services, DNS answering), then `lab down --purge`;
- the full run: a fresh `lab up` (discovery, secure, mesh: ending with web
  calling api through both sidecars), then `lab down --purge`.

It prints each stage's time (the sum of its steps' times as `lab up` reports
them), each run's wall time, the full/discovery ratio and the verdict against
the 60 s target. It asserts nothing; CI does not run it.

    .venv/bin/python bench/lab_up.py [--first-address 127.0.0.236] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from statistics import median

TARGET_S = 60.0
STARTED = re.compile(r"^▶ \[ *(\d+)/\d+\] (\w+): ")
FINISHED = re.compile(r"^✓ \[ *(\d+)/\d+\] .* \((\d+\.\d+)s\)$")


def lab(directory: Path, *args: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "proconsul", "lab", *args, "--dir", str(directory)]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    spent = time.monotonic() - start
    if done.returncode != 0:
        tail = done.stdout[-3000:] + done.stderr[-2000:]
        raise SystemExit(f"lab {' '.join(args)} failed:\n{tail}")
    return spent, done.stdout


def stages(output: str) -> dict[str, float]:
    """Stage -> the sum of its steps' times, from `lab up`'s step lines."""
    stage_of: dict[str, str] = {}
    spent: dict[str, float] = defaultdict(float)
    for line in output.splitlines():
        if started := STARTED.match(line):
            stage_of[started[1]] = started[2]
        elif finished := FINISHED.match(line):
            spent[stage_of.get(finished[1], "?")] += float(finished[2])
    return dict(spent)


def one_run(root: Path, first_address: str, stage: str | None) -> tuple[float, dict[str, float]]:
    directory = root / ("lab-" + (stage or "mesh"))
    args = ["up", "--fresh", "--first-address", first_address]
    if stage:
        args += ["--stage", stage]
    try:
        wall, output = lab(directory, *args)
        if stage is None and "Lab is up through the mesh stage" not in output:
            raise SystemExit("lab up did not reach mesh traffic:\n" + output[-3000:])
    finally:
        subprocess.run(
            [sys.executable, "-m", "proconsul", "lab", "down", "--purge", "--dir", str(directory)],
            capture_output=True,
            timeout=120,
        )
    return wall, stages(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-address", default="127.0.0.236")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"cores: {os.cpu_count()}, load average at start: {load[0]:.2f} {load[1]:.2f}")
    walls: dict[str, list[float]] = defaultdict(list)
    per_stage: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as tmp:
        for _ in range(args.rounds):
            for label, stage in (("discovery", "discovery"), ("full", None)):
                wall, spent = one_run(Path(tmp), args.first_address, stage)
                walls[label].append(wall)
                for name, seconds in spent.items():
                    per_stage[label][name].append(seconds)
    print(f"\n{'run':10} {'stage':10} {'seconds':>8}   (medians of {args.rounds} round(s))")
    for label in ("discovery", "full"):
        for name, values in per_stage[label].items():
            print(f"{label:10} {name:10} {median(values):8.1f}")
        print(f"{label:10} {'wall':10} {median(walls[label]):8.1f}")
    full, base = median(walls["full"]), median(walls["discovery"])
    verdict = "meets" if full < TARGET_S else "misses"
    print(f"\nfull/discovery ratio: {full / base:.2f}")
    print(f"fresh lab up to mesh traffic: {full:.1f} s, {verdict} the {TARGET_S:.0f} s target")
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f}")


if __name__ == "__main__":
    main()
