"""ACL rows: Consul's JSON names, round trips, hashes, built-ins, expiry, identity syntax."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from proconsul.structs.acl import (
    ANONYMOUS_TOKEN_ACCESSOR_ID,
    GLOBAL_MANAGEMENT_POLICY_ID,
    GLOBAL_MANAGEMENT_RULES,
    ACLLink,
    ACLNodeIdentity,
    ACLPolicy,
    ACLRole,
    ACLServiceIdentity,
    ACLToken,
    anonymous_token,
    api_dict,
    global_management_policy,
    parse_node_identity,
    parse_service_identity,
    policy_hash,
    policy_list_stub,
    resolve_expiration,
    role_hash,
    token_expired,
    token_hash,
    valid_identity_name,
    valid_policy_name,
    valid_role_name,
    with_hash,
)
from proconsul.structs.duration import Duration, dec_hook, enc_hook

NOW = datetime(2021, 12, 24, 3, 35, 25, tzinfo=UTC)

TOKEN = ACLToken(
    accessor_id="73f07f47-66ca-7b51-535f-8a8ca1b2d443",
    secret_id="9ed687c1-4ec6-0fd5-0cf2-fee83dbb2999",
    description="consul-server-1 agent token",
    policies=[ACLLink(id="p1", name="consul-server-1")],
    node_identities=[ACLNodeIdentity(node_name="consul-server-1", datacenter="us-west-1")],
    create_time=NOW,
    create_index=10,
    modify_index=12,
)


def test_token_json_uses_consul_names() -> None:
    out = msgspec.json.decode(msgspec.json.encode(with_hash(TOKEN), enc_hook=enc_hook))
    assert list(out) == [
        "AccessorID", "SecretID", "Description", "Policies", "Roles", "ServiceIdentities",
        "NodeIdentities", "Local", "AuthMethod", "ExpirationTime", "ExpirationTTL",
        "CreateTime", "Hash", "Legacy", "CreateIndex", "ModifyIndex",
    ]  # fmt: skip
    assert out["Policies"] == [{"ID": "p1", "Name": "consul-server-1"}]
    assert out["NodeIdentities"] == [{"NodeName": "consul-server-1", "Datacenter": "us-west-1"}]
    assert out["CreateTime"] == "2021-12-24T03:35:25Z"


def test_api_dict_drops_consul_omitempty_fields() -> None:
    out = api_dict(with_hash(TOKEN))
    assert "Roles" not in out and "ServiceIdentities" not in out
    assert "ExpirationTime" not in out and "ExpirationTTL" not in out and "AuthMethod" not in out
    assert out["Description"] == "consul-server-1 agent token" and out["Local"] is False
    assert out["Policies"] == [{"ID": "p1", "Name": "consul-server-1"}]
    service = api_dict(ACLToken(service_identities=[ACLServiceIdentity(service_name="api")]))
    assert service["ServiceIdentities"] == [{"ServiceName": "api"}]  # Datacenters omitted
    ttl = api_dict(ACLToken(expiration_ttl=Duration(3600)))
    assert ttl["ExpirationTTL"] == "1h0m0s"
    policy = api_dict(global_management_policy())
    assert policy["ID"] == GLOBAL_MANAGEMENT_POLICY_ID and "Datacenters" in policy


@pytest.mark.parametrize(
    "row",
    [
        with_hash(TOKEN),
        ACLToken(expiration_time=NOW, expiration_ttl=Duration(60), local=True),
        global_management_policy(),
        with_hash(ACLRole(id="r", service_identities=[ACLServiceIdentity("web", ["dc1"])])),
    ],
)  # fmt: skip
def test_rows_round_trip_json_and_msgpack(row: msgspec.Struct) -> None:
    kind = type(row)
    as_json = msgspec.json.encode(row, enc_hook=enc_hook)
    assert msgspec.json.decode(as_json, type=kind, dec_hook=dec_hook) == row
    as_msgpack = msgspec.msgpack.encode(row, enc_hook=enc_hook)
    assert msgspec.msgpack.decode(as_msgpack, type=kind, dec_hook=dec_hook) == row


def test_token_decodes_from_a_create_request() -> None:
    body = b'{"ExpirationTTL": "1h", "ServiceIdentities": [{"ServiceName": "api"}]}'
    token = msgspec.json.decode(body, type=ACLToken, dec_hook=dec_hook)
    assert token.expiration_ttl == Duration(3600)
    assert token.service_identities[0].datacenters == []


# --- hashes ---------------------------------------------------------------------------------


def test_token_hash_covers_meaning_not_secret_or_indexes() -> None:
    base = token_hash(TOKEN)
    assert len(base) == 32 and base == token_hash(TOKEN)
    same = msgspec.structs.replace(
        TOKEN, secret_id="other", create_index=99, modify_index=99, create_time=NOW + timedelta(1)
    )
    assert token_hash(same) == base
    for change in (
        {"description": "changed"},
        {"policies": [ACLLink(id="p2")]},
        {"roles": [ACLLink(id="r1")]},
        {"service_identities": [ACLServiceIdentity(service_name="web")]},
        {"node_identities": [ACLNodeIdentity(node_name="consul-server-1", datacenter="dc2")]},
        {"local": True},
    ):
        assert token_hash(msgspec.structs.replace(TOKEN, **change)) != base, change


def test_hashes_are_unambiguous() -> None:
    a = ACLPolicy(name="ab", description="c")
    b = ACLPolicy(name="a", description="bc")
    assert policy_hash(a) != policy_hash(b)
    r1 = ACLRole(service_identities=[ACLServiceIdentity("a", ["b", "c"])])
    r2 = ACLRole(service_identities=[ACLServiceIdentity("a", ["b,c"])])
    assert role_hash(r1) != role_hash(r2)


def test_with_hash_sets_each_kind() -> None:
    assert with_hash(TOKEN).hash == token_hash(TOKEN)
    policy = ACLPolicy(name="p", rules='operator = "read"')
    assert with_hash(policy).hash == policy_hash(policy)
    role = ACLRole(name="r")
    assert with_hash(role).hash == role_hash(role)


# --- built-ins ---------------------------------------------------------------------------------


def test_builtins() -> None:
    policy = global_management_policy()
    assert (policy.id, policy.name) == (GLOBAL_MANAGEMENT_POLICY_ID, "global-management")
    assert policy.rules == GLOBAL_MANAGEMENT_RULES and policy.hash
    token = anonymous_token(NOW)
    assert (token.accessor_id, token.secret_id) == (ANONYMOUS_TOKEN_ACCESSOR_ID, "anonymous")
    assert token.description == "Anonymous Token" and token.policies == []
    assert token.create_time == NOW and token.hash
    stub = policy_list_stub(policy)
    assert "Rules" not in msgspec.to_builtins(stub) and stub.hash == policy.hash


# --- expiry -----------------------------------------------------------------------------------


def test_token_expired() -> None:
    assert not token_expired(TOKEN, NOW)
    expiring = msgspec.structs.replace(TOKEN, expiration_time=NOW + timedelta(minutes=5))
    assert not token_expired(expiring, NOW)
    assert not token_expired(expiring, NOW + timedelta(minutes=5))
    assert token_expired(expiring, NOW + timedelta(minutes=5, microseconds=1))


@pytest.mark.parametrize(
    ("ttl", "when", "expected"),
    [
        (None, None, None),
        (Duration(0), None, None),
        (Duration(3600), None, NOW + timedelta(hours=1)),
        (None, NOW + timedelta(hours=2), NOW + timedelta(hours=2)),
    ],
)
def test_resolve_expiration(
    ttl: Duration | None, when: datetime | None, expected: datetime | None
) -> None:
    token = ACLToken(expiration_ttl=ttl, expiration_time=when)
    assert resolve_expiration(token, NOW) == expected


@pytest.mark.parametrize(
    ("ttl", "when", "message"),
    [
        (Duration(3600), NOW + timedelta(hours=1), "cannot both be set"),
        (Duration(-5), None, "should be > 0"),
        (Duration(10), None, "between 1m0s and 24h0m0s"),
        (Duration(25 * 3600), None, "between"),
        (None, NOW - timedelta(seconds=1), "cannot be in the past"),
        (None, NOW + timedelta(seconds=10), "between"),
        (None, datetime(2030, 1, 1), "time zone"),
    ],
)
def test_resolve_expiration_refuses(
    ttl: Duration | None, when: datetime | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_expiration(ACLToken(expiration_ttl=ttl, expiration_time=when), NOW)


# --- names and identity arguments --------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "name", "datacenters"),
    [("api", "api", []), ("api:dc1", "api", ["dc1"]), ("web:dc1,dc2", "web", ["dc1", "dc2"])],
)
def test_parse_service_identity(arg: str, name: str, datacenters: list[str]) -> None:
    assert parse_service_identity(arg) == ACLServiceIdentity(name, datacenters)


@pytest.mark.parametrize("arg", ["", ":dc1", "Web", "api:", "api:dc1,,dc2", "-api", "a b"])
def test_parse_service_identity_refuses(arg: str) -> None:
    with pytest.raises(ValueError):
        parse_service_identity(arg)


def test_parse_node_identity() -> None:
    assert parse_node_identity("consul-server-1:us-west-1") == ACLNodeIdentity(
        "consul-server-1", "us-west-1"
    )


@pytest.mark.parametrize("arg", ["", "n1", "n1:", ":dc1", "n1:dc1:x", "N1:dc1", "n 1:dc1"])
def test_parse_node_identity_refuses(arg: str) -> None:
    with pytest.raises(ValueError, match=r"node-identity|invalid name"):
        parse_node_identity(arg)


def test_names() -> None:
    assert valid_policy_name("consul-server-1") and valid_policy_name("A_b")
    assert (
        not valid_policy_name("")
        and not valid_policy_name("a b")
        and not valid_policy_name("x" * 129)
    )
    assert valid_role_name("x" * 256) and not valid_role_name("x" * 257)
    assert valid_identity_name("web_1") and not valid_identity_name("web-")
    assert not valid_identity_name("a" * 257)
