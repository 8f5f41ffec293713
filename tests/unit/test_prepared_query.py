"""Prepared queries, pure: Consul's checks of a definition, lookup by ID, name
and template prefix, template rendering, instance selection, and the store's
table through the FSM (with snapshot and restore)."""

from __future__ import annotations

import random

import pytest

from proconsul.query.definition import QueryError, check_query, render_template, resolve_query
from proconsul.query.execute import select_instances
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import CheckServiceNode, HealthCheck, Node, NodeService
from proconsul.structs.commands import (
    ApplyError,
    PreparedQueryRequest,
    RegisterRequest,
    SessionRequest,
)
from proconsul.structs.prepared_query import (
    PreparedQuery,
    QueryDNS,
    QueryFailover,
    QueryTemplate,
    ServiceQuery,
)
from proconsul.structs.session import Session


def q(name: str = "", service: str = "redis", **kw: object) -> PreparedQuery:
    return PreparedQuery(
        id=kw.pop("id", name or "id-1"), name=name, service=ServiceQuery(service=service), **kw
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "text"),
    [
        (PreparedQuery(), "Must provide a Service name to query"),
        (
            PreparedQuery(service=ServiceQuery(service="x", failover=QueryFailover(nearest_n=-1))),
            "Bad NearestN '-1', must be >= 0",
        ),
        (
            PreparedQuery(service=ServiceQuery(service="x"), dns=QueryDNS(ttl="soon")),
            "Bad DNS TTL 'soon'",
        ),
        (
            PreparedQuery(service=ServiceQuery(service="x"), template=QueryTemplate(type="other")),
            "Bad Template.Type 'other'",
        ),
        (
            PreparedQuery(
                service=ServiceQuery(service="x"),
                template=QueryTemplate(type="name_prefix_match", regexp="(unclosed"),
            ),
            "Bad Regexp",
        ),
        (
            PreparedQuery(
                service=ServiceQuery(service="${agent.dc}"),
                template=QueryTemplate(type="name_prefix_match"),
            ),
            "unknown variable ${agent.dc}",
        ),
    ],
)
def test_check_refuses_with_consuls_text(query: PreparedQuery, text: str) -> None:
    with pytest.raises(
        QueryError, match=text.replace("$", r"\$").replace("{", r"\{").replace("(", r"\(")
    ):
        check_query(query)


def test_check_accepts_a_full_definition() -> None:
    check_query(
        PreparedQuery(
            name="geo-db",
            service=ServiceQuery(service="mysql", tags=["primary", "!v1"], only_passing=True),
            dns=QueryDNS(ttl="10s"),
        )
    )


TEMPLATE = PreparedQuery(
    id="t1",
    name="geo-db-",
    template=QueryTemplate(
        type="name_prefix_match", regexp=r"^geo-db-(.*?)-([^\-]+?)$", remove_empty_tags=True
    ),
    service=ServiceQuery(
        service="mysql-${match(1)}",
        tags=["${match(2)}", "${match(7)}", "${name.suffix}"],
        node_meta={"full": "${name.full}", "prefix": "${name.prefix}"},
    ),
)


def test_template_renders_names_and_captures() -> None:
    rendered = render_template(TEMPLATE, "geo-db-customer-primary")
    assert rendered.service.service == "mysql-customer"
    assert rendered.service.tags == ["primary", "customer-primary"]  # the empty one removed
    assert rendered.service.node_meta == {"full": "geo-db-customer-primary", "prefix": "geo-db-"}
    assert TEMPLATE.service.service == "mysql-${match(1)}"  # the stored row is untouched


def test_resolve_by_id_then_name_then_longest_prefix() -> None:
    catch_all = PreparedQuery(
        id="t0",
        template=QueryTemplate(type="name_prefix_match"),
        service=ServiceQuery(service="${name.full}"),
    )
    plain = q("geo-db-exact", id="p1")
    rows = [catch_all, TEMPLATE, plain]
    assert resolve_query(rows, "p1") == plain
    assert resolve_query(rows, "geo-db-exact") == plain
    assert resolve_query(rows, "geo-db-a-b").service.service == "mysql-a"  # type: ignore[union-attr]
    assert resolve_query(rows, "anything").service.service == "anything"  # type: ignore[union-attr]
    assert resolve_query([plain], "nope") is None


