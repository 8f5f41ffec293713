"""The leader's second look at forwarded commands (server/raft_rpc.py), the token
on its way there (`LeaderRouter`, `ACLEndpoints`) and the operator/auto_encrypt
checks a server makes for RPC callers (agent/server_operator.py, server_setup.py, auto_encrypt.py).

Everything runs over a real StateStore, LocalLog and ServerACLResolver with
tokens made through `ACLEndpoints`; only the Raft log under "Raft.Apply" is a
recording stand-in, so a refused command can be seen never to reach it.
"""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.local_log import LocalLog
from tests.unit.test_endpoints_acl import MGMT, World, make_world

from proconsul.acl.errors import ACLDenied, ACLError
from proconsul.agent.auto_encrypt import CertFetcher
from proconsul.rpc.codec import FORWARD_METHOD, decode_apply_response
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.rpc.testing import make_pki
from proconsul.rpc.tls import PeerInfo
from proconsul.server.acl_endpoints import RESET_FILE, ACLEndpoints
from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.server.auto_encrypt_signer import signer_from_config
from proconsul.server.endpoints import Authorize, ServerEndpoints
from proconsul.server.leader_router import LeaderRouter
from proconsul.server.operator import decode_operator_request, operator_payload
from proconsul.server.raft_errors import NotLeaderError
from proconsul.server.raft_rpc import (
    ACL_DISABLED,
    authorize_forwarded,
    raft_handlers,
)
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.acl import (
    GLOBAL_MANAGEMENT_POLICY_ID,
    GLOBAL_MANAGEMENT_POLICY_NAME,
    ACLLink,
    ACLPolicy,
    ACLToken,
    with_hash,
)
from proconsul.structs.catalog import KVEntry, NodeService
from proconsul.structs.commands import (
    ACLBootstrapRequest,
    ACLPolicyDeleteRequest,
    ACLTokenSetRequest,
    ApplyResult,
    CARootsSetRequest,
    Command,
    ConfigEntryRequest,
    DeregisterRequest,
    KVSRequest,
    RegisterRequest,
)
from proconsul.structs.config_entries import (
    ServiceDefaults,
    ServiceRoute,
    ServiceRouter,
    ServiceSplit,
    ServiceSplitter,
)
from proconsul.structs.connect import CARoot
from proconsul.structs.rpc import ApplyRequest, SignReply, SignRequest
from proconsul.tls.certs import generate_private_key, private_key_to_pem

PEER = PeerInfo(address=("127.0.0.1", 1), tls=False)
UNKNOWN = "99999999-9999-4999-8999-999999999999"
CHOSEN = "0bad0000-0000-4000-8000-000000000001"
KV_WEB = 'key_prefix "web/" { policy = "write" }'


def kv_set(key: str) -> KVSRequest:
    return KVSRequest(op="set", dir_ent=KVEntry(key=key, value=b"v"))


def management_token(secret: str = CHOSEN) -> ACLToken:
    return with_hash(
        ACLToken(
            accessor_id="0bad0000-0000-4000-8000-0000000000aa",
            secret_id=secret,
            policies=[ACLLink(id=GLOBAL_MANAGEMENT_POLICY_ID, name=GLOBAL_MANAGEMENT_POLICY_NAME)],
        )
    )


def refused(call: Any, *args: Any, **kwargs: Any) -> ACLDenied:
    with pytest.raises(ACLDenied) as caught:
        call(*args, **kwargs)
    return caught.value


class RecordingRaft:
    """What `raft_handlers` needs of a RaftLog: a leader that commits to a LocalLog."""

    def __init__(self, endpoints: ServerEndpoints) -> None:
        self.local = LocalLog(FSM(endpoints.store))
        self.applied: list[Command] = []

    async def apply(self, command: Command) -> tuple[int, ApplyResult]:
        self.applied.append(command)
        return await self.local.apply(command)

    async def handle_step(self, payload: bytes, peer: PeerInfo) -> bytes:
        return b""


# ----- authorize_forwarded ------------------------------------------------------------


