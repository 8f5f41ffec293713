"""AutoEncrypt.Sign: what an anonymous caller gets, and what it cannot get;
and the client side: the roots in the reply are trusted besides ca_file
(real TLS on 127.0.0.1, milliseconds)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from proconsul.agent.auto_encrypt import CertFetcher
from proconsul.config.schema import TLSSettings
from proconsul.rpc import Handler, PeerInfo, RPCClient, RPCError, RPCServer, TLSHandshakeError
from proconsul.rpc.testing import make_pki, tls_settings
from proconsul.rpc.tls import rpc_tls, server_context
from proconsul.server.auto_encrypt_signer import (
    SIGN_METHOD,
    SignReply,
    SignRequest,
    signer_from_config,
)
from proconsul.tls.certs import generate_private_key, load_certificate, private_key_to_pem

PEER = PeerInfo(address=("127.0.0.1", 1), tls=True)
DEADLINE_S = 10.0


def test_signs_a_client_certificate_for_the_public_key(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    key_file = tmp_path / "ca-key.pem"
    key_file.write_text(private_key_to_pem(pki.ca.key))
    handler = signer_from_config(
        {"root_cert": pki.ca_file, "private_key": str(key_file), "leaf_cert_ttl": "1h"},
        datacenter="dc1",
        domain="consul",
    )
    assert handler is not None
    key = generate_private_key()
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    payload = msgspec.msgpack.encode(SignRequest(public_key_pem=public.decode()))
    reply = msgspec.msgpack.decode(asyncio.run(handler(payload, PEER)), type=SignReply)
    cert = load_certificate(reply.cert_pem)
    assert cert.subject.rfc4514_string() == "CN=client.dc1.consul"
    assert cert.public_key() == key.public_key()
    left = (cert.not_valid_after_utc - datetime.now(UTC)).total_seconds()
    assert 3000 < left <= 3600
    assert reply.root_pems == [Path(pki.ca_file).read_text()]


def test_garbage_is_a_bad_request(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    handler = signer_from_config(
        {"root_cert": pki.ca_file, "private_key": private_key_to_pem(pki.ca.key)},
        datacenter="dc1",
        domain="consul",
    )
    assert handler is not None
    with pytest.raises(RPCError, match="bad request"):
        asyncio.run(handler(b"\x01\x02", PEER))


def test_no_ca_key_no_signer() -> None:
    assert signer_from_config({}, datacenter="dc1", domain="consul") is None


def test_the_reply_carries_the_servers_own_roots_after_the_signing_root(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    _, other_file = pki.other_ca("manual")
    signing_root = Path(pki.ca_file).read_text()
    manual = Path(other_file).read_text()
    handler = signer_from_config(
        {"root_cert": pki.ca_file, "private_key": private_key_to_pem(pki.ca.key)},
        datacenter="dc1",
        domain="consul",
        # The signing root again (a server whose ca_file is the agent CA): sent once.
        manual_roots=[signing_root, manual],
    )
    assert handler is not None
    key = generate_private_key()
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    payload = msgspec.msgpack.encode(SignRequest(public_key_pem=public.decode()))
    reply = msgspec.msgpack.decode(asyncio.run(handler(payload, PEER)), type=SignReply)
    assert reply.root_pems == [signing_root, manual]


# ----- the client side, over real TLS on 127.0.0.1 ----------------------------------


class Servers:
    """A signing server whose certificate the client's ca_file trusts, and a
    second server whose certificate comes from the signing (Connect) CA only."""

    def __init__(self, tmp_path: Path) -> None:
        self.agent_pki = make_pki(tmp_path / "agent")  # the client's ca_file
        connect_ca, self.connect_ca_file = self.agent_pki.other_ca("connect-ca")
        self.connect_key_file = str(tmp_path / "agent" / "connect-ca-key.pem")
        self.signer_cert = self.agent_pki.issue("server", "signer")
        self.connect_server_cert = self.agent_pki.issue("server", "connect-server", ca=connect_ca)

    def client_settings(self) -> TLSSettings:
        """The walkthrough's client: ca_file, verify_outgoing, verify_server_hostname."""
        return tls_settings(
            ca_file=self.agent_pki.ca_file, verify_outgoing=True, verify_server_hostname=True
        )


