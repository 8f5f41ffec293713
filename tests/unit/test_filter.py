"""The filter language (structs/filter.py): parsing, errors, evaluation, shapes, fuzzing.

Parsing is checked through the syntax tree's s-expression (`str(parse_filter(...))`);
evaluation against rows built from our own structs with `msgspec.to_builtins`, the
form the endpoints filter.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Literal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proconsul.structs.catalog import (
    CheckServiceNode,
    HealthCheck,
    Node,
    NodeService,
    ServiceNode,
    Weights,
)
from proconsul.structs.filter import (
    Filter,
    compile_filter,
)
from proconsul.structs.filter_syntax import (
    EQUAL,
    IN,
    IS_EMPTY,
    IS_NOT_EMPTY,
    MATCHES,
    MAX_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_SELECTOR_PARTS,
    NOT_EQUAL,
    NOT_IN,
    NOT_MATCHES,
    And,
    Expr,
    FilterError,
    Match,
    Not,
    Operator,
    Or,
    parse_filter,
)

PREFIX = "Failed to create boolean expression evaluator: "


def tree(text: str) -> str:
    return str(parse_filter(text))


# ----- parsing ---------------------------------------------------------------------

PARSES = [
    # every operator
    ("Name == web", '(Equal Name "web")'),
    ("Name != web", '(Not Equal Name "web")'),
    ("Name is empty", "(Is Empty Name)"),
    ("Name is not empty", "(Is Not Empty Name)"),
    ('"v1" in Tags', '(In Tags "v1")'),
    ('"v1" not in Tags', '(Not In Tags "v1")'),
    ('Tags contains "v1"', '(In Tags "v1")'),
    ('Tags not contains "v1"', '(Not In Tags "v1")'),
    ('Name matches "^w.b$"', '(Matches Name "^w.b$")'),
    ('Name not matches "^w.b$"', '(Not Matches Name "^w.b$")'),
    # precedence: not over and over or; the documented equivalence
    (
        "A == 1 and not B == 2 or C == 3",
        '(or (and (Equal A "1") (not (Equal B "2"))) (Equal C "3"))',
    ),
    (
        "( A == 1 and (not B == 2 )) or C == 3",
        '(or (and (Equal A "1") (not (Equal B "2"))) (Equal C "3"))',
    ),
    ("A == 1 or B == 2 and C == 3", '(or (Equal A "1") (and (Equal B "2") (Equal C "3")))'),
    ("(A == 1 or B == 2) and C == 3", '(and (or (Equal A "1") (Equal B "2")) (Equal C "3"))'),
    ("A == 1 and B == 2 and C == 3", '(and (Equal A "1") (Equal B "2") (Equal C "3"))'),
    ("A == 1 or B == 2 or C == 3", '(or (Equal A "1") (Equal B "2") (Equal C "3"))'),
    ("not (A == 1 or B == 2)", '(not (or (Equal A "1") (Equal B "2")))'),
    ("not not A == 1", '(Equal A "1")'),
    ("not not not A == 1", '(not (Equal A "1"))'),
    ("((A == 1))", '(Equal A "1")'),
    # whitespace: optional around == and !=, any of space, tab, CR, LF
    ("A==1", '(Equal A "1")'),
    ("A!=1", '(Not Equal A "1")'),
    ("\t A ==\n1 \r\n", '(Equal A "1")'),
    ("A == 1\nand\tB == 2", '(and (Equal A "1") (Equal B "2"))'),
    ("( A == 1 )", '(Equal A "1")'),
    # selectors
    ("Service.Meta.version == v1", '(Equal Service.Meta.version "v1")'),
    ('Node.Meta["rack"] == r1', '(Equal Node.Meta.rack "r1")'),
    ('Meta[ "a b" ].x == 1', '(Equal Meta.a b.x "1")'),
    ("Meta[`k.1`] is empty", "(Is Empty Meta.k.1)"),
    ("a_1.B2 == x", '(Equal a_1.B2 "x")'),
    # values: bare words (dotted too), numbers, both quotes, Go escapes
    ("A == true", '(Equal A "true")'),
    ("A == x.y", '(Equal A "x.y")'),
    ("A == -12", '(Equal A "-12")'),
    ("A == 0.25", '(Equal A "0.25")'),
    ("A == 0", '(Equal A "0")'),
    ('A == ""', '(Equal A "")'),
    ("A == ``", '(Equal A "")'),
    ('A == "a b\\tc\\nd"', '(Equal A "a b\\tc\\nd")'),
    ('A == "say \\"hi\\""', '(Equal A "say \\"hi\\"")'),
    ('A == "\\x41\\101\\u00e9\\U0001F600"', '(Equal A "AAé😀")'),
    ("A == `raw \\n stays`", '(Equal A "raw \\\\n stays")'),
    ("A == `a\r\nb`", '(Equal A "a\\nb")'),  # Go drops CR from raw strings
    ("A == (1)", None),  # no: a value is not grouped
    ("(A == 1)", '(Equal A "1")'),
    ("A == 1)", None),
    # keywords are not reserved
    ("Name == not", '(Equal Name "not")'),
    ("not == x", '(Equal not "x")'),
    ("and == or", '(Equal and "or")'),
    ("notA == 1", '(Equal notA "1")'),
    ("in in in", '(In in "in")'),
    ("is is empty", "(Is Empty is)"),
    # a value on the left only with in / not in
    ("1 in Ports", '(In Ports "1")'),
    ("x.y not in Tags", '(Not In Tags "x.y")'),
]


@pytest.mark.parametrize(("text", "expected"), PARSES)
def test_parse(text: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(FilterError):
            parse_filter(text)
    else:
        assert tree(text) == expected


def test_a_long_chain_of_or_costs_no_stack() -> None:
    text = " or ".join(f"A == {i}" for i in range(600))
    assert len(text) < MAX_EXPRESSION_LENGTH
    expr = parse_filter(text)
    assert isinstance(expr, Or) and len(expr.operands) == 600
    assert compile_filter(text).matches({"A": 599})


# ----- parse errors: Consul's message shape ------------------------------------------

ERRORS = [
    # Consul's own messages for these inputs, as its users have reported them
    (
        "foo",
        '1:4 (3): no match found, expected: "!=", ".", "==", "[", [ \\t\\r\\n] or [a-zA-Z0-9_]',
    ),
    ("Address == 10.10.10.10", '1:17 (16): rule "number": Invalid number literal'),
    (
        "Node==host-name",
        '1:11 (10): no match found, expected: ".", "[", [ \\t\\r\\n], [a-zA-Z0-9_] or EOF',
    ),
    # ours, in the same shape
    (
        "",
        '1:1 (0): no match found, expected: "(", "-", "0", "\\"", "`", "not", [ \\t\\r\\n], '
        "[1-9] or [a-zA-Z]",
    ),
    (
        "A == ",
        '1:6 (5): no match found, expected: "-", "0", "\\"", "`", [ \\t\\r\\n], [1-9] or [a-zA-Z]',
    ),
    ("(A == 1", '1:8 (7): rule "grouping": Unmatched parentheses'),
    ("(A == 1 or (B == 2)", '1:20 (19): rule "grouping": Unmatched parentheses'),
    ('A == "abc', '1:10 (9): rule "string": Unterminated string literal'),
    ("A == `abc", '1:10 (9): rule "string": Unterminated string literal'),
    ('A == "a\\qb"', '1:6 (5): rule "string": invalid syntax'),
    ('A == "\\uD800"', '1:6 (5): rule "string": invalid syntax'),
    ('A == "\\400"', '1:6 (5): rule "string": invalid syntax'),
    ('A == "two\nlines"', '1:6 (5): rule "string": invalid syntax'),
    ("x in 1", '1:6 (5): rule "match": Invalid selector'),
    ("A[1] == 2", '1:3 (2): rule "index": Invalid index'),
    ('A["k" == 2', '1:7 (6): rule "index": Unclosed index expression'),
    ("A == 01", '1:7 (6): rule "number": Invalid number literal'),
    ("A == 1e3", '1:7 (6): rule "number": Invalid number literal'),
    ("A == 1 B", '1:8 (7): no match found, expected: "and", "or", [ \\t\\r\\n] or EOF'),
    ("A == 1 and", "1:11 (10): no match found, expected: [ \\t\\r\\n]"),
    # positions count lines, columns in characters and offsets in bytes, as Go does
    (
        "A == 1 and\nB ==",
        '2:5 (15): no match found, expected: "-", "0", "\\"", "`", [ \\t\\r\\n], [1-9] or [a-zA-Z]',
    ),
    ('"é" in T x', '1:10 (10): no match found, expected: "and", "or", [ \\t\\r\\n] or EOF'),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_parse_error_message(text: str, message: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(text)
    assert str(caught.value) == PREFIX + message


def test_filter_error_is_a_value_error() -> None:
    assert issubclass(FilterError, ValueError)


@pytest.mark.parametrize("text", ["A == 1", "(A == 1 or B is empty) and not C matches `x`"])
def test_every_truncation_parses_or_raises_filter_error(text: str) -> None:
    for cut in range(len(text) + 1):
        with contextlib.suppress(FilterError):
            parse_filter(text[:cut])


@pytest.mark.parametrize("garbage", [")", "(", " x", " and", " or ", "==", '"', "`", "\x00", "["])
def test_trailing_garbage_is_a_filter_error(garbage: str) -> None:
    with pytest.raises(FilterError):
        parse_filter("(A == 1 or B is empty) and not C matches `x`" + garbage)


# ----- bounds ----------------------------------------------------------------------


def test_too_long_is_a_filter_error() -> None:
    text = "A == " + "x" * MAX_EXPRESSION_LENGTH
    with pytest.raises(FilterError) as caught:
        parse_filter(text)
    assert str(caught.value) == (
        f"{PREFIX}expression is {len(text)} characters long, more than {MAX_EXPRESSION_LENGTH}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "(" * 5000 + "A == 1" + ")" * 5000,  # too long as well: the length check comes first
        "(" * 2000 + "A == 1" + ")" * 2000,
        "not " * 2000 + "A == 1",
        "(" * 4000,
        "not (" * 1000 + "A == 1" + ")" * 1000,
    ],
)
def test_deep_nesting_is_a_filter_error_not_a_recursion_error(text: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(text)


def test_nesting_up_to_the_limit_parses_and_one_more_does_not() -> None:
    deepest = "(" * MAX_DEPTH + "A == 1" + ")" * MAX_DEPTH
    assert tree(deepest) == '(Equal A "1")'
    assert compile_filter(deepest).matches({"A": 1})
    with pytest.raises(FilterError) as caught:
        parse_filter("(" + deepest + ")")
    assert str(caught.value) == (
        f"{PREFIX}1:{MAX_DEPTH + 1} ({MAX_DEPTH}): expression nested deeper than {MAX_DEPTH} levels"
    )
    alternating = "not (" * (MAX_DEPTH // 2) + "A == 1" + ")" * (MAX_DEPTH // 2)
    assert compile_filter(alternating).matches({"A": 2}) is (MAX_DEPTH // 2 % 2 == 1)
    with pytest.raises(FilterError):
        parse_filter("not " + alternating)


def test_selector_parts_are_bounded() -> None:
    parse_filter(".".join(["A"] * MAX_SELECTOR_PARTS) + " == 1")
    with pytest.raises(FilterError, match="more than 32 parts"):
        parse_filter(".".join(["A"] * (MAX_SELECTOR_PARTS + 1)) + " == 1")


# ----- evaluation ------------------------------------------------------------------


def health_row(
    *,
    node: str = "node-1",
    node_meta: dict[str, str] | None = None,
    tags: list[str] | None = None,
    meta: dict[str, str] | None = None,
    port: int = 8080,
    statuses: tuple[str, ...] = ("passing",),
) -> dict[str, Any]:
    row = CheckServiceNode(
        node=Node(node=node, address="10.0.0.1", meta=node_meta or {}),
        service=NodeService(service="web", id="web-1", tags=tags or [], meta=meta or {}, port=port),
        checks=[
            HealthCheck(node=node, check_id=f"check-{i}", status=status, service_id="web-1")
            for i, status in enumerate(statuses)
        ],
    )
    built: dict[str, Any] = msgspec.to_builtins(row)
    return built


ROW = health_row(
    node_meta={"rack": "r1", "os": "linux"},
    tags=["v1", "primary"],
    meta={"version": "v1", "empty": ""},
    statuses=("passing", "critical"),
)

EVALUATES = [
    # equality on strings, numbers, booleans
    ("Service.Meta.version == v1", True),
    ('Service.Meta.version == "v1"', True),
    ("Service.Meta.version == `v2`", False),
    ("Service.Meta.version != v2", True),
    ("Service.Port == 8080", True),
    ('Service.Port == "8080"', True),
    ('Service.Port == "0x1F90"', True),  # Go's integer syntax
    ("Service.Port != 8080", False),
    ("Service.Port == 80", False),
    ("Service.EnableTagOverride == false", True),
    ("Service.EnableTagOverride == F", True),
    ("Service.EnableTagOverride == 0", True),
    ("Service.EnableTagOverride != true", True),
    ("Service.Weights.Passing == 1", True),
    # in / contains: list elements, map keys, substrings
    ("v1 in Service.Tags", True),
    ("Service.Tags contains primary", True),
    ("prim in Service.Tags", False),  # an element, not a substring of one
    ("v2 not in Service.Tags", True),
    ("Service.Tags not contains v1", False),
    ("rack in Node.Meta", True),
    ("r1 in Node.Meta", False),  # keys, not values
    ("Node.Meta not contains zone", True),
    ("ode in Node.Node", True),
    ('"-1" in Node.Node', True),
    ("xyz not in Node.Node", True),
    # is empty on strings, lists, maps
    ("Service.Meta.empty is empty", True),
    ("Service.Meta.version is not empty", True),
    ("Service.Tags is not empty", True),
    ("Service.Proxy.Upstreams is empty", True),
    ("Node.Meta is empty", False),
    ("Checks is not empty", True),
    # matches: a regular expression found anywhere
    ('Node.Node matches "^node-[0-9]+$"', True),
    ("Node.Node matches `de-`", True),
    ('Node.Node not matches "^web"', True),
    ('Node.Meta["os"] matches "lin|mac"', True),
    # map keys and missing things: a missing key is equal to nothing and empty
    ('Node.Meta["rack"] == r1', True),
    ("Node.Meta.zone == r1", False),
    ("Node.Meta.zone != r1", True),
    ("Node.Meta.zone is empty", True),
    ("Node.Meta.zone is not empty", False),
    ("x in Node.Meta.zone", False),
    ("x not in Node.Meta.zone", True),
    ("Node.Meta.zone matches `.*`", False),
    ("Node.Meta.zone not matches `.*`", True),
    # through a list: true when it holds for any element
    ("Checks.Status == critical", True),
    ("Checks.Status == warning", False),
    ("Checks.Status != passing", True),  # some check is not passing
    ("not Checks.Status != passing", False),  # so not all are passing
    ("not Checks.Status == critical", False),  # no check is critical: false
    ("Checks.CheckID matches `^check-1$`", True),
    # logic
    ("Service.Port == 8080 and v1 in Service.Tags", True),
    ("Service.Port == 80 or v1 in Service.Tags", True),
    ("Service.Port == 80 or v9 in Service.Tags", False),
    ("not Service.Port == 80", True),
    ("not (Service.Port == 8080 and v1 in Service.Tags)", False),
    ("Service.Port == 80 and v9 in Service.Tags or Node.Node == `node-1`", True),
    ("Service.Port == 80 and (v9 in Service.Tags or Node.Node == `node-1`)", False),
]


@pytest.mark.parametrize(("text", "expected"), EVALUATES)
def test_evaluate(text: str, expected: bool) -> None:
    assert compile_filter(text, CheckServiceNode).matches(ROW) is expected
    # Without a shape the same rows give the same answers.
    assert compile_filter(text).matches(ROW) is expected


def test_empty_list_on_the_way_matches_nothing_even_negated() -> None:
    row = health_row(statuses=())
    assert not compile_filter("Checks.Status == passing").matches(row)
    assert not compile_filter("Checks.Status != passing").matches(row)
    assert compile_filter("Checks is empty").matches(row)


def test_null_and_missing_are_not_there() -> None:
    assert compile_filter("A is empty").matches({"A": None})
    assert compile_filter("A.B is empty").matches({"A": None})
    assert compile_filter("A.B != x").matches({})
    assert not compile_filter("A.B == x").matches({"A": "not a map"})


def test_without_a_shape_mismatched_types_are_no_match() -> None:
    cases = [
        ("A == x", {"A": 1}, False),
        ("A != x", {"A": 1}, True),
        ("A == 1", {"A": [1]}, False),
        ("A == 1", {"A": True}, True),  # Go's ParseBool reads "1" as true
        ("A == true", {"A": True}, True),
        ("A == 1.0", {"A": 1}, True),
        ("1 in A", {"A": [1, 2]}, True),
        ("true in A", {"A": [True]}, True),
        ("1 in A", {"A": 1}, False),
        ("A matches `1`", {"A": 1}, False),
        ("A is empty", {"A": 0}, False),
        ("A.B == 1", {"A": [[{"B": 1}]]}, False),  # a list inside a list is not entered
    ]
    for text, row, expected in cases:
        assert compile_filter(text).matches(row) is expected, (text, row)


@pytest.mark.parametrize(
    "row", [None, 1, "A", [], [None], {"A": {"B": [None, 1, "x", [], {}]}}, {"A": float("nan")}]
)
def test_matches_never_raises(row: object) -> None:
    for text in ["A == 1", "A.B contains x", "A.B is empty", "A matches `x`", "not A.B.C != 1"]:
        compile_filter(text).matches(row)


# ----- the documented examples -------------------------------------------------------


def test_documented_agent_services_example() -> None:
    services = {
        name: {"ID": name, "Service": "redis", "Tags": tags, "Meta": {"env": env}}
        for name, tags, env in [
            ("redis1", ["primary", "production"], "production"),
            ("redis2", ["secondary", "production"], "production"),
            ("redis3", ["primary", "qa"], "qa"),
        ]
    }
    kept = compile_filter('Meta.env == "qa"').select(services.values())
    assert [s["ID"] for s in kept] == ["redis3"]


def test_documented_catalog_service_example_with_structs_and_their_views() -> None:
    rows = [
        ServiceNode(
            id=f"id-{n}", node=f"node-{n}", address=f"198.18.0.{n}", datacenter="dc1",
            tagged_addresses={}, node_meta={"os": os}, service_kind="", service_id="api",
            service_name="api", service_tags=[], service_address="",
            service_tagged_addresses={}, service_weights=Weights(), service_meta={},
            service_port=9090, service_enable_tag_override=False, service_proxy={},
            service_connect={}, create_index=n, modify_index=n,
        )
        for n, os in ((1, "darwin"), (2, "linux"), (4, "freebsd"))
    ]  # fmt: skip
    found = compile_filter('NodeMeta.os == "linux"', ServiceNode)
    kept = found.select(rows, msgspec.to_builtins(rows))
    assert [r.node for r in kept] == ["node-2"]
    assert kept[0] is rows[1]


def test_documented_health_node_example() -> None:
    checks = [
        HealthCheck(node="node-1", check_id="node-health", status="critical"),
        HealthCheck(node="node-1", check_id="svc-web-health", status="warning", service_name="web"),
    ]
    found = compile_filter('ServiceName != ""', HealthCheck)
    assert [c.check_id for c in found.select(checks, msgspec.to_builtins(checks))] == [
        "svc-web-health"
    ]


def test_select_keeps_order_and_views_must_pair_with_rows() -> None:
    found = compile_filter("A == 1")
    assert found.select([{"A": 1, "i": 0}, {"A": 2}, {"A": 1, "i": 2}]) == [
        {"A": 1, "i": 0},
        {"A": 1, "i": 2},
    ]
    with pytest.raises(ValueError):
        found.select(["a", "b"], [{"A": 1}])
    assert repr(found) == "Filter('A == 1')"


# ----- checks against the row type ---------------------------------------------------

SHAPE_ERRORS = [
    ("Service.Foo == 1", 'Selector "Service.Foo" is not valid'),
    ("Foo is empty", 'Selector "Foo" is not valid'),
    ("Checks.Foo == 1", 'Selector "Checks.Foo" is not valid'),
    ("Service.Port.Foo == 1", 'Selector "Service.Port.Foo" is not valid'),
    ("Service.Tags.x == 1", 'Selector "Service.Tags.x" is not valid'),
    ("Service == web", 'Invalid match operator "Equal" for selector "Service"'),
    ("Service.Tags == web", 'Invalid match operator "Equal" for selector "Service.Tags"'),
    ("Service.Meta == web", 'Invalid match operator "Equal" for selector "Service.Meta"'),
    ("Service.Port contains 8", 'Invalid match operator "In" for selector "Service.Port"'),
    ("Service.Port is empty", 'Invalid match operator "Is Empty" for selector "Service.Port"'),
    ("Service.Tags matches x", 'Invalid match operator "Matches" for selector "Service.Tags"'),
    ("x in Checks", 'Invalid match operator "In" for selector "Checks"'),
    (
        "Service.Port == web",
        'Failed to coerce value "web" for selector "Service.Port": '
        'strconv.ParseInt: parsing "web": invalid syntax',
    ),
    (
        "Service.Port == 1.5",
        'Failed to coerce value "1.5" for selector "Service.Port": '
        'strconv.ParseInt: parsing "1.5": invalid syntax',
    ),
    (
        "Service.EnableTagOverride != yes",
        'Failed to coerce value "yes" for selector "Service.EnableTagOverride": '
        'strconv.ParseBool: parsing "yes": invalid syntax',
    ),
    ("Node.Node matches `(`", 'Failed to compile regular expression "(": missing ), '),
]


@pytest.mark.parametrize(("text", "message"), SHAPE_ERRORS)
def test_shape_error_message(text: str, message: str) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(text, CheckServiceNode)
    assert str(caught.value).startswith(PREFIX + message)


def test_a_bad_regex_is_an_error_without_a_shape_too() -> None:
    with pytest.raises(FilterError, match="Failed to compile regular expression"):
        compile_filter("A matches `a{1,2`  or  A matches `[`")


def test_proxy_fields_are_selectable() -> None:
    found = compile_filter("Service.Proxy.DestinationServiceName == web", CheckServiceNode)
    row = health_row()
    assert not found.matches(row)
    row["Service"]["Proxy"] = {"DestinationServiceName": "web"}
    assert found.matches(row)
    with pytest.raises(FilterError, match="Selector"):
        compile_filter("Service.Proxy.Nope == web", CheckServiceNode)


class Leaf(msgspec.Struct, tag=True):
    name: str
    kind: Literal["a", "b"] = "a"
    count: int | None = None
    children: list[Leaf] = []
    pair: tuple[int, int] = (0, 0)
    ratio: float = 0.0


def test_shapes_from_other_msgspec_types() -> None:
    row = msgspec.to_builtins(Leaf("x", children=[Leaf("y", kind="b", count=2)], ratio=0.5))
    for text, expected in [
        ("type == Leaf", True),  # the tag field
        ("children.kind == b", True),
        ("children.children.name == z", False),  # recursive types end
        ("children.count == 2", True),
        ("count == 2", False),  # null
        ("ratio == 0.5", True),
        ('ratio == "5e-1"', True),
        ("pair is not empty", True),
    ]:
        assert compile_filter(text, Leaf).matches(row) is expected, text
    with pytest.raises(FilterError, match="ParseFloat"):
        compile_filter("ratio == half", Leaf)
    with pytest.raises(FilterError, match=r'Selector "children\.nope" is not valid'):
        compile_filter("children.nope == 1", Leaf)
    assert compile_filter("x in a", dict[str, list[str]]).matches({"a": ["x"]})
    with pytest.raises(FilterError, match="ParseInt"):
        compile_filter("x in a", dict[str, list[int]])


# ----- properties --------------------------------------------------------------------

_TOKENS = st.sampled_from(
    ["A", "B.C", "M[\"k\"]", "T", "==", "!=", "is", "not", "empty", "in", "contains",
     "matches", "and", "or", "(", ")", "1", "-2.5", "x", '"s"', "`r`", '"\\n"', "[", "]",
     ".", " ", "\t", "\n", "é", "\\", '"', "`", "0", "09", "1.", "-"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120))
def test_random_text_only_ever_raises_filter_error(text: str) -> None:
    with contextlib.suppress(FilterError):
        compile_filter(text, CheckServiceNode)
    with contextlib.suppress(FilterError):
        compile_filter(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(_TOKENS, max_size=24), st.booleans())
def test_random_token_soup_only_ever_raises_filter_error(words: list[str], glue: bool) -> None:
    text = ("" if glue else " ").join(words)
    try:
        found = compile_filter(text)
    except FilterError:
        return
    assert isinstance(found, Filter)
    found.matches({"A": "1", "B": {"C": ["x"]}, "M": {"k": ""}, "T": [1, "s"]})


_SCALAR = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "x", "1", "ab"])
_JSON = st.recursive(
    _SCALAR,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["A", "B", "C", "k"]), inner, max_size=3)
    ),
    max_leaves=10,
)
# Rows where the selectors below mostly find something: a scalar, a list or a
# map at A, B.C, B.k, with B sometimes a list of maps.
_LEAF = (
    _SCALAR
    | st.lists(_SCALAR, max_size=3)
    | st.dictionaries(st.sampled_from(["x", "ab", "1"]), _SCALAR, max_size=2)
)
_INNER = st.dictionaries(st.sampled_from(["B", "C", "k"]), _LEAF, max_size=3)
_ROW = st.fixed_dictionaries(
    {},
    optional={
        "A": _LEAF | _INNER | st.lists(_INNER, max_size=2),
        "B": _INNER | st.lists(_INNER | _LEAF, max_size=3),
    },
)


# Expressions built as trees, then written out with varied spacing and quoting.
_SELECTORS = st.sampled_from([("A",), ("A", "B"), ("B", "C"), ("B", "k")])
_VALUES = st.sampled_from(["x", "1", "", "ab", "a b", 'q"uote', "-2", "true"])
_OPERATORS: dict[str, Operator] = {
    "==": EQUAL, "!=": NOT_EQUAL, "contains": IN, "not contains": NOT_IN, "in": IN,
    "not in": NOT_IN, "matches": MATCHES, "not matches": NOT_MATCHES, "is empty": IS_EMPTY,
    "is not empty": IS_NOT_EMPTY,
}  # fmt: skip
_OPS = st.sampled_from(sorted(_OPERATORS))


def _write_value(value: str, style: int) -> str:
    if style == 0 and value.isalnum() and value[0].isalpha():
        return value
    if style == 1 and "`" not in value:
        return f"`{value}`"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def _match(draw: st.DrawFn) -> tuple[Expr, str]:
    selector, op, value = draw(_SELECTORS), draw(_OPS), draw(_VALUES)
    style = draw(st.integers(0, 2))
    indexed = selector[0] + "".join(f'["{part}"]' for part in selector[1:])
    written = ".".join(selector) if style else indexed
    operator = _OPERATORS[op]
    if op.startswith("is"):
        return Match(selector, operator, None), f"{written} {op}"
    if op == "matches" or op == "not matches":
        value = "^" + "".join(c for c in value if c.isalnum())
    if op in ("in", "not in"):
        return Match(selector, operator, value), f"{_write_value(value, style)} {op} {written}"
    return Match(selector, operator, value), f"{written} {op} {_write_value(value, style)}"


def _expressions() -> st.SearchStrategy[tuple[Expr, str]]:
    def extend(inner: st.SearchStrategy[tuple[Expr, str]]) -> st.SearchStrategy[tuple[Expr, str]]:
        def combine(kind: str, parts: list[tuple[Expr, str]]) -> tuple[Expr, str]:
            if kind == "not":
                expr, text = parts[0]
                # The parser reads `not (not x)` as x.
                return (expr.operand if isinstance(expr, Not) else Not(expr)), f"not ({text})"
            node = And if kind == "and" else Or
            return node(tuple(p[0] for p in parts)), f" {kind} ".join(f"({p[1]})" for p in parts)

        # `not` takes the first part only.
        return st.builds(
            combine, st.sampled_from(["not", "and", "or"]), st.lists(inner, min_size=2, max_size=3)
        )

    return st.recursive(_match(), extend, max_leaves=5)


def _naive(expr: Expr, row: Any) -> bool:
    """A second, plain reading of the documented meaning, to hold the compiled one to."""
    if isinstance(expr, Not):
        return not _naive(expr.operand, row)
    if isinstance(expr, And):
        return all(_naive(e, row) for e in expr.operands)
    if isinstance(expr, Or):
        return any(_naive(e, row) for e in expr.operands)
    return _naive_match(expr, row, list(expr.selector))


def _naive_match(match: Match, found: Any, keys: list[str]) -> bool:
    if keys and isinstance(found, list):
        return any(_naive_match(match, item, keys) for item in found if not isinstance(item, list))
    if keys:
        if not isinstance(found, dict) or found.get(keys[0]) is None:
            return match.op.negated
        return _naive_match(match, found[keys[0]], keys[1:])
    if found is None:
        return match.op.negated
    value = match.value or ""
    if match.op.test == "equal":
        held = _naive_equal(found, value)
    elif match.op.test == "in":
        if isinstance(found, list):
            held = any(_naive_equal(item, value) for item in found)
        else:
            held = isinstance(found, str | dict) and value in found
    elif match.op.test == "matches":
        held = isinstance(found, str) and re.search(value, found) is not None
    else:
        held = not isinstance(found, str | list | dict) or len(found) > 0
    return held != match.op.negated


_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _naive_equal(found: Any, value: str) -> bool:
    if isinstance(found, bool):
        return value in (_TRUE if found else _FALSE)
    if isinstance(found, int):
        return value.lstrip("-").isdigit() and int(value) == found
    return isinstance(found, str) and found == value


@settings(max_examples=400, deadline=None)
@given(_expressions(), st.lists(_ROW | _JSON, min_size=1, max_size=4))
def test_written_expressions_parse_back_and_match_as_the_naive_reading(
    built: tuple[Expr, str], rows: list[Any]
) -> None:
    expr, text = built
    assert str(parse_filter(text)) == str(expr), text
    found = compile_filter(text)
    for row in rows:
        assert found.matches(row) is _naive(expr, row), (text, row)