async def test_catalog_and_kv_get_the_vetting_apply_makes() -> None:
    world = await make_world()
    writer = await world.token(KV_WEB, "kv-web")
    authorize_forwarded(world.endpoints, kv_set("web/a"), writer)
    authorize_forwarded(world.endpoints, kv_set("anything"), MGMT)
    denied = refused(authorize_forwarded, world.endpoints, kv_set("app/a"), writer)
    assert denied.message.startswith("Permission denied: token with AccessorID")
    assert "'key:write'" in denied.message
    refused(authorize_forwarded, world.endpoints, kv_set("web/a"), "")
    unknown = refused(authorize_forwarded, world.endpoints, kv_set("web/a"), UNKNOWN)
    assert unknown.message == "ACL not found"
    register = RegisterRequest(node="n9", address="10.0.0.9", service=NodeService(service="web"))
    refused(authorize_forwarded, world.endpoints, register, writer)
    refused(authorize_forwarded, world.endpoints, DeregisterRequest(node="n1"), "")
    authorize_forwarded(world.endpoints, register, MGMT)


async def test_acl_commands_need_acl_write() -> None:
    world = await make_world()
    writer = await world.token(KV_WEB, "kv-web")
    reader = await world.token('acl = "read"', "acl-read")
    command = ACLTokenSetRequest(token=management_token())
    for token in ("", writer, reader):
        denied = refused(authorize_forwarded, world.endpoints, command, token)
        assert "'acl:write'" in denied.message
    assert refused(authorize_forwarded, world.endpoints, command, UNKNOWN).message == (
        "ACL not found"
    )
    authorize_forwarded(world.endpoints, command, MGMT)
    authorize_forwarded(world.endpoints, ACLPolicyDeleteRequest(policy_id="x"), MGMT)


async def test_a_second_bootstrap_needs_the_leaders_reset_file(tmp_path: Path) -> None:
    world = await make_world()
    tables = world.store.acl
    assert tables.bootstrapped  # establish() bootstrapped with the initial management token
    # The reset index is no secret (the bootstrap refusal names it): knowing it is not enough.
    command = ACLBootstrapRequest(token=management_token(), reset_index=tables.bootstrap_index)
    denied = refused(authorize_forwarded, world.endpoints, command, "", data_dir=str(tmp_path))
    assert denied.message.startswith("Permission denied: ACL bootstrap no longer allowed")
    (tmp_path / RESET_FILE).write_text(f"{tables.bootstrap_index}\n")
    authorize_forwarded(world.endpoints, command, "", data_dir=str(tmp_path))
    wrong = ACLBootstrapRequest(token=management_token(), reset_index=tables.bootstrap_index + 1)
    refused(authorize_forwarded, world.endpoints, wrong, "", data_dir=str(tmp_path))


async def test_the_first_bootstrap_is_anyones_as_over_http() -> None:
    store = StateStore()
    endpoints = ServerEndpoints(store, LocalLog(FSM(store)), "dc1")
    endpoints.acl = ServerACLResolver(store, "dc1")
    assert not store.acl.bootstrapped
    authorize_forwarded(endpoints, ACLBootstrapRequest(token=management_token()), "")


async def test_without_acls_catalog_passes_and_acl_rows_are_refused() -> None:
    store = StateStore()
    endpoints = ServerEndpoints(store, LocalLog(FSM(store)), "dc1")
    authorize_forwarded(endpoints, kv_set("any"), "")
    for command in (
        ACLTokenSetRequest(token=management_token()),
        ACLBootstrapRequest(token=management_token()),
    ):
        assert refused(authorize_forwarded, endpoints, command, "").message == ACL_DISABLED


# ----- the "Raft.Apply" handler ---------------------------------------------------------


async def forward(world: World, raft: RecordingRaft, command: Command, token: str) -> bytes:
    handler = raft_handlers(raft, world.endpoints)[FORWARD_METHOD]  # type: ignore[arg-type]
    return await handler(msgspec.msgpack.encode(ApplyRequest(command, token)), PEER)


async def test_raft_apply_of_a_management_token_from_a_tokenless_caller_is_refused() -> None:
    world = await make_world()
    raft = RecordingRaft(world.endpoints)
    before = dict(world.store.acl.tokens)
    with pytest.raises(ACLDenied):
        await forward(world, raft, ACLTokenSetRequest(token=management_token()), "")
    assert raft.applied == []
    assert world.store.acl.tokens == before
    assert world.store.acl.token_by_secret(CHOSEN) is None


async def test_raft_apply_applies_what_the_caller_may_write() -> None:
    world = await make_world()
    raft = RecordingRaft(world.endpoints)
    writer = await world.token(KV_WEB, "kv-web")
    index, result = decode_apply_response(await forward(world, raft, kv_set("web/x"), writer))
    assert result is True and index > 0
    with pytest.raises(ACLDenied):
        await forward(world, raft, kv_set("secret/x"), writer)
    assert [type(c) for c in raft.applied] == [KVSRequest]


