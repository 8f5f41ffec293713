"""TLS refusals between real agent processes, each one named and counted.

One server (127.0.0.111) runs the walkthrough's "Server Config" TLS
(ca_file, cert_file, key_file, verify_incoming, verify_outgoing,
verify_server_hostname), made with `proconsul tls ca create` and
`tls cert create`. Client agents join it by gossip, one per kind of wrong
TLS material: a certificate from another CA, an expired certificate, no
certificate at all, no TLS at all (plaintext to the TLS port), and a CA file
that does not trust the server. A client with the right material is the
control: it reads the catalog.

Then two impostor servers, each with a client of its own (127.0.0.118-121):
one presents a certificate for another datacenter's server name, one a
client certificate; a client with `verify_server_hostname` refuses both.
Last, the walkthrough's server with `auto_encrypt { allow_tls = true }` too
(127.0.0.125-126): a client without a certificate gets through the handshake
but every call except the signing one is refused.

For each refusal the test checks what an operator would see: the client's
HTTP API answers 500 with the error (never catalog data), the refusing
agent's log names the cause, and the refusing agent's
/v1/agent/metrics counts it by reason (`consul.rpc.tls_handshake_failures.*`
on a server, `consul.client.rpc.tls_handshake_failures.*` on the dialer).
Every wait has a deadline; nothing sleeps.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.agent_process import free_port, proconsul_cmd, wait_for
from tests.gossip_agents import GossipPool, Member

from proconsul.rpc.testing import TestPKI
from proconsul.tls.certs import load_ca

DEADLINE_S = 20.0
SERVER_BASE = 111  # the server and its clients: 127.0.0.111-117
IMPOSTOR_BASES = (118, 120)  # an impostor server and its client each
ANONYMOUS_BASE = 125  # a server with auto_encrypt allow_tls and a client: .125-126

FAILURES = "tls_handshake_failures"


@dataclass(frozen=True)
class Certs:
    directory: Path

    def path(self, name: str) -> str:
        return str(self.directory / name)

    @property
    def ca_file(self) -> str:
        return self.path("consul-agent-ca.pem")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """The CLI's CA, server and client certificates, plus the bad ones."""
    directory = tmp_path_factory.mktemp("certs")
    for args in (
        ["ca", "create"],
        ["cert", "create", "-server"],
        ["cert", "create", "-client"],
        ["cert", "create", "-server", "-dc", "dc2"],
    ):
        subprocess.run(proconsul_cmd("tls", *args), cwd=directory, check=True, capture_output=True)
    ca = load_ca(
        (directory / "consul-agent-ca.pem").read_text(),
        (directory / "consul-agent-ca-key.pem").read_text(),
    )
    pki = TestPKI(directory, str(directory / "consul-agent-ca.pem"), ca)
    pki.issue_expired("client", "expired-client")  # signed by the right CA, ended yesterday
    other_ca, _ = pki.other_ca()
    pki.issue("client", "foreign-client", ca=other_ca)  # right names, wrong CA
    return Certs(directory)


def server_tls(certs: Certs, cert: str) -> str:
    """The walkthrough's "Server Config" TLS block, with `cert` as the certificate."""
    return (
        "verify_incoming = true\nverify_outgoing = true\nverify_server_hostname = true\n"
        f'ca_file = "{certs.ca_file}"\n'
        f'cert_file = "{certs.path(cert + ".pem")}"\n'
        f'key_file = "{certs.path(cert + "-key.pem")}"'
    )


def client_tls(certs: Certs, cert: str | None, ca_file: str = "") -> str:
    """The walkthrough's "Client Config" TLS (without auto_encrypt), plus `cert`."""
    hcl = (
        "verify_incoming = false\nverify_outgoing = true\nverify_server_hostname = true\n"
        f'ca_file = "{ca_file or certs.ca_file}"'
    )
    if cert is not None:
        hcl += f'\ncert_file = "{certs.path(cert + ".pem")}"\n'
        hcl += f'key_file = "{certs.path(cert + "-key.pem")}"'
    return hcl


def start_server(pool: GossipPool, tls_hcl: str) -> None:
    """n0 of `pool` as a lone server (bootstrap_expect 1) with `tls_hcl`."""
    server = pool["n0"]
    server.args += ["-server-port", str(free_port(server.ip)), "-hcl", tls_hcl]
    pool.start(server, join=False)


