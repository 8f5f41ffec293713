"""Every HTTP route has an ACL rule, and every rule names a route that exists.

The app is built by the real `build_app` (with the UI routes on, so every
route is there); the agent object is only read for the body-size limit.
A new endpoint without an entry in `ACL_RULES` fails here, with the list
of what is missing.
"""

from __future__ import annotations

from typing import cast

from aiohttp import web

from proconsul.acl.authorizer import Authorizer
from proconsul.acl.rules import parse_rules
from proconsul.http.acl_rules import (
    ACL_RULES,
    AGENT_NODE,
    Kind,
    acl_middleware,
    app_route_keys,
    check_routes,
    rules_table,
)
from proconsul.http.api import AgentAPI
from proconsul.http.server import build_app


class _BuildOnly:
    """What build_app reads from the agent while building; no handler runs."""

    kv_max_value_size = 512 * 1024


def _app() -> web.Application:
    return build_app(cast(AgentAPI, _BuildOnly()), ui_enabled=True)


def test_every_route_has_a_rule() -> None:
    missing = check_routes(_app())
    assert missing == [], "routes without an ACL rule:\n" + "\n".join(
        f"{m} {p}" for m, p in missing
    )


def test_every_rule_names_a_route() -> None:
    stale = sorted(set(ACL_RULES) - app_route_keys(_app()))
    assert stale == [], f"rules for routes that do not exist: {stale}"


def test_the_middleware_is_installed_inside_consul_errors() -> None:
    middlewares = list(_app().middlewares)
    assert acl_middleware in middlewares
    # Inside the error middleware, so PermissionDenied becomes Consul's 403 text.
    assert middlewares.index(acl_middleware) > 0


def test_labelled_rules_name_something_and_resources_are_known() -> None:
    authorizer = Authorizer(default_policy="deny")
    for (method, pattern), rule in ACL_RULES.items():
        if rule.kind is not Kind.REQUIRE:
            continue
        name = rule.name
        if name is not None and name != AGENT_NODE:
            assert "{" + name + "}" in pattern, (method, pattern, name)
        # decide() refuses unknown resources, unknown access and a missing label.
        authorizer.decide(rule.resource, rule.access, None if name is None else "x")


def test_consul_required_acls_for_agent_endpoints() -> None:
    """A few rows checked against Consul's "ACL Required" column."""
    expect = {
        ("GET", "/v1/agent/self"): ("agent", "read"),
        ("PUT", "/v1/agent/reload"): ("agent", "write"),
        ("PUT", "/v1/agent/force-leave/{node}"): ("operator", "write"),
        ("PUT", "/v1/agent/maintenance"): ("node", "write"),
        ("PUT", "/v1/agent/token/{kind}"): ("acl", "write"),
        ("GET", "/v1/operator/keyring"): ("keyring", "read"),
        ("DELETE", "/v1/operator/raft/peer"): ("operator", "write"),
        ("PUT", "/v1/event/fire/{name}"): ("event", "write"),
    }
    for key, (resource, access) in expect.items():
        rule = ACL_RULES[key]
        assert (rule.kind, rule.resource, rule.access) == (Kind.REQUIRE, resource, access), key
    assert ACL_RULES[("GET", "/v1/status/leader")].kind is Kind.NONE
    assert ACL_RULES[("GET", "/v1/kv/{key}")].kind is Kind.SERVER
    assert ACL_RULES[("GET", "/v1/agent/members")].kind is Kind.FILTERED


def test_table_renders_for_docs() -> None:
    lines = rules_table(ACL_RULES)
    assert "PUT /v1/agent/token/{kind} -> require: acl:write" in lines
    assert len(lines) == len(ACL_RULES)


def test_management_rules_allow_every_required_rule() -> None:
    management = Authorizer(
        [
            parse_rules(
                'acl = "write"\noperator = "write"\nkeyring = "write"\n'
                'agent_prefix "" { policy = "write" }\n'
                'node_prefix "" { policy = "write" }\n'
                'service_prefix "" { policy = "write" }\n'
                'event_prefix "" { policy = "write" }\n'
            )
        ]
    )
    for rule in ACL_RULES.values():
        if rule.kind is Kind.REQUIRE:
            assert management.allowed(
                rule.resource, rule.access, None if rule.name is None else "n"
            )