async def test_a_bare_command_payload_is_a_bad_request() -> None:
    world = await make_world()
    raft = RecordingRaft(world.endpoints)
    handler = raft_handlers(raft, world.endpoints)[FORWARD_METHOD]  # type: ignore[arg-type]
    with pytest.raises(RPCError) as caught:
        await handler(msgspec.msgpack.encode(kv_set("web/x")), PEER)
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert raft.applied == []


# ----- the token on its way to the leader ----------------------------------------------------


class FollowerRaft:
    address = "10.0.0.1:8300"

    async def apply(self, command: Command) -> tuple[int, ApplyResult]:
        raise NotLeaderError("leader-id", "10.0.0.2:8300")

    async def wait_leader_gone(self, address: str, timeout_s: float) -> None:
        await asyncio.Event().wait()  # the leader never moves here


class RecordingEndpoints:
    def __init__(self) -> None:
        self.forwarded: list[tuple[str, Command, str]] = []

    async def forward(
        self, address: str, command: Command, timeout_s: float = 1.0, token: str = ""
    ) -> tuple[int, ApplyResult]:
        self.forwarded.append((address, command, token))
        return 7, True


async def test_forwarding_log_hands_the_callers_token_to_the_leader() -> None:
    remote = RecordingEndpoints()
    log = LeaderRouter(FollowerRaft(), remote)  # type: ignore[arg-type]
    assert await log.apply(kv_set("a"), "caller-secret") == (7, True)
    assert await log.apply(kv_set("b")) == (7, True)
    assert [(a, t) for a, _, t in remote.forwarded] == [
        ("10.0.0.2:8300", "caller-secret"),
        ("10.0.0.2:8300", ""),
    ]


class TokenLog:
    """A LocalLog that remembers the token each command came with."""

    def __init__(self, store: StateStore) -> None:
        self.local = LocalLog(FSM(store))
        self.tokens: list[tuple[str, str]] = []

    async def apply(
        self, command: Command, token: str = "", authorize: Authorize | None = None
    ) -> tuple[int, ApplyResult]:
        self.tokens.append((type(command).__name__, token))
        return await self.local.apply(command, token, authorize)


async def test_acl_writes_go_into_the_log_with_the_callers_token() -> None:
    world = await make_world()
    log = TokenLog(world.store)
    acl = ACLEndpoints(world.store, log, "dc1", resolver=world.endpoints.acl)
    await acl.policy_set(ACLPolicy(name="p1", rules=KV_WEB), caller=MGMT)
    made = await acl.token_create(ACLToken(policies=[ACLLink(name="p1")]), caller=MGMT)
    await acl.token_delete(made.accessor_id, caller=MGMT)
    assert log.tokens == [
        ("ACLPolicySetRequest", MGMT),
        ("ACLTokenSetRequest", MGMT),
        ("ACLTokenDeleteRequest", MGMT),
    ]


async def test_server_endpoints_write_passes_the_token_on() -> None:
    store = StateStore()
    log = TokenLog(store)
    endpoints = ServerEndpoints(store, log, "dc1")
    await endpoints.write(kv_set("a"), "tok")
    assert log.tokens == [("KVSRequest", "tok")]


async def test_changing_the_builtin_policy_message_matches_the_state_store() -> None:
    world = await make_world()
    builtin = world.store.acl.policies[GLOBAL_MANAGEMENT_POLICY_ID]
    changed = ACLPolicy(id=builtin.id, name=builtin.name, rules='key_prefix "" { policy = "read" }')
    with pytest.raises(ACLError) as caught:
        await world.acl.policy_set(changed, builtin.id, caller=MGMT)
    assert caught.value.message == (
        "Changing the Rules for the builtin global-management policy is not permitted"
    )


# ----- operator payloads ------------------------------------------------------------------


def test_operator_payload_round_trip_and_nil() -> None:
    request = decode_operator_request(operator_payload("t", "id1", "a:1"), "Operator.X")
    assert (request.token, request.id, request.address) == ("t", "id1", "a:1")
    assert decode_operator_request(b"\xc0", "Operator.X").token == ""
    with pytest.raises(RPCError) as caught:
        decode_operator_request(b"\x01", "Operator.X")
    assert caught.value.code == ErrorCode.BAD_REQUEST


# ----- auto_encrypt: the request carries node and token, the server checks them ------------


class RecordingRPC:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    async def call(self, address: str, method: str, payload: bytes, timeout_s: float) -> bytes:
        self.payloads.append(payload)
        raise RPCError("Permission denied", ErrorCode.ACL_DENIED)


