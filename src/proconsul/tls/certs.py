"""X.509 building blocks: a CA, the leaves it signs, and helpers to read them.

Job: turn inputs (names, validity, usages, the current time) into PEM text,
and check that a leaf really comes from a CA. Used by `tls ca/cert create`
today and by auto_encrypt and the Connect CA later.

Rules:
- No file or network IO and no clock reads: callers pass `now`. The only
  hidden input is randomness from `cryptography` (keys, serials, signatures).
- Keys are ECDSA P-256, signatures ECDSA-SHA256 (Consul's defaults).
- Private keys are written as PEM "EC PRIVATE KEY" (SEC1), the form Consul
  writes; any unencrypted PEM EC key (SEC1 or PKCS#8) is accepted on load.
- Bad input raises TLSError with a message fit to show a user.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_T = TypeVar("_T")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH

# Certificates start a little in the past so a peer whose clock lags ours
# accepts a certificate the moment it is issued.
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=1)


class TLSError(Exception):
    """Bad certificate input or a failed check; the message is shown to users."""


@dataclass(frozen=True)
class CertKeyPair:
    """A certificate and its private key, both PEM text."""

    cert_pem: str
    key_pem: str


@dataclass(frozen=True)
class CertificateAuthority:
    """A loaded CA: its certificate and the key that signs with it."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> str:
        return certificate_to_pem(self.cert)


@dataclass(frozen=True)
class LeafSpec:
    """What a leaf certificate says: its names, lifetime and allowed uses.

    An empty `ext_key_usages` leaves the extension out, which TLS stacks read
    as "any use" (Consul's `-cli` certificates are made that way).
    """

    common_name: str
    valid_for: timedelta
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[IPAddress, ...] = ()
    uris: tuple[str, ...] = ()
    ext_key_usages: tuple[x509.ObjectIdentifier, ...] = ()


# --- keys and PEM ---------------------------------------------------------


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_to_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")


