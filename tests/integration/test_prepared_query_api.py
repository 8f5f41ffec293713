"""Prepared queries on real agent processes: Consul's documented `/v1/query`
examples (create, list, get, update, delete, execute by ID and by name,
explain, a `name_prefix_match` template with regexp captures), DNS
`<query>.query.consul`, and the ACL rules (`query_prefix`, unnamed queries
owned by their creator, tokens hidden from non-management readers)."""

from __future__ import annotations

from collections.abc import Callable

import consul
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from tests.agent_process import AgentProcess, free_port
from tests.integration.test_config_entries_api import call

Factory = Callable[..., AgentProcess]
MGMT = "4f3a1c2e-8d7b-4a6e-9c5d-0b1a2c3d4e5f"
ACL_HCL = (
    f'acl {{ enabled = true default_policy = "deny" tokens {{ initial_management = "{MGMT}" }} }}'
)


def register(
    agent: AgentProcess, node: str, address: str, tags: list[str], status: str, token: str = ""
) -> None:
    body = {
        "Node": node,
        "Address": address,
        "NodeMeta": {"rack": "r1"},
        "Service": {"Service": "redis", "Tags": tags, "Port": 6379, "Meta": {"tier": "cache"}},
        "Check": {
            "CheckID": f"redis-{node}",
            "Name": "redis",
            "Status": status,
            "ServiceID": "redis",
        },
    }
    assert call(agent, "PUT", "/v1/catalog/register", body, token)[0] == 200


# The documented create example, with the failover a single datacenter holds.
MY_QUERY = {
    "Name": "my-query",
    "Session": "",
    "Token": "",
    "Service": {
        "Service": "redis",
        "Failover": {"NearestN": 3, "Datacenters": ["dc1", "dc2"]},
        "Near": "_agent",
        "OnlyPassing": False,
        "Tags": ["primary", "!experimental"],
        "NodeMeta": {"rack": "r1"},
        "ServiceMeta": {"tier": "cache"},
    },
    "DNS": {"TTL": "10s"},
}


def ask(port: int, name: str, rdtype: str = "A") -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=5)


