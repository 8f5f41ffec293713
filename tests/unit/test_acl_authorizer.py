"""The authorizer: matching, merging, defaults, key list/recursive rules, intentions, text."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import proconsul.acl.authorizer as authorizer_module
from proconsul.acl.authorizer import Authorizer, Decision, PermissionDenied
from proconsul.acl.identity import global_management_rules
from proconsul.acl.rules import (
    LABELLED_RESOURCES,
    UNLABELLED_RESOURCES,
    Access,
    LabelledRule,
    ParsedPolicy,
    parse_rules,
)


def authz(*texts: str, default: str = "deny", key_list: bool = False) -> Authorizer:
    return Authorizer(
        [parse_rules(t) for t in texts],
        default_policy=default,  # type: ignore[arg-type]
        enable_key_list_policy=key_list,
    )


def method(a: Authorizer, resource: str, access: str) -> Callable[..., bool]:
    return getattr(a, f"{resource}_{access}")  # type: ignore[no-any-return]


# --- every resource x level x exact/prefix ----------------------------------------------

READS = {"read": True, "write": True, "deny": False}
WRITES = {"read": False, "write": True, "deny": False}


@pytest.mark.parametrize("resource", LABELLED_RESOURCES)
@pytest.mark.parametrize("prefix", [False, True], ids=["exact", "prefix"])
@pytest.mark.parametrize("level", ["read", "write", "deny"])
@pytest.mark.parametrize("default", ["allow", "deny"])
def test_labelled_resource_levels(resource: str, prefix: bool, level: str, default: str) -> None:
    keyword = f"{resource}_prefix" if prefix else resource
    a = authz(f'{keyword} "app" {{ policy = "{level}" }}', default=default)
    assert method(a, resource, "read")("app") is READS[level]
    assert method(a, resource, "write")("app") is WRITES[level]
    # A prefix rule covers longer names; an exact one does not.
    covered = "app-2"
    expected_read = READS[level] if prefix else default == "allow"
    expected_write = WRITES[level] if prefix else default == "allow"
    assert method(a, resource, "read")(covered) is expected_read
    assert method(a, resource, "write")(covered) is expected_write
    # Names the rule doesn't reach fall to the default policy.
    assert method(a, resource, "read")("other") is (default == "allow")
    assert method(a, resource, "write")("ap") is (default == "allow")


@pytest.mark.parametrize("resource", UNLABELLED_RESOURCES)
@pytest.mark.parametrize("level", ["read", "write", "deny"])
def test_unlabelled_resource_levels(resource: str, level: str) -> None:
    a = authz(f'{resource} = "{level}"')
    assert method(a, resource, "read")() is READS[level]
    assert method(a, resource, "write")() is WRITES[level]


@pytest.mark.parametrize("resource", [*LABELLED_RESOURCES, "intention"])
@pytest.mark.parametrize("default", ["allow", "deny"])
def test_no_rules_means_the_default_policy(resource: str, default: str) -> None:
    a = authz(default=default)
    for access in ("read", "write"):
        assert method(a, resource, access)("anything") is (default == "allow")


@pytest.mark.parametrize("resource", ["keyring", "operator", "mesh", "peering"])
@pytest.mark.parametrize("default", ["allow", "deny"])
def test_unlabelled_default(resource: str, default: str) -> None:
    a = authz(default=default)
    assert method(a, resource, "read")() is (default == "allow")
    assert method(a, resource, "write")() is (default == "allow")


def test_default_allow_never_grants_acl_or_snapshot() -> None:
    # Consul's allow-all default excludes ACL management; only an acl rule grants it.
    a = authz(default="allow")
    assert (a.acl_read(), a.acl_write(), a.snapshot()) == (False, False, False)
    assert "never grants acl" in a.decide("acl", "read").reason
    b = authz('acl = "write"', default="deny")
    assert (b.acl_read(), b.acl_write(), b.snapshot()) == (True, True, True)
    c = authz('acl = "read"')
    assert (c.acl_read(), c.acl_write(), c.snapshot()) == (True, False, False)


def test_bad_default_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="default_policy"):
        Authorizer(default_policy="maybe")  # type: ignore[arg-type]


# --- matching order -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "read", "write"),
    [
        ("foo", True, False),  # key_prefix "" read
        ("foo/a", True, True),  # key_prefix "foo/" write
        ("foo/private/x", False, False),  # longer key_prefix "foo/private/" deny
        ("foo/bar/secret", False, False),  # exact deny beats the "foo/" prefix
        ("foo/bar/secret2", True, True),  # exact only matches exactly
        ("foo/private", True, True),  # "foo/private/" needs the slash
    ],
)
def test_longest_prefix_wins_and_exact_beats_prefix(name: str, read: bool, write: bool) -> None:
    a = authz(
        'key_prefix "" { policy = "read" }\n'
        'key_prefix "foo/" { policy = "write" }\n'
        'key_prefix "foo/private/" { policy = "deny" }\n'
        'key "foo/bar/secret" { policy = "deny" }'
    )
    assert (a.key_read(name), a.key_write(name)) == (read, write)


def test_exact_read_beats_a_broader_write_prefix() -> None:
    a = authz('service_prefix "" { policy = "write" }', 'service "db" { policy = "read" }')
    assert a.service_write("dbx") and not a.service_write("db") and a.service_read("db")


def test_exact_and_prefix_with_the_same_label_are_separate_rules() -> None:
    a = authz('node "web" { policy = "deny" }\nnode_prefix "web" { policy = "write" }')
    assert not a.node_read("web")
    assert a.node_write("web-1")


# --- merging across policies ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "read", "write"),
    [
        (("read", "write"), True, True),
        (("write", "read"), True, True),
        (("write", "deny"), False, False),
        (("deny", "write"), False, False),
        (("read", "deny", "write"), False, False),
        (("read", "read"), True, False),
    ],
)
def test_deny_wins_then_write_across_policies(
    levels: tuple[str, ...], read: bool, write: bool
) -> None:
    for form in ('service "web"', 'service_prefix "we"'):
        a = authz(*(f'{form} {{ policy = "{level}" }}' for level in levels), default="allow")
        assert (a.service_read("web"), a.service_write("web")) == (read, write)
    a = authz(*(f'operator = "{level}"' for level in levels), default="allow")
    assert (a.operator_read(), a.operator_write()) == (read, write)


def test_key_list_level_merges_between_read_and_write() -> None:
    read, listed, write = (
        f'key_prefix "a/" {{ policy = "{x}" }}' for x in ("read", "list", "write")
    )
    a = authz(read, listed, key_list=True)
    assert a.key_list("a/") and a.key_read("a/x") and not a.key_write("a/x")
    b = authz(listed, write, key_list=True)
    assert b.key_list("a/") and b.key_write("a/x")


# --- key list and recursive delete -----------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "enabled", "expected"),
    [
        ("list", True, True),
        ("write", True, True),
        ("read", True, False),  # with the list policy on, read no longer lists
        ("deny", True, False),
        ("list", False, True),  # list still grants read, which is all that's checked
        ("read", False, True),
        ("deny", False, False),
    ],
)
def test_key_list(level: str, enabled: bool, expected: bool) -> None:
    a = authz(f'key_prefix "app/" {{ policy = "{level}" }}', key_list=enabled)
    assert a.key_list("app/") is expected
    assert a.key_read("app/config") is (level != "deny")
    assert a.key_write("app/config") is (level == "write")
    assert a.decide("key", "list", "app/").allowed is expected


def kp(label: str, level: str) -> str:
    return f'key_prefix "{label}" {{ policy = "{level}" }}'


def k(label: str, level: str) -> str:
    return f'key "{label}" {{ policy = "{level}" }}'


@pytest.mark.parametrize(
    ("rules", "default", "prefix", "expected"),
    [
        ([kp("a/", "write")], "deny", "a/", True),
        ([kp("a/", "write")], "deny", "a/b/", True),
        ([kp("a/", "read")], "allow", "a/", False),
        ([kp("a/", "list")], "allow", "a/", False),
        # a nested rule that doesn't grant write blocks the recursive delete
        ([kp("a/", "write"), k("a/b", "read")], "deny", "a/", False),
        ([kp("a/", "write"), kp("a/x/", "deny")], "deny", "a/", False),
        ([kp("a/", "write"), k("a/b", "write")], "deny", "a/", True),
        # ...but only rules under the prefix count
        ([kp("a/", "write"), k("b", "deny")], "deny", "a/", True),
        # no governing prefix rule: the default decides, nested rules can still deny
        ([k("a/b", "write")], "deny", "a/", False),
        ([k("a/b", "write")], "allow", "a/", True),
        ([k("a/b", "read")], "allow", "a/", False),
        ([], "allow", "", True),
        ([], "deny", "", False),
        # an exact rule on the prefix itself counts as a nested rule
        ([kp("a/", "write"), k("a/", "deny")], "deny", "a/", False),
        # the governing prefix is the longest one covering the whole prefix
        ([kp("", "deny"), kp("a/b/", "write")], "allow", "a/", False),
        ([kp("", "deny"), kp("a/b/", "write")], "allow", "a/b/c", True),
    ],
)
def test_key_write_prefix(rules: list[str], default: str, prefix: str, expected: bool) -> None:
    a = authz(*rules, default=default)
    assert a.key_write_prefix(prefix) is expected
    decision = a.decide("key", "write", prefix, recursive=True)
    assert decision.allowed is expected
    assert decision.permission == "key:write"


def test_management_may_delete_everything() -> None:
    a = Authorizer([global_management_rules()])
    assert a.key_write_prefix("")


# --- intentions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "intentions", "read", "write"),
    [
        ("read", None, True, False),
        ("write", None, True, False),
        ("deny", None, False, False),
        ("read", "write", True, True),
        ("deny", "write", True, True),
        ("write", "deny", False, False),
        ("write", "read", True, False),
    ],
)
def test_intentions_sub_rule_and_its_default(
    policy: str, intentions: str | None, read: bool, write: bool
) -> None:
    extra = f' intentions = "{intentions}"' if intentions else ""
    for form in ('service "api"', 'service_prefix "ap"'):
        a = authz(f'{form} {{ policy = "{policy}"{extra} }}', default="allow")
        assert (a.intention_read("api"), a.intention_write("api")) == (read, write)
        # intentions fall back to the default for services no rule covers
        assert a.intention_write("zzz")


def test_intentions_merge_after_the_service_level() -> None:
    # one policy says nothing about intentions, another denies the service: the merged
    # service level is deny, so the unset intentions default to deny.
    a = authz('service "web" { policy = "write" }', 'service "web" { policy = "deny" }')
    assert not a.intention_read("web")
    write_all = 'service "web" { policy = "write" intentions = "write" }'
    b = authz('service "web" { policy = "read" }', write_all)
    assert b.intention_write("web")
    c = authz(write_all, 'service "web" { policy = "read" intentions = "deny" }')
    assert not c.intention_read("web") and c.service_write("web")


def test_intentions_exact_beats_prefix() -> None:
    a = authz(
        'service_prefix "" { policy = "read" intentions = "write" }\n'
        'service "db" { policy = "read" }'
    )
    assert a.intention_write("web") and not a.intention_write("db") and a.intention_read("db")


# --- mesh and peering fall back to operator ---------------------------------------------------


@pytest.mark.parametrize("resource", ["mesh", "peering"])
def test_mesh_and_peering_fall_back_to_operator(resource: str) -> None:
    a = authz('operator = "write"')
    assert method(a, resource, "write")()
    b = authz('operator = "write"', f'{resource} = "read"')
    assert method(b, resource, "read")() and not method(b, resource, "write")()
    c = authz('operator = "read"', default="allow")
    assert not method(c, resource, "write")()
    assert "operator is read" in c.decide(resource, "write").reason


# --- the walkthrough and management -------------------------------------------------------------


def test_walkthrough_agent_policy() -> None:
    a = authz(
        'node "consul-server-1" {\npolicy = "write"\n}\nservice_prefix "" {\npolicy = "read"\n}'
    )
    assert a.node_write("consul-server-1")
    assert not a.node_write("consul-server-2")
    assert not a.node_read("consul-server-2")
    assert all(a.service_read(name) for name in ("api", "web", "", "consul"))
    assert not any(a.service_write(name) for name in ("api", "web", "", "consul"))
    assert a.intention_read("api") and not a.intention_write("api")
    assert not a.key_read("anything") and not a.operator_read()


def test_global_management_allows_everything() -> None:
    a = Authorizer([global_management_rules()], default_policy="deny", enable_key_list_policy=True)
    for resource in LABELLED_RESOURCES:
        for access in ("read", "write"):
            assert method(a, resource, access)("any/name")
    for resource in UNLABELLED_RESOURCES:
        assert method(a, resource, "write")()
    assert a.key_list("") and a.intention_write("x") and a.snapshot()
    assert a.node_read_all() and a.service_read_all() and a.service_write_any()


# --- whole-resource questions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "default", "expected"),
    [
        (['node_prefix "" { policy = "read" }'], "deny", True),
        (['node_prefix "" { policy = "read" }', 'node "x" { policy = "deny" }'], "deny", False),
        (['node "x" { policy = "read" }'], "deny", False),
        (['node "x" { policy = "read" }'], "allow", True),
        ([], "allow", True),
        ([], "deny", False),
    ],
)
def test_node_read_all(rules: list[str], default: str, expected: bool) -> None:
    assert authz(*rules, default=default).node_read_all() is expected


@pytest.mark.parametrize(
    ("rules", "default", "expected"),
    [
        (['service "web" { policy = "write" }'], "deny", True),
        (['service_prefix "" { policy = "read" }'], "allow", False),
        (['service_prefix "" { policy = "read" } service "a" { policy = "write" }'], "allow", True),
        (['service "web" { policy = "read" }'], "allow", True),
        ([], "deny", False),
    ],
)  # fmt: skip
def test_service_write_any(rules: list[str], default: str, expected: bool) -> None:
    assert authz(*rules, default=default).service_write_any() is expected


# --- decisions and Consul's text ----------------------------------------------------------


def test_decision_text_matches_consul() -> None:
    a = authz('service_prefix "" { policy = "read" }')
    decision = a.decide("service", "write", "web")
    assert decision == Decision(False, "service", "write", "web", 'service_prefix "" is read')
    assert decision.error_text("61c922fa-ec85-32c1-0c3d-fa891ab8ec67") == (
        "Permission denied: token with AccessorID '61c922fa-ec85-32c1-0c3d-fa891ab8ec67' "
        "lacks permission 'service:write' on \"web\""
    )
    assert decision.error_text() == (
        "Permission denied: provided token lacks permission 'service:write' on \"web\""
    )
    operator = a.decide("operator", "read")
    assert operator.error_text("x") == (
        "Permission denied: token with AccessorID 'x' lacks permission 'operator:read'"
    )


@pytest.mark.parametrize(
    ("resource", "access", "name", "reason"),
    [
        ("service", "read", "web", 'service "web" is write'),
        ("service", "read", "webby", 'service_prefix "we" is deny'),
        ("node", "read", "n1", "no node rule matches; default policy deny"),
        ("intention", "read", "web", 'service "web" intentions is read'),
        ("operator", "write", None, "operator is read"),
        ("keyring", "read", None, "no keyring rule; default policy deny"),
    ],
)
def test_decision_reasons(resource: str, access: str, name: str | None, reason: str) -> None:
    a = authz(
        'service "web" { policy = "write" }\nservice_prefix "we" { policy = "deny" }\n'
        'operator = "read"'
    )
    assert a.decide(resource, access, name).reason == reason


def test_require_raises_permission_denied() -> None:
    a = authz('key_prefix "a/" { policy = "read" }')
    a.require("key", "read", "a/b", accessor_id="acc")
    with pytest.raises(PermissionDenied) as caught:
        a.require("key", "write", "a/b", accessor_id="acc")
    assert str(caught.value) == (
        "Permission denied: token with AccessorID 'acc' lacks permission 'key:write' on \"a/b\""
    )
    assert caught.value.decision.reason == 'key_prefix "a/" is read'
    with pytest.raises(PermissionDenied, match="'key:write' on \"a/\""):
        a.require("key", "write", "a/", recursive=True)


@pytest.mark.parametrize(
    ("resource", "access", "name"),
    [("frob", "read", "x"), ("service", "admin", "x"), ("service", "read", None)],
)
def test_decide_rejects_bad_questions(resource: str, access: str, name: str | None) -> None:
    with pytest.raises(ValueError):
        authz().decide(resource, access, name)


@pytest.mark.parametrize(("resource", "access"), [("service", "write"), ("key", "read")])
def test_recursive_is_only_for_key_write(resource: str, access: str) -> None:
    with pytest.raises(ValueError, match="recursive"):
        authz().decide(resource, access, "a/", recursive=True)


# --- the cache --------------------------------------------------------------------------------


def test_cache_is_bounded_and_stays_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authorizer_module, "CACHE_MAX", 8)
    a = authz('service_prefix "a" { policy = "write" }\nservice "b1" { policy = "read" }')
    for round_ in range(3):
        for n in range(50):
            assert a.service_write(f"a{n}") is True, round_
            assert a.service_write(f"b{n}") is False
            assert a.service_read(f"b{n}") is (n == 1)
    assert a.stats()["cache_service"] <= 8


# --- against a naive model ----------------------------------------------------------------------


def naive_allowed(
    policies: list[ParsedPolicy], default: str, resource: str, wanted: Access, name: str
) -> bool:
    """Straight from the docs: merge (deny > write > list > read), exact, longest prefix."""
    rank = {Access.READ: 1, Access.LIST: 2, Access.WRITE: 3, Access.DENY: 4}
    merged: dict[tuple[str, bool], Access] = {}
    for policy in policies:
        for rule in policy.rules:
            if rule.resource != resource:
                continue
            old = merged.get((rule.label, rule.prefix))
            if old is None or rank[rule.access] >= rank[old]:
                merged[(rule.label, rule.prefix)] = rule.access
    level = merged.get((name, False))
    if level is None:
        matches = [label for (label, prefix) in merged if prefix and name.startswith(label)]
        if matches:
            level = merged[(max(matches, key=len), True)]
    if level is None:
        return default == "allow"
    return level is not Access.DENY and level >= wanted


_LABELS = st.sampled_from(["", "a", "ab", "abc", "b", "a/", "a/b", "ba"])
_RULES = st.builds(
    LabelledRule,
    resource=st.sampled_from(["service", "key"]),
    label=_LABELS,
    prefix=st.booleans(),
    access=st.sampled_from([Access.READ, Access.WRITE, Access.DENY]),
)
_POLICIES = st.lists(
    st.builds(ParsedPolicy, rules=st.lists(_RULES, max_size=6).map(tuple)), max_size=4
)


@settings(max_examples=500, deadline=None)
@given(_POLICIES, st.sampled_from(["allow", "deny"]), st.lists(_LABELS, min_size=1, max_size=6))
def test_compiled_authorizer_agrees_with_the_naive_model(
    policies: list[ParsedPolicy], default: str, names: list[str]
) -> None:
    a = Authorizer(policies, default_policy=default)  # type: ignore[arg-type]
    for _ in range(2):  # the second pass is answered from the cache
        for name in names:
            for resource in ("service", "key"):
                for access, wanted in (("read", Access.READ), ("write", Access.WRITE)):
                    expected = naive_allowed(policies, default, resource, wanted, name)
                    assert method(a, resource, access)(name) is expected
                    assert a.decide(resource, access, name).allowed is expected
