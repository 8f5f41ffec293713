"""Every RPC method a server registers, called straight on its RPC port with no
token and with an unknown one, on a real server with ACLs on (127.0.0.191-192).

The server runs `acl { enabled = true default_policy = "deny" }` with an
initial management token, `connect` with a CA and `auto_encrypt { allow_tls =
true }`, and no TLS on the RPC port (verify_incoming off): anything that
reaches port 8300 is an anonymous caller. `CASES` names every method with what
such a caller must get: refused with ACL_DENIED ("ACL not found" for the
unknown secret), filtered data only, its own (anonymous) token only, or one of
the documented open methods (Status.*, and Raft.Step, which is the Raft
transport between servers and is not exercised here).
Tokens narrowed to one service or to operator read/write then show which
rule each Connect method asks: intentions read on either end of a row (a
match on every name), service:read on a check's destination, operator:write
for the CA configuration, service:write on the service a leaf's CSR names.
`test_cases_cover_every_registered_method` starts a server agent in-process
with the same configuration and fails when it registers a method `CASES` does
not know, so a new method cannot arrive without a decision.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.agent_process import AgentProcess, free_gossip_port, free_port, wait_for
from tests.gossip_agents import GossipPool

from proconsul.agent.agent import Agent
from proconsul.config.agent_args import parse_agent_args
from proconsul.config.loader import load_config
from proconsul.connect.ca import leaf_csr
from proconsul.rpc import ErrorCode, RPCClient, RPCError
from proconsul.rpc.acl_codec import encode_call
from proconsul.rpc.codec import decode_read_response
from proconsul.rpc.testing import make_pki
from proconsul.server.auto_encrypt_signer import SIGN_METHOD
from proconsul.server.connect_ca_rpc import decode_issued
from proconsul.server.delegate import ServerDelegate
from proconsul.server.operator import operator_payload
from proconsul.server.session_endpoints import renew_payload
from proconsul.structs.acl import (
    GLOBAL_MANAGEMENT_POLICY_ID,
    GLOBAL_MANAGEMENT_POLICY_NAME,
    ACLLink,
    ACLPolicy,
    ACLRole,
    ACLToken,
    with_hash,
)
from proconsul.structs.catalog import KVEntry
from proconsul.structs.commands import (
    ACLBootstrapRequest,
    ACLTokenSetRequest,
    Command,
    KVSRequest,
)
from proconsul.structs.connect import CAConfiguration
from proconsul.structs.intentions import IntentionQuery
from proconsul.structs.requests import QueryOptions, ReadRequest
from proconsul.structs.rpc import (
    ACLCall,
    ApplyRequest,
    CAConfigRequest,
    CASignRequest,
    OperatorRequest,
    ResolveReply,
    SignReply,
    SignRequest,
)
from proconsul.structs.txn import TxnKVOp
from proconsul.tls.certs import generate_private_key, private_key_to_pem

MGMT = "0bc0c000-0000-4000-8000-00000000000a"
NODE_WRITER = "0bc0c000-0000-4000-8000-00000000000b"
NODE_READER = "0bc0c000-0000-4000-8000-00000000000c"
WEB_READER = "0bc0c000-0000-4000-8000-00000000000d"
WEB_WRITER = "0bc0c000-0000-4000-8000-00000000000e"
OPERATOR_READER = "0bc0c000-0000-4000-8000-00000000000f"
OPERATOR_WRITER = "0bc0c000-0000-4000-8000-000000000010"
UNKNOWN = "0bc0c000-0000-4000-8000-0000000000ff"
CHOSEN = "0bc0c000-0000-4000-8000-0000000000ee"
CALL_S = 10.0
DEADLINE_S = 20.0

DENIED = "denied"  # refused with ACL_DENIED
FILTERED = "filtered"  # answers, but nothing a default-deny anonymous caller may not read
OWN = "own"  # answers the caller's own token only (the anonymous token for "")
OPEN = "open"  # answers anyone, as in Consul
PUBLIC = "public"  # anonymous is answered (Consul asks no right); unknown secrets refused
SERVER_TRANSPORT = "server transport"  # Raft.Step: the Raft protocol itself, not called here
EXECUTED_EMPTY = "executed empty"  # a query runs, with no instance the caller may not read
TXN_REFUSED = "txn refused"  # answers with the refused operation as its error, nothing read


def read(name: str = "", **fields: Any) -> Callable[[str], bytes]:
    def payload(token: str) -> bytes:
        request = ReadRequest(name=name, options=QueryOptions(token=token), **fields)
        return msgspec.msgpack.encode(request)

    return payload


def acl_call(**fields: Any) -> Callable[[str], bytes]:
    return lambda token: encode_call(ACLCall(caller=token, **fields))


def operator(**fields: str) -> Callable[[str], bytes]:
    return lambda token: operator_payload(token, **fields)


def kv_set(key: str) -> KVSRequest:
    return KVSRequest(op="set", dir_ent=KVEntry(key=key, value=b"v"))


def apply(command: Command) -> Callable[[str], bytes]:
    return lambda token: msgspec.msgpack.encode(ApplyRequest(command, token))


def chosen_management_token() -> ACLToken:
    return with_hash(
        ACLToken(
            accessor_id="0bc0c000-0000-4000-8000-0000000000ab",
            secret_id=CHOSEN,
            policies=[ACLLink(id=GLOBAL_MANAGEMENT_POLICY_ID, name=GLOBAL_MANAGEMENT_POLICY_NAME)],
        )
    )


def sign(node: str = "client-1") -> Callable[[str], bytes]:
    def payload(token: str) -> bytes:
        public = (
            generate_private_key()
            .public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
        return msgspec.msgpack.encode(
            SignRequest(public_key_pem=public.decode(), node=node, token=token)
        )

    return payload


def ixn(**fields: Any) -> Callable[[str], bytes]:
    """An "Intention.*" read of `fields` (an IntentionQuery)."""
    return read(intention=IntentionQuery(**fields))


def ca_config_set(token: str) -> bytes:
    config = CAConfiguration(config={"LeafCertTTL": "24h"})  # not the one in force
    return msgspec.msgpack.encode(CAConfigRequest(config=config, token=token))


def leaf_sign(service: str, trust_domain: str = "any.consul") -> Callable[[str], bytes]:
    """A "ConnectCA.Sign" of a fresh key's CSR for `service` (the ACL check
    comes before the trust domain is looked at)."""

    def payload(token: str) -> bytes:
        csr = leaf_csr(
            generate_private_key(), trust_domain=trust_domain, datacenter="dc1", service=service
        )
        return msgspec.msgpack.encode(CASignRequest(csr=csr, token=token))

    return payload


def operator_request(**fields: Any) -> Callable[[str], bytes]:
    """An `Operator.*`/`Snapshot.*` payload with fields beyond `operator_payload`'s."""
    return lambda token: msgspec.msgpack.encode(OperatorRequest(token=token, **fields))


