"""The Connect CA's certificates: the built-in provider's root and the leaves it signs.

Job: generate a CA root the way Consul's built-in ("consul") provider does,
describe a root certificate as a `CARoot` row, and sign an agent's client
certificate (auto_encrypt) with whichever CA is active. The one way to sign
an agent leaf is `sign_agent_client`; X.509 mechanics are tls/certs.py's.

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
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proconsul.structs.connect import CARoot
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


def generate_root(*, cluster_id: str, now: datetime, rng: random.Random) -> CAKeyPair:
    """A new self-signed built-in CA root for the cluster `cluster_id`."""
    if not cluster_id:
        raise TLSError("a Connect CA root needs a cluster ID")
    if now.tzinfo is None:
        raise TLSError("`now` must be timezone-aware")
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
