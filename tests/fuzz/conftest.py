"""Hypothesis profiles for the fuzz tests, chosen by `HYPOTHESIS_PROFILE`.

- `ci` (the default): Hypothesis' usual 100 examples per test, derandomized so
  every run tries the same inputs, no deadline (a slow machine is not a bug),
  no example database; the whole folder runs in well under a minute.
- `long`: 20,000 examples per test with fresh randomness and the example
  database, for a soak run (see bench/README.md).

A failure prints the example; add it as an `@example(...)` next to the test
once its fix is in, so it stays covered in CI.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Hostile inputs are built large on purpose (deep nesting, long frames).
_SLOW_INPUTS = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW_INPUTS,
)
settings.register_profile(
    "long",
    max_examples=20_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_INPUTS,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