async def start_signer(servers: Servers, handler: Handler) -> RPCServer:
    settings = tls_settings(
        ca_file=servers.connect_ca_file, cert=servers.signer_cert, verify_incoming=True
    )
    server = RPCServer(
        {SIGN_METHOD: handler},
        ssl_context=server_context(settings, allow_anonymous_tls=True),
        anonymous_methods=(SIGN_METHOD,),
    )
    await server.start()
    return server


async def start_connect_server(servers: Servers) -> RPCServer:
    """Verifies clients against the Connect CA, which signs auto_encrypt certificates."""
    settings = tls_settings(
        ca_file=servers.connect_ca_file, cert=servers.connect_server_cert, verify_incoming=True
    )

    async def who(payload: bytes, peer: PeerInfo) -> bytes:
        return peer.common_name.encode()

    server = RPCServer({"who": who}, ssl_context=server_context(settings))
    await server.start()
    return server


def make_fetcher(settings: TLSSettings) -> tuple[RPCClient, CertFetcher]:
    tls = rpc_tls(
        settings, datacenter="dc1", domain="consul", is_server=False, auto_encrypt_tls=True
    )
    bare = rpc_tls(
        settings, datacenter="dc1", domain="consul", is_server=False, auto_encrypt_tls=True
    )
    assert tls.client_context is not None
    client = RPCClient(tls.client_context, tls.server_hostname)
    anonymous = RPCClient(bare.client_context, bare.server_hostname)
    return client, CertFetcher(tls.client_context, anonymous)


def address(server: RPCServer) -> str:
    host, port = server.address
    return f"{host}:{port}"


def test_the_client_trusts_the_roots_it_was_sent_besides_its_ca_file(tmp_path: Path) -> None:
    servers = Servers(tmp_path)
    handler = signer_from_config(
        {"root_cert": servers.connect_ca_file, "private_key": servers.connect_key_file},
        datacenter="dc1",
        domain="consul",
    )
    assert handler is not None

    async def scenario() -> None:
        signer = await start_signer(servers, handler)
        connect_server = await start_connect_server(servers)
        client, fetcher = make_fetcher(servers.client_settings())
        try:
            # Before: the Connect CA is nothing to this client.
            with pytest.raises(TLSHandshakeError) as refused:
                await client.call(address(connect_server), "who", b"", DEADLINE_S)
            assert refused.value.reason == "wrong_ca"
            assert await fetcher.fetch([address(signer)])
            assert fetcher.roots == {Path(servers.connect_ca_file).read_text()}
            # After: the signed certificate is presented and the sent root trusted.
            who = await client.call(address(connect_server), "who", b"", DEADLINE_S)
            assert who == b"client.dc1.consul"
            # The ca_file still counts: the signing server verifies as before.
            assert await fetcher.fetch([address(signer)])
            assert fetcher.renewals == 1
        finally:
            await client.close()
            await fetcher.anonymous.close()
            await signer.close()
            await connect_server.close()

    asyncio.run(scenario())


def test_an_unusable_reply_installs_nothing(tmp_path: Path) -> None:
    servers = Servers(tmp_path)

    async def garbage_roots(payload: bytes, peer: PeerInfo) -> bytes:
        request = msgspec.msgpack.decode(payload, type=SignRequest)
        good = signer_from_config(
            {"root_cert": servers.connect_ca_file, "private_key": servers.connect_key_file},
            datacenter="dc1",
            domain="consul",
        )
        assert good is not None
        reply = msgspec.msgpack.decode(
            await good(msgspec.msgpack.encode(request), peer), type=SignReply
        )
        return msgspec.msgpack.encode(SignReply(cert_pem=reply.cert_pem, root_pems=["junk"]))

    async def scenario() -> None:
        signer = await start_signer(servers, garbage_roots)
        connect_server = await start_connect_server(servers)
        client, fetcher = make_fetcher(servers.client_settings())
        try:
            assert not await fetcher.fetch([address(signer)])
            assert not fetcher.ready.is_set() and fetcher.roots == set()
            with pytest.raises(TLSHandshakeError):
                await client.call(address(connect_server), "who", b"", DEADLINE_S)
        finally:
            await client.close()
            await fetcher.anonymous.close()
            await signer.close()
            await connect_server.close()

    asyncio.run(scenario())
