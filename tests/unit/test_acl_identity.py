"""Identity expansion, datacenter filtering and a token's policies through roles."""

from __future__ import annotations

import pytest

from proconsul.acl.authorizer import Authorizer, token_authorizer
from proconsul.acl.identity import (
    ScopedPolicy,
    global_management_rules,
    node_identity_policy,
    scoped_policy,
    service_identity_policy,
    token_policies,
)
from proconsul.acl.rules import Access, LabelledRule, parse_rules
from proconsul.structs.acl import (
    GLOBAL_MANAGEMENT_POLICY_ID,
    ACLLink,
    ACLNodeIdentity,
    ACLPolicy,
    ACLRole,
    ACLServiceIdentity,
    ACLToken,
    global_management_policy,
)


def test_service_identity_expands_like_consul() -> None:
    policy = service_identity_policy("web", ["dc1", "dc2"])
    assert set(policy.rules.rules) == {
        LabelledRule("service", "web", False, Access.WRITE),
        LabelledRule("service", "web-sidecar-proxy", False, Access.WRITE),
        LabelledRule("service", "", True, Access.READ),
        LabelledRule("node", "", True, Access.READ),
    }
    assert policy.datacenters == ("dc1", "dc2")
    assert parse_rules(policy.text) == policy.rules  # the display text says the same


def test_node_identity_expands_like_consul() -> None:
    policy = node_identity_policy("consul-server-1", "us-west-1")
    assert set(policy.rules.rules) == {
        LabelledRule("node", "consul-server-1", False, Access.WRITE),
        LabelledRule("service", "", True, Access.READ),
    }
    assert policy.datacenters == ("us-west-1",)
    assert parse_rules(policy.text) == policy.rules


def test_identity_text_escapes_odd_names() -> None:
    policy = service_identity_policy('we"b\\x')
    assert parse_rules(policy.text) == policy.rules


def test_synthetic_ids_are_stable_and_distinct() -> None:
    assert service_identity_policy("web").id == service_identity_policy("web", ["dc9"]).id
    assert service_identity_policy("web").id != service_identity_policy("api").id
    assert node_identity_policy("n", "dc1").id != node_identity_policy("n", "dc2").id
    assert service_identity_policy("web").name.startswith("synthetic-policy-")


@pytest.mark.parametrize(
    ("datacenters", "dc", "applies"),
    [((), "dc1", True), (("dc1",), "dc1", True), (("dc1",), "dc2", False), (("a", "b"), "b", True)],
)
def test_applies_in(datacenters: tuple[str, ...], dc: str, applies: bool) -> None:
    assert service_identity_policy("web", datacenters).applies_in(dc) is applies


def test_service_identity_authorizer() -> None:
    a = Authorizer.for_datacenter([service_identity_policy("api")], "us-west-1")
    assert a.service_write("api") and a.service_write("api-sidecar-proxy")
    assert not a.service_write("web") and a.service_read("web")
    assert a.node_read("consul-client-1") and not a.node_write("consul-client-1")
    assert a.intention_read("api") and not a.intention_write("api")


def test_identities_are_filtered_by_datacenter() -> None:
    node = node_identity_policy("consul-server-1", "us-west-1")
    here = Authorizer.for_datacenter([node], "us-west-1")
    there = Authorizer.for_datacenter([node], "us-east-1")
    assert here.node_write("consul-server-1") and here.service_read("api")
    assert not there.node_write("consul-server-1") and not there.service_read("api")
    service = service_identity_policy("web", ["dc2"])
    assert not Authorizer.for_datacenter([service], "dc1").service_write("web")
    assert Authorizer.for_datacenter([service], "dc2").service_write("web")


# --- a token's policies ---------------------------------------------------------------------

POLICIES = {
    "p-kv": ACLPolicy(id="p-kv", name="kv", rules='key_prefix "app/" { policy = "write" }'),
    "p-east": ACLPolicy(
        id="p-east", name="east", rules='operator = "read"', datacenters=["us-east-1"]
    ),
    "p-deny": ACLPolicy(id="p-deny", name="deny-web", rules='service "web" { policy = "deny" }'),
    GLOBAL_MANAGEMENT_POLICY_ID: global_management_policy(),
}
ROLES = {
    "r-ops": ACLRole(
        id="r-ops",
        name="ops",
        policies=[ACLLink(id="p-east"), ACLLink(id="p-gone")],
        service_identities=[ACLServiceIdentity(service_name="web")],
        node_identities=[ACLNodeIdentity(node_name="n1", datacenter="us-west-1")],
    )
}


def test_token_policies_gather_policies_roles_and_identities() -> None:
    token = ACLToken(
        accessor_id="a",
        policies=[ACLLink(id="p-kv"), ACLLink(id="p-kv"), ACLLink(id="p-missing")],
        roles=[ACLLink(id="r-ops"), ACLLink(id="r-missing")],
        service_identities=[ACLServiceIdentity(service_name="api", datacenters=["us-west-1"])],
    )
    scoped = token_policies(token, POLICIES.get, ROLES.get)
    names = [p.name for p in scoped]
    assert names[:2] == ["kv", "synthetic-policy-" + service_identity_policy("api").id]
    assert "east" in names and len(scoped) == 5  # kv, api, east, web, n1; no dangling links
    west = token_authorizer(token, POLICIES.get, ROLES.get, "us-west-1")
    east = token_authorizer(token, POLICIES.get, ROLES.get, "us-east-1")
    assert west.key_write("app/x") and east.key_write("app/x")
    assert west.service_write("api") and not east.service_write("api")
    assert west.service_write("web") and east.service_write("web")  # role's identity: all DCs
    assert west.node_write("n1") and not east.node_write("n1")
    assert east.operator_read() and not west.operator_read()


def test_deny_policy_beats_identity_write() -> None:
    token = ACLToken(
        policies=[ACLLink(id="p-deny")],
        service_identities=[ACLServiceIdentity(service_name="web")],
    )
    a = token_authorizer(token, POLICIES.get, ROLES.get, "dc1")
    assert not a.service_write("web") and not a.service_read("web")
    assert a.service_write("web-sidecar-proxy")


def test_management_token() -> None:
    token = ACLToken(policies=[ACLLink(id=GLOBAL_MANAGEMENT_POLICY_ID)])
    a = token_authorizer(token, POLICIES.get, ROLES.get, "dc1")
    assert a.acl_write() and a.key_write_prefix("") and a.operator_write() and a.mesh_write()


def test_anonymous_token_gets_only_the_default() -> None:
    token = ACLToken(accessor_id="00000000-0000-0000-0000-000000000002", secret_id="anonymous")
    deny = token_authorizer(token, POLICIES.get, ROLES.get, "dc1", default_policy="deny")
    allow = token_authorizer(token, POLICIES.get, ROLES.get, "dc1", default_policy="allow")
    assert not deny.service_read("api") and allow.service_read("api")


def test_scoped_policy_reuses_the_builtin_parse_and_custom_parsers() -> None:
    assert scoped_policy(global_management_policy()).rules is global_management_rules()
    calls: list[str] = []

    def parse(text: str) -> object:
        calls.append(text)
        return parse_rules(text)

    scoped = scoped_policy(POLICIES["p-kv"], parse)  # type: ignore[arg-type]
    assert calls == [POLICIES["p-kv"].rules]
    assert isinstance(scoped, ScopedPolicy) and scoped.datacenters == ()
