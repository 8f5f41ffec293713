"""connect/ca.py: the built-in CA root has Consul's fields, its row describes it,
and the client certificates it signs verify against it."""

from __future__ import annotations

import hashlib
import random
import re
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from proconsul.connect.ca import (
    ROOT_NAME,
    ROOT_VALIDITY,
    CAKeyPair,
    check_key_pair,
    compact_id,
    generate_root,
    new_cluster_id,
    root_row,
    sign_agent_client,
    signing_spiffe_id,
    trust_domain,
)
from proconsul.structs.commands import CARootsSetRequest
from proconsul.tls.certs import (
    CLOCK_SKEW_ALLOWANCE,
    TLSError,
    generate_ca,
    generate_private_key,
    load_certificate,
    verify_leaf,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CLUSTER = "7f42f496-fbc7-8692-05ed-334aa5340c1e"


def make_root(seed: int = 1) -> CAKeyPair:
    return generate_root(cluster_id=CLUSTER, now=NOW, rng=random.Random(seed))


def test_cluster_id_is_a_uuid_from_the_rng() -> None:
    first = new_cluster_id(random.Random(7))
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", first)
    assert new_cluster_id(random.Random(7)) == first
    assert new_cluster_id(random.Random(8)) != first
    assert trust_domain(first) == f"{first}.consul"


def test_compact_id_is_short_base36() -> None:
    rng = random.Random(3)
    for _ in range(200):
        assert re.fullmatch(r"[0-9a-z]{8}", compact_id(rng))


def test_root_has_the_built_in_providers_fields() -> None:
    cert = load_certificate(make_root().cert_pem)
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert re.fullmatch(r"pri-[0-9a-z]{8}\.consul\.ca\.7f42f496\.consul", str(cn))
    assert cert.issuer == cert.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{CLUSTER}.consul"
    ]
    assert signing_spiffe_id(CLUSTER) == f"spiffe://{CLUSTER}.consul"
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
    assert cert.not_valid_before_utc == NOW - CLOCK_SKEW_ALLOWANCE
    assert cert.not_valid_after_utc == NOW + ROOT_VALIDITY
    assert timedelta(hours=87600) == ROOT_VALIDITY
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ski == hashlib.sha256(spki).digest()
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski
    assert 0 < cert.serial_number < 2**53
    # Self-signed: the certificate verifies against itself.
    cert.verify_directly_issued_by(cert)


def test_root_key_and_names_come_from_the_rng() -> None:
    one, again, other = make_root(5), make_root(5), make_root(6)
    cert_one, cert_again = load_certificate(one.cert_pem), load_certificate(again.cert_pem)
    assert cert_one.public_key() == cert_again.public_key()
    assert cert_one.subject == cert_again.subject
    assert cert_one.serial_number == cert_again.serial_number
    assert load_certificate(other.cert_pem).public_key() != cert_one.public_key()
    assert one.key_pem == again.key_pem
    assert "EC PRIVATE KEY" in one.key_pem


def test_root_needs_a_cluster_id_and_an_aware_now() -> None:
    with pytest.raises(TLSError):
        generate_root(cluster_id="", now=NOW, rng=random.Random(1))
    with pytest.raises(TLSError):
        generate_root(cluster_id=CLUSTER, now=NOW.replace(tzinfo=None), rng=random.Random(1))


def test_row_describes_the_root_like_consuls_api() -> None:
    pair = make_root()
    cert = load_certificate(pair.cert_pem)
    row = root_row(pair.cert_pem, cluster_id=CLUSTER)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert row.id == ":".join(f"{b:02x}" for b in hashlib.sha1(der).digest())
    assert row.name == ROOT_NAME == "Consul CA Primary Cert"
    assert row.serial_number == cert.serial_number
    assert re.fullmatch(r"([0-9a-f]{2}:){31}[0-9a-f]{2}", row.signing_key_id)
    assert row.external_trust_domain == CLUSTER
    assert row.not_before == cert.not_valid_before_utc
    assert row.not_after == cert.not_valid_after_utc
    assert row.root_cert == pair.cert_pem
    assert row.active
    assert (row.private_key_type, row.private_key_bits) == ("ec", 256)
    body = msgspec.json.decode(msgspec.json.encode(row))
    assert list(body) == [
        "ID",
        "Name",
        "SerialNumber",
        "SigningKeyID",
        "ExternalTrustDomain",
        "NotBefore",
        "NotAfter",
        "RootCert",
        "IntermediateCerts",
        "Active",
        "PrivateKeyType",
        "PrivateKeyBits",
        "CreateIndex",
        "ModifyIndex",
    ]
    assert body["NotAfter"].endswith("Z")
    assert "PRIVATE" not in msgspec.json.encode(row).decode()


def test_row_of_a_big_serial_keeps_its_low_64_bits() -> None:
    pair = generate_ca(now=NOW)  # `tls ca create`: a 159-bit random serial
    row = root_row(pair.cert_pem, cluster_id=CLUSTER)
    assert row.serial_number == load_certificate(pair.cert_pem).serial_number % 2**64


def test_signed_client_certificate_verifies_against_the_root() -> None:
    pair = make_root()
    client_key = generate_private_key()
    leaf_pem = sign_agent_client(
        pair.cert_pem,
        pair.key_pem,
        client_key.public_key(),
        datacenter="dc1",
        domain="consul",
        valid_for=timedelta(hours=72),
        now=NOW,
    )
    root, leaf = load_certificate(pair.cert_pem), load_certificate(leaf_pem)
    verify_leaf(root, leaf, now=NOW, dns_name="client.dc1.consul")
    verify_leaf(root, leaf, now=NOW, dns_name="localhost")
    assert leaf.public_key() == client_key.public_key()
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=72)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The leaf names its issuer by the root's (SHA-256) key ID.
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    with pytest.raises(TLSError):
        verify_leaf(load_certificate(make_root(9).cert_pem), leaf, now=NOW)


def test_key_pair_check_refuses_a_foreign_key() -> None:
    pair, other = make_root(1), make_root(2)
    assert check_key_pair(pair.cert_pem, pair.key_pem) == pair
    with pytest.raises(TLSError, match="does not match"):
        check_key_pair(pair.cert_pem, other.key_pem)


def test_reprs_never_show_a_private_key() -> None:
    pair = make_root()
    assert "PRIVATE" not in repr(pair)
    row = root_row(pair.cert_pem, cluster_id=CLUSTER)
    command = CARootsSetRequest(
        roots=[row], cluster_id=CLUSTER, signing_keys={row.id: pair.key_pem}
    )
    assert "PRIVATE" not in repr(command) and "redacted" in repr(command)
    assert "PRIVATE" not in str(command)
