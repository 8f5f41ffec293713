"""A long HTTP fuzzing session: tests/fuzz with the `long` Hypothesis profile.

CI runs the same property tests with the small `ci` profile (a few dozen
examples per test); this runs thousands per test against the same real dev
agents and prints how long it took. A failure prints the shrunk example and
its `@reproduce_failure` blob. It asserts nothing about speed.

    .venv/bin/python bench/fuzz_http.py [--profile long] [pytest args, e.g. -k kv_put]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="long", help="Hypothesis profile (ci or long)")
    args, pytest_args = parser.parse_known_args()
    env = {**os.environ, "HYPOTHESIS_PROFILE": args.profile}
    paths = [str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "timeout=0",  # a long run outlasts the per-test timeout CI uses
        "--hypothesis-show-statistics",
        str(ROOT / "tests" / "fuzz"),
        *pytest_args,
    ]
    started = time.monotonic()
    code = subprocess.call(command, cwd=ROOT, env=env)
    print(f"profile {args.profile}: {time.monotonic() - started:.0f} s, exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
