"""The ACL rule language: every resource and level, JSON = HCL, errors with lines, fuzz."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proconsul.acl.rules import (
    LABELLED_RESOURCES,
    MAX_RULES_BYTES,
    UNLABELLED_RESOURCES,
    Access,
    LabelledRule,
    ParsedPolicy,
    RuleError,
    parse_rules,
)

# --- every resource x level x form ----------------------------------------------------

LEVELS = {"read": Access.READ, "write": Access.WRITE, "deny": Access.DENY}


@pytest.mark.parametrize("resource", LABELLED_RESOURCES)
@pytest.mark.parametrize("prefix", [False, True], ids=["exact", "prefix"])
@pytest.mark.parametrize("level", sorted(LEVELS))
def test_labelled_rule_parses(resource: str, prefix: bool, level: str) -> None:
    keyword = f"{resource}_prefix" if prefix else resource
    policy = parse_rules(f'{keyword} "some/label" {{\n  policy = "{level}"\n}}\n')
    assert policy.rules == (LabelledRule(resource, "some/label", prefix, LEVELS[level]),)


@pytest.mark.parametrize("resource", UNLABELLED_RESOURCES)
@pytest.mark.parametrize("level", sorted(LEVELS))
def test_unlabelled_rule_parses(resource: str, level: str) -> None:
    policy = parse_rules(f'{resource} = "{level}"')
    assert policy.unlabelled(resource) is LEVELS[level]
    assert policy.rules == ()


def test_list_is_only_for_key_prefix() -> None:
    assert parse_rules('key_prefix "a/" { policy = "list" }').rules[0].access is Access.LIST
    for keyword in ("key", "service", "node_prefix", "agent", "session_prefix"):
        with pytest.raises(RuleError, match=r'invalid policy "list".*only for key_prefix'):
            parse_rules(f'{keyword} "a" {{ policy = "list" }}')
    with pytest.raises(RuleError, match=r'invalid policy "list" for operator'):
        parse_rules('operator = "list"')


@pytest.mark.parametrize(
    ("text", "intentions"),
    [
        ('service "web" { policy = "read" }', None),
        ('service "web" { policy = "read" intentions = "write" }', Access.WRITE),
        ('service_prefix "" { policy = "write" intentions = "deny" }', Access.DENY),
        ('service "web" { policy = "deny" intentions = "read" }', Access.READ),
    ],
)
def test_intentions_sub_rule(text: str, intentions: Access | None) -> None:
    assert parse_rules(text).rules[0].intentions == intentions


def test_intentions_only_on_services() -> None:
    with pytest.raises(RuleError, match=r'unknown field "intentions" in node "n"'):
        parse_rules('node "n" { policy = "read" intentions = "read" }')
    with pytest.raises(RuleError, match=r'invalid intentions "list"'):
        parse_rules('service "web" { policy = "read" intentions = "list" }')


def test_walkthrough_agent_policy() -> None:
    text = (
        'node "consul-server-1" {\npolicy = "write"\n}\nservice_prefix "" {\npolicy = "read"\n}\n'
    )
    assert parse_rules(text) == ParsedPolicy(
        rules=(
            LabelledRule("node", "consul-server-1", False, Access.WRITE),
            LabelledRule("service", "", True, Access.READ),
        )
    )


def test_empty_and_comment_only_rules_are_an_empty_policy() -> None:
    assert parse_rules("") == ParsedPolicy()
    assert parse_rules("# nothing\n// still nothing\n/* none */") == ParsedPolicy()
    assert parse_rules("{}") == ParsedPolicy()


def test_nested_object_form_equals_block_form() -> None:
    block = parse_rules('service "web" { policy = "read" }')
    assert parse_rules('service = { web = { policy = "read" } }') == block


# --- duplicates merge like policies do --------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "merged"),
    [
        ("read", "write", Access.WRITE),
        ("write", "read", Access.WRITE),
        ("deny", "write", Access.DENY),
        ("write", "deny", Access.DENY),
        ("read", "deny", Access.DENY),
    ],
)
def test_duplicate_rules_in_one_policy_merge(first: str, second: str, merged: Access) -> None:
    # pyhcl alone would keep the last block; Consul merges, so deny can't be overridden.
    text = f'service "web" {{ policy = "{first}" }}\nservice "web" {{ policy = "{second}" }}'
    assert parse_rules(text).rules == (LabelledRule("service", "web", False, merged),)
    as_json = json.dumps({"service": [{"web": {"policy": first}}, {"web": {"policy": second}}]})
    assert parse_rules(as_json).rules == (LabelledRule("service", "web", False, merged),)
    assert parse_rules(f'operator = "{first}"\noperator = "{second}"').operator is merged


def test_duplicate_json_keys_merge_too() -> None:
    text = '{"key": {"a": {"policy": "deny"}, "a": {"policy": "write"}}}'
    assert parse_rules(text).rules == (LabelledRule("key", "a", False, Access.DENY),)


def test_field_set_twice_in_one_block_is_an_error() -> None:
    with pytest.raises(RuleError, match=r'line 3: "policy" is set twice in service "web"'):
        parse_rules('service "web" {\n  policy = "read"\n  policy = "write"\n}')


# --- JSON equals HCL ----------------------------------------------------------------------

HCL_EXAMPLE = """
key_prefix "" {
  policy = "read"
}
key_prefix "foo/" {
  policy = "write"
}
key_prefix "foo/private/" {
  policy = "deny"
}
key "foo/bar/secret" {
  policy = "deny"
}
service "web" {
  policy = "write"
  intentions = "read"
}
operator = "read"
mesh = "write"
"""

JSON_EXAMPLE = {
    "key_prefix": {
        "": {"policy": "read"},
        "foo/": {"policy": "write"},
        "foo/private/": {"policy": "deny"},
    },
    "key": {"foo/bar/secret": {"policy": "deny"}},
    "service": {"web": {"policy": "write", "intentions": "read"}},
    "operator": "read",
    "mesh": "write",
}


def test_json_rules_equal_hcl_rules() -> None:
    from_hcl = parse_rules(HCL_EXAMPLE)
    from_json = parse_rules(json.dumps(JSON_EXAMPLE, indent=2))
    assert set(from_json.rules) == set(from_hcl.rules)
    assert (from_json.operator, from_json.mesh) == (from_hcl.operator, from_hcl.mesh)
    assert len(from_hcl.rules) == 5


def test_json_list_of_objects_form() -> None:
    listed = {"key_prefix": [{"": {"policy": "read"}}, {"foo/": {"policy": "write"}}]}
    assert set(parse_rules(json.dumps(listed)).rules) == {
        LabelledRule("key", "", True, Access.READ),
        LabelledRule("key", "foo/", True, Access.WRITE),
    }


# --- errors name the line -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('foo "x" {}', 'line 1: unknown ACL resource "foo"'),
        (
            'node "a" {\n  policy = "write"\n}\nservice "web" {\n  policy = "writ"\n}',
            'line 5: invalid policy "writ" for service "web"',
        ),
        (
            'service "api" { policy = "read" }\nservice "web" { policy = "writ" }',
            'line 2: invalid policy "writ" for service "web"',
        ),
        ('\n\noperator = "all"', 'line 3: invalid policy "all" for operator'),
        ('service "web" {\n  polcy = "read"\n}', 'line 2: unknown field "polcy" in service "web"'),
        ('\nservice "web" {\n}', 'line 2: missing policy in service "web"'),
        ('service "web" { policy = 3 }', "line 1: invalid policy 3 for service"),
        ('service "web" { policy = true }', "line 1: invalid policy True for service"),
        ('operator { policy = "read" }', "line 1: operator takes a level"),
        ('\nservice = "read"', "line 2: service needs a label"),
        ('key = {\n  k = "read"\n}', 'line 2: key "k" needs a block'),
        ('namespace "ns" { }', 'line 1: ACL resource "namespace" needs Consul Enterprise'),
        ('node "a" {\n\n  policy = wr ite }', "line 3: syntax error: unexpected RIGHTBRACE"),
        ('node "a" { policy = "write" ', "line 1: syntax error: Unexpected end of file"),
        ("node @ {}", "line 1: syntax error: Illegal character '@' (column 6)"),
        ('node "abc" {\n    policy @', "line 2: syntax error: Illegal character '@' (column 12)"),
        ('n {\n policy = "x" }\n}', "line 3: syntax error: unexpected RIGHTBRACE (column 1)"),
        ('{"node": {"a": {"policy": "write"}}\n', "line 2: syntax error: Expecting"),
        ('{\n  "service": {\n    "web": {"policy": "bogus"}\n  }\n}', "line 3: invalid policy"),
        ('{"frob": 1}', 'line 1: unknown ACL resource "frob"'),
        ("[1, 2]", "line 1: syntax error"),
    ],
)
def test_malformed_rules_name_the_line(text: str, expected: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(text)
    assert str(caught.value).startswith(expected), str(caught.value)
    assert caught.value.line == int(expected.split(":")[0].removeprefix("line "))


def test_rule_error_is_a_value_error_with_detail() -> None:
    with pytest.raises(ValueError, match="unknown ACL resource") as caught:
        parse_rules('\nfoo "x" {}')
    assert isinstance(caught.value, RuleError)
    assert caught.value.detail == 'unknown ACL resource "foo"'
    assert caught.value.line == 2


def test_oversized_rules_are_refused_before_parsing() -> None:
    block = 'key "k{}" {{ policy = "read" }}\n'
    text = "".join(block.format(n) for n in range(MAX_RULES_BYTES // 20))
    assert len(text.encode()) > MAX_RULES_BYTES
    with pytest.raises(RuleError, match=f"over the limit of {MAX_RULES_BYTES}"):
        parse_rules(text)
    # Multibyte text counts in bytes, not characters.
    label = "é" * (MAX_RULES_BYTES // 2)
    with pytest.raises(RuleError, match="over the limit"):
        parse_rules(f'key "{label}" {{ policy = "read" }}')


def test_just_under_the_limit_parses() -> None:
    text = 'key_prefix "" { policy = "read" }\n'
    padded = text + "#" * (MAX_RULES_BYTES - len(text))
    assert len(padded.encode()) == MAX_RULES_BYTES
    assert parse_rules(padded).rules == (LabelledRule("key", "", True, Access.READ),)


def test_non_text_input_is_a_rule_error() -> None:
    with pytest.raises(RuleError):
        parse_rules(b'operator = "read"')  # type: ignore[arg-type]


# --- parsers are fed whole, truncated and with trailing garbage ------------------------------


def test_every_truncation_parses_or_raises_rule_error() -> None:
    for cut in range(len(HCL_EXAMPLE) + 1):
        with contextlib.suppress(RuleError):
            parse_rules(HCL_EXAMPLE[:cut])


@pytest.mark.parametrize("garbage", ["}", "{", ' "x"', " = ", "\x00", "@@", 'foo "x" {}'])
def test_trailing_garbage_is_a_rule_error(garbage: str) -> None:
    with pytest.raises(RuleError):
        parse_rules(HCL_EXAMPLE + garbage)
    with pytest.raises(RuleError):
        parse_rules(json.dumps(JSON_EXAMPLE) + garbage)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_random_text_only_ever_raises_rule_error(text: str) -> None:
    with contextlib.suppress(RuleError):
        parse_rules(text)


_WORDS = st.sampled_from(
    [*LABELLED_RESOURCES, *(f"{r}_prefix" for r in LABELLED_RESOURCES), *UNLABELLED_RESOURCES,
     "policy", "intentions", '"read"', '"write"', '"list"', '"deny"', '"x"', '""', "{", "}",
     "=", "[", "]", ",", ":", "\n", "#c\n", "1", "true", "<<EOF\nread\nEOF\n"]
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(st.lists(_WORDS, max_size=30))
def test_random_token_soup_only_ever_raises_rule_error(words: list[str]) -> None:
    text = " ".join(words)
    try:
        policy = parse_rules(text)
    except RuleError:
        return
    assert isinstance(policy, ParsedPolicy)


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(["read", "deny", "x", ""]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["service", "key_prefix", "operator", "policy", "intentions", "web"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_JSONISH)
def test_random_json_shapes_only_ever_raise_rule_error(value: object) -> None:
    with contextlib.suppress(RuleError):
        parse_rules(json.dumps(value))
