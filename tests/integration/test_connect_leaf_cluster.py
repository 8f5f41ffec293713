"""Leaf certificates and root rotation on real agents: 1 server + 1 client, TLS and ACLs.

The server runs the walkthrough's TLS (verify_incoming, auto_encrypt for the
client) with ACLs on and default deny, on 127.0.0.221-222. Through the client
agent:
- `/v1/agent/connect/ca/leaf/web` with a token holding service:write on web
  returns a certificate and key that verify (a full RFC 5280 path check)
  against `/v1/connect/ca/roots`, with the service's SPIFFE ID and CN;
- a token without service:write gets 403 with Consul's text;
- `/v1/agent/connect/ca/roots` serves the same roots as `/v1/connect/ca/roots`;
- `/v1/connect/ca/configuration` needs operator:write, has Consul's shape,
  and refuses a bad TTL with Consul's text;
- rotating the root with `PUT /v1/connect/ca/configuration` (a new
  PrivateKey and RootCert): the roots list then holds the old root
  (inactive) and the new one (active, with the cross-signed certificate in
  its IntermediateCerts); a blocking leaf query parked on the old leaf's
  index wakes with a leaf under the new root; the old leaf verifies against
  the served roots throughout; the new leaf verifies against the new root,
  and against the old root alone through the cross-signed certificate.
A dev agent with a 10 s TTL (skip_validate) shows a blocking leaf query
returning once the leaf is renewed before it expires, and py-consul reads
the roots and the configuration.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import consul
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store
from tests.agent_process import AgentProcess, free_port, wait_for
from tests.gossip_agents import GossipPool
from tests.integration.test_auto_encrypt_builtin_ca import make_certs, walkthrough_configs

from proconsul.connect.ca import generate_root

BASE = 221
DEADLINE_S = 30.0
MANAGEMENT = str(uuid.uuid4())


def acl_block(tokens: str) -> str:
    return f'acl {{\nenabled = true\ndefault_policy = "deny"\ntokens {{\n{tokens}\n}}\n}}\n'


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GossipPool]:
    tmp = tmp_path_factory.mktemp("connect-leaf")
    make_certs(tmp / "certs")
    server_hcl, client_hcl = walkthrough_configs(tmp / "certs")
    agents = GossipPool(tmp / "agents", 2, base=BASE)
    server, client = agents["n0"], agents["n1"]
    tokens = f'initial_management = "{MANAGEMENT}"\nagent = "{MANAGEMENT}"'
    server.args += [
        "-server",
        "-bootstrap-expect",
        "1",
        "-server-port",
        str(free_port(server.ip)),
        "-hcl",
        "performance { raft_multiplier = 1 }",
        "-hcl",
        server_hcl,
        "-hcl",
        acl_block(tokens),
    ]
    client.args += ["-hcl", client_hcl, "-hcl", acl_block(f'agent = "{MANAGEMENT}"')]
    try:
        agents.start(server)
        wait_for(lambda: server.running.get_json("/v1/status/leader"), DEADLINE_S)
        agents.start(client)
        wait_for(lambda: "auto_encrypt: got a client certificate" in client.running.log_text())
        yield agents
    finally:
        agents.stop_all()


def call(
    agent: AgentProcess, method: str, path: str, token: str = "", body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"X-Consul-Token": token} if token else {}
    return agent.request(method, path, body, headers=headers, timeout_s=90.0)


def ok_json(agent: AgentProcess, method: str, path: str, token: str = "", body: Any = None) -> Any:
    status, _, raw = call(agent, method, path, token, body)
    assert status == 200, (path, status, raw)
    return json.loads(raw)


def make_token(agent: AgentProcess, rules: str) -> tuple[str, str]:
    """A token with one new policy of `rules`: (SecretID, AccessorID)."""
    name = f"p-{uuid.uuid4().hex[:8]}"
    ok_json(agent, "PUT", "/v1/acl/policy", MANAGEMENT, {"Name": name, "Rules": rules})
    token = ok_json(agent, "PUT", "/v1/acl/token", MANAGEMENT, {"Policies": [{"Name": name}]})
    return token["SecretID"], token["AccessorID"]


@pytest.fixture(scope="module")
def web_token(pool: GossipPool) -> str:
    return make_token(pool["n0"].running, 'service "web" { policy = "write" }')[0]


def client(pool: GossipPool) -> AgentProcess:
    return pool["n1"].running


def served_roots(agent: AgentProcess, path: str = "/v1/connect/ca/roots") -> dict[str, Any]:
    found: dict[str, Any] = agent.get_json(path)
    return found


def verify_chain(cert_pem: str, trusted: list[str]) -> None:
    """Verify leaf + intermediates against `trusted` as a TLS peer would."""
    leaf, *rest = x509.load_pem_x509_certificates(cert_pem.encode())
    store = Store([x509.load_pem_x509_certificate(pem.encode()) for pem in trusted])
    verifier = PolicyBuilder().store(store).time(datetime.now(UTC)).build_client_verifier()
    verifier.verify(leaf, rest)


def authority_key_id(cert_pem: str) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    return ":".join(f"{b:02x}" for b in aki.key_identifier or b"")


def get_leaf(agent: AgentProcess, token: str, query: str = "") -> tuple[dict[str, Any], str]:
    status, headers, raw = call(agent, "GET", f"/v1/agent/connect/ca/leaf/web{query}", token)
    assert status == 200, raw
    return json.loads(raw), headers["X-Consul-Index"]


def test_leaf_and_key_verify_against_the_roots(pool: GossipPool, web_token: str) -> None:
    agent = client(pool)
    leaf, index = wait_for(lambda: get_leaf(agent, web_token), DEADLINE_S)
    roots = served_roots(agent)
    domain = roots["TrustDomain"]
    uri = f"spiffe://{domain}/ns/default/dc/dc1/svc/web"
    assert (leaf["Service"], leaf["ServiceURI"]) == ("web", uri)
    assert index == str(leaf["ModifyIndex"])
    verify_chain(leaf["CertPEM"], [root["RootCert"] for root in roots["Roots"]])
    cert = x509.load_pem_x509_certificate(leaf["CertPEM"].encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
    key = serialization.load_pem_private_key(leaf["PrivateKeyPEM"].encode(), None)
    assert key.public_key() == cert.public_key()
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8, "big")
    assert leaf["SerialNumber"] == ":".join(f"{b:02x}" for b in serial)
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert validity.total_seconds() == 72 * 3600  # LeafCertTTL's default
    # The same leaf again: served from the agent's cache.
    again, _ = get_leaf(agent, web_token)
    assert again["SerialNumber"] == leaf["SerialNumber"]
    metrics = ok_json(agent, "GET", "/v1/agent/metrics", MANAGEMENT)
    gauges = {g["Name"]: g["Value"] for g in metrics["Gauges"]}
    assert gauges["consul.agent.connect.leaf.signed"] == 1
    assert gauges["consul.agent.connect.leaf.leaves"] == 1
    for name in ("n0", "n1"):
        assert "PRIVATE KEY" not in pool[name].running.log_text()


def test_token_without_service_write_is_refused(pool: GossipPool) -> None:
    secret, accessor = make_token(pool["n0"].running, 'service "web" { policy = "read" }')
    status, _, body = call(client(pool), "GET", "/v1/agent/connect/ca/leaf/web", secret)
    assert status == 403
    assert body.decode() == (
        f"Permission denied: token with AccessorID '{accessor}' lacks permission "
        "'service:write' on \"web\""
    )
    status, _, body = call(client(pool), "GET", "/v1/agent/connect/ca/leaf/web")
    assert status == 403 and body.startswith(b"Permission denied")


def test_agent_roots_are_the_cluster_roots(pool: GossipPool) -> None:
    agent = client(pool)
    cluster = served_roots(agent)
    status, headers, raw = call(agent, "GET", "/v1/agent/connect/ca/roots")
    assert status == 200 and json.loads(raw) == cluster
    assert int(headers["X-Consul-Index"]) >= 1


def test_ca_configuration_needs_operator_write_and_validates(pool: GossipPool) -> None:
    agent = client(pool)
    status, _, body = call(agent, "GET", "/v1/connect/ca/configuration")
    assert status == 403 and b"operator:write" in body
    config = ok_json(agent, "GET", "/v1/connect/ca/configuration", MANAGEMENT)
    assert config["Provider"] == "consul"
    assert config["Config"]["LeafCertTTL"] == "72h"
    assert {"CreateIndex", "ModifyIndex", "ForceWithoutCrossSigning"} <= set(config)
    assert "PrivateKey" not in config["Config"]
    bad = {"Provider": "consul", "Config": {"LeafCertTTL": "10m"}}
    status, _, body = call(agent, "PUT", "/v1/connect/ca/configuration", MANAGEMENT, bad)
    assert status == 400
    assert body.decode() == "leaf cert TTL must be greater or equal than 1h0m0s"
    reader = make_token(pool["n0"].running, 'operator = "read"')[0]
    status, _, body = call(agent, "PUT", "/v1/connect/ca/configuration", reader, bad)
    assert status == 403 and b"operator:write" in body


def test_root_rotation_moves_leaves_and_trust_without_a_gap(
    pool: GossipPool, web_token: str
) -> None:
    agent = client(pool)
    old_leaf, old_index = get_leaf(agent, web_token)
    before = served_roots(agent)
    (old_root,) = before["Roots"]
    # Park a blocking query on the current leaf.
    woke: dict[str, Any] = {}

    def block() -> None:
        woke["leaf"], woke["index"] = get_leaf(agent, web_token, f"?index={old_index}&wait=60s")

    waiter = threading.Thread(target=block)
    waiter.start()
    cluster_id = before["TrustDomain"].removesuffix(".consul")
    new = generate_root(cluster_id=cluster_id, now=datetime.now(UTC), rng=random.Random())
    body = {
        "Provider": "consul",
        "Config": {"LeafCertTTL": "72h", "PrivateKey": new.key_pem, "RootCert": new.cert_pem},
    }
    assert ok_json(agent, "PUT", "/v1/connect/ca/configuration", MANAGEMENT, body) is True

    def old_leaf_still_trusted() -> None:
        verify_chain(old_leaf["CertPEM"], [r["RootCert"] for r in served_roots(agent)["Roots"]])

    def rotated() -> dict[str, Any] | None:
        old_leaf_still_trusted()  # no moment where the old leaf stops verifying
        roots = served_roots(agent)
        return roots if len(roots["Roots"]) == 2 else None

    after = wait_for(rotated, DEADLINE_S)
    by_id = {root["ID"]: root for root in after["Roots"]}
    assert not by_id[old_root["ID"]]["Active"]
    new_root = by_id[after["ActiveRootID"]]
    assert new_root["ID"] != old_root["ID"] and new_root["Active"]
    assert new_root["RootCert"].strip() == new.cert_pem.strip()
    (bridge,) = new_root["IntermediateCerts"]
    # The blocking query wakes with a leaf under the new root.
    deadline = time.monotonic() + DEADLINE_S
    while waiter.is_alive() and time.monotonic() < deadline:
        old_leaf_still_trusted()
        waiter.join(timeout=0.2)
    assert not waiter.is_alive(), "the blocking leaf query did not return"
    fresh = woke["leaf"]
    assert int(woke["index"]) > int(old_index) and fresh["ModifyIndex"] > old_leaf["ModifyIndex"]
    assert authority_key_id(fresh["CertPEM"]) == new_root["SigningKeyID"]
    assert bridge.strip() in fresh["CertPEM"]
    verify_chain(fresh["CertPEM"], [new_root["RootCert"]])
    # A peer that still trusts only the old root accepts the new leaf.
    verify_chain(fresh["CertPEM"], [old_root["RootCert"]])
    old_leaf_still_trusted()
    # The agent's roots view follows too.
    assert served_roots(agent, "/v1/agent/connect/ca/roots")["ActiveRootID"] == new_root["ID"]
    assert "PRIVATE KEY" not in pool["n0"].running.log_text()


def test_blocking_leaf_query_returns_on_renewal(
    agent_factory: Callable[..., AgentProcess],
) -> None:
    agent = agent_factory(
        "-hcl", 'connect { ca_config { leaf_cert_ttl = "10s" skip_validate = true } }'
    )
    first, index = wait_for(lambda: get_leaf(agent, ""), DEADLINE_S)
    started = time.monotonic()
    renewed, new_index = get_leaf(agent, "", f"?index={index}&wait=30s")
    waited = time.monotonic() - started
    assert int(new_index) > int(index)
    assert renewed["SerialNumber"] != first["SerialNumber"]
    # Renewed at 60-90% of its 10 s life, before it expired.
    assert waited < 10
    # A name no SPIFFE ID can carry: a clear 400, not a crash.
    status, _, body = call(agent, "GET", "/v1/agent/connect/ca/leaf/%C3%BC")
    assert status == 400 and b"cannot make a SPIFFE ID" in body, body
    assert "Traceback" not in agent.log_text()


def test_py_consul_reads_the_ca(dev_agent: AgentProcess) -> None:
    """An unchanged Consul client (py-consul) reads the roots and the configuration."""
    client_api = consul.Consul(host="127.0.0.1", port=dev_agent.http_port)
    roots = wait_for(lambda: client_api.connect.ca.roots()["Roots"], DEADLINE_S)
    assert roots[0]["Active"]
    config = client_api.connect.ca.configuration()
    assert config["Provider"] == "consul" and config["Config"]["LeafCertTTL"] == "72h"
