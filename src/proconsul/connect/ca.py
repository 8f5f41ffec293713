"""The Connect CA's certificates: the built-in provider's root and the leaves it signs.

Job: generate a CA root the way Consul's built-in ("consul") provider does,
describe a root certificate as a `CARoot` row, sign an agent's client
certificate (auto_encrypt) and a service's CSR (`sign_service_leaf`) with
whichever CA is active, build a service's CSR (`leaf_csr`), and cross-sign a
new root with the old one during a rotation (`cross_sign`). The one way to
sign an agent leaf is `sign_agent_client`; X.509 mechanics are tls/certs.py's.

Facts (Consul's built-in provider, as its roots show):
- key: ECDSA P-256; signature ECDSA-SHA256.
- subject and issuer CN `pri-<compact id>.consul.ca.<first 8 of cluster ID>.consul`
  (the compact id is a short lower-case base-36 random string).
- URI SAN `spiffe://<cluster ID>.consul`: the trust domain's signing ID.
- validity 10 years (87600h); basicConstraints CA (critical); keyUsage
  digitalSignature, keyCertSign, cRLSign (critical); subject and authority
  key IDs are the SHA-256 of the public key (DER SubjectPublicKeyInfo),
  which is also the row's SigningKeyID.
- the row: ID is the SHA-1 fingerprint of the DER certificate in colon hex,
  Name "Consul CA Primary Cert", SerialNumber a small unsigned integer
  (JSON uint64 in Consul's API: it must fit).

Rules:
- Pure: no clock, no global randomness, no IO. `now` and `rng` come from the
  caller. The root's key and serial are drawn from `rng`, so production
  callers pass `random.SystemRandom()` (the OS's CSPRNG) and tests a seeded
  `random.Random`. ECDSA signature nonces and leaf serials come from
  `cryptography` (OpenSSL), as in tls/certs.py.
- Private keys are returned to the caller and never logged or put in a row.
- Bad input raises `TLSError` with a message fit for a user.
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proconsul.structs.connect import CARoot, IssuedCert
from proconsul.tls.agent import agent_cert_spec
from proconsul.tls.certs import (
    CLOCK_SKEW_ALLOWANCE,
    TLSError,
    certificate_to_pem,
    colon_hex,
    fingerprint_sha1,
    load_ca,
    load_certificate,
    private_key_to_pem,
    serial_colon_hex,
    sign_public_key,
    subject_key_id,
)

ROOT_NAME = "Consul CA Primary Cert"
ROOT_VALIDITY = timedelta(days=3650)  # Consul's root_cert_ttl default, 87600h
DEFAULT_LEAF_TTL = timedelta(hours=72)  # Consul's leaf_cert_ttl default
# The order of the P-256 group: a private scalar lies in [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
# Serials stay below 2**53 so every JSON reader (JavaScript included) reads
# SerialNumber exactly; Consul's are small counters, uint64 on the wire.
_SERIAL_BITS = 53
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class CAKeyPair:
    """A CA certificate and its private key, both PEM. Keep the key out of logs."""

    cert_pem: str
    key_pem: str

    def __repr__(self) -> str:  # a stray repr in a log must not print the key
        return "CAKeyPair(cert_pem=..., key_pem=<redacted>)"


# ----- names ------------------------------------------------------------------


def new_cluster_id(rng: random.Random) -> str:
    """A cluster ID (Consul's: a random UUID), chosen once with the first root."""
    return str(uuid.UUID(int=rng.getrandbits(128)))


def trust_domain(cluster_id: str) -> str:
    """`<cluster ID>.consul`, the SPIFFE trust domain of every Connect identity."""
    return f"{cluster_id}.consul"


def signing_spiffe_id(cluster_id: str) -> str:
    """The URI a Connect CA certificate carries: `spiffe://<trust domain>`."""
    return f"spiffe://{trust_domain(cluster_id)}"


def compact_id(rng: random.Random) -> str:
    """An 8-character lower-case base-36 random string (the `<id>` in `pri-<id>`)."""
    value = 36**7 + rng.randrange(36**8 - 36**7)  # exactly 8 digits
    digits = []
    while value:
        value, rest = divmod(value, 36)
        digits.append(_BASE36[rest])
    return "".join(reversed(digits))


def root_common_name(unique_id: str, cluster_id: str) -> str:
    return f"pri-{unique_id}.consul.ca.{cluster_id[:8]}.consul"


# ----- the root ------------------------------------------------------------------


def _key_from_rng(rng: random.Random) -> ec.EllipticCurvePrivateKey:
    scalar = rng.randrange(1, _P256_ORDER)
    return ec.derive_private_key(scalar, ec.SECP256R1())


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo: the subject/authority key ID."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def generate_root(
    *,
    cluster_id: str,
    now: datetime,
    rng: random.Random,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> CAKeyPair:
    """A new self-signed built-in CA root for the cluster `cluster_id`, for
    `key` when given (Consul: a PrivateKey without a RootCert), else a new key."""
    if not cluster_id:
        raise TLSError("a Connect CA root needs a cluster ID")
    if now.tzinfo is None:
        raise TLSError("`now` must be timezone-aware")
    if key is None:
        key = _key_from_rng(rng)
    kid = key_id(key.public_key())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, root_common_name(compact_id(rng), cluster_id))]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(rng.randrange(1, 1 << _SERIAL_BITS))
        # Backdated like every certificate we issue (tls/certs.py): a peer
        # whose clock lags still accepts the root the moment it exists.
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier(kid), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(
                key_identifier=kid, authority_cert_issuer=None, authority_cert_serial_number=None
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(signing_spiffe_id(cluster_id))]
            ),
            critical=False,
        )
    )
    cert = builder.sign(key, hashes.SHA256())
    return CAKeyPair(certificate_to_pem(cert), private_key_to_pem(key))