def row(
    node: str, tags: list[str], statuses: list[str], meta: dict[str, str] | None = None
) -> CheckServiceNode:
    checks = [
        HealthCheck(node=node, check_id=f"c{i}", name=f"c{i}", status=s)
        for i, s in enumerate(statuses)
    ]
    return CheckServiceNode(
        node=Node(node=node, address="10.0.0.1", meta=meta or {}),
        service=NodeService(id="redis", service="redis", tags=tags),
        checks=checks,
    )


def test_select_filters_health_tags_and_meta() -> None:
    rows = [
        row("a", ["primary"], ["passing"], {"zone": "1"}),
        row("b", ["primary", "v1"], ["passing"], {"zone": "1"}),
        row("c", ["PRIMARY"], ["warning"], {"zone": "1"}),
        row("d", ["primary"], ["critical"], {"zone": "1"}),
        row("e", ["primary"], ["passing"], {"zone": "2"}),
    ]
    service = ServiceQuery(service="redis", tags=["primary", "!V1"], node_meta={"zone": "1"})
    picked = {r.node.node for r in select_instances(rows, service, random.Random(1))}
    assert picked == {"a", "c"}
    service.only_passing = True
    assert [r.node.node for r in select_instances(rows, service, random.Random(1))] == ["a"]
    service.only_passing = False
    service.ignore_check_ids = ["c0"]
    assert "d" in {r.node.node for r in select_instances(rows, service, random.Random(1))}


def test_near_puts_the_node_first_and_limit_cuts() -> None:
    rows = [row(name, [], ["passing"]) for name in "abcdef"]
    for seed in range(5):
        picked = select_instances(
            rows, ServiceQuery(service="redis"), random.Random(seed), near="e", limit=3
        )
        assert picked[0].node.node == "e" and len(picked) == 3


def test_store_table_through_fsm_and_snapshot() -> None:
    store = StateStore()
    fsm = FSM(store)
    assert (
        fsm.apply(1, PreparedQueryRequest(op="create", query=q("web", id="i1"), owner="acc"))
        is None
    )
    clash = fsm.apply(2, PreparedQueryRequest(op="create", query=q("web", id="i2")))
    assert clash == ApplyError('name "web" aliases an existing query name')
    alias = fsm.apply(3, PreparedQueryRequest(op="create", query=q("i1", id="i3")))
    assert alias == ApplyError('name "i1" aliases an existing query ID')
    missing = fsm.apply(4, PreparedQueryRequest(op="update", query=q("x", id="nope")))
    assert missing == ApplyError("Cannot modify non-existent prepared query: 'nope'")
    assert fsm.apply(5, PreparedQueryRequest(op="update", query=q("web2", id="i1"))) is None
    stored = store.queries.queries["i1"]
    assert (stored.name, stored.create_index, stored.modify_index) == ("web2", 1, 5)
    assert store.index("prepared-queries") == 5

    copy = StateStore()
    copy.restore(store.snapshot())
    assert copy.queries.queries == store.queries.queries
    assert copy.queries.owners == {"i1": "acc"}
    assert fsm.apply(6, PreparedQueryRequest(op="delete", query=PreparedQuery(id="i1"))) is None
    assert store.queries.queries == {} and store.queries.owners == {}


def test_a_query_bound_to_a_session_needs_it_and_goes_with_it() -> None:
    store = StateStore()
    fsm = FSM(store)
    fsm.apply(1, RegisterRequest(node="n1", address="10.0.0.1"))
    bound = PreparedQuery(id="q1", name="bound", session="s1", service=ServiceQuery(service="x"))
    refused = fsm.apply(2, PreparedQueryRequest(op="create", query=bound))
    assert refused == ApplyError('invalid session "s1"')
    fsm.apply(3, SessionRequest(op="create", session=Session(id="s1", node="n1")))
    assert fsm.apply(4, PreparedQueryRequest(op="create", query=bound)) is None
    assert fsm.apply(5, PreparedQueryRequest(op="create", query=q("free", id="q2"))) is None
    fsm.apply(6, SessionRequest(op="destroy", session=Session(id="s1")))
    assert list(store.queries.queries) == ["q2"] and store.index("prepared-queries") == 6