def test_documented_api_examples_and_dns(agent_factory: Factory) -> None:
    dns_port = free_port()
    agent = agent_factory("-dns-port", str(dns_port))
    me = agent.get_json("/v1/agent/self")["Config"]["NodeName"]
    register(agent, "n1", "10.1.0.1", ["primary"], "passing")
    register(agent, "n2", "10.1.0.2", ["primary", "experimental"], "passing")
    register(agent, "n3", "10.1.0.3", ["primary"], "critical")
    register(agent, "n4", "10.1.0.4", ["secondary"], "passing")
    status, body = call(
        agent,
        "PUT",
        "/v1/agent/service/register",
        {"Name": "redis", "Tags": ["primary"], "Meta": {"tier": "cache"}},
    )
    assert status == 200, body
    # The agent's own node has no rack meta: give it one so it matches.
    agent_node = agent.get_json(f"/v1/catalog/node/{me}")["Node"]
    reg = {"Node": me, "Address": agent_node["Address"], "NodeMeta": {"rack": "r1"}}
    assert call(agent, "PUT", "/v1/catalog/register", reg)[0] == 200

    status, created = call(agent, "POST", "/v1/query", MY_QUERY)
    assert status == 200, created
    qid = created["ID"]
    assert len(qid) == 36

    status, listed = call(agent, "GET", "/v1/query")
    assert status == 200 and [q["ID"] for q in listed] == [qid]
    status, got = call(agent, "GET", f"/v1/query/{qid}")
    assert status == 200 and len(got) == 1
    assert got[0]["Name"] == "my-query" and got[0]["Service"]["Tags"] == [
        "primary",
        "!experimental",
    ]
    assert got[0]["DNS"] == {"TTL": "10s"} and got[0]["CreateIndex"] > 0

    for ref in (qid, "my-query"):
        status, result = call(agent, "GET", f"/v1/query/{ref}/execute")
        assert status == 200, result
        assert result["Service"] == "redis" and result["Datacenter"] == "dc1"
        assert result["DNS"] == {"TTL": "10s"} and result["Failovers"] == 0
        nodes = [n["Node"]["Node"] for n in result["Nodes"]]
        assert sorted(nodes) == sorted(["n1", me])  # n2 experimental, n3 critical, n4 untagged
        assert nodes[0] == me  # Near "_agent"
    status, result = call(agent, "GET", "/v1/query/my-query/execute?near=n1&limit=1")
    assert [n["Node"]["Node"] for n in result["Nodes"]] == ["n1"]

    # DNS answers from the query, with its TTL.
    answer = ask(dns_port, "my-query.query.consul")
    assert answer.rcode() == dns.rcode.NOERROR
    addresses = sorted(rr.to_text() for rrset in answer.answer for rr in rrset)
    assert "10.1.0.1" in addresses and "10.1.0.2" not in addresses
    assert all(rrset.ttl == 10 for rrset in answer.answer)
    assert ask(dns_port, "nope.query.consul").rcode() == dns.rcode.NXDOMAIN

    # Update: the URL names the query; the body replaces it.
    changed = {**MY_QUERY, "Service": {"Service": "redis", "Tags": ["secondary"]}}
    status, text = call(agent, "PUT", f"/v1/query/{qid}", changed)
    assert (status, text) == (200, "")
    status, result = call(agent, "GET", f"/v1/query/{qid}/execute")
    assert [n["Node"]["Node"] for n in result["Nodes"]] == ["n4"]

    # A template: one definition for every name with its prefix.
    template = {
        "Name": "geo-db",
        "Template": {"Type": "name_prefix_match", "Regexp": "^geo-db-(.*?)-([^\\-]+?)$"},
        "Service": {"Service": "${match(1)}", "Tags": ["${match(2)}"]},
    }
    status, created_t = call(agent, "POST", "/v1/query", template)
    assert status == 200, created_t
    status, result = call(agent, "GET", "/v1/query/geo-db-redis-secondary/execute")
    assert status == 200 and result["Service"] == "redis"
    assert [n["Node"]["Node"] for n in result["Nodes"]] == ["n4"]
    status, explained = call(agent, "GET", "/v1/query/geo-db-redis-primary/explain")
    assert explained["Query"]["Service"]["Service"] == "redis"
    assert explained["Query"]["Service"]["Tags"] == ["primary"]
    answer = ask(dns_port, "geo-db-redis-secondary.query.consul", "SRV")
    assert [rr.port for rrset in answer.answer for rr in rrset] == [6379]

    # Bad input: Consul's texts.
    status, text = call(agent, "POST", "/v1/query", {"Name": "x", "Service": {}})
    assert (status, text) == (400, "Must provide a Service name to query")
    status, text = call(
        agent, "POST", "/v1/query", {"Name": "my-query", "Service": {"Service": "a"}}
    )
    assert status == 500 and 'name "my-query" aliases an existing query name' in text
    assert call(agent, "POST", "/v1/query", "not json")[0] == 400

    # Delete, and it is gone.
    status, text = call(agent, "DELETE", f"/v1/query/{qid}")
    assert (status, text) == (200, "")
    assert call(agent, "GET", f"/v1/query/{qid}") == (404, "Query not found")
    assert call(agent, "GET", f"/v1/query/{qid}/execute") == (404, "Query not found")
    status, text = call(agent, "PUT", f"/v1/query/{qid}", changed)
    assert status == 500 and f"Cannot modify non-existent prepared query: '{qid}'" in text


def make_token(agent: AgentProcess, rules: str) -> str:
    status, policy = call(
        agent, "PUT", "/v1/acl/policy", {"Name": f"p{abs(hash(rules))}", "Rules": rules}, MGMT
    )
    assert status == 200, policy
    status, token = call(agent, "PUT", "/v1/acl/token", {"Policies": [{"ID": policy["ID"]}]}, MGMT)
    assert status == 200, token
    return str(token["SecretID"])


