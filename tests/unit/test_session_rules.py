"""Session rules without I/O: TTL and Behavior texts, the create body's defaults,
LockDelay's reading, and the leader's TTL timers."""

from __future__ import annotations

import pytest

from proconsul.http.common import HTTPError
from proconsul.http.session_routes import SessionCreateBody, lock_delay_ns, session_from_body
from proconsul.server.session_timers import SessionTimers
from proconsul.structs.session import (
    ServiceCheck,
    Session,
    SessionError,
    ttl_seconds,
    validate_session,
)


def test_ttl_bounds_and_texts() -> None:
    assert ttl_seconds("") == 0
    assert ttl_seconds("10s") == 10
    assert ttl_seconds("24h") == 86_400
    with pytest.raises(
        SessionError, match=r"^Invalid Session TTL '5000000000', must be between \[10s=24h0m0s\]$"
    ):
        ttl_seconds("5s")
    with pytest.raises(SessionError, match="Invalid Session TTL '86401000000000'"):
        ttl_seconds("86401s")
    with pytest.raises(SessionError, match=r"^Session TTL 'soon' invalid: time: invalid duration"):
        ttl_seconds("soon")


def test_validate_behavior_and_node() -> None:
    with pytest.raises(SessionError, match=r"^Invalid Behavior setting 'keep'$"):
        validate_session(Session(node="n1", behavior="keep"))
    with pytest.raises(SessionError, match=r"^Must provide Node$"):
        validate_session(Session())
    validate_session(Session(node="n1", behavior="delete", ttl="30s"))


def test_create_body_defaults() -> None:
    session = session_from_body(SessionCreateBody(), "agent-node")
    assert session.node == "agent-node"
    assert session.node_checks == ["serfHealth"]
    assert session.lock_delay == 15_000_000_000
    assert session.behavior == "release"


def test_named_checks_replace_the_default_and_checks_fold_in() -> None:
    body = SessionCreateBody(checks=["a"], node_checks=["b", "a"])
    assert session_from_body(body, "n").node_checks == ["b", "a"]
    none = session_from_body(SessionCreateBody(node_checks=[]), "n")
    assert none.node_checks == [] and none.check_keys() == []
    services = session_from_body(SessionCreateBody(service_checks=[ServiceCheck(id="web")]), "n")
    assert services.node_checks == [] and services.check_keys() == ["web"]


def test_lock_delay_reading() -> None:
    assert lock_delay_ns("20s") == 20_000_000_000
    assert lock_delay_ns(15) == 15_000_000_000  # below 1000: seconds
    assert lock_delay_ns(2_000_000_000) == 2_000_000_000  # nanoseconds
    with pytest.raises(HTTPError):
        lock_delay_ns("soon")


def test_timers_expire_after_twice_the_ttl_and_renewal_restarts() -> None:
    timers = SessionTimers()
    a = Session(id="a", ttl="10s")
    b = Session(id="b", ttl="10s")
    untimed = Session(id="c")
    timers.sync([a, b, untimed], now=100.0)
    assert len(timers) == 2
    timers.renew(b, now=115.0)
    assert timers.expired(119.9) == []
    assert timers.expired(120.0) == ["a"]
    assert timers.expired(135.0) == ["a", "b"]
    timers.sync([b], now=136.0)  # "a" is gone from the state
    assert timers.expired(136.0) == ["b"]
    timers.clear()
    timers.sync([b], now=200.0)  # a new term: full grace again
    assert timers.expired(219.0) == []
