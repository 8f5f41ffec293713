"""Hypothesis profiles for the fuzz tests, and the agents the HTTP fuzz tests drive.

Profiles, chosen by the `HYPOTHESIS_PROFILE` environment variable:
- `ci` (the default): the decoders' tests run Hypothesis' usual 100 examples
  each, derandomized so every run tries the same inputs, with no example
  database; the HTTP tests (each example a real request to a real agent) run
  30 each (`http-ci`). The whole folder runs in well under a minute.
- `long`: 20,000 examples per decoder test and 3,000 per HTTP test, with fresh
  randomness and the example database, for a soak run (bench/README.md,
  bench/fuzz_http.py).
Examples are not timed (`deadline=None`): a slow machine is not a bug, and a
hang is caught by each call's own timeout instead.

A failure prints the example; add it as an `@example(...)` next to the test
once its fix is in, so it stays covered in CI.

Agents: one dev agent without ACLs and one with ACLs on (default deny) and a
known management token, real processes shared by the session, so that HTTP
examples run back to back against state earlier examples left behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.agent_process import start_agent
from tests.fuzz.http_target import Target

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
for _name, _examples in (("http-ci", 30), ("http-long", 3000)):
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        suppress_health_check=_SLOW_INPUTS,
        print_blob=True,
    )
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

MANAGEMENT = str(uuid.uuid4())
ACL_HCL = (
    f'acl {{ enabled = true default_policy = "deny" '
    f'tokens {{ initial_management = "{MANAGEMENT}" }} }}'
)
TTL_CHECK = {"Name": "fuzz ttl", "CheckID": "fuzz-ttl", "TTL": "10m"}


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    agent = start_agent(tmp_path_factory.mktemp("fuzz-http"))
    try:
        fuzzed = Target(agent)
        status, body = fuzzed.send("PUT", "/v1/agent/check/register", TTL_CHECK)
        assert status == 200, body
        yield fuzzed
        fuzzed.assert_healthy()
    finally:
        agent.stop()


@pytest.fixture(scope="session")
def acl_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    agent = start_agent(tmp_path_factory.mktemp("fuzz-http-acl"), "-hcl", ACL_HCL)
    try:
        fuzzed = Target(agent, token=MANAGEMENT)
        yield fuzzed
        fuzzed.assert_healthy()
    finally:
        agent.stop()