def test_acl_rules(agent_factory: Factory) -> None:
    agent = agent_factory("-hcl", ACL_HCL)
    register(agent, "n1", "10.1.0.1", ["primary"], "passing", MGMT)
    team = make_token(
        agent,
        'query_prefix "team-" { policy = "write" }\n'
        'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }',
    )
    other = make_token(agent, 'query_prefix "" { policy = "read" }')

    named = {"Name": "team-a", "Token": "secret-exec-token", "Service": {"Service": "redis"}}
    status, created = call(agent, "POST", "/v1/query", named, team)
    assert status == 200, created
    status, text = call(
        agent, "POST", "/v1/query", {"Name": "ops-a", "Service": {"Service": "redis"}}, team
    )
    assert status == 403 and "lacks permission 'query:write' on \"ops-a\"" in text
    status, text = call(agent, "DELETE", f"/v1/query/{created['ID']}", token=other)
    assert status == 403 and "query:write" in text

    # Unnamed: anyone may create; only its creator (or management) changes it.
    status, mine = call(agent, "POST", "/v1/query", {"Service": {"Service": "redis"}}, other)
    assert status == 200, mine
    update = {"Service": {"Service": "redis", "OnlyPassing": True}}
    assert call(agent, "PUT", f"/v1/query/{mine['ID']}", update, team)[0] == 403
    assert call(agent, "PUT", f"/v1/query/{mine['ID']}", update, other)[0] == 200
    assert call(agent, "PUT", f"/v1/query/{mine['ID']}", update, MGMT)[0] == 200

    # Lists: the unnamed one only for management; the token hidden from others.
    _, listed = call(agent, "GET", "/v1/query", token=other)
    assert [(q["Name"], q["Token"]) for q in listed] == [("team-a", "<hidden>")]
    _, listed = call(agent, "GET", "/v1/query", token=MGMT)
    assert sorted(q["Name"] for q in listed) == ["", "team-a"]
    assert "secret-exec-token" in [q["Token"] for q in listed]
    status, got = call(agent, "GET", f"/v1/query/{mine['ID']}", token=team)
    assert status == 200 and got[0]["ID"] == mine["ID"]
    assert call(agent, "GET", f"/v1/query/{created['ID']}", token="")[0] == 403

    # Execution filters the instances with the caller's token (the unnamed query has none).
    status, result = call(agent, "GET", f"/v1/query/{mine['ID']}/execute", token=other)
    assert status == 200 and result["Nodes"] == []
    status, result = call(agent, "GET", f"/v1/query/{mine['ID']}/execute", token=team)
    assert [n["Node"]["Node"] for n in result["Nodes"]] == ["n1"]


def test_py_consul_query_api(agent_factory: Factory) -> None:
    """The real py-consul client (it sends lowercase keys and marks every
    query a `name_prefix_match` template)."""
    agent = agent_factory()
    register(agent, "n1", "10.1.0.1", ["primary"], "passing")
    register(agent, "n2", "10.1.0.2", ["secondary"], "passing")
    client = consul.Consul(host="127.0.0.1", port=agent.http_port)
    created = client.query.create(
        "redis", name="pyq", tags=["primary"], ttl="10s", onlypassing=True
    )
    qid = created["ID"]
    assert [q["ID"] for q in client.query.list()] == [qid]
    (got,) = client.query.get(qid)
    assert got["Name"] == "pyq" and got["Service"]["OnlyPassing"] is True
    assert got["Template"]["Type"] == "name_prefix_match"
    result = client.query.execute("pyq")
    assert [n["Node"]["Node"] for n in result["Nodes"]] == ["n1"]
    assert result["DNS"]["TTL"] == "10s"
    assert client.query.explain("pyq-anything")["Query"]["ID"] == qid  # a template: the prefix
    assert client.query.update(qid, "redis", name="pyq", tags=["secondary"]) is True
    result = client.query.execute(qid, limit=5)
    assert [n["Node"]["Node"] for n in result["Nodes"]] == ["n2"]
    assert client.query.delete(qid) is True
    assert client.query.list() == []