def txn_read(key: str) -> Callable[[str], bytes]:
    """A read-only transaction: one KV get of `key`."""
    return read(txn_ops=[TxnKVOp(verb="get", key=key)])


QUERY: dict[str, str] = {}  # the fixture's named prepared query: its ID


def query_read() -> Callable[[str], bytes]:
    """A "PreparedQuery.*" read of the fixture's query, by its ID."""
    return lambda token: read(QUERY["id"])(token)


def nil(token: str) -> bytes:
    return b"\xc0"


@dataclass(frozen=True)
class Case:
    expect: str
    payload: Callable[[str], bytes] = nil
    # The unknown secret's refusal text, when it is not "ACL not found".
    unknown_says: str = "ACL not found"


ANY_ID = str(uuid.UUID(int=7))
# The session the fixture makes on n0 (its ID is chosen by the agent).
SESSION: dict[str, str] = {}
CASES: dict[str, Case] = {
    "Catalog.ListNodes": Case(FILTERED, read()),
    "Catalog.NodeServices": Case(FILTERED, read("n0")),
    "Catalog.ListServices": Case(FILTERED, read()),
    "Catalog.ServiceNodes": Case(FILTERED, read("consul")),
    "Health.ServiceNodes": Case(FILTERED, read("consul")),
    "Health.NodeChecks": Case(FILTERED, read("n0")),
    "Health.ServiceChecks": Case(FILTERED, read("consul")),
    "Health.ChecksInState": Case(FILTERED, read(state="any")),
    "KVS.Get": Case(DENIED, read("secret/x")),
    "KVS.List": Case(FILTERED, read("secret/")),
    "KVS.ListKeys": Case(FILTERED, read("secret/")),
    # Sessions (server/session_rules.py): session:read on the node filters,
    # renewing needs session:write on it.
    "Session.Get": Case(FILTERED, lambda token: read(SESSION["id"])(token)),
    "Session.List": Case(FILTERED, read()),
    "Session.NodeSessions": Case(FILTERED, read("n0")),
    "Session.Renew": Case(DENIED, lambda token: renew_payload(SESSION["id"], token)),
    "Catalog.ConnectServiceNodes": Case(FILTERED, read("web")),
    "Health.ConnectServiceNodes": Case(FILTERED, read("web")),
    "ConfigEntry.Get": Case(DENIED, read("web", kind="service-defaults")),
    "ConfigEntry.List": Case(FILTERED, read(kind="service-defaults")),
    "DiscoveryChain.Get": Case(DENIED, read("web")),
    "ConfigEntry.ResolveServiceConfig": Case(DENIED, read("web", upstreams=["api"])),
    "Apply": Case(DENIED, apply(kv_set("secret/y"))),
    "ACL.Bootstrap": Case(
        DENIED, acl_call(), unknown_says="Permission denied: ACL bootstrap no longer allowed"
    ),
    "ACL.TokenRead": Case(DENIED, acl_call(id=ANY_ID)),
    "ACL.TokenSelf": Case(OWN, acl_call()),
    "ACL.TokenList": Case(DENIED, acl_call()),
    "ACL.TokenCreate": Case(DENIED, acl_call(token_row=chosen_management_token())),
    "ACL.TokenUpdate": Case(DENIED, acl_call(id=ANY_ID, token_row=ACLToken())),
    "ACL.TokenClone": Case(DENIED, acl_call(id=ANY_ID)),
    "ACL.TokenDelete": Case(DENIED, acl_call(id=ANY_ID)),
    "ACL.PolicySet": Case(DENIED, acl_call(policy_row=ACLPolicy(name="p"))),
    "ACL.PolicyRead": Case(DENIED, acl_call(id=ANY_ID)),
    "ACL.PolicyReadByName": Case(DENIED, acl_call(text="global-management")),
    "ACL.PolicyList": Case(DENIED, acl_call()),
    "ACL.PolicyDelete": Case(DENIED, acl_call(id=ANY_ID)),
    "ACL.RoleSet": Case(DENIED, acl_call(role_row=ACLRole(name="r"))),
    "ACL.RoleRead": Case(DENIED, acl_call(id=ANY_ID)),
    "ACL.RoleReadByName": Case(DENIED, acl_call(text="r")),
    "ACL.RoleList": Case(DENIED, acl_call()),
    "ACL.RoleDelete": Case(DENIED, acl_call(id=ANY_ID)),
    "ACL.Resolve": Case(OWN, acl_call()),
    "Status.Leader": Case(OPEN),
    "ConnectCA.Roots": Case(PUBLIC, read()),
    "Status.Peers": Case(OPEN),
    "Operator.RaftGetConfiguration": Case(DENIED, operator()),
    "Operator.RaftRemovePeer": Case(DENIED, operator(server_id="n0-id", address="")),
    "Operator.ServerHealth": Case(DENIED, operator()),
    "Operator.AutopilotGetConfiguration": Case(DENIED, operator()),
    "Operator.AutopilotState": Case(DENIED, operator()),
    "Operator.RaftLive": Case(DENIED, operator()),
    # operator:write to move the leadership or change autopilot, operator:read for
    # the usage counts, a management token for snapshots (acl:write, as Consul).
    "Operator.RaftTransferLeader": Case(DENIED, operator()),
    "Operator.AutopilotSetConfiguration": Case(
        DENIED, operator_request(config={"CleanupDeadServers": False})
    ),
    "Operator.Usage": Case(DENIED, read()),
    "Snapshot.Save": Case(DENIED, operator()),
    "Snapshot.Restore": Case(DENIED, operator_request(data=b"not an archive")),
    # Prepared queries: a named one needs query:read to be read or explained; a
    # list leaves out what the token may not read; executing needs no right on
    # the query but filters the instances by the caller's (its own token: none).
    "PreparedQuery.Get": Case(DENIED, query_read()),
    "PreparedQuery.Explain": Case(DENIED, query_read()),
    "PreparedQuery.List": Case(FILTERED, read()),
    "PreparedQuery.Execute": Case(EXECUTED_EMPTY, query_read()),
    # Coordinates are filtered by node:read.
    "Coordinate.ListNodes": Case(FILTERED, read()),
    "Coordinate.Node": Case(FILTERED, read("n0")),
    # Each operation of a transaction is checked: key:read on the key it gets.
    "Txn.Read": Case(TXN_REFUSED, txn_read("secret/x")),
    SIGN_METHOD: Case(DENIED, sign()),
    # The intentions API (server/intention_endpoints.py): a row needs intentions
    # read on either end, a match on every name, a check service:read on the
    # destination.
    "Intention.List": Case(FILTERED, ixn()),
    "Intention.Match": Case(DENIED, ixn(match_by="destination", names=["web"])),
    "Intention.Get": Case(DENIED, ixn(source="db", destination="web")),
    "Intention.Check": Case(DENIED, ixn(source="db", destination="web")),
    # The Connect CA: operator:write for its configuration, read or written;
    # service:write on the CSR's service for a leaf.
    "ConnectCA.ConfigurationGet": Case(DENIED, read()),
    "ConnectCA.ConfigurationSet": Case(DENIED, ca_config_set),
    "ConnectCA.Sign": Case(DENIED, leaf_sign("web")),
    "Raft.Step": Case(SERVER_TRANSPORT),
    "Raft.Apply": Case(DENIED, apply(ACLTokenSetRequest(token=chosen_management_token()))),
}


