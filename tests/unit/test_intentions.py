"""connect/intentions.py: precedence, the winning intention for a pair, the
default policy, L7 permissions against HTTP requests, and the printed texts."""

from __future__ import annotations

from typing import Any

import pytest

from proconsul.connect.config_entries import parse_config_entry
from proconsul.connect.intentions import (
    DEFAULT_REASON,
    HTTPRequest,
    authorize,
    authorize_http,
    check,
    check_text,
    created_text,
    default_allow,
    describe,
    header_matches,
    intentions_of,
    match,
    matched_reason,
    permission_matches,
    precedence,
)
from proconsul.structs.config_entries import (
    HTTPHeaderMatch,
    Intention,
    IntentionHTTPPermission,
    IntentionPermission,
    ServiceIntentions,
)


def entry(name: str, *sources: dict[str, Any]) -> ServiceIntentions:
    parsed = parse_config_entry({"Kind": "service-intentions", "Name": name, "Sources": sources})
    assert isinstance(parsed, ServiceIntentions)
    return parsed


@pytest.mark.parametrize(
    ("source", "destination", "source_ns", "destination_ns", "expected"),
    [
        # Open source: one namespace, so only names vary.
        ("web", "api", "default", "default", 9),
        ("*", "api", "default", "default", 8),
        ("web", "*", "default", "default", 6),
        ("*", "*", "default", "default", 5),
        # The general scale, for the record: a wildcard namespace lowers it.
        ("*", "api", "*", "default", 7),
        ("*", "*", "*", "default", 4),
        ("web", "*", "default", "*", 3),
        ("*", "*", "default", "*", 2),
        ("*", "*", "*", "*", 1),
    ],
)
def test_precedence(
    source: str, destination: str, source_ns: str, destination_ns: str, expected: int
) -> None:
    assert precedence(source, destination, source_ns, destination_ns) == expected


# One set of intentions, many questions about it.
INTENTIONS = intentions_of(
    [
        entry(
            "api",
            {"Name": "web", "Action": "allow"},
            {"Name": "*", "Action": "deny"},
            {"Name": "admin", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]},
        ),
        entry("db", {"Name": "api", "Action": "allow"}),
        entry("*", {"Name": "monitor", "Action": "allow"}, {"Name": "*", "Action": "deny"}),
        entry("cache", {"Name": "*", "Action": "allow"}),
    ]
)


@pytest.mark.parametrize(
    ("source", "destination", "winner"),
    [
        ("web", "api", ("web", "api", 9)),  # exact beats the * source
        ("billing", "api", ("*", "api", 8)),  # * -> api beats * -> *
        ("api", "db", ("api", "db", 9)),
        ("web", "db", ("*", "*", 5)),  # nothing for db but the catch-all
        ("monitor", "db", ("monitor", "*", 6)),  # exact -> * beats * -> *
        ("monitor", "api", ("*", "api", 8)),  # * -> exact beats exact -> *
        ("web", "cache", ("*", "cache", 8)),
        ("admin", "api", ("admin", "api", 9)),
    ],
)
def test_the_highest_precedence_match_wins(
    source: str, destination: str, winner: tuple[str, str, int]
) -> None:
    found = match(INTENTIONS, source, destination)
    assert found is not None
    assert (found.source_name, found.destination_name, found.precedence) == winner


def test_no_match_without_a_catch_all() -> None:
    only_api = intentions_of([entry("api", {"Name": "web", "Action": "allow"})])
    assert match(only_api, "web", "db") is None
    assert match(only_api, "other", "api") is None


def test_deny_wins_a_tie() -> None:
    # Two rows for one pair at one precedence (possible when legacy intentions
    # and a config entry coexist): deny sorts first, whatever the input order.
    allow = Intention(source_name="web", destination_name="api", action="allow", precedence=9)
    deny = Intention(source_name="web", destination_name="api", action="deny", precedence=9)
    for rows in ([allow, deny], [deny, allow]):
        found = match(rows, "web", "api")
        assert found is not None and found.action == "deny"
        assert not check(rows, "web", "api", default_allow=True)


def test_peer_sources_never_match_local_services() -> None:
    rows = [Intention(source_name="web", destination_name="api", action="deny", source_peer="p")]
    assert match(rows, "web", "api") is None


@pytest.mark.parametrize(
    ("acl_enabled", "policy", "allowed"),
    [(False, "deny", True), (False, "allow", True), (True, "allow", True), (True, "deny", False)],
)
def test_default_when_nothing_matches(acl_enabled: bool, policy: str, allowed: bool) -> None:
    assert default_allow(acl_enabled, policy) is allowed
    decision = authorize([], "web", "api", default_allow=default_allow(acl_enabled, policy))
    assert decision.allowed is allowed
    assert decision.reason == DEFAULT_REASON
    assert decision.intention is None


@pytest.mark.parametrize(
    ("source", "destination", "default", "allowed", "reason"),
    [
        (
            "web",
            "api",
            False,
            True,
            "Matched L4 intention: default/web => default/api (Precedence: 9, Action: ALLOW)",
        ),
        (
            "billing",
            "api",
            True,
            False,
            "Matched L4 intention: default/* => default/api (Precedence: 8, Action: DENY)",
        ),
        # An L7 intention counts as deny for a connection-level check.
        (
            "admin",
            "api",
            True,
            False,
            "Matched L7 intention: default/admin => default/api (Precedence: 9, Permissions: 1)",
        ),
        ("web", "elsewhere", True, False, None),  # the * -> * deny catches it
    ],
)
def test_authorize_l4(
    source: str, destination: str, default: bool, allowed: bool, reason: str | None
) -> None:
    decision = authorize(INTENTIONS, source, destination, default_allow=default)
    assert decision.allowed is allowed
    assert check(INTENTIONS, source, destination, default_allow=default) is allowed
    if reason is not None:
        assert decision.reason == reason