def start_client(pool: GossipPool, member: Member, tls_hcl: str | None) -> None:
    if tls_hcl is not None:
        member.args += ["-hcl", tls_hcl]
    pool.start(member, "-retry-join", pool["n0"].serf_addr, join=False)


def metric(member: Member, name: str) -> float:
    for gauge in member.running.get_json("/v1/agent/metrics")["Gauges"]:
        if gauge["Name"] == name:
            return float(gauge["Value"])
    return 0.0


def sees_server(client: Member, server: Member) -> bool:
    """The client knows `server` as a live Consul server through gossip."""
    rows = client.running.get_json("/v1/agent/members")
    return any(
        row["Name"] == server.name and row["Status"] == 1 and row["Tags"].get("role") == "consul"
        for row in rows
    )


def refused_catalog_read(client: Member, server: Member, *, names_server: bool = True) -> str:
    """The client's catalog read fails with a 500 naming the RPC failure."""
    wait_for(lambda: sees_server(client, server), DEADLINE_S)
    status, _, body = client.running.request("GET", "/v1/catalog/nodes")
    text = body.decode(errors="replace")
    assert status == 500, (status, text)
    assert "No known Consul servers" not in text
    if names_server:  # a connection-level failure says which server it was
        assert server.ip in text, text
    return text


def logged(member: Member, *parts: str) -> bool:
    """Some line of `member`'s log holds every one of `parts`."""
    return any(all(p in line for p in parts) for line in member.running.log_text().splitlines())


def counted(member: Member, name: str) -> float:
    return wait_for(lambda: metric(member, name), DEADLINE_S)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[GossipPool]:
    """n0: the server; n1: a good client; n2-n6: one kind of wrong material each."""
    found = GossipPool(
        tmp_path_factory.mktemp("tls-agents"), 7, base=SERVER_BASE, server_first=True
    )
    try:
        start_server(found, server_tls(certs, "dc1-server-consul-0"))
        for name, tls_hcl in (
            ("n1", client_tls(certs, "dc1-client-consul-0")),
            ("n2", client_tls(certs, "foreign-client")),
            ("n3", client_tls(certs, "expired-client")),
            ("n4", client_tls(certs, None)),
            ("n5", None),  # no TLS settings: dials the TLS port in plaintext
            ("n6", client_tls(certs, "dc1-client-consul-0", certs.path("other-ca.pem"))),
        ):
            start_client(found, found[name], tls_hcl)
        yield found
    finally:
        found.stop_all()


def test_a_client_with_the_right_material_reads_the_catalog(pool: GossipPool) -> None:
    client, server = pool["n1"], pool["n0"]
    wait_for(lambda: sees_server(client, server), DEADLINE_S)
    nodes = wait_for(lambda: client.running.get_json("/v1/catalog/nodes"), DEADLINE_S)
    assert "n0" in {row["Node"] for row in nodes}
    assert metric(server, "consul.rpc.tls_connections") >= 1


@pytest.mark.parametrize(
    ("name", "reason", "words"),
    [
        ("n2", "wrong_ca", "certificate not signed by a trusted CA"),
        ("n3", "expired_cert", "certificate has expired"),
        ("n4", "missing_client_cert", "no client certificate, but verify_incoming requires one"),
        ("n5", "not_tls", "the peer did not speak TLS"),
    ],
)
def test_the_server_refuses_wrong_client_material(
    pool: GossipPool, name: str, reason: str, words: str
) -> None:
    client, server = pool[name], pool["n0"]
    refused_catalog_read(client, server)
    # (Not the client's address: clients dial from the default source address.)
    wait_for(lambda: logged(server, "rpc: refused TLS connection from", words), DEADLINE_S)
    assert counted(server, f"consul.rpc.{FAILURES}.{reason}") >= 1
    assert metric(server, f"consul.rpc.{FAILURES}_total") >= 1


def test_wrong_client_material_is_not_blamed_on_the_server(pool: GossipPool) -> None:
    """The dialing side says the server refused it, not that the server is bad."""
    for name in ("n2", "n3", "n4"):
        client = pool[name]
        wait_for(lambda c=client: logged(c, "failed, the server refused us"), DEADLINE_S)  # type: ignore[misc]
        assert not logged(client, "refused the server")