def root_row(cert_pem: str, *, cluster_id: str, active: bool = True) -> CARoot:
    """The `CARoot` row describing `cert_pem` (indexes are the state store's)."""
    cert = load_certificate(cert_pem)
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise TLSError("CA certificate key is not an ECDSA key")
    serial = cert.serial_number
    if serial >= 1 << 64:
        # The row holds a uint64 (as Consul's does); a bigger serial, e.g. a
        # `tls ca create` CA given as ca_config.root_cert, shows its low 64
        # bits as Consul's does. The certificate itself is untouched.
        serial &= (1 << 64) - 1
    return CARoot(
        id=fingerprint_sha1(cert),
        name=ROOT_NAME,
        serial_number=serial,
        signing_key_id=colon_hex(subject_key_id(cert)),
        external_trust_domain=cluster_id,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        root_cert=certificate_to_pem(cert),
        active=active,
        private_key_type="ec",
        private_key_bits=public_key.curve.key_size,
    )


def check_key_pair(cert_pem: str, key_pem: str) -> CAKeyPair:
    """The pair, normalized, once the key matches the certificate and it is a CA."""
    ca = load_ca(cert_pem, key_pem)
    return CAKeyPair(certificate_to_pem(ca.cert), private_key_to_pem(ca.key))


# ----- leaves -------------------------------------------------------------------


def sign_agent_client(
    ca_cert_pem: str,
    ca_key_pem: str,
    public_key: ec.EllipticCurvePublicKey,
    *,
    datacenter: str,
    domain: str,
    valid_for: timedelta,
    now: datetime,
) -> str:
    """A client agent's RPC certificate for `public_key`, signed by the given CA.

    The names are the server's choice, never the caller's: `client.<dc>.<domain>`,
    `localhost`, 127.0.0.1 (tls/agent.py has Consul's client certificate)."""
    ca = load_ca(ca_cert_pem, ca_key_pem)
    spec = agent_cert_spec("client", datacenter=datacenter, domain=domain, valid_for=valid_for)
    return sign_public_key(ca, public_key, spec, now=now)


