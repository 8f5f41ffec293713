"""RPC over real TLS on 127.0.0.1 with certificates from proconsul.tls:
Consul's verify_incoming / verify_outgoing / verify_server_hostname, and every
refusal named in the log and counted in stats()."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvloop

from proconsul.rpc import (
    ErrorCode,
    PeerInfo,
    RPCClient,
    RPCError,
    RPCServer,
    TLSHandshakeError,
)
from proconsul.rpc.testing import CertFiles, TestPKI, make_pki, tls_settings
from proconsul.rpc.tls import client_context, rpc_tls, server_context
from proconsul.server.raft_rpc import only_servers

SERVER_NAME = "server.dc1.consul"
DEADLINE_S = 10.0


class PKI:
    def __init__(self, pki: TestPKI) -> None:
        self.pki = pki
        self.ca_file = pki.ca_file
        self.server = pki.issue("server", "server")
        self.client = pki.issue("client", "client")
        self.expired_client = pki.issue_expired("client", "expired-client")
        self.expired_server = pki.issue_expired("server", "expired-server")
        other_ca, self.other_ca_file = pki.other_ca()
        self.foreign_client = pki.issue("client", "foreign-client", ca=other_ca)
        self.foreign_server = pki.issue("server", "foreign-server", ca=other_ca)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(make_pki(tmp_path_factory.mktemp("rpc-pki")))


async def who(payload: bytes, peer: PeerInfo) -> bytes:
    return f"{peer.tls} {peer.verified} {peer.common_name} {','.join(peer.dns_names)}".encode()


HANDLERS = {"who": who, "raft": only_servers(who, datacenter="dc1", domain="consul")}


async def start_server(
    pki: PKI,
    *,
    cert: CertFiles | None = None,
    verify_incoming: bool = True,
    accept_plaintext: bool = False,
    tls_min_version: str = "TLSv1_2",
    handshake_timeout_s: float = 5.0,
) -> RPCServer:
    ctx = server_context(
        tls_settings(
            ca_file=pki.ca_file,
            cert=cert or pki.server,
            verify_incoming=verify_incoming,
            tls_min_version=tls_min_version,
        )
    )
    server = RPCServer(
        HANDLERS,
        ssl_context=ctx,
        accept_plaintext=accept_plaintext,
        handshake_timeout_s=handshake_timeout_s,
    )
    await server.start()
    return server


def make_client(
    pki: PKI,
    cert: CertFiles | None,
    *,
    verify_server_hostname: bool = True,
    ca_file: str | None = None,
) -> RPCClient:
    ctx = client_context(
        tls_settings(
            ca_file=ca_file or pki.ca_file,
            cert=cert,
            verify_outgoing=True,
            verify_server_hostname=verify_server_hostname,
        )
    )
    return RPCClient(ctx, SERVER_NAME)


@pytest.fixture
async def server(pki: PKI) -> AsyncIterator[RPCServer]:
    srv = await start_server(pki)
    yield srv
    await srv.close()


async def refused(client: RPCClient, address: tuple[str, int]) -> TLSHandshakeError:
    with pytest.raises(TLSHandshakeError) as info:
        await client.call(address, "who", b"", DEADLINE_S)
    await client.close()
    return info.value


async def test_mutual_tls_round_trip_with_the_peers_identity(pki: PKI, server: RPCServer) -> None:
    client = make_client(pki, pki.client)
    answer = await client.call(server.address, "who", b"", DEADLINE_S)
    assert answer == b"True True client.dc1.consul client.dc1.consul,localhost"
    stats = server.stats()
    assert stats["tls_connections"] == 1
    assert stats["tls_handshake_failures_total"] == 0
    await client.close()


async def test_client_without_a_certificate_is_refused(
    pki: PKI, server: RPCServer, caplog: pytest.LogCaptureFixture
) -> None:
    error = await refused(make_client(pki, None), server.address)
    assert error.reason == "missing_client_cert"
    assert server.stats()["tls_handshake_failures"] == {"missing_client_cert": 1}
    assert "no client certificate, but verify_incoming requires one" in caplog.text


async def test_client_certificate_from_another_ca_is_refused(
    pki: PKI, server: RPCServer, caplog: pytest.LogCaptureFixture
) -> None:
    error = await refused(make_client(pki, pki.foreign_client), server.address)
    assert error.reason == "wrong_ca"
    assert server.stats()["tls_handshake_failures"] == {"wrong_ca": 1}
    assert "certificate not signed by a trusted CA" in caplog.text


async def test_expired_client_certificate_is_refused(
    pki: PKI, server: RPCServer, caplog: pytest.LogCaptureFixture
) -> None:
    error = await refused(make_client(pki, pki.expired_client), server.address)
    assert error.reason == "expired_cert"
    assert server.stats()["tls_handshake_failures"] == {"expired_cert": 1}
    assert "certificate has expired" in caplog.text


async def test_client_certificate_posing_as_a_server_is_refused_by_the_client(
    pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    impostor = await start_server(pki, cert=pki.client, verify_incoming=False)
    client = make_client(pki, pki.client, verify_server_hostname=True)
    error = await refused(client, impostor.address)
    assert error.reason == "hostname_mismatch"
    assert client.stats()["tls_handshake_failures"] == {"hostname_mismatch": 1}
    assert "does not name the expected server name" in caplog.text
    # The impostor sees our refusal as the peer rejecting its certificate.
    assert impostor.stats()["tls_handshake_failures_total"] == 1
    # Without verify_server_hostname only the chain is checked: accepted.
    lenient = make_client(pki, pki.client, verify_server_hostname=False)
    assert await lenient.call(impostor.address, "who", b"", DEADLINE_S)
    await lenient.close()
    await impostor.close()


async def test_server_certificates_the_client_cannot_trust(pki: PKI) -> None:
    for cert, reason in ((pki.expired_server, "expired_cert"), (pki.foreign_server, "wrong_ca")):
        bad_server = await start_server(pki, cert=cert)
        client = make_client(pki, pki.client)
        assert (await refused(client, bad_server.address)).reason == reason
        await bad_server.close()


async def test_plaintext_to_the_tls_port_is_refused(
    pki: PKI, server: RPCServer, caplog: pytest.LogCaptureFixture
) -> None:
    plain = RPCClient()
    with pytest.raises(ConnectionError):
        await plain.call(server.address, "who", b"", DEADLINE_S)
    await plain.close()
    assert server.stats()["tls_handshake_failures"] == {"not_tls": 1}
    assert "did not speak TLS" in caplog.text
    good = make_client(pki, pki.client)
    assert await good.call(server.address, "who", b"", DEADLINE_S)  # still serving
    await good.close()


async def test_without_verify_incoming_the_port_takes_both(pki: PKI) -> None:
    server = await start_server(pki, verify_incoming=False, accept_plaintext=True)
    plain = RPCClient()
    assert await plain.call(server.address, "who", b"", DEADLINE_S) == b"False False  "
    anonymous = make_client(pki, None)
    assert await anonymous.call(server.address, "who", b"", DEADLINE_S) == b"True False  "
    stats = server.stats()
    assert (stats["plaintext_connections"], stats["tls_connections"]) == (1, 1)
    await plain.close()
    await anonymous.close()
    await server.close()


async def test_tls_to_a_plaintext_port_is_refused(pki: PKI) -> None:
    server = RPCServer(HANDLERS)
    await server.start()
    client = make_client(pki, pki.client)
    with pytest.raises(ConnectionError):
        await client.call(server.address, "who", b"", DEADLINE_S)
    assert server.stats()["tls_on_plaintext_port"] == 1
    await client.close()
    await server.close()


async def test_min_version_mismatch(pki: PKI) -> None:
    server = await start_server(pki, tls_min_version="TLSv1_3")
    ctx = client_context(tls_settings(ca_file=pki.ca_file, cert=pki.client, verify_outgoing=True))
    assert ctx is not None
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    error = await refused(RPCClient(ctx, SERVER_NAME), server.address)
    assert error.reason == "protocol_version"
    assert server.stats()["tls_handshake_failures"] == {"protocol_version": 1}
    await server.close()


async def test_stalled_handshake_is_cut(pki: PKI) -> None:
    server = await start_server(pki, handshake_timeout_s=0.2)
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"\x16\x03\x01")  # the start of a TLS record, then nothing
    assert await asyncio.wait_for(reader.read(), DEADLINE_S) == b""
    assert server.stats()["tls_handshake_failures"] == {"handshake_timeout": 1}
    writer.close()
    await server.close()


async def test_auto_encrypt_lets_a_client_without_a_certificate_ask_for_one(
    pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    async def sign(payload: bytes, peer: PeerInfo) -> bytes:
        return b"signed"

    ctx = server_context(
        tls_settings(ca_file=pki.ca_file, cert=pki.server, verify_incoming=True),
        allow_anonymous_tls=True,
    )
    server = RPCServer(
        {**HANDLERS, "AutoEncrypt.Sign": sign},
        ssl_context=ctx,
        anonymous_methods={"AutoEncrypt.Sign"},
    )
    await server.start()
    newcomer = make_client(pki, None)
    assert await newcomer.call(server.address, "AutoEncrypt.Sign", b"", DEADLINE_S) == b"signed"
    with pytest.raises(RPCError) as info:
        await newcomer.call(server.address, "who", b"", DEADLINE_S)
    assert info.value.code == ErrorCode.PERMISSION_DENIED
    assert server.stats()["unverified_requests"] == 1
    assert "refused who from" in caplog.text
    await newcomer.close()
    # A certificate that is presented must still verify.
    for cert, reason in ((pki.foreign_client, "wrong_ca"), (pki.expired_client, "expired_cert")):
        assert (await refused(make_client(pki, cert), server.address)).reason == reason
    member = make_client(pki, pki.client)
    assert (await member.call(server.address, "who", b"", DEADLINE_S)).startswith(b"True True")
    await member.close()
    await server.close()


async def test_large_payloads_cross_many_tls_records(pki: PKI) -> None:
    async def echo(payload: bytes, peer: PeerInfo) -> bytes:
        return payload

    ctx = server_context(tls_settings(ca_file=pki.ca_file, cert=pki.server, verify_incoming=True))
    server = RPCServer({"echo": echo}, ssl_context=ctx)
    await server.start()
    client = make_client(pki, pki.client)
    blobs = [bytes([i]) * (4 * 1024 * 1024 + i) for i in range(3)]
    results = await asyncio.gather(*(client.call(server.address, "echo", b, 30) for b in blobs))
    assert results == blobs
    await client.close()
    await server.close()


async def test_a_server_that_never_answers_the_handshake(pki: PKI) -> None:
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    address = silent.sockets[0].getsockname()[:2]
    ctx = client_context(tls_settings(ca_file=pki.ca_file, cert=pki.client, verify_outgoing=True))
    client = RPCClient(ctx, SERVER_NAME, connect_timeout_s=0.2)
    with pytest.raises(ConnectionError, match="timed out"):
        await client.call(address, "who", b"", DEADLINE_S)
    assert client.stats()["tls_handshake_failures"] == {"handshake_timeout": 1}
    await client.close()
    silent.close()


async def test_server_only_methods_check_the_certificate(
    pki: PKI, server: RPCServer, caplog: pytest.LogCaptureFixture
) -> None:
    as_client = make_client(pki, pki.client)
    with caplog.at_level(logging.WARNING, logger="proconsul.rpc"):
        for _ in range(3):
            with pytest.raises(RPCError, match="Permission denied"):
                await as_client.call(server.address, "raft", b"", DEADLINE_S)
    await as_client.close()
    # Counted every time, logged once per caller and method, naming the method.
    assert server.stats()["refused_not_permitted"] == 3
    refusals = [r.getMessage() for r in caplog.records if "refused raft" in r.getMessage()]
    assert len(refusals) == 1 and "server.dc1.consul" in refusals[0], refusals
    as_server = make_client(pki, pki.server)
    assert b"server.dc1.consul" in await as_server.call(server.address, "raft", b"", DEADLINE_S)
    await as_server.close()


async def test_rpc_tls_from_settings_end_to_end(pki: PKI) -> None:
    """The walkthrough's shape: servers with verify_incoming, verify_outgoing and
    verify_server_hostname; a client agent with its CA and certificate."""
    settings = tls_settings(
        ca_file=pki.ca_file,
        cert=pki.server,
        verify_incoming=True,
        verify_outgoing=True,
        verify_server_hostname=True,
    )
    server_side = rpc_tls(settings, datacenter="dc1", domain="consul", is_server=True)
    client_side = rpc_tls(
        tls_settings(
            ca_file=pki.ca_file,
            cert=pki.client,
            verify_incoming=True,
            verify_outgoing=True,
            verify_server_hostname=True,
        ),
        datacenter="dc1",
        domain="consul",
        is_server=False,
    )
    server = RPCServer(
        HANDLERS,
        ssl_context=server_side.server_context,
        accept_plaintext=server_side.accept_plaintext,
    )
    await server.start()
    client = RPCClient(client_side.client_context, client_side.server_hostname)
    assert (await client.call(server.address, "who", b"", DEADLINE_S)).startswith(b"True True")
    # Server to server, as Raft would: the server certificate is both ends.
    peer = RPCClient(server_side.client_context, server_side.server_hostname)
    assert b"server.dc1.consul" in await peer.call(server.address, "raft", b"", DEADLINE_S)
    await client.close()
    await peer.close()
    await server.close()


def test_tls_refusals_on_uvloop(tmp_path: Path) -> None:
    pki = PKI(make_pki(tmp_path))

    async def scenario() -> None:
        server = await start_server(pki)
        good = make_client(pki, pki.client)
        results = await asyncio.gather(
            *(good.call(server.address, "who", b"", DEADLINE_S) for _ in range(50))
        )
        assert len(set(results)) == 1
        assert (await refused(make_client(pki, None), server.address)).reason == (
            "missing_client_cert"
        )
        assert (await refused(make_client(pki, pki.expired_client), server.address)).reason == (
            "expired_cert"
        )
        await good.close()
        assert server.stats()["tls_handshake_failures_total"] == 2
        await server.close()

    uvloop.run(scenario())
