"""A real cluster in the walkthrough's shape on 127.0.0.71-75, each agent its
own process with a data dir, the fast "local" gossip profile and
raft_multiplier 1: two servers with bootstrap_expect = 2 and two clients
start first, then a third server joins (autopilot adds it and makes it a
voter). TLS is the walkthrough's: servers with verify_incoming,
verify_outgoing, verify_server_hostname and their certificates, clients with
only the CA file and auto_encrypt.

The tests run in order on one cluster: leader agreement, catalog and service
reads across clients, KV through a client readable everywhere, then kill -9 of
the leader (a new leader within a bound, no acknowledged write lost) and its
restart (it catches up). Every wait has a deadline; nothing sleeps blindly.

Then clusters of their own (127.0.0.81-85, 91-95): TLS configured as the
walkthrough does it (a client without a certificate is refused under
verify_incoming and its log says why), and auto_encrypt (clients with only the
CA file get a certificate from the servers and renew it). A lone client with no
servers answers 500 "No known Consul servers".
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from tests.agent_process import free_port, proconsul_cmd, start_agent, wait_for
from tests.gossip_agents import GossipPool, Member

SERVERS = ["n0", "n1", "n2"]
CLIENTS = ["n3", "n4"]
DEADLINE_S = 20.0
# Raft at multiplier 1: leader lease/heartbeat loss ~1 s, election 1-2 s, a
# pre-vote round; plus scheduling slack on a loaded machine.
FAILOVER_BOUND_S = 10.0


def make_cluster(
    tmp_path: Path,
    base: int,
    server_hcl: Sequence[str] = (),
    client_hcl: Sequence[str] = (),
    bootstrap_expect: int = 3,
) -> GossipPool:
    """Three servers (n0-n2) and two clients (n3, n4); not started yet."""
    pool = GossipPool(tmp_path, 5, base=base)
    for member in pool.members:
        if member.name in SERVERS:
            member.args += [
                "-server",
                "-bootstrap-expect",
                str(bootstrap_expect),
                "-server-port",
                str(free_port(member.ip)),
                "-hcl",
                "performance { raft_multiplier = 1 }",
            ]
            for fragment in server_hcl:
                member.args += ["-hcl", fragment]
        else:
            for fragment in client_hcl:
                member.args += ["-hcl", fragment]
    return pool


def walkthrough_tls(certs: Path, leaf_cert_ttl: str = "") -> tuple[str, str]:
    """The walkthrough's server and client TLS config, with auto_encrypt.

    The signing CA for auto_encrypt is the agent CA (see agent/auto_encrypt.py);
    a short `leaf_cert_ttl` makes clients renew within a test (with Consul's
    `skip_validate`, since a TTL under an hour is refused otherwise).
    """
    make_certs(certs)
    ca_file = certs / "consul-agent-ca.pem"
    ttl = f' leaf_cert_ttl = "{leaf_cert_ttl}" skip_validate = true' if leaf_cert_ttl else ""
    server = (
        "verify_incoming = true\nverify_outgoing = true\nverify_server_hostname = true\n"
        f'ca_file = "{ca_file}"\n'
        f'cert_file = "{certs / "dc1-server-consul-0.pem"}"\n'
        f'key_file = "{certs / "dc1-server-consul-0-key.pem"}"\n'
        "auto_encrypt { allow_tls = true }\n"
        f'connect {{ ca_config {{ root_cert = "{ca_file}" '
        f'private_key = "{certs / "consul-agent-ca-key.pem"}"{ttl} }} }}'
    )
    client = (
        "verify_incoming = false\nverify_outgoing = true\nverify_server_hostname = true\n"
        f'ca_file = "{ca_file}"\n'
        "auto_encrypt { tls = true }"
    )
    return server, client


def voters(member: Member) -> list[str]:
    config = member.running.get_json("/v1/operator/raft/configuration")
    return sorted(row["Node"] for row in config["Servers"] if row["Voter"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GossipPool]:
    tmp = tmp_path_factory.mktemp("cluster")
    server_tls, client_tls = walkthrough_tls(tmp / "certs")
    # A short stabilisation time: the third server becomes a voter quickly.
    autopilot = 'autopilot { server_stabilization_time = "2s" }'
    pool = make_cluster(tmp / "agents", 71, [server_tls, autopilot], [client_tls], 2)
    try:
        first = ["n0", "n1", *CLIENTS]
        for name in first:
            pool.start(pool[name])
        agreed_leader_among(pool, first, DEADLINE_S)
        pool.start(pool["n2"])
        wait_for(lambda: voters(pool["n3"]) == SERVERS, DEADLINE_S)
        yield pool
    finally:
        pool.stop_all()


def leader_views(pool: GossipPool) -> dict[str, str]:
    return {m.name: m.running.get_json("/v1/status/leader") for m in pool.running()}


def agreed_leader(pool: GossipPool, deadline_s: float, other_than: str = "") -> str:
    """The leader every running agent reports, once they all agree on one."""
    return agreed_leader_among(pool, [m.name for m in pool.running()], deadline_s, other_than)


def agreed_leader_among(
    pool: GossipPool, names: Sequence[str], deadline_s: float, other_than: str = ""
) -> str:
    def agreed() -> str | None:
        views = {pool[name].running.get_json("/v1/status/leader") for name in names}
        if len(views) == 1:
            (leader,) = views
            if leader and leader != other_than:
                return leader
        return None

    try:
        return wait_for(agreed, deadline_s)
    except AssertionError as exc:
        raise AssertionError(f"no agreed leader: {leader_views(pool)}") from exc


def server_at(pool: GossipPool, address: str) -> Member:
    ip = address.rsplit(":", 1)[0]
    return next(m for m in pool.members if m.ip == ip)


def kv_put(member: Member, key: str, value: str) -> None:
    status, _, body = member.running.request("PUT", f"/v1/kv/{key}", value)
    assert (status, body) == (200, b"true"), (status, body)


def kv_value(member: Member, key: str, query: str = "") -> str | None:
    status, _, body = member.running.request("GET", f"/v1/kv/{key}{query}")
    if status != 200:
        return None
    return base64.b64decode(json.loads(body)[0]["Value"]).decode()


def test_one_leader_agreed_by_all(cluster: GossipPool) -> None:
    leader = agreed_leader(cluster, DEADLINE_S)
    assert server_at(cluster, leader).name in SERVERS
    peers = cluster["n3"].running.get_json("/v1/status/peers")
    assert len(peers) == 3 and leader in peers
    config = cluster["n4"].running.get_json("/v1/operator/raft/configuration")
    rows = {row["Node"]: row for row in config["Servers"]}
    assert sorted(rows) == SERVERS
    assert [row["Address"] for row in rows.values() if row["Leader"]] == [leader]
    assert all(row["Voter"] for row in rows.values())
    listed = subprocess.run(
        proconsul_cmd("operator", "raft", "list-peers", "-http-addr", cluster["n3"].running.url),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert listed[0].split() == ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
    states = {line.split()[0]: line.split()[3] for line in listed[1:]}
    assert sorted(states) == SERVERS and sorted(states.values()) == [
        "follower",
        "follower",
        "leader",
    ]
    status, _, _ = cluster["n3"].running.request("DELETE", "/v1/operator/raft/peer")
    assert status == 400
    status, _, body = cluster["n3"].running.request("DELETE", "/v1/operator/raft/peer?id=nope")
    assert (status, body) == (500, b"id 'nope' was not found in the Raft configuration")


def test_catalog_has_every_member(cluster: GossipPool) -> None:
    def nodes() -> bool:
        rows = cluster["n4"].running.get_json("/v1/catalog/nodes")
        return {row["Node"] for row in rows} == set(SERVERS + CLIENTS)

    def consul_service() -> bool:
        rows = cluster["n3"].running.get_json("/v1/catalog/service/consul")
        return sorted(row["Node"] for row in rows) == SERVERS

    wait_for(nodes, DEADLINE_S)
    wait_for(consul_service, DEADLINE_S)


def test_service_on_one_client_read_through_another(cluster: GossipPool) -> None:
    status, _, body = cluster["n3"].running.request(
        "PUT", "/v1/agent/service/register", {"Name": "x", "Port": 8080}
    )
    assert status == 200, body

    def found() -> bool:
        rows = cluster["n4"].running.get_json("/v1/health/service/x")
        return [(r["Node"]["Node"], r["Service"]["Port"]) for r in rows] == [("n3", 8080)]

    wait_for(found, DEADLINE_S)


def test_kv_through_a_client_readable_everywhere(cluster: GossipPool) -> None:
    kv_put(cluster["n4"], "cluster/a", "1")
    for member in cluster.members:
        assert kv_value(member, "cluster/a") == "1", member.name
    for query in ("?consistent", "?stale"):
        assert kv_value(cluster["n3"], "cluster/a", query) == "1"
        status, headers, _ = cluster["n3"].running.request("GET", f"/v1/kv/cluster/a{query}")
        assert status == 200 and headers["X-Consul-KnownLeader"] == "true"
        assert headers["X-Consul-LastContact"].isdigit()


def test_leader_crash_new_leader_and_no_lost_writes(cluster: GossipPool) -> None:
    old = agreed_leader(cluster, DEADLINE_S)
    crashed = server_at(cluster, old)
    acknowledged = {f"cluster/before/{i}": str(i) for i in range(5)}
    for key, value in acknowledged.items():
        kv_put(cluster["n3"], key, value)
    cluster.kill(crashed)
    new = agreed_leader(cluster, FAILOVER_BOUND_S, other_than=old)
    assert server_at(cluster, new).name in SERVERS
    after = {f"cluster/after/{i}": str(i) for i in range(5)}
    for key, value in after.items():
        kv_put(cluster["n4"], key, value)
    acknowledged |= after
    for member in cluster.running():
        for key, value in acknowledged.items():
            assert kv_value(member, key) == value, (member.name, key)

    # The crashed server comes back with its data dir and catches up.
    cluster.start(crashed)
    assert agreed_leader(cluster, DEADLINE_S) == new

    def caught_up() -> bool:
        return all(kv_value(crashed, k, "?stale") == v for k, v in acknowledged.items())

    wait_for(caught_up, DEADLINE_S)


def test_client_without_servers_answers_500(tmp_path: Path) -> None:
    agent = start_agent(
        tmp_path, "-bind", "127.0.0.76", "-data-dir", str(tmp_path / "data"), dev=False
    )
    try:
        for path in ("/v1/catalog/nodes", "/v1/status/leader", "/v1/status/peers"):
            status, _, body = agent.request("GET", path)
            assert (status, body) == (500, b"No known Consul servers"), path
    finally:
        agent.stop()


# ----- TLS, as the walkthrough configures it ----------------------------------


def make_certs(directory: Path) -> None:
    """`proconsul tls ca create`, one server and one client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    for args in (["ca", "create"], ["cert", "create", "-server"], ["cert", "create", "-client"]):
        subprocess.run(proconsul_cmd("tls", *args), cwd=directory, check=True, capture_output=True)