def certificate_to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_private_key(pem: str | bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(_as_bytes(pem), password=None)
    except (ValueError, TypeError) as exc:
        raise TLSError(f"failed to parse private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TLSError("private key is not an ECDSA key")
    return key


def load_certificate(pem: str | bytes) -> x509.Certificate:
    """Parse the first certificate in `pem`."""
    try:
        return x509.load_pem_x509_certificate(_as_bytes(pem))
    except ValueError as exc:
        raise TLSError(f"failed to parse certificate: {exc}") from None


def load_certificates(pem: str | bytes) -> list[x509.Certificate]:
    """Parse every certificate in a PEM bundle (a CA file may hold several)."""
    try:
        certs = x509.load_pem_x509_certificates(_as_bytes(pem))
    except ValueError as exc:
        raise TLSError(f"failed to parse certificate: {exc}") from None
    return certs


# --- the CA ---------------------------------------------------------------


def generate_ca(
    *,
    now: datetime,
    valid_for: timedelta = timedelta(days=1825),
    common_name: str | None = None,
    permitted_dns_domains: Sequence[str] = (),
    uris: Sequence[str] = (),
    key: ec.EllipticCurvePrivateKey | None = None,
) -> CertKeyPair:
    """Create a self-signed CA.

    `common_name` defaults to Consul's "Consul Agent CA <serial>".
    `permitted_dns_domains`, when given, becomes a critical name constraint:
    the CA may then only vouch for those domains and their subdomains.
    `uris` become URI SANs (Consul puts the signing SPIFFE ID there).
    """
    if key is None:
        key = generate_private_key()
    serial = x509.random_serial_number()
    name = x509.Name([_attr(NameOID.COMMON_NAME, common_name or f"Consul Agent CA {serial}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        _validity(x509.CertificateBuilder(), now, valid_for)
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    if permitted_dns_domains:
        subtrees: list[x509.GeneralName] = [_dns_name(d) for d in _unique(permitted_dns_domains)]
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None),
            critical=True,
        )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    cert = _sign(builder, key)
    return CertKeyPair(certificate_to_pem(cert), private_key_to_pem(key))


def load_ca(cert_pem: str | bytes, key_pem: str | bytes) -> CertificateAuthority:
    """Load a CA and check that the key belongs to the certificate and it may sign."""
    cert = load_certificate(cert_pem)
    key = load_private_key(key_pem)
    if cert.public_key() != key.public_key():
        raise TLSError("CA key does not match the CA certificate")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise TLSError("CA certificate has no basic constraints; it is not a CA") from None
    if not constraints.ca:
        raise TLSError("certificate is not a CA certificate")
    return CertificateAuthority(cert, key)


# --- leaves ---------------------------------------------------------------


def issue_leaf(ca: CertificateAuthority, spec: LeafSpec, *, now: datetime) -> CertKeyPair:
    """Generate a fresh key and a certificate for it signed by `ca`."""
    key = generate_private_key()
    cert_pem = sign_public_key(ca, key.public_key(), spec, now=now)
    return CertKeyPair(cert_pem, private_key_to_pem(key))


def sign_public_key(
    ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    spec: LeafSpec,
    *,
    now: datetime,
) -> str:
    """Sign a certificate for someone else's key (a CSR's, say); returns PEM."""
    if not spec.common_name:
        raise TLSError("a certificate needs a common name")
    if spec.valid_for <= timedelta(0):
        raise TLSError("certificate validity must be positive")
    builder = (
        _validity(x509.CertificateBuilder(), now, spec.valid_for)
        .subject_name(x509.Name([_attr(NameOID.COMMON_NAME, spec.common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(ca.cert), critical=False)
    )
    if spec.ext_key_usages:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(_unique(spec.ext_key_usages))), critical=False
        )
    names = _subject_alt_names(spec)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return certificate_to_pem(_sign(builder, ca.key))


def verify_leaf(
    ca_cert: x509.Certificate,
    leaf: x509.Certificate,
    *,
    now: datetime,
    dns_name: str | None = None,
) -> None:
    """Check `leaf` was signed by `ca_cert`, is in date, obeys the CA's name
    constraints and, if given, covers `dns_name`. Raises TLSError otherwise.

    A sanity check for what we just issued, not a full RFC 5280 path check:
    real peers are verified by the TLS stack.
    """
    try:
        leaf.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        reason = str(exc) or "bad signature"
        raise TLSError(f"certificate is not signed by the CA: {reason}") from None
    for cert, what in ((ca_cert, "CA certificate"), (leaf, "certificate")):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise TLSError(f"{what} is not valid at {now.isoformat()}")
    leaf_dns = _san_dns_names(leaf)
    _check_name_constraints(ca_cert, leaf_dns, _san_ip_addresses(leaf))
    if dns_name is not None and not any(_hostname_matches(p, dns_name) for p in leaf_dns):
        raise TLSError(f"certificate is not valid for {dns_name}")


# --- identifiers ----------------------------------------------------------


def colon_hex(data: bytes) -> str:
    """Lower-case hex pairs joined by colons, Consul's form for serials and key IDs."""
    return ":".join(f"{b:02x}" for b in data)


def serial_colon_hex(cert: x509.Certificate) -> str:
    serial = cert.serial_number
    return colon_hex(serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big"))


def fingerprint_sha1(cert: x509.Certificate) -> str:
    """SHA-1 of the DER certificate in colon hex: what Consul uses as a CA root ID."""
    return colon_hex(hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest())


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return colon_hex(cert.fingerprint(hashes.SHA256()))


def subject_key_id(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(_public_key(cert)).digest


# --- internals ------------------------------------------------------------


def _as_bytes(pem: str | bytes) -> bytes:
    return pem.encode("ascii", "replace") if isinstance(pem, str) else pem


def _attr(oid: x509.ObjectIdentifier, value: str) -> x509.NameAttribute[str]:
    try:
        return x509.NameAttribute(oid, value)
    except ValueError as exc:  # e.g. a common name longer than 64 characters
        raise TLSError(f"invalid name {value!r}: {exc}") from None


def _dns_name(name: str) -> x509.DNSName:
    try:
        return x509.DNSName(name)
    except ValueError as exc:  # non-ASCII; callers must pass IDNA A-labels
        raise TLSError(f"invalid DNS name {name!r}: {exc}") from None


def _validity(
    builder: x509.CertificateBuilder, now: datetime, valid_for: timedelta
) -> x509.CertificateBuilder:
    if now.tzinfo is None:
        raise TLSError("`now` must be timezone-aware")
    return builder.not_valid_before(now - CLOCK_SKEW_ALLOWANCE).not_valid_after(now + valid_for)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    # Leaves get digitalSignature only: RFC 5480 does not allow
    # keyEncipherment on EC keys (Consul sets it anyway; TLS stacks ignore it).
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(_public_key(ca_cert))
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise TLSError("certificate key is not an ECDSA key")
    return key


def _subject_alt_names(spec: LeafSpec) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [_dns_name(d) for d in _unique(spec.dns_names)]
    names += [x509.IPAddress(ip) for ip in _unique(spec.ip_addresses)]
    names += [x509.UniformResourceIdentifier(u) for u in _unique(spec.uris)]
    return names


def _sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    try:
        return builder.sign(key, hashes.SHA256())
    except ValueError as exc:
        raise TLSError(f"failed to create certificate: {exc}") from None


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return x509.SubjectAlternativeName([])


def _san_dns_names(cert: x509.Certificate) -> list[str]:
    return _sans(cert).get_values_for_type(x509.DNSName)


def _san_ip_addresses(cert: x509.Certificate) -> list[IPAddress]:
    values = _sans(cert).get_values_for_type(x509.IPAddress)
    return [v for v in values if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address)]


def _check_name_constraints(
    ca_cert: x509.Certificate, dns_names: Iterable[str], ips: Iterable[IPAddress]
) -> None:
    try:
        nc = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return
    permitted = list(nc.permitted_subtrees or [])
    excluded = list(nc.excluded_subtrees or [])
    for name in dns_names:
        allowed = [s.value for s in permitted if isinstance(s, x509.DNSName)]
        denied = [s.value for s in excluded if isinstance(s, x509.DNSName)]
        if (allowed and not any(_within_domain(name, d) for d in allowed)) or any(
            _within_domain(name, d) for d in denied
        ):
            raise TLSError(f"the CA's name constraints do not allow {name}")
    for ip in ips:
        allowed_nets = _ip_networks(permitted)
        denied_nets = _ip_networks(excluded)
        if (allowed_nets and not any(ip in n for n in allowed_nets)) or any(
            ip in n for n in denied_nets
        ):
            raise TLSError(f"the CA's name constraints do not allow {ip}")


def _ip_networks(
    subtrees: Iterable[x509.GeneralName],
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    values = (s.value for s in subtrees if isinstance(s, x509.IPAddress))
    return [v for v in values if isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network)]


def _within_domain(name: str, constraint: str) -> bool:
    """RFC 5280 DNS constraint: the domain itself or any name below it;
    a leading dot means only names below it."""
    name, constraint = name.lower().rstrip("."), constraint.lower().rstrip(".")
    if constraint.startswith("."):
        return name.endswith(constraint)
    return not constraint or name == constraint or name.endswith("." + constraint)


def _hostname_matches(pattern: str, host: str) -> bool:
    """RFC 6125 matching: exact, or a `*.` wildcard standing for one left-most label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def _unique(items: Iterable[_T]) -> list[_T]:
    """Drop repeats, keep first-seen order (repeated SANs are legal but noisy)."""
    return list(dict.fromkeys(items))
