"""auto_encrypt with the walkthrough's exact TLS config: no `connect` block.

One server with exactly the walkthrough's "Server Config" (ca_file, cert_file,
key_file, verify_incoming/outgoing/server_hostname, `auto_encrypt { allow_tls
= true }`) and one client with exactly its "Client Config" (ca_file,
verify_outgoing, verify_server_hostname, `auto_encrypt { tls = true }`), on
127.0.0.201-202. As in Consul, the leader initializes the built-in Connect CA
(its own root, `pri-<id>.consul.ca.<cluster>.consul`), the server signs the
client's certificate with it and trusts it for incoming client certificates
besides its ca_file: the client gets a certificate and reads the catalog over
verify_incoming RPC. `/v1/connect/ca/roots` shows that root, on both agents,
without a private key.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.agent_process import free_port, proconsul_cmd, wait_for
from tests.gossip_agents import GossipPool

BASE = 201
DEADLINE_S = 30.0


def make_certs(directory: Path) -> None:
    """`proconsul tls ca create` and one server certificate (the walkthrough's script)."""
    directory.mkdir(parents=True, exist_ok=True)
    for args in (["ca", "create"], ["cert", "create", "-server"]):
        subprocess.run(proconsul_cmd("tls", *args), cwd=directory, check=True, capture_output=True)


def walkthrough_configs(certs: Path) -> tuple[str, str]:
    """The walkthrough's Server Config and Client Config, paths pointed at `certs`."""
    ca_file = certs / "consul-agent-ca.pem"
    server = (
        "verify_incoming = true\n"
        "verify_outgoing = true\n"
        "verify_server_hostname = true\n"
        f'ca_file = "{ca_file}"\n'
        f'cert_file = "{certs / "dc1-server-consul-0.pem"}"\n'
        f'key_file = "{certs / "dc1-server-consul-0-key.pem"}"\n'
        "auto_encrypt {\nallow_tls = true\n}\n"
    )
    client = (
        "verify_incoming = false\n"
        "verify_outgoing = true\n"
        "verify_server_hostname = true\n"
        f'ca_file = "{ca_file}"\n'
        "auto_encrypt {\ntls = true\n}\n"
    )
    return server, client


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GossipPool]:
    tmp = tmp_path_factory.mktemp("builtin-ca")
    make_certs(tmp / "certs")
    server_hcl, client_hcl = walkthrough_configs(tmp / "certs")
    agents = GossipPool(tmp / "agents", 2, base=BASE)
    server, client = agents["n0"], agents["n1"]
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
    ]
    client.args += ["-hcl", client_hcl]
    try:
        agents.start(server)
        wait_for(lambda: server.running.get_json("/v1/status/leader"), DEADLINE_S)
        agents.start(client)
        yield agents
    finally:
        agents.stop_all()


def node_names(agents: GossipPool, name: str) -> list[str]:
    rows = agents[name].running.get_json("/v1/catalog/nodes")
    return sorted(row["Node"] for row in rows)


def test_client_gets_a_certificate_and_reads_the_catalog(pool: GossipPool) -> None:
    client = pool["n1"].running
    wait_for(lambda: "auto_encrypt: got a client certificate" in client.log_text(), DEADLINE_S)
    # The client's reads and its own registration travel over RPC to a server
    # that requires a client certificate: the one the built-in CA signed.
    wait_for(lambda: node_names(pool, "n1") == ["n0", "n1"], DEADLINE_S)
    assert "no client certificate" not in client.log_text()


def test_roots_show_the_built_in_root_everywhere(pool: GossipPool) -> None:
    def roots(name: str) -> dict[str, Any] | None:
        found: dict[str, Any] = pool[name].running.get_json("/v1/connect/ca/roots")
        return found if found.get("Roots") else None

    on_server = wait_for(lambda: roots("n0"), DEADLINE_S)
    on_client = wait_for(lambda: roots("n1"), DEADLINE_S)
    assert on_client == on_server
    (root,) = on_server["Roots"]
    assert root["Active"] and root["ID"] == on_server["ActiveRootID"]
    assert root["Name"] == "Consul CA Primary Cert"
    cluster = on_server["TrustDomain"].removesuffix(".consul")
    assert root["ExternalTrustDomain"] == cluster
    assert "PrivateKey" not in root
    status, _, pem = pool["n0"].running.request("GET", "/v1/connect/ca/roots?pem=true")
    assert status == 200 and pem.decode() == root["RootCert"]
    assert b"PRIVATE KEY" not in pem


def test_no_private_key_in_any_log(pool: GossipPool) -> None:
    for name in ("n0", "n1"):
        assert "PRIVATE KEY" not in pool[name].running.log_text()
