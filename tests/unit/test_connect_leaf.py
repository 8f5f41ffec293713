"""connect/ca.py: service leaves from CSRs, and cross-signing for root rotation.

A leaf signed from a good CSR carries the service's SPIFFE ID, CN the
service, Consul's key usages and the root's key ID, lasts the configured TTL,
and verifies against the root with a full RFC 5280 path check. A CSR for
another service, datacenter or trust domain, with a non-P-256 key or a
broken signature is refused. After a rotation, a leaf of the new root
verifies against the old root alone through the cross-signed certificate.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from proconsul.connect.ca import (
    CAKeyPair,
    CSRError,
    check_root_for_cluster,
    cross_sign,
    generate_root,
    leaf_authority_key_id,
    leaf_csr,
    root_row,
    service_spiffe_id,
    sign_service_leaf,
    trust_domain,
)
from proconsul.connect.ca_config import CAConfigError, settings, stored_config
from proconsul.tls.certs import TLSError, load_certificate, load_certificates

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CLUSTER = "7f42f496-fbc7-8692-05ed-334aa5340c1e"
DOMAIN = trust_domain(CLUSTER)
DC = "dc1"


def make_root(seed: int = 1) -> CAKeyPair:
    return generate_root(cluster_id=CLUSTER, now=NOW, rng=random.Random(seed))


def csr_for(service: str, *, dc: str = DC, domain: str = DOMAIN) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return leaf_csr(key, trust_domain=domain, datacenter=dc, service=service)


def sign(root: CAKeyPair, csr: str, service: str = "web", **kwargs: object) -> str:
    issued = sign_service_leaf(
        root.cert_pem,
        root.key_pem,
        csr,
        trust_domain=DOMAIN,
        datacenter=DC,
        service=service,
        valid_for=timedelta(hours=72),
        now=NOW,
        **kwargs,  # type: ignore[arg-type]
    )
    return issued.cert_pem


def verify_client(leaf_pem_chain: str, trusted: list[str], when: datetime = NOW) -> None:
    """A full path check as a TLS peer would do it (cryptography's verifier)."""
    leaf, *rest = load_certificates(leaf_pem_chain)
    store = Store([load_certificate(pem) for pem in trusted])
    verifier = PolicyBuilder().store(store).time(when).build_client_verifier()
    verifier.verify(leaf, rest)


def test_good_csr_gives_consuls_leaf() -> None:
    root = make_root()
    issued = sign_service_leaf(
        root.cert_pem,
        root.key_pem,
        csr_for("web"),
        trust_domain=DOMAIN,
        datacenter=DC,
        service="web",
        valid_for=timedelta(hours=72),
        now=NOW,
    )
    cert = load_certificate(issued.cert_pem)
    uri = f"spiffe://{DOMAIN}/ns/default/dc/dc1/svc/web"
    assert service_spiffe_id(DOMAIN, DC, "web") == uri
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web"
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and usage.key_agreement
    assert not usage.key_cert_sign
    ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(ext) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # notBefore a minute back for clock skew; TTL from the configuration.
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(hours=72)
    assert issued.valid_after == cert.not_valid_before_utc
    assert issued.valid_before == cert.not_valid_after_utc
    assert (issued.service, issued.service_uri) == ("web", uri)
    row = root_row(root.cert_pem, cluster_id=CLUSTER)
    assert leaf_authority_key_id(issued.cert_pem) == row.signing_key_id
    assert issued.serial_number.count(":") >= 1 and issued.private_key_pem == ""
    verify_client(issued.cert_pem, [root.cert_pem])


def test_ttl_comes_from_the_caller() -> None:
    root = make_root()
    issued = sign_service_leaf(
        root.cert_pem,
        root.key_pem,
        csr_for("web"),
        trust_domain=DOMAIN,
        datacenter=DC,
        service="web",
        valid_for=timedelta(hours=1),
        now=NOW,
    )
    assert issued.valid_before - issued.valid_after == timedelta(hours=1)


def test_csr_for_another_service_is_refused() -> None:
    root = make_root()
    with pytest.raises(CSRError, match="SPIFFE ID in CSR is for service 'api', not 'web'"):
        sign(root, csr_for("api"), "web")


def test_csr_from_another_datacenter_or_trust_domain_is_refused() -> None:
    root = make_root()
    with pytest.raises(CSRError, match="from a different datacenter: dc2, we are dc1"):
        sign(root, csr_for("web", dc="dc2"))
    with pytest.raises(CSRError, match=r"from a different trust domain: other\.consul"):
        sign(root, csr_for("web", domain="other.consul"))


def test_wrong_key_type_is_refused() -> None:
    root = make_root()
    key = ec.generate_private_key(ec.SECP384R1())
    csr = leaf_csr(key, trust_domain=DOMAIN, datacenter=DC, service="web")
    with pytest.raises(CSRError, match="EC P-256"):
        sign(root, csr)


def test_csr_without_a_service_id_or_garbage_is_refused() -> None:
    root = make_root()
    key = ec.generate_private_key(ec.SECP256R1())
    plain = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://x/agent/y")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    with pytest.raises(CSRError, match="must be a service"):
        sign(root, plain)
    with pytest.raises(CSRError, match="failed to parse CSR"):
        sign(root, "not a csr")


def test_tampered_csr_signature_is_refused() -> None:
    root = make_root()
    csr = x509.load_pem_x509_csr(csr_for("web").encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CSRError, match="signature"):
        sign(root, tampered.decode())


def test_cross_signed_root_bridges_old_trust_to_new_leaves() -> None:
    old, new = make_root(1), make_root(2)
    bridge = cross_sign(new.cert_pem, old.cert_pem, old.key_pem, now=NOW)
    chain = sign(new, csr_for("web"), intermediates=[bridge])
    assert len(load_certificates(chain)) == 2
    verify_client(chain, [new.cert_pem])  # peers that have the new root
    verify_client(chain, [old.cert_pem])  # peers that still hold only the old root
    # Without the bridge, the old root alone does not accept the new leaf.
    leaf_only = chain.split("-----END CERTIFICATE-----\n")[0] + "-----END CERTIFICATE-----\n"
    with pytest.raises(Exception, match=r"(?i)issuer|candidates|path"):
        verify_client(leaf_only, [old.cert_pem])


def test_a_given_root_must_carry_the_cluster_signing_id() -> None:
    root = make_root()
    check_root_for_cluster(root.cert_pem, CLUSTER)
    with pytest.raises(TLSError, match="URI SAN must be the cluster's signing ID"):
        check_root_for_cluster(root.cert_pem, "11111111-2222-3333-4444-555555555555")


# ----- the CA configuration -----------------------------------------------------


def test_config_defaults_and_spellings() -> None:
    found = settings({"leaf_cert_ttl": "2h"})
    assert found.leaf_ttl_s == 7200 and found.key_type == "ec" and found.key_bits == 256
    assert settings({}).leaf_ttl_s == 72 * 3600
    shown = stored_config({"leaf_cert_ttl": "2h", "private_key": "SECRET", "RootCert": "x"})
    assert shown["LeafCertTTL"] == "2h" and shown["IntermediateCertTTL"] == "8760h"
    assert "PrivateKey" not in shown and "RootCert" not in shown
    assert "SECRET" not in repr(settings({"PrivateKey": "SECRET"}))


@pytest.mark.parametrize(
    ("config", "text"),
    [
        ({"LeafCertTTL": "30m"}, "leaf cert TTL must be greater or equal than 1h0m0s"),
        ({"LeafCertTTL": "8761h"}, "leaf cert TTL must be less than 8760h0m0s"),
        (
            {"LeafCertTTL": "72h", "IntermediateCertTTL": "100h"},
            "Intermediate Cert TTL must be greater or equal than 3 * LeafCertTTL (>=216h0m0s).",
        ),
        (
            {"RootCertTTL": "1000h"},
            "root cert TTL is set and is not greater than intermediate cert ttl. "
            "root cert ttl: 1000h0m0s, intermediate cert ttl: 8760h0m0s",
        ),
        ({"PrivateKeyBits": 255}, "EC key length must be one of (224, 256, 384, 521) bits"),
        ({"PrivateKeyType": "dsa"}, "private key type must be either 'ec' or 'rsa'"),
        ({"LeafCertTTL": "soon"}, "error decoding config: 'LeafCertTTL': time: invalid"),
    ],
)
def test_config_is_validated_with_consuls_texts(config: dict[str, object], text: str) -> None:
    with pytest.raises(CAConfigError) as caught:
        settings(config)
    assert str(caught.value).startswith(text)


def test_skip_validate_allows_short_ttls() -> None:
    assert settings({"leaf_cert_ttl": "4s", "skip_validate": True}).leaf_ttl_s == 4


def test_service_names_a_uri_cannot_carry_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    for name in ("ü", "a/b", "a\x00b"):
        with pytest.raises(CSRError, match="cannot make"):
            leaf_csr(key, trust_domain=DOMAIN, datacenter=DC, service=name)


def test_a_long_service_name_has_no_cn_but_its_spiffe_id() -> None:
    root = make_root()
    name = "s" * 80
    cert = load_certificate(sign(root, csr_for(name), name))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        service_spiffe_id(DOMAIN, DC, name)
    ]
