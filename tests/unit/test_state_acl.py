"""ACL tables and commands: applied through the FSM (as the log does), built-ins,
bootstrap with its reset index, refusals, index keys, snapshot round trip, and
the ACL endpoints over a local log."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from tests.local_log import LocalLog

from proconsul.acl.errors import ACLDenied, ACLError
from proconsul.cli.acl_format import format_token, go_time
from proconsul.server.acl_endpoints import ACLEndpoints
from proconsul.state.fsm import FSM, decode_command, encode_command
from proconsul.state.snapshot import SnapshotBody, decode_snapshot, encode_snapshot
from proconsul.state.store import StateStore
from proconsul.structs.acl import (
    ANONYMOUS_TOKEN_ACCESSOR_ID,
    GLOBAL_MANAGEMENT_POLICY_ID,
    ACLLink,
    ACLNodeIdentity,
    ACLPolicy,
    ACLRole,
    ACLToken,
    with_hash,
)
from proconsul.structs.commands import (
    ACLBootstrapRequest,
    ACLPolicyDeleteRequest,
    ACLPolicySetRequest,
    ACLRoleDeleteRequest,
    ACLRoleSetRequest,
    ACLTokenDeleteRequest,
    ACLTokenSetRequest,
    ApplyError,
    Command,
)

T0 = datetime(2021, 12, 24, 2, 43, 28, 638440, tzinfo=UTC)


def token(accessor: str, secret: str, **kw: object) -> ACLToken:
    return with_hash(ACLToken(accessor_id=accessor, secret_id=secret, create_time=T0, **kw))  # type: ignore[arg-type]


def policy(pid: str, name: str, rules: str = "") -> ACLPolicy:
    return with_hash(ACLPolicy(id=pid, name=name, rules=rules))


class Harness:
    def __init__(self) -> None:
        self.store = StateStore()
        self.fsm = FSM(self.store)
        self.index = 0

    def apply(self, command: Command) -> object:
        # Through msgpack, as the log carries it.
        self.index += 1
        return self.fsm.apply(self.index, decode_command(encode_command(command)))


def test_builtins_are_seeded() -> None:
    acl = StateStore().acl
    assert acl.policies[GLOBAL_MANAGEMENT_POLICY_ID].name == "global-management"
    assert acl.token_by_secret("anonymous") is acl.tokens[ANONYMOUS_TOKEN_ACCESSOR_ID]
    assert not acl.bootstrapped


def test_bootstrap_once_then_only_with_reset_index() -> None:
    h = Harness()
    assert h.apply(ACLBootstrapRequest(token=token("a1", "s1"))) is None
    assert h.store.acl.bootstrap_index == 1
    refused = h.apply(ACLBootstrapRequest(token=token("a2", "s2")))
    assert refused == ApplyError("ACL bootstrap no longer allowed (reset index: 1)")
    assert "a2" not in h.store.acl.tokens
    assert h.apply(ACLBootstrapRequest(token=token("a3", "s3"), reset_index=7)) == ApplyError(
        "ACL bootstrap no longer allowed (reset index: 1)"
    )
    assert h.apply(ACLBootstrapRequest(token=token("a4", "s4"), reset_index=1)) is None
    assert h.store.acl.bootstrap_index == 4


def test_token_set_update_delete_and_index_keys() -> None:
    h = Harness()
    assert h.apply(ACLTokenSetRequest(token=token("a1", "s1", description="x"))) is None
    assert h.store.index("acl-tokens") == 1
    row = h.store.acl.tokens["a1"]
    assert (row.create_index, row.modify_index) == (1, 1)
    # The same row again bumps nothing.
    h.apply(ACLTokenSetRequest(token=token("a1", "s1", description="x")))
    assert h.store.index("acl-tokens") == 1
    h.apply(ACLTokenSetRequest(token=token("a1", "s1", description="y")))
    row = h.store.acl.tokens["a1"]
    assert (row.create_index, row.modify_index, row.description) == (1, 3, "y")
    # A secret belongs to one accessor; a token's secret never changes.
    assert isinstance(h.apply(ACLTokenSetRequest(token=token("a2", "s1"))), ApplyError)
    assert isinstance(h.apply(ACLTokenSetRequest(token=token("a1", "other"))), ApplyError)
    assert h.apply(ACLTokenDeleteRequest(accessor_id="a1")) is None
    assert h.store.acl.token_by_secret("s1") is None
    refused = h.apply(ACLTokenDeleteRequest(accessor_id=ANONYMOUS_TOKEN_ACCESSOR_ID))
    assert refused == ApplyError("Delete operation not permitted on the anonymous token")


def test_policies_and_roles() -> None:
    h = Harness()
    assert h.apply(ACLPolicySetRequest(policy=policy("p1", "web"))) is None
    assert h.store.acl.policy_by_name("web") is not None
    assert isinstance(h.apply(ACLPolicySetRequest(policy=policy("p2", "web"))), ApplyError)
    h.apply(ACLPolicySetRequest(policy=policy("p1", "web2")))
    assert h.store.acl.policy_by_name("web") is None
    assert h.store.acl.policy_by_name("web2") is not None
    builtin = h.store.acl.policies[GLOBAL_MANAGEMENT_POLICY_ID]
    renamed = with_hash(msgspec.structs.replace(builtin, name="gm"))
    assert h.apply(ACLPolicySetRequest(policy=renamed)) is None
    changed = with_hash(msgspec.structs.replace(builtin, rules='acl = "read"'))
    assert isinstance(h.apply(ACLPolicySetRequest(policy=changed)), ApplyError)
    refused = h.apply(ACLPolicyDeleteRequest(policy_id=GLOBAL_MANAGEMENT_POLICY_ID))
    assert isinstance(refused, ApplyError)
    assert h.apply(ACLPolicyDeleteRequest(policy_id="p1")) is None
    role = with_hash(ACLRole(id="r1", name="ops", policies=[ACLLink(id="p1")]))
    assert h.apply(ACLRoleSetRequest(role=role)) is None
    assert h.store.acl.role_by_name("ops") is not None
    assert h.store.index("acl-roles") == h.index
    assert h.apply(ACLRoleDeleteRequest(role_id="r1")) is None
    assert h.store.acl.roles == {}


def test_snapshot_round_trip_keeps_acl_state() -> None:
    h = Harness()
    h.apply(ACLBootstrapRequest(token=token("a1", "s1", policies=[ACLLink(id="p1")])))
    h.apply(ACLPolicySetRequest(policy=policy("p1", "web", 'node "n" { policy = "read" }')))
    h.apply(
        ACLTokenSetRequest(token=token("a2", "s2", node_identities=[ACLNodeIdentity("n1", "dc1")]))
    )
    h.apply(ACLRoleSetRequest(role=with_hash(ACLRole(id="r1", name="ops"))))
    data = h.store.snapshot()
    restored = StateStore()
    restored.restore(data)
    assert restored.snapshot() == data
    acl = restored.acl
    assert acl.bootstrapped and acl.bootstrap_index == 1
    assert acl.token_by_secret("s2") == h.store.acl.tokens["a2"]
    assert acl.policy_by_name("web") == h.store.acl.policies["p1"]
    assert acl.role_by_name("ops") is not None
    assert restored.index("acl-tokens") == h.store.index("acl-tokens")


def test_snapshot_without_acl_section_restores_builtins() -> None:
    h = Harness()
    h.apply(ACLTokenSetRequest(token=token("a1", "s1")))
    body = decode_snapshot(h.store.snapshot())
    old = msgspec.structs.replace(body, acl=None)
    assert isinstance(old, SnapshotBody)
    h.store.restore(encode_snapshot(old))
    assert "a1" not in h.store.acl.tokens
    assert ANONYMOUS_TOKEN_ACCESSOR_ID in h.store.acl.tokens


# ----- endpoints over a local log -------------------------------------------------------


def endpoints(data_dir: str = "") -> ACLEndpoints:
    store = StateStore()
    ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(10))
    return ACLEndpoints(
        store, LocalLog(FSM(store)), "dc1", data_dir, now=lambda: T0, new_id=lambda: next(ids)
    )


def test_endpoint_bootstrap_and_reset_file(tmp_path: Path) -> None:
    async def run() -> None:
        acl = endpoints(str(tmp_path))
        await acl.establish()
        first = await acl.bootstrap()
        assert first.description == "Bootstrap Token (Global Management)"
        with pytest.raises(ACLDenied) as err:
            await acl.bootstrap()
        index = acl.store.acl.bootstrap_index
        assert err.value.message.endswith(f"(reset index: {index})")
        (tmp_path / "acl-bootstrap-reset").write_text(str(index))
        await acl.bootstrap()
        assert not (tmp_path / "acl-bootstrap-reset").exists()

    asyncio.run(run())


def test_endpoint_token_create_validates_and_expires() -> None:
    async def run() -> None:
        acl = endpoints()
        await acl.policy_set(ACLPolicy(name="web", rules='service "web" { policy = "write" }'))
        created = await acl.token_create(
            ACLToken(policies=[ACLLink(name="web")], expiration_ttl=600.0)  # type: ignore[arg-type]
        )
        assert created.policies[0].name == "web"
        assert created.expiration_time is not None
        assert (created.expiration_time - T0).total_seconds() == 600
        with pytest.raises(ACLError, match="cannot find policy nope"):
            await acl.token_create(ACLToken(policies=[ACLLink(name="nope")]))
        with pytest.raises(ACLError, match="line 1"):
            await acl.policy_set(ACLPolicy(name="bad", rules='node "x" { policy = "nah" }'))
        with pytest.raises(ACLError, match="anonymous"):
            await acl.token_delete(ANONYMOUS_TOKEN_ACCESSOR_ID)

    asyncio.run(run())


def test_go_time_and_token_block() -> None:
    assert go_time("2021-12-24T02:43:28.638440Z") == "2021-12-24 02:43:28.63844 +0000 UTC"
    assert go_time("2021-12-24T02:43:28Z") == "2021-12-24 02:43:28 +0000 UTC"
    text = format_token(
        {
            "AccessorID": "a",
            "SecretID": "s",
            "Description": "d",
            "Local": False,
            "CreateTime": "2021-12-24T02:43:28Z",
            "ServiceIdentities": [{"ServiceName": "api"}],
        }
    )
    assert text.endswith("Service Identities:\n   api (Datacenters: all)\n")


def test_expired_tokens_read_as_missing() -> None:
    async def run() -> None:
        clock = [T0]
        store = StateStore()
        acl = ACLEndpoints(store, LocalLog(FSM(store)), "dc1", now=lambda: clock[0])
        created = await acl.token_create(ACLToken(expiration_ttl=60.0))  # type: ignore[arg-type]
        assert (await acl.token_read(created.accessor_id))[1].accessor_id == created.accessor_id
        clock[0] = T0 + timedelta(seconds=61)
        with pytest.raises(ACLDenied, match="ACL not found"):
            await acl.token_read(created.accessor_id)
        with pytest.raises(ACLDenied, match="ACL not found"):
            await acl.token_self(created.secret_id)
        assert all(t.accessor_id != created.accessor_id for t in (await acl.token_list())[1])
        assert await acl.reap_expired() == 1
        assert created.accessor_id not in store.acl.tokens

    asyncio.run(run())


def test_establish_stamps_anonymous_and_creates_initial_management() -> None:
    async def run() -> None:
        acl = endpoints()
        secret = "5f4c1e7a-0d3b-4c8e-9a71-2b6d8e0f1a23"
        await acl.establish(secret)
        assert store_token(acl, "anonymous").create_time == T0
        token = store_token(acl, secret)
        assert token.description == "Initial Management Token"
        assert token.policies[0].id == GLOBAL_MANAGEMENT_POLICY_ID
        assert acl.store.acl.bootstrapped
        index = acl.store.last_index
        await acl.establish(secret)  # idempotent on a later leadership
        assert acl.store.last_index == index

    asyncio.run(run())


def store_token(acl: ACLEndpoints, secret: str) -> ACLToken:
    found = acl.store.acl.token_by_secret(secret)
    assert found is not None
    return found