def test_cluster_over_tls_refuses_a_client_without_certificate(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_certs(certs)
    ca = f'ca_file = "{certs / "consul-agent-ca.pem"}"'
    server_tls = (
        "verify_incoming = true\nverify_outgoing = true\nverify_server_hostname = true\n"
        f"{ca}\n"
        f'cert_file = "{certs / "dc1-server-consul-0.pem"}"\n'
        f'key_file = "{certs / "dc1-server-consul-0-key.pem"}"'
    )
    client_tls = (
        f"verify_incoming = false\nverify_outgoing = true\nverify_server_hostname = true\n{ca}"
    )
    client_cert = (
        f'cert_file = "{certs / "dc1-client-consul-0.pem"}"\n'
        f'key_file = "{certs / "dc1-client-consul-0-key.pem"}"'
    )
    pool = make_cluster(tmp_path / "agents", 81, [server_tls], [client_tls])
    pool["n3"].args += ["-hcl", client_cert]  # n4 has only the CA: refused
    try:
        pool.start_all()
        leader = agreed_leader_among(pool, [*SERVERS, "n3"], DEADLINE_S)
        assert server_at(pool, leader).name in SERVERS
        kv_put(pool["n3"], "tls/a", "1")
        for name in SERVERS:
            assert kv_value(pool[name], "tls/a") == "1"
        status, _, body = pool["n4"].running.request("PUT", "/v1/kv/tls/b", "2")
        assert status == 500, body
        wait_for(
            lambda: (
                "no client certificate, but verify_incoming requires one"
                in pool["n4"].running.log_text()
            ),
            DEADLINE_S,
        )
    finally:
        pool.stop_all()


def test_auto_encrypt_client_gets_and_renews_its_certificate(tmp_path: Path) -> None:
    """The walkthrough's TLS with auto_encrypt: clients have only the CA file."""
    server_tls, client_tls = walkthrough_tls(tmp_path / "certs", leaf_cert_ttl="4s")
    pool = make_cluster(tmp_path / "agents", 91, [server_tls], [client_tls])
    try:
        pool.start_all()
        agreed_leader(pool, DEADLINE_S)
        kv_put(pool["n3"], "ae/a", "1")
        assert kv_value(pool["n4"], "ae/a") == "1"
        for name in SERVERS:
            assert kv_value(pool[name], "ae/a") == "1"
        client = pool["n3"].running
        assert "auto_encrypt: got a client certificate" in client.log_text()
        wait_for(
            lambda: "auto_encrypt: renewed the client certificate" in client.log_text(),
            DEADLINE_S,
        )
        # Still talking to the servers after the renewal.
        kv_put(pool["n4"], "ae/b", "2")
        assert kv_value(pool["n3"], "ae/b") == "2"
    finally:
        pool.stop_all()