# --------------------------------------------------------------------- L7


def header(**fields: Any) -> HTTPHeaderMatch:
    return HTTPHeaderMatch(name="x-team", **fields)


REQUEST = HTTPRequest("GET", "/api/v2/users?id=7", {"X-Team": "payments-eu", "Accept": "*/*"})


@pytest.mark.parametrize(
    ("criterion", "matched"),
    [
        (header(present=True), True),
        (HTTPHeaderMatch(name="x-missing", present=True), False),
        (HTTPHeaderMatch(name="x-missing", present=True, invert=True), True),
        (header(exact="payments-eu"), True),
        (header(exact="payments"), False),
        (header(prefix="payments-"), True),
        (header(suffix="-eu"), True),
        (header(suffix="-us"), False),
        (header(regex="payments-(eu|us)"), True),
        (header(regex="payments"), False),  # the whole value must match
        (header(regex="("), False),  # a broken regex matches nothing
        (header(exact="payments-eu", invert=True), False),
        (header(exact="payments-us", invert=True), True),
        (HTTPHeaderMatch(name="X-TEAM", exact="payments-eu"), True),  # names ignore case
    ],
)
def test_header_criteria(criterion: HTTPHeaderMatch, matched: bool) -> None:
    assert header_matches(criterion, REQUEST) is matched


def permission(action: str = "allow", **http: Any) -> IntentionPermission:
    return IntentionPermission(action=action, http=IntentionHTTPPermission(**http))


@pytest.mark.parametrize(
    ("criteria", "matched"),
    [
        ({"path_exact": "/api/v2/users"}, True),  # the query string is not the path
        ({"path_exact": "/api/v2"}, False),
        ({"path_prefix": "/api/"}, True),
        ({"path_prefix": "/admin"}, False),
        ({"path_regex": "/api/v[0-9]+/.*"}, True),
        ({"path_regex": "/api"}, False),
        ({"methods": ["GET", "HEAD"]}, True),
        ({"methods": ["POST"]}, False),
        ({"path_prefix": "/api", "methods": ["GET"], "header": [header(present=True)]}, True),
        ({"path_prefix": "/api", "methods": ["GET"], "header": [header(exact="x")]}, False),
    ],
)
def test_permission_criteria(criteria: dict[str, Any], matched: bool) -> None:
    assert permission_matches(permission(**criteria), REQUEST) is matched


L7 = intentions_of(
    [
        entry(
            "api",
            {
                "Name": "web",
                "Permissions": [
                    {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
                    {"Action": "allow", "HTTP": {"PathPrefix": "/", "Methods": ["GET"]}},
                ],
            },
            {"Name": "*", "Action": "deny"},
        )
    ]
)


@pytest.mark.parametrize(
    ("method", "path", "default", "allowed", "reason"),
    [
        ("GET", "/admin/users", True, False, "matched"),  # first matching permission: deny
        ("GET", "/users", False, True, "matched"),
        ("POST", "/users", False, False, "default"),  # no permission matches
        ("POST", "/users", True, True, "default"),
    ],
)
def test_authorize_http(method: str, path: str, default: bool, allowed: bool, reason: str) -> None:
    decision = authorize_http(L7, "web", "api", HTTPRequest(method, path), default_allow=default)
    assert decision.allowed is allowed
    expected = (
        "Matched L7 intention: default/web => default/api (Precedence: 9, Permissions: 2)"
        if reason == "matched"
        else DEFAULT_REASON
    )
    assert decision.reason == expected


def test_authorize_http_with_an_l4_intention_uses_its_action() -> None:
    request = HTTPRequest("DELETE", "/anything")
    assert not authorize_http(L7, "billing", "api", request, default_allow=True).allowed
    assert authorize_http(L7, "billing", "db", request, default_allow=True).allowed


# ------------------------------------------------------------------- texts


def test_cli_texts() -> None:
    web_api = Intention(source_name="web", destination_name="api", action="allow", precedence=9)
    assert describe(web_api) == "web => api (allow)"
    assert created_text(web_api) == "Created: web => api (allow)"
    assert check_text(True) == "Allowed"
    assert check_text(False) == "Denied"
    assert (
        matched_reason(web_api)
        == "Matched L4 intention: default/web => default/api (Precedence: 9, Action: ALLOW)"
    )


def test_rows_carry_the_entry_fields() -> None:
    rows = intentions_of(
        [
            entry(
                "api",
                {"Name": "web", "Action": "allow", "Description": "front door"},
            )
        ]
    )
    assert [(row.source_name, row.destination_name, row.action) for row in rows] == [
        ("web", "api", "allow")
    ]
    row = rows[0]
    assert (row.source_ns, row.destination_ns, row.source_type, row.precedence) == (
        "default",
        "default",
        "consul",
        9,
    )
    assert row.description == "front door"


def test_texts_of_l7_and_legacy_intentions() -> None:
    permission = IntentionPermission(action="allow", http=IntentionHTTPPermission(path_prefix="/"))
    l7 = Intention(source_name="web", destination_name="api", permissions=[permission] * 2)
    assert describe(l7) == "web => api (2 permissions)"
    assert (
        describe(Intention("web", "api", permissions=[permission])) == "web => api (1 permission)"
    )
    legacy = Intention("web", "api", "deny", precedence=9, id="abc")
    assert matched_reason(legacy) == (
        "Matched L4 intention: default/web => default/api (ID: abc, Precedence: 9, Action: DENY)"
    )
