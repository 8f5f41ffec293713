"""The certificate library: CA and leaf contents, loading, verification, identifiers."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proconsul import tls

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


@pytest.fixture(scope="module")
def ca() -> tls.CertificateAuthority:
    pair = tls.generate_ca(now=NOW)
    return tls.load_ca(pair.cert_pem, pair.key_pem)


def test_ca_is_a_self_signed_p256_ca() -> None:
    pair = tls.generate_ca(now=NOW, valid_for=timedelta(days=10))
    cert = tls.load_certificate(pair.cert_pem)
    key = tls.load_private_key(pair.key_pem)
    assert isinstance(key.curve, ec.SECP256R1)
    assert pair.key_pem.startswith("-----BEGIN EC PRIVATE KEY-----")
    assert cert.public_key() == key.public_key()
    assert cert.issuer == cert.subject
    assert _cn(cert) == f"Consul Agent CA {cert.serial_number}"
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and usage.digital_signature
    assert cert.not_valid_after_utc == NOW + timedelta(days=10)
    assert cert.not_valid_before_utc <= NOW
    cert.verify_directly_issued_by(cert)


def test_ca_options_common_name_constraints_and_uri() -> None:
    pair = tls.generate_ca(
        now=NOW,
        common_name="My CA",
        permitted_dns_domains=["consul", "localhost", "consul"],
        uris=["spiffe://abc.consul"],
    )
    cert = tls.load_certificate(pair.cert_pem)
    assert _cn(cert) == "My CA"
    nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert nc.value.permitted_subtrees == [x509.DNSName("consul"), x509.DNSName("localhost")]
    assert _sans(cert).get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://abc.consul"
    ]


def test_two_cas_differ() -> None:
    a, b = tls.generate_ca(now=NOW), tls.generate_ca(now=NOW)
    assert a.key_pem != b.key_pem
    assert tls.load_certificate(a.cert_pem).serial_number != (
        tls.load_certificate(b.cert_pem).serial_number
    )


def test_leaf_contents(ca: tls.CertificateAuthority) -> None:
    spec = tls.LeafSpec(
        common_name="web",
        valid_for=timedelta(hours=72),
        dns_names=("web.example", "localhost", "web.example"),
        ip_addresses=(ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("::1")),
        uris=("spiffe://abc.consul/ns/default/dc/dc1/svc/web",),
        ext_key_usages=(tls.SERVER_AUTH, tls.CLIENT_AUTH),
    )
    pair = tls.issue_leaf(ca, spec, now=NOW)
    cert = tls.load_certificate(pair.cert_pem)
    key = tls.load_private_key(pair.key_pem)
    assert cert.public_key() == key.public_key()
    assert isinstance(key.curve, ec.SECP256R1)
    assert _cn(cert) == "web"
    assert cert.issuer == ca.cert.subject
    sans = _sans(cert)
    assert sans.get_values_for_type(x509.DNSName) == ["web.example", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == list(spec.uris)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc == NOW + timedelta(hours=72)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == tls.subject_key_id(ca.cert)
    tls.verify_leaf(ca.cert, cert, now=NOW, dns_name="web.example")


def test_leaf_without_usages_has_no_eku(ca: tls.CertificateAuthority) -> None:
    spec = tls.LeafSpec(common_name="cli", valid_for=timedelta(days=1))
    cert = tls.load_certificate(tls.issue_leaf(ca, spec, now=NOW).cert_pem)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_sign_public_key_for_a_foreign_key(ca: tls.CertificateAuthority) -> None:
    key = tls.generate_private_key()
    spec = tls.LeafSpec(common_name="agent", valid_for=timedelta(days=1))
    cert = tls.load_certificate(tls.sign_public_key(ca, key.public_key(), spec, now=NOW))
    assert cert.public_key() == key.public_key()
    tls.verify_leaf(ca.cert, cert, now=NOW)


def test_verify_rejects_other_ca_expiry_and_wrong_name(ca: tls.CertificateAuthority) -> None:
    spec = tls.LeafSpec(common_name="x", valid_for=timedelta(days=1), dns_names=("a.consul",))
    cert = tls.load_certificate(tls.issue_leaf(ca, spec, now=NOW).cert_pem)
    other = tls.load_certificate(tls.generate_ca(now=NOW).cert_pem)
    with pytest.raises(tls.TLSError, match="not signed by the CA"):
        tls.verify_leaf(other, cert, now=NOW)
    with pytest.raises(tls.TLSError, match="not valid at"):
        tls.verify_leaf(ca.cert, cert, now=NOW + timedelta(days=2))
    with pytest.raises(tls.TLSError, match=r"not valid for b\.consul"):
        tls.verify_leaf(ca.cert, cert, now=NOW, dns_name="b.consul")
    tls.verify_leaf(ca.cert, cert, now=NOW, dns_name="A.Consul")


def test_verify_wildcard_names(ca: tls.CertificateAuthority) -> None:
    spec = tls.LeafSpec(common_name="x", valid_for=timedelta(days=1), dns_names=("*.dc1.consul",))
    cert = tls.load_certificate(tls.issue_leaf(ca, spec, now=NOW).cert_pem)
    tls.verify_leaf(ca.cert, cert, now=NOW, dns_name="server.dc1.consul")
    for wrong in ("dc1.consul", "a.server.dc1.consul"):
        with pytest.raises(tls.TLSError):
            tls.verify_leaf(ca.cert, cert, now=NOW, dns_name=wrong)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("consul", True),
        ("server.dc1.consul", True),
        ("SERVER.DC1.CONSUL", True),
        ("localhost", True),
        ("notconsul", False),
        ("consul.evil.com", False),
        ("evil.com", False),
    ],
)
def test_verify_enforces_name_constraints(name: str, ok: bool) -> None:
    pair = tls.generate_ca(now=NOW, permitted_dns_domains=["consul", "localhost"])
    ca = tls.load_ca(pair.cert_pem, pair.key_pem)
    spec = tls.LeafSpec(common_name="x", valid_for=timedelta(days=1), dns_names=(name,))
    cert = tls.load_certificate(tls.issue_leaf(ca, spec, now=NOW).cert_pem)
    if ok:
        tls.verify_leaf(ca.cert, cert, now=NOW)
    else:
        with pytest.raises(tls.TLSError, match="name constraints"):
            tls.verify_leaf(ca.cert, cert, now=NOW)


def test_load_ca_checks() -> None:
    a, b = tls.generate_ca(now=NOW), tls.generate_ca(now=NOW)
    with pytest.raises(tls.TLSError, match="does not match"):
        tls.load_ca(a.cert_pem, b.key_pem)
    ca = tls.load_ca(a.cert_pem, a.key_pem)
    leaf = tls.issue_leaf(ca, tls.LeafSpec("x", timedelta(days=1)), now=NOW)
    with pytest.raises(tls.TLSError, match="not a CA"):
        tls.load_ca(leaf.cert_pem, leaf.key_pem)
    with pytest.raises(tls.TLSError, match="failed to parse certificate"):
        tls.load_ca("garbage", a.key_pem)
    with pytest.raises(tls.TLSError, match="failed to parse private key"):
        tls.load_ca(a.cert_pem, "garbage")
    assert tls.load_ca(a.cert_pem.encode(), a.key_pem.encode()).cert_pem == a.cert_pem


def test_bad_inputs_raise_tls_error(ca: tls.CertificateAuthority) -> None:
    with pytest.raises(tls.TLSError, match="timezone-aware"):
        tls.generate_ca(now=datetime(2024, 1, 1))
    with pytest.raises(tls.TLSError, match="common name"):
        tls.issue_leaf(ca, tls.LeafSpec("", timedelta(days=1)), now=NOW)
    with pytest.raises(tls.TLSError, match="positive"):
        tls.issue_leaf(ca, tls.LeafSpec("x", timedelta(0)), now=NOW)
    with pytest.raises(tls.TLSError, match="invalid name"):
        tls.issue_leaf(ca, tls.LeafSpec("x" * 65, timedelta(days=1)), now=NOW)
    with pytest.raises(tls.TLSError, match="invalid DNS name"):
        tls.issue_leaf(ca, tls.LeafSpec("x", timedelta(days=1), dns_names=("bücher.de",)), now=NOW)


def test_identifiers(ca: tls.CertificateAuthority) -> None:
    assert tls.colon_hex(b"\x0a\xff\x00") == "0a:ff:00"
    serial = tls.serial_colon_hex(ca.cert)
    assert int(serial.replace(":", ""), 16) == ca.cert.serial_number
    assert len(tls.fingerprint_sha1(ca.cert).split(":")) == 20
    assert len(tls.fingerprint_sha256(ca.cert).split(":")) == 32
    assert tls.fingerprint_sha1(ca.cert) == tls.fingerprint_sha1(ca.cert)


def test_load_certificates_reads_a_bundle() -> None:
    a, b = tls.generate_ca(now=NOW), tls.generate_ca(now=NOW)
    certs = tls.load_certificates(a.cert_pem + b.cert_pem)
    assert [tls.certificate_to_pem(c) for c in certs] == [a.cert_pem, b.cert_pem]


@pytest.mark.parametrize(
    ("role", "dns", "ips", "usages"),
    [
        (
            "server",
            ["server.dc2.example", "n1.server.dc2.example", "localhost", "extra.example"],
            ["127.0.0.1", "10.1.1.1"],
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        ),
        (
            "client",
            ["client.dc2.example", "localhost", "extra.example"],
            ["127.0.0.1", "10.1.1.1"],
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        ),
        ("cli", ["cli.dc2.example", "localhost", "extra.example"], ["10.1.1.1"], []),
    ],
)
def test_agent_cert_spec(
    role: tls.Role, dns: list[str], ips: list[str], usages: list[x509.ObjectIdentifier]
) -> None:
    spec = tls.agent_cert_spec(
        role,
        datacenter="dc2",
        domain="example",
        valid_for=timedelta(days=1),
        node="n1" if role == "server" else None,
        extra_dns_names=["extra.example"],
        extra_ip_addresses=[ipaddress.ip_address("10.1.1.1")],
    )
    assert spec.common_name == f"{role}.dc2.example"
    assert list(spec.dns_names) == dns
    assert [str(ip) for ip in spec.ip_addresses] == ips
    assert list(spec.ext_key_usages) == usages


def test_agent_cert_spec_rules() -> None:
    assert tls.server_name("dc1", "consul") == "server.dc1.consul"
    with pytest.raises(tls.TLSError, match="-node requires -server"):
        tls.agent_cert_spec(
            "client", datacenter="dc1", domain="consul", valid_for=timedelta(days=1), node="n1"
        )
