"""Hypothesis profiles and the agents the HTTP fuzz tests drive.

Profiles, chosen with the `HYPOTHESIS_PROFILE` environment variable (the
tests here take their settings from it; other tests keep their own):
- `ci` (the default): a few dozen examples per test, so this folder runs in
  well under 30 s;
- `long`: thousands per test, for a fuzzing session (bench/fuzz_http.py).
Examples are not timed (`deadline=None`): each is a real HTTP request to a
real agent, and a hang is caught by the request's own timeout instead.

Agents: one dev agent without ACLs and one with ACLs on (default deny) and a
known management token, real processes shared by the session, so that
examples run back to back against state earlier examples left behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.agent_process import start_agent
from tests.fuzz.http_target import Target

for _name, _examples in (("ci", 30), ("long", 3000)):
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )

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