async def test_cert_fetcher_sends_the_node_and_the_current_agent_token() -> None:
    anonymous = RecordingRPC()
    tokens = {"agent": "first"}
    fetcher = CertFetcher(
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
        anonymous,  # type: ignore[arg-type]
        lambda: ("client-1", tokens["agent"]),
    )
    assert not await fetcher.fetch(["10.0.0.1:8300"])
    tokens["agent"] = "second"  # set at run time: the next fetch uses it
    assert not await fetcher.fetch(["10.0.0.1:8300"])
    sent = [msgspec.msgpack.decode(p, type=SignRequest) for p in anonymous.payloads]
    assert [(s.node, s.token) for s in sent] == [("client-1", "first"), ("client-1", "second")]


def test_the_signer_asks_authorize_before_signing(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    asked: list[tuple[str, str]] = []

    def authorize(token: str, node: str) -> None:
        asked.append((token, node))
        if token != "good":
            raise RPCError("Permission denied", ErrorCode.ACL_DENIED)

    handler = signer_from_config(
        {"root_cert": pki.ca_file, "private_key": private_key_to_pem(pki.ca.key)},
        datacenter="dc1",
        domain="consul",
        authorize=authorize,
    )
    assert handler is not None
    public = (
        generate_private_key()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )

    def request(token: str) -> bytes:
        return msgspec.msgpack.encode(
            SignRequest(public_key_pem=public.decode(), node="client-1", token=token)
        )

    with pytest.raises(RPCError) as caught:
        asyncio.run(handler(request("bad"), PEER))
    assert caught.value.code == ErrorCode.ACL_DENIED
    reply = msgspec.msgpack.decode(asyncio.run(handler(request("good"), PEER)), type=SignReply)
    assert "BEGIN CERTIFICATE" in reply.cert_pem
    assert asked == [("bad", "client-1"), ("good", "client-1")]


# ----- the CA roots are the leader's own write -------------------------------------------


def ca_roots_command() -> CARootsSetRequest:
    now = datetime.now(UTC)
    root = CARoot(
        id="aa:bb",
        name="attacker root",
        serial_number=1,
        signing_key_id="cc:dd",
        external_trust_domain="evil",
        not_before=now,
        not_after=now,
        root_cert="-----BEGIN CERTIFICATE-----",
        active=True,
    )
    return CARootsSetRequest(roots=[root], cluster_id="evil", signing_keys={"aa:bb": "key"})


async def test_ca_roots_are_never_forwarded_nor_written_through_apply() -> None:
    world = await make_world()
    refused(authorize_forwarded, world.endpoints, ca_roots_command(), MGMT)
    store = StateStore()
    open_endpoints = ServerEndpoints(store, LocalLog(FSM(store)), "dc1")  # ACLs off
    refused(authorize_forwarded, open_endpoints, ca_roots_command(), "")
    for endpoints, token in ((open_endpoints, ""), (world.endpoints, MGMT)):
        with pytest.raises(ACLDenied):
            await endpoints.write(ca_roots_command(), token)


async def test_a_forwarded_config_entry_is_validated_and_vetted_again() -> None:
    world = await make_world()
    raft = RecordingRaft(world.endpoints)
    # Skipped the first server's checks: refused here, nothing reaches the log.
    bad = ServiceSplitter(name="web", splits=[ServiceSplit(weight=90)])
    with pytest.raises(RPCError) as caught:
        await forward(world, raft, ConfigEntryRequest(op="upsert", entry=bad), MGMT)
    assert caught.value.code == ErrorCode.BAD_QUERY
    assert caught.value.message == "the sum of all split weights must be 100, not 90.000000"
    router = ServiceRouter(name="web", routes=[ServiceRoute()])
    with pytest.raises(RPCError, match="does not permit advanced routing"):
        await forward(world, raft, ConfigEntryRequest(op="upsert", entry=router), MGMT)
    good = ConfigEntryRequest(op="upsert", entry=ServiceDefaults(name="web", protocol="HTTP"))
    writer = await world.token(KV_WEB, "kv-web")
    with pytest.raises(ACLDenied):
        await forward(world, raft, good, writer)
    assert raft.applied == []
    _, result = decode_apply_response(await forward(world, raft, good, MGMT))
    assert result is True
    stored = world.store.config.get("service-defaults", "web")
    assert isinstance(stored, ServiceDefaults) and stored.protocol == "http"  # normalized