def test_a_client_that_does_not_trust_the_server_ca_refuses_it(pool: GossipPool) -> None:
    """A wrong CA on the dialing side: the client refuses the server's certificate;
    the server's line says the peer refused it, not that it refused the peer."""
    client, server = pool["n6"], pool["n0"]
    text = refused_catalog_read(client, server)
    assert "refused the server: certificate not signed by a trusted CA" in text
    assert counted(client, f"consul.client.rpc.{FAILURES}.wrong_ca") >= 1
    wait_for(
        lambda: logged(
            server, "rpc: TLS connection from", "the peer refused our certificate", "unknown ca"
        ),
        DEADLINE_S,
    )
    assert counted(server, f"consul.rpc.{FAILURES}.peer_refused_cert") >= 1


@pytest.fixture(scope="module")
def impostors(
    tmp_path_factory: pytest.TempPathFactory, certs: Certs
) -> Iterator[dict[str, GossipPool]]:
    """Two lone dc1 servers whose certificates lack server.dc1.consul, each with a
    client holding the right CA and client certificate."""
    pools: dict[str, GossipPool] = {}
    try:
        for base, cert in zip(
            IMPOSTOR_BASES, ("dc2-server-consul-0", "dc1-client-consul-0"), strict=True
        ):
            found = GossipPool(
                tmp_path_factory.mktemp(f"impostor-{base}"), 2, base=base, server_first=True
            )
            pools[cert] = found
            start_server(found, server_tls(certs, cert))
            start_client(found, found["n1"], client_tls(certs, "dc1-client-consul-0"))
        yield pools
    finally:
        for found in pools.values():
            found.stop_all()


@pytest.mark.parametrize("cert", ["dc2-server-consul-0", "dc1-client-consul-0"])
def test_a_server_certificate_without_the_server_name_is_refused(
    impostors: dict[str, GossipPool], cert: str
) -> None:
    """verify_server_hostname: the dialer wants server.dc1.consul; another
    datacenter's server certificate and a client certificate lack it."""
    found = impostors[cert]
    client, server = found["n1"], found["n0"]
    text = refused_catalog_read(client, server)
    assert "server certificate does not name the expected server name" in text
    wait_for(
        lambda: logged(
            client,
            "rpc: TLS to",
            server.ip,
            "refused the server: server certificate does not name the expected server name",
        ),
        DEADLINE_S,
    )
    assert counted(client, f"consul.client.rpc.{FAILURES}.hostname_mismatch") >= 1
    # The impostor hears of it too: the client's alert, counted as a refusal of its certificate.
    wait_for(
        lambda: logged(
            server,
            "rpc: TLS connection from",
            "the peer refused our certificate",
            "bad certificate",
        ),
        DEADLINE_S,
    )
    assert counted(server, f"consul.rpc.{FAILURES}.peer_refused_cert") >= 1


def test_with_auto_encrypt_allowed_a_client_without_certificate_gets_nothing_but_one(
    tmp_path: Path, certs: Certs
) -> None:
    """The walkthrough's full "Server Config" adds `auto_encrypt { allow_tls = true }`:
    a client without a certificate now completes the handshake (so it could ask
    for one), but every other call is refused, logged and counted."""
    found = GossipPool(tmp_path, 2, base=ANONYMOUS_BASE, server_first=True)
    server_hcl = (
        server_tls(certs, "dc1-server-consul-0")
        + "\nauto_encrypt { allow_tls = true }\n"
        + f'connect {{ ca_config {{ root_cert = "{certs.ca_file}" '
        + f'private_key = "{certs.path("consul-agent-ca-key.pem")}" }} }}'
    )
    try:
        start_server(found, server_hcl)
        start_client(found, found["n1"], client_tls(certs, None))
        client, server = found["n1"], found["n0"]
        # The server answered (with a refusal), so the error is its own words.
        text = refused_catalog_read(client, server, names_server=False)
        assert text == "Permission denied: a verified client certificate is required"
        wait_for(
            lambda: logged(
                server,
                "rpc: refused Catalog.ListNodes from",
                "no client certificate, but verify_incoming requires one",
            ),
            DEADLINE_S,
        )
        assert counted(server, "consul.rpc.unverified_requests") >= 1
    finally:
        found.stop_all()