# ----- service leaves -------------------------------------------------------------
# Consul's built-in provider signs a service's CSR: CN the service name, the
# CSR's one URI SAN (the service's SPIFFE ID), key usages digitalSignature,
# keyEncipherment, dataEncipherment, keyAgreement, extended usages serverAuth
# and clientAuth, valid from a minute ago for LeafCertTTL, the authority key
# ID the signing root's key ID. Leaf keys are always EC P-256.

_SERVICE_ID = re.compile(r"^spiffe://([^/]+)/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)$")
DEFAULT_NAMESPACE = "default"


class CSRError(TLSError):
    """A CSR the CA refuses; the message is Consul's text where it has one."""


@dataclass(frozen=True)
class ServiceID:
    """A service's SPIFFE ID, `spiffe://<trust domain>/ns/<ns>/dc/<dc>/svc/<service>`."""

    trust_domain: str
    namespace: str
    datacenter: str
    service: str

    def uri(self) -> str:
        return (
            f"spiffe://{self.trust_domain}/ns/{self.namespace}"
            f"/dc/{self.datacenter}/svc/{self.service}"
        )


def service_spiffe_id(trust_domain: str, datacenter: str, service: str) -> str:
    """The SPIFFE ID of `service` in `datacenter` (namespace default)."""
    return ServiceID(trust_domain, DEFAULT_NAMESPACE, datacenter, service).uri()


def parse_service_id(uri: str) -> ServiceID | None:
    match = _SERVICE_ID.match(uri)
    if match is None:
        return None
    return ServiceID(*match.groups())


def leaf_csr(
    key: ec.EllipticCurvePrivateKey, *, trust_domain: str, datacenter: str, service: str
) -> str:
    """A CSR (PEM) for `key` naming `service`: CN the service, URI SAN its SPIFFE ID.
    CSRError for a name no URI can carry (non-ASCII, a slash)."""
    uri = service_spiffe_id(trust_domain, datacenter, service)
    if parse_service_id(uri) is None or not service.isascii() or not service.isprintable():
        raise CSRError(f"cannot make a SPIFFE ID for service {service!r}")
    try:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(service_subject(service))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
            )
            .sign(key, hashes.SHA256())
        )
    except ValueError as exc:
        raise CSRError(f"cannot make a CSR for service {service!r}: {exc}") from None
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def service_subject(service: str) -> x509.Name:
    """CN the service name; empty when the name is longer than a CN may be
    (64 characters): the SPIFFE ID in the SAN is what names the service."""
    if 1 <= len(service) <= 64:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)])
    return x509.Name([])


