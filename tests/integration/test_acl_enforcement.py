"""ACL enforcement on a real server and a real client agent (127.0.0.131-132).

The server runs with `acl { enabled = true default_policy = "deny" }`, an
initial management token and bootstrap_expect = 1; the client joins it over
gossip and reaches it over RPC, with no state store of its own. Tokens are
made through the HTTP API with fixed SecretIDs so the client's config can
name its agent token before it starts.

Covered through the client: a read-only token sees filtered catalog and
health results with X-Consul-Results-Filtered-By-ACLs; a write token
registers while the read-only one gets Consul's 403 text; anonymous and
unknown tokens are refused; the ACL HTTP API works (over ACL.* RPC); DNS
reads with the agent's default token, which can change at run time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest
from tests.agent_process import AgentProcess, free_gossip_port, free_port, wait_for
from tests.gossip_agents import GossipPool

MGMT = "0aa0c000-0000-4000-8000-00000000000a"
AGENT = "0aa0c000-0000-4000-8000-00000000000b"
READER = "0aa0c000-0000-4000-8000-00000000000c"
WRITER = "0aa0c000-0000-4000-8000-00000000000d"
DEADLINE_S = 20.0

POLICIES = {
    "agent-n1": (AGENT, 'node "n1" { policy = "write" }\nservice_prefix "" { policy = "read" }'),
    "read-api": (READER, 'service "api" { policy = "read" }\nnode_prefix "" { policy = "read" }'),
    "write-api": (
        WRITER,
        'service "api" { policy = "write" }\nnode_prefix "" { policy = "write" }',
    ),
}


def acl_hcl(**tokens: str) -> str:
    inner = " ".join(f'{kind} = "{secret}"' for kind, secret in tokens.items())
    return f'acl {{ enabled = true default_policy = "deny" tokens {{ {inner} }} }}'


@dataclass
class Cluster:
    server: AgentProcess
    client: AgentProcess
    dns_port: int


def call(
    agent: AgentProcess, method: str, path: str, token: str = "", body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"X-Consul-Token": token} if token else {}
    return agent.request(method, path, body, headers=headers)


def ok_json(agent: AgentProcess, method: str, path: str, token: str, body: Any = None) -> Any:
    status, _, raw = call(agent, method, path, token, body)
    assert status == 200, (method, path, status, raw)
    return json.loads(raw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    pool = GossipPool(tmp_path_factory.mktemp("acl-cluster"), 2, base=131, server_first=True)
    server, client = pool["n0"], pool["n1"]
    server.args += ["-server-port", str(free_port(server.ip))]
    server.args += ["-hcl", acl_hcl(initial_management=MGMT, agent=MGMT)]
    dns_port = free_gossip_port("127.0.0.1")
    client.args += ["-hcl", acl_hcl(agent=AGENT), "-dns-port", str(dns_port)]
    try:
        server_agent = pool.start(server, join=False)
        # The leader creates the initial management token once it leads.
        wait_for(lambda: call(server_agent, "GET", "/v1/acl/token/self", MGMT)[0] == 200, 20)
        for name, (secret, rules) in POLICIES.items():
            ok_json(server_agent, "PUT", "/v1/acl/policy", MGMT, {"Name": name, "Rules": rules})
            token = {"SecretID": secret, "Policies": [{"Name": name}]}
            ok_json(server_agent, "PUT", "/v1/acl/token", MGMT, token)
        client_agent = pool.start(client)

        def client_registered() -> bool:
            nodes = ok_json(server_agent, "GET", "/v1/catalog/nodes", MGMT)
            return "n1" in {n["Node"] for n in nodes}

        wait_for(client_registered, DEADLINE_S)
        for node, address, service in (("ext1", "10.1.0.1", "api"), ("ext2", "10.1.0.2", "db")):
            registration = {
                "Node": node,
                "Address": address,
                "Service": {"Service": service, "Port": 80},
            }
            ok_json(server_agent, "PUT", "/v1/catalog/register", MGMT, registration)
        yield Cluster(server_agent, client_agent, dns_port)
    finally:
        pool.stop_all()


def test_read_only_token_sees_filtered_results_with_the_header(cluster: Cluster) -> None:
    client = cluster.client
    status, headers, body = call(client, "GET", "/v1/catalog/services", READER)
    assert status == 200
    assert set(json.loads(body)) == {"api"}
    assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
    status, headers, body = call(client, "GET", "/v1/health/service/api", READER)
    assert status == 200 and [r["Node"]["Node"] for r in json.loads(body)] == ["ext1"]
    assert "X-Consul-Results-Filtered-By-ACLs" not in headers
    status, headers, body = call(client, "GET", "/v1/health/service/db", READER)
    assert status == 200 and json.loads(body) == []
    assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
    # The management token sees every service, unflagged.
    status, headers, body = call(client, "GET", "/v1/catalog/services", MGMT)
    assert {"api", "db", "consul"} <= set(json.loads(body))
    assert "X-Consul-Results-Filtered-By-ACLs" not in headers


def test_write_token_registers_and_read_token_is_refused(cluster: Cluster) -> None:
    client = cluster.client
    registration = {"Node": "ext3", "Address": "10.1.0.3", "Service": {"Service": "api"}}
    assert ok_json(client, "PUT", "/v1/catalog/register", WRITER, registration) is True
    rows = ok_json(client, "GET", "/v1/health/service/api", READER)
    assert {r["Node"]["Node"] for r in rows} == {"ext1", "ext3"}
    registration["Node"] = "ext4"
    status, _, body = call(client, "PUT", "/v1/catalog/register", READER, registration)
    reader_accessor = ok_json(client, "GET", "/v1/acl/token/self", READER)["AccessorID"]
    assert status == 403
    assert body.decode() == (
        f"Permission denied: token with AccessorID '{reader_accessor}' "
        "lacks permission 'node:write' on \"ext4\""
    )


def test_anonymous_and_unknown_tokens_are_refused(cluster: Cluster) -> None:
    client = cluster.client
    status, _, body = call(client, "PUT", "/v1/kv/app/x", "", "1")
    assert status == 403 and body.decode().startswith("Permission denied")
    status, _, body = call(client, "GET", "/v1/kv/app/x")
    assert status == 403 and "key:read" in body.decode()
    status, _, body = call(client, "GET", "/v1/catalog/services", "not-a-token")
    assert (status, body) == (403, b"ACL not found")
    status, headers, body = call(client, "GET", "/v1/catalog/nodes")
    assert status == 200 and json.loads(body) == []
    assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"


def test_acl_http_api_works_through_the_client(cluster: Cluster) -> None:
    client = cluster.client
    tokens = ok_json(client, "GET", "/v1/acl/tokens", MGMT)
    assert READER in {t["SecretID"] for t in tokens}
    status, _, body = call(client, "GET", "/v1/acl/tokens", READER)
    assert status == 403 and "acl:read" in body.decode()
    policy = ok_json(
        client,
        "PUT",
        "/v1/acl/policy",
        MGMT,
        {"Name": "via-client", "Rules": 'key "k" { policy = "read" }'},
    )
    assert ok_json(client, "GET", f"/v1/acl/policy/{policy['ID']}", MGMT)["Name"] == "via-client"
    assert ok_json(client, "DELETE", f"/v1/acl/policy/{policy['ID']}", MGMT) is True
    status, _, body = call(client, "GET", "/v1/acl/token/self", "not-a-token")
    assert (status, body) == (403, b"ACL not found")


def dns_rcode_and_addresses(port: int, name: str) -> tuple[int, set[str]]:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=3)
    addresses = {item.address for rrset in reply.answer for item in rrset}
    return reply.rcode(), addresses


def test_dns_reads_with_the_default_token_as_it_is_now(cluster: Cluster) -> None:
    port = cluster.dns_port
    rcode, addresses = dns_rcode_and_addresses(port, "api.service.consul")
    assert rcode == dns.rcode.NXDOMAIN and not addresses  # anonymous may not read api
    status, _, body = call(
        cluster.client, "PUT", "/v1/agent/token/default", MGMT, {"Token": READER}
    )
    assert status == 200, body

    def answered() -> set[str] | None:
        found_rcode, found = dns_rcode_and_addresses(port, "api.service.consul")
        return found if found_rcode == dns.rcode.NOERROR else None

    assert "10.1.0.1" in wait_for(answered, DEADLINE_S)
    # The default token may not read db.
    assert dns_rcode_and_addresses(port, "db.service.consul")[0] == dns.rcode.NXDOMAIN
