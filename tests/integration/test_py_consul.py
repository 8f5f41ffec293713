"""A real Consul client library (py-consul) drives our agent unchanged."""

from __future__ import annotations

import consul
import pytest
from tests.agent_process import AgentProcess, wait_for


@pytest.fixture
def client(dev_agent: AgentProcess) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=dev_agent.http_port)


def test_kv_roundtrip_and_cas(client: consul.Consul) -> None:
    assert client.kv.put("app/config", "v1") is True
    index, entry = client.kv.get("app/config")
    assert entry["Value"] == b"v1"
    assert int(index) >= entry["ModifyIndex"]
    modify = entry["ModifyIndex"]
    assert client.kv.put("app/config", "stale", cas=modify - 1) is False
    assert client.kv.put("app/config", "v2", cas=modify) is True
    assert client.kv.put("app/new", "x", cas=0) is True
    assert client.kv.put("app/new", "y", cas=0) is False
    _, entries = client.kv.get("app/", recurse=True)
    assert {e["Key"]: e["Value"] for e in entries} == {"app/config": b"v2", "app/new": b"x"}
    _, keys = client.kv.get("", keys=True, separator="/")
    assert keys == ["app/"]
    assert client.kv.delete("app/", recurse=True) is True
    assert client.kv.get("app/config") == (client.kv.get("app/config")[0], None)


def test_agent_service_ttl_check_and_health(client: consul.Consul) -> None:
    client.agent.service.register(
        "api", service_id="api-1", port=8080, tags=["v1"], check=consul.Check.ttl("30s")
    )
    services = client.agent.services()
    assert services["api-1"]["Service"] == "api"
    assert services["api-1"]["Port"] == 8080
    checks = client.agent.checks()
    assert checks["service:api-1"]["Status"] == "critical"

    # Registered services reach the catalog through anti-entropy.
    wait_for(lambda: "api" in client.catalog.services()[1])
    assert client.health.service("api", passing=True)[1] == []

    client.agent.check.ttl_pass("service:api-1", notes="all good")

    def passing() -> list[dict[str, object]]:
        return list(client.health.service("api", passing=True)[1])

    rows = wait_for(passing)
    assert rows[0]["Service"]["ID"] == "api-1"
    statuses = {c["CheckID"]: c["Status"] for c in rows[0]["Checks"]}
    assert statuses == {"serfHealth": "passing", "service:api-1": "passing"}
    assert rows[0]["Checks"][1]["Output"] == "all good"

    _, nodes = client.catalog.service("api", tag="v1")
    assert [n["ServiceID"] for n in nodes] == ["api-1"]
    _, nodes = client.catalog.service("api", tag="v2")
    assert nodes == []

    client.agent.service.deregister("api-1")
    wait_for(lambda: "api" not in client.catalog.services()[1])


def test_catalog_register_and_nodes(client: consul.Consul) -> None:
    assert client.catalog.register("ext-node", "10.1.2.3", service={"Service": "db", "Port": 5432})
    _, nodes = client.catalog.nodes()
    names = {n["Node"] for n in nodes}
    assert "ext-node" in names
    _, node = client.catalog.node("ext-node")
    assert node["Services"]["db"]["Port"] == 5432
    assert client.catalog.deregister("ext-node")
    _, nodes = client.catalog.nodes()
    assert "ext-node" not in {n["Node"] for n in nodes}


def test_agent_self_and_members(client: consul.Consul) -> None:
    info = client.agent.self()
    assert info["Config"]["Server"] is True
    assert info["Config"]["Datacenter"] == "dc1"
    members = client.agent.members()
    assert len(members) == 1
    assert members[0]["Tags"]["role"] == "consul"
    assert members[0]["Status"] == 1
    assert client.status.leader() != ""


def test_sessions_and_locks(client: consul.Consul) -> None:
    session_id = client.session.create(name="py", ttl=30, lock_delay=5, behavior="release")
    _, info = client.session.info(session_id)
    assert (info["Name"], info["TTL"], info["LockDelay"]) == ("py", "30s", 5_000_000_000)
    assert client.kv.put("locks/py", "mine", acquire=session_id) is True
    _, entry = client.kv.get("locks/py")
    assert (entry["Session"], entry["LockIndex"]) == (session_id, 1)
    assert client.session.renew(session_id)["ID"] == session_id
    _, listed = client.session.list()
    assert [s["ID"] for s in listed] == [session_id]
    assert client.kv.put("locks/py", "done", release=session_id) is True
    assert client.session.destroy(session_id) is True
    assert client.session.info(session_id)[1] is None
