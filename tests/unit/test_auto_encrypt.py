"""AutoEncrypt.Sign: what an anonymous caller gets, and what it cannot get."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from proconsul.agent.auto_encrypt import SignReply, SignRequest, signer_from_config
from proconsul.rpc import PeerInfo, RPCError
from proconsul.rpc.testing import make_pki
from proconsul.tls.certs import generate_private_key, load_certificate, private_key_to_pem

PEER = PeerInfo(address=("127.0.0.1", 1), tls=True)


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