def read_service_csr(csr_pem: str) -> tuple[x509.CertificateSigningRequest, ServiceID]:
    """The CSR and the service its SPIFFE ID names, once it is well formed: a
    valid self-signature, an EC P-256 key, one URI SAN that is a service ID."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode("ascii", "replace"))
    except ValueError as exc:
        raise CSRError(f"failed to parse CSR: {exc}") from None
    if not csr.is_signature_valid:
        raise CSRError("CSR signature is invalid")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CSRError("CSR key must be an EC P-256 key")
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CSRError("CSR SAN must hold exactly one URI, the SPIFFE ID")
    found = parse_service_id(uris[0])
    if found is None:
        raise CSRError("SPIFFE ID in CSR must be a service, mesh-gateway, or agent ID")
    return csr, found


def check_service_id(
    found: ServiceID, *, trust_domain: str, datacenter: str, service: str = ""
) -> None:
    """Refuse a SPIFFE ID of another trust domain or datacenter (Consul's texts),
    or, when `service` is given, of another service."""
    if found.trust_domain.lower() != trust_domain.lower():
        raise CSRError(
            f"SPIFFE ID in CSR from a different trust domain: {found.trust_domain}, "
            f"we are {trust_domain}"
        )
    if found.datacenter != datacenter:
        raise CSRError(
            f"SPIFFE ID in CSR from a different datacenter: {found.datacenter}, we are {datacenter}"
        )
    if found.namespace != DEFAULT_NAMESPACE:
        raise CSRError(f"SPIFFE ID in CSR names namespace {found.namespace!r}: only default")
    if service and found.service != service:
        raise CSRError(
            f"SPIFFE ID in CSR is for service {found.service!r}, not {service!r}: "
            f"a CSR must name the service it asks a certificate for"
        )


def sign_service_leaf(
    ca_cert_pem: str,
    ca_key_pem: str,
    csr_pem: str,
    *,
    trust_domain: str,
    datacenter: str,
    service: str,
    valid_for: timedelta,
    now: datetime,
    intermediates: tuple[str, ...] | list[str] = (),
) -> IssuedCert:
    """Sign `csr_pem` for `service` with the CA; the reply's CertPEM is the leaf
    followed by `intermediates` (the cross-signed root during a rotation)."""
    if now.tzinfo is None:
        raise TLSError("`now` must be timezone-aware")
    csr, found = read_service_csr(csr_pem)
    check_service_id(found, trust_domain=trust_domain, datacenter=datacenter, service=service)
    ca = load_ca(ca_cert_pem, ca_key_pem)
    public_key = csr.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)  # read_service_csr checked
    not_before = now - CLOCK_SKEW_ALLOWANCE
    not_after = not_before + valid_for
    builder = (
        x509.CertificateBuilder()
        .subject_name(service_subject(found.service))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier(key_id(public_key)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(
                key_identifier=subject_key_id(ca.cert),
                authority_cert_issuer=None,
                authority_cert_serial_number=None,
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(found.uri())]),
            critical=False,
        )
    )
    cert = builder.sign(ca.key, hashes.SHA256())
    chain = [certificate_to_pem(cert), *(_pem_line_end(pem) for pem in intermediates)]
    return IssuedCert(
        serial_number=serial_colon_hex(cert),
        valid_after=cert.not_valid_before_utc,
        valid_before=cert.not_valid_after_utc,
        cert_pem="".join(chain),
        service=found.service,
        service_uri=found.uri(),
    )


def _pem_line_end(pem: str) -> str:
    return pem if pem.endswith("\n") else pem + "\n"


def leaf_authority_key_id(cert_pem: str) -> str:
    """The authority key ID of the first certificate in `cert_pem`, colon hex
    (compared with the active root's SigningKeyID to see who signed a leaf)."""
    cert = load_certificate(cert_pem)
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return ""
    return colon_hex(aki.key_identifier or b"")


# ----- rotation: cross-signing ------------------------------------------------------


def cross_sign(
    new_root_pem: str, old_ca_cert_pem: str, old_ca_key_pem: str, *, now: datetime
) -> str:
    """The new root re-issued by the old CA (PEM): same subject, key and key ID,
    issuer the old root. Served with new leaves during a rotation, it lets a
    peer that trusts only the old root verify them (Consul's cross-signing)."""
    new = load_certificate(new_root_pem)
    old = load_ca(old_ca_cert_pem, old_ca_key_pem)
    public_key = new.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise TLSError("the new root's key is not an ECDSA key")
    not_after = min(new.not_valid_after_utc, old.cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(new.subject)
        .issuer_name(old.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
    )
    for extension in new.extensions:
        if isinstance(extension.value, x509.AuthorityKeyIdentifier):
            continue
        builder = builder.add_extension(extension.value, critical=extension.critical)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier(
            key_identifier=subject_key_id(old.cert),
            authority_cert_issuer=None,
            authority_cert_serial_number=None,
        ),
        critical=False,
    )
    return certificate_to_pem(builder.sign(old.key, hashes.SHA256()))


def check_root_for_cluster(cert_pem: str, cluster_id: str) -> None:
    """A root given over the API must be a CA whose URI SAN is the cluster's
    signing ID, `spiffe://<cluster id>.consul` (Consul's requirement)."""
    cert = load_certificate(cert_pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    want = signing_spiffe_id(cluster_id)
    if [uri.lower() for uri in uris] != [want.lower()]:
        raise TLSError(
            f"root certificate's URI SAN must be the cluster's signing ID {want}, "
            f"not {', '.join(uris) or 'none'}"
        )