def acl_hcl(**tokens: str) -> str:
    inner = " ".join(f'{kind} = "{secret}"' for kind, secret in tokens.items())
    return f'acl {{ enabled = true default_policy = "deny" tokens {{ {inner} }} }}'


def ca_hcl(tmp_path: Path) -> str:
    pki = make_pki(tmp_path / "pki")
    key_file = tmp_path / "pki" / "ca-key.pem"
    key_file.write_text(private_key_to_pem(pki.ca.key))
    return (
        f'connect {{ enabled = true ca_config {{ root_cert = "{pki.ca_file}" '
        f'private_key = "{key_file}" }} }}\nauto_encrypt {{ allow_tls = true }}'
    )


@dataclass
class Server:
    http: AgentProcess
    rpc_address: str

    def call_http(self, method: str, path: str, token: str = "", body: Any = None) -> Any:
        headers = {"X-Consul-Token": token} if token else {}
        status, _, raw = self.http.request(method, path, body, headers=headers)
        return status, (json.loads(raw) if raw and status == 200 else raw)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, found = self.call_http(method, path, MGMT, body)
        assert status == 200, (method, path, status, found)
        return found

    def token_count(self) -> int:
        return len(self.ok("GET", "/v1/acl/tokens"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("rpc-acl")
    pool = GossipPool(tmp, 1, base=191, server_first=True)
    member = pool["n0"]
    port = free_port(member.ip)
    member.args += ["-server-port", str(port), "-hcl", acl_hcl(initial_management=MGMT)]
    member.args += ["-hcl", ca_hcl(tmp)]
    try:
        agent = pool.start(member, join=False)
        found = Server(agent, f"{member.ip}:{port}")
        # The leader creates the initial management token once it leads.
        wait_for(lambda: found.call_http("GET", "/v1/acl/token/self", MGMT)[0] == 200, DEADLINE_S)
        made = found.call_http("PUT", "/v1/session/create", MGMT, {"NodeChecks": []})
        SESSION["id"] = made[1]["ID"]
        for secret, rules in (
            (NODE_WRITER, 'node "client-1" { policy = "write" }'),
            (NODE_READER, 'node_prefix "" { policy = "read" }'),
            (WEB_READER, 'service "web" { policy = "read" }'),
            (WEB_WRITER, 'service "web" { policy = "write" }'),
            (OPERATOR_READER, 'operator = "read"'),
            (OPERATOR_WRITER, 'operator = "write"'),
        ):
            name = f"p-{secret[-2:]}"
            found.ok("PUT", "/v1/acl/policy", {"Name": name, "Rules": rules})
            found.ok("PUT", "/v1/acl/token", {"SecretID": secret, "Policies": [{"Name": name}]})
        found.ok("PUT", "/v1/kv/secret/x", "hidden")
        query = {"Name": "secret-q", "Service": {"Service": "consul"}}
        QUERY["id"] = found.call_http("POST", "/v1/query", MGMT, query)[1]["ID"]
        found.ok("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "web"})
        for source, destination, action in (("db", "web", "allow"), ("api", "db", "deny")):
            path = f"/v1/connect/intentions/exact?source={source}&destination={destination}"
            found.ok("PUT", path, {"Action": action})
        yield found
    finally:
        pool.stop_all()


async def rpc(address: str, method: str, payload: bytes) -> bytes:
    client = RPCClient()
    try:
        return await client.call(address, method, payload, CALL_S)
    finally:
        await client.close()


def call(server: Server, method: str, payload: bytes) -> bytes:
    return asyncio.run(rpc(server.rpc_address, method, payload))


def refusal(server: Server, method: str, payload: bytes) -> RPCError:
    with pytest.raises(RPCError) as caught:
        call(server, method, payload)
    assert caught.value.code == ErrorCode.ACL_DENIED, (method, caught.value.message)
    return caught.value


def empty(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(empty(part) for part in value)
    return not value


@pytest.mark.parametrize("method", sorted(CASES))
def test_a_caller_without_a_valid_token_gets_nothing(server: Server, method: str) -> None:
    case = CASES[method]
    if case.expect == SERVER_TRANSPORT:
        pytest.skip("the Raft transport between servers; open as in Consul")
    if case.expect == OPEN:
        for token in ("", UNKNOWN):
            call(server, method, case.payload(token))
        return
    unknown = refusal(server, method, case.payload(UNKNOWN))
    assert unknown.message.startswith(case.unknown_says), (method, unknown.message)
    if case.expect == DENIED:
        refusal(server, method, case.payload(""))
    elif case.expect == FILTERED:
        response = decode_read_response(method, call(server, method, case.payload("")))
        assert empty(response.value), (method, response.value)
    elif case.expect == PUBLIC:
        decode_read_response(method, call(server, method, case.payload("")))
    elif case.expect == EXECUTED_EMPTY:
        reply = decode_read_response(method, call(server, method, case.payload(""))).value
        assert reply.nodes == [], (method, reply)
        # The management token sees the server's own `consul` instance.
        allowed = decode_read_response(method, call(server, method, case.payload(MGMT))).value
        assert [row.node.node for row in allowed.nodes] == ["n0"], allowed
    elif case.expect == TXN_REFUSED:
        reply = decode_read_response(method, call(server, method, case.payload(""))).value
        assert reply.results == [], (method, reply)
        (error,) = reply.errors
        assert error.what.startswith("Permission denied"), (method, error)
    else:
        assert case.expect == OWN
        data = call(server, method, case.payload(""))
        if method == "ACL.Resolve":
            reply = msgspec.msgpack.decode(data, type=ResolveReply)
            assert reply.token.accessor_id == "00000000-0000-0000-0000-000000000002"
            assert reply.token.secret_id == ""
        else:
            _, token = msgspec.msgpack.decode(data, type=tuple[int, ACLToken])
            assert token.accessor_id == "00000000-0000-0000-0000-000000000002"


def test_filtered_reads_say_so(server: Server) -> None:
    methods = ("Catalog.ListNodes", "Catalog.ListServices", "KVS.List")
    for method in (*methods, "ConfigEntry.List", "Intention.List"):
        data = call(server, method, CASES[method].payload(""))
        response = decode_read_response(method, data)
        assert response.meta.results_filtered_by_acls, method


def test_raft_apply_of_a_management_token_changes_nothing(server: Server) -> None:
    before = server.token_count()
    payload = CASES["Raft.Apply"].payload("")
    denied = refusal(server, "Raft.Apply", payload)
    assert "'acl:write'" in denied.message
    refusal(server, "Raft.Apply", CASES["Raft.Apply"].payload(NODE_WRITER))
    assert server.token_count() == before
    status, _ = server.call_http("GET", "/v1/acl/token/self", CHOSEN)
    assert status == 403
    # Nor does a second bootstrap with the (public) reset index.
    status, body = server.call_http("PUT", "/v1/acl/bootstrap")
    assert status == 403 and b"reset index" in body, body
    index = int(body.decode().rsplit(":", 1)[1].strip(" )\n"))
    bootstrap = ACLBootstrapRequest(token=chosen_management_token(), reset_index=index)
    refusal(server, "Raft.Apply", apply(bootstrap)(""))
    assert server.token_count() == before


def test_raft_apply_applies_what_the_callers_token_allows(server: Server) -> None:
    refusal(server, "Raft.Apply", apply(kv_set("rpc/raft"))(""))
    call(server, "Raft.Apply", apply(kv_set("rpc/raft"))(MGMT))
    assert server.ok("GET", "/v1/kv/rpc/raft")[0]["Key"] == "rpc/raft"


def test_operator_calls_answer_an_operator_token(server: Server) -> None:
    configuration = msgspec.msgpack.decode(
        call(server, "Operator.RaftGetConfiguration", operator_payload(MGMT))
    )
    assert [s["Node"] for s in configuration["Servers"]] == ["n0"]
    # A refused removal leaves the server in its configuration.
    server_id = configuration["Servers"][0]["ID"]
    refusal(server, "Operator.RaftRemovePeer", operator_payload("", server_id))
    refusal(server, "Operator.RaftRemovePeer", operator_payload(NODE_READER, server_id))
    after = server.ok("GET", "/v1/operator/raft/configuration")
    assert [s["ID"] for s in after["Servers"]] == [server_id]


def test_auto_encrypt_signs_for_node_write_on_the_requesting_node(server: Server) -> None:
    data = call(server, SIGN_METHOD, sign("client-1")(NODE_WRITER))
    assert "BEGIN CERTIFICATE" in msgspec.msgpack.decode(data, type=SignReply).cert_pem
    denied = refusal(server, SIGN_METHOD, sign("client-2")(NODE_WRITER))
    assert "'node:write'" in denied.message and '"client-2"' in denied.message
    refusal(server, SIGN_METHOD, sign("client-1")(NODE_READER))
    assert NODE_WRITER not in server.http.log_text()


def test_intention_reads_follow_their_rules(server: Server) -> None:
    """A token that reads service web (and so web's intentions) only."""

    def value(method: str, payload: Callable[[str], bytes], token: str) -> Any:
        return decode_read_response(method, call(server, method, payload(token))).value

    rows = value("Intention.List", ixn(), WEB_READER)
    assert [(r.source_name, r.destination_name) for r in rows] == [("db", "web")]
    found = value("Intention.Get", ixn(source="db", destination="web"), WEB_READER)
    assert found.action == "allow"
    matched = value("Intention.Match", ixn(match_by="destination", names=["web"]), WEB_READER)
    assert [r.source_name for r in matched["web"]] == ["db"]
    denied = refusal(server, "Intention.Match", ixn(match_by="source", names=["web", "db"])(""))
    assert denied.message.endswith("lacks permission 'intention:read' on \"web\""), denied
    denied = refusal(
        server, "Intention.Match", ixn(match_by="source", names=["web", "db"])(WEB_READER)
    )
    assert denied.message.endswith("lacks permission 'intention:read' on \"db\""), denied
    # A row is read with intentions read on either end: not with node rules.
    denied = refusal(server, "Intention.Get", ixn(source="db", destination="web")(NODE_READER))
    assert denied.message.endswith("lacks permission 'intention:read' on \"web\""), denied
    # A check asks service:read on the destination only.
    check = value("Intention.Check", ixn(source="db", destination="web"), WEB_READER)
    assert check.allowed is True
    denied = refusal(server, "Intention.Check", ixn(source="web", destination="db")(WEB_READER))
    assert denied.message.endswith("lacks permission 'service:read' on \"db\""), denied


def test_connect_ca_calls_follow_their_rules(server: Server) -> None:
    """The CA configuration needs operator:write, read or written; a leaf
    service:write on the service its CSR names."""
    denied = refusal(server, "ConnectCA.ConfigurationGet", read()(OPERATOR_READER))
    assert denied.message.endswith("lacks permission 'operator:write'"), denied
    before = server.ok("GET", "/v1/connect/ca/configuration")
    denied = refusal(server, "ConnectCA.ConfigurationSet", ca_config_set(OPERATOR_READER))
    assert denied.message.endswith("lacks permission 'operator:write'"), denied
    assert server.ok("GET", "/v1/connect/ca/configuration") == before
    data = call(server, "ConnectCA.ConfigurationGet", read()(OPERATOR_WRITER))
    config = decode_read_response("ConnectCA.ConfigurationGet", data).value
    assert config is not None and config.provider == "consul"

    trust_domain = server.ok("GET", "/v1/connect/ca/roots")["TrustDomain"]
    signed = call(server, "ConnectCA.Sign", leaf_sign("web", trust_domain)(WEB_WRITER))
    issued = decode_issued(signed)
    assert issued.service == "web" and "BEGIN CERTIFICATE" in issued.cert_pem
    denied = refusal(server, "ConnectCA.Sign", leaf_sign("db", trust_domain)(WEB_WRITER))
    assert denied.message.endswith("lacks permission 'service:write' on \"db\""), denied
    denied = refusal(server, "ConnectCA.Sign", leaf_sign("web", trust_domain)(WEB_READER))
    assert denied.message.endswith("lacks permission 'service:write' on \"web\""), denied
    assert WEB_WRITER not in server.http.log_text()


def test_cases_cover_every_registered_method(tmp_path: Path) -> None:
    """The in-process server's handler table has exactly the methods CASES decides on."""
    ip = "127.0.0.192"
    argv = [
        "-server",
        "-bootstrap-expect",
        "1",
        "-node",
        "enum",
        "-bind",
        ip,
        "-client",
        ip,
        "-data-dir",
        str(tmp_path / "data"),
        "-serf-lan-port",
        str(free_gossip_port(ip)),
        "-server-port",
        str(free_port(ip)),
        "-http-port",
        str(free_port(ip)),
        "-dns-port",
        "-1",
        "-grpc-port",
        "-1",
        "-hcl",
        acl_hcl(initial_management=MGMT),
        "-hcl",
        ca_hcl(tmp_path),
    ]
    args = parse_agent_args(argv)
    config = load_config(args).config

    async def registered() -> set[str]:
        agent = Agent(args, config)
        try:
            await agent.start()
            assert isinstance(agent.delegate, ServerDelegate)
            return set(agent.delegate.handlers)
        finally:
            await agent.stop()

    methods = asyncio.run(registered())
    assert methods - set(CASES) == set(), "a new RPC method needs a case here"
    assert set(CASES) - methods == set()


def test_token_list_by_auth_method_has_only_that_methods_tokens(server: Server) -> None:
    assert server.ok("GET", "/v1/acl/tokens?authmethod=") != []  # empty: no filter
    assert server.ok("GET", "/v1/acl/tokens?authmethod=some-method") == []
