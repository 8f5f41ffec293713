"""TLS for server RPC: SSL contexts from Consul's settings, peer identities,
and handshake failures named so a log line can say what went wrong.

Job: turn effective `TLSSettings` (the `tls { defaults {} internal_rpc {} }`
block or the deprecated top-level keys, see `RuntimeConfig.tls_settings`)
into `ssl.SSLContext`s with Consul's meaning:

- `verify_incoming`: the server demands a client certificate signed by the
  CA (`ca_file` and/or every PEM file under `ca_path`). Without it the server
  asks for none, and (like Consul) also accepts plaintext RPC on the same port.
- `verify_outgoing`: the agent dials servers with TLS only and checks the
  server's chain against the CA. Without it, it dials plaintext.
- `verify_server_hostname`: the server's certificate must also name
  `server.<datacenter>.<domain>`, so a client certificate cannot pose as a
  server. Without it, only the chain is checked. (Consul requires
  `verify_outgoing` as well for this to take effect; so do we.)
- `tls_min_version`: "TLSv1_0" .. "TLSv1_3" (Consul's pre-1.12 "tls10" ..
  "tls13" are accepted too); "TLSv1_2" by default.
- `tls_cipher_suites`: Consul's (Go's) names, for TLS 1.2 and below.

Rules:
- Bad material is a `TLSConfigError` naming the setting and the file; the
  message never holds key material.
- Python's `ssl` only loads certificates and keys from files, so PEM text
  (auto_encrypt's signed certificate) goes through a private temporary
  directory that is removed at once (`present_certificate_pem`).
- auto_encrypt's roots (sent with the signed certificate) are trusted in
  addition to ca_file, never instead of it (`trust_roots`).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from proconsul.config.schema import TLSSettings
from proconsul.tls.agent import server_name

TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "TLSv1_0": ssl.TLSVersion.TLSv1,
    "TLSv1_1": ssl.TLSVersion.TLSv1_1,
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
    # Spellings from before Consul 1.12, which it still accepts.
    "tls10": ssl.TLSVersion.TLSv1,
    "tls11": ssl.TLSVersion.TLSv1_1,
    "tls12": ssl.TLSVersion.TLSv1_2,
    "tls13": ssl.TLSVersion.TLSv1_3,
}
DEFAULT_MIN_VERSION = "TLSv1_2"

# Consul takes Go's cipher suite names; OpenSSL knows the same suites by others.
CIPHER_SUITES: Mapping[str, str] = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
}

# Handshake failure reasons (stats keys) and what a log line says about each.
FAILURE_REASONS: Mapping[str, str] = {
    "not_tls": "the peer did not speak TLS (plaintext sent to a TLS port)",
    "wrong_ca": "certificate not signed by a trusted CA",
    "expired_cert": "certificate has expired",
    "cert_not_yet_valid": "certificate is not valid yet",
    "hostname_mismatch": "server certificate does not name the expected server name",
    "missing_client_cert": "no client certificate, but verify_incoming requires one",
    "bad_cert_purpose": "certificate's extended key usage does not allow this use",
    "cert_verify_failed": "certificate verification failed",
    "peer_refused_cert": "the peer refused our certificate",
    "protocol_version": "no TLS version in common (tls_min_version)",
    "no_shared_cipher": "no cipher suite in common (tls_cipher_suites)",
    "handshake_timeout": "the handshake did not finish in time",
    "eof": "the connection closed during the handshake",
    "tls_error": "TLS error",
}

# OpenSSL X509_V_ERR_* codes (stable across OpenSSL versions) -> reason.
_VERIFY_CODES: Mapping[int, str] = {
    2: "wrong_ca",  # unable to get issuer certificate
    7: "wrong_ca",  # certificate signature failure
    9: "cert_not_yet_valid",
    10: "expired_cert",
    18: "wrong_ca",  # self-signed leaf
    19: "wrong_ca",  # self-signed certificate in chain
    20: "wrong_ca",  # unable to get local issuer certificate
    21: "wrong_ca",  # unable to verify the first certificate
    26: "bad_cert_purpose",
    62: "hostname_mismatch",
}

# SSLError.reason -> our reason. Alerts are the peer telling us it refused
# something of ours; the rest are our own checks.
_SSL_REASONS: Mapping[str, str] = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "missing_client_cert",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "missing_client_cert",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "expired_cert",
    "TLSV1_ALERT_UNKNOWN_CA": "wrong_ca",
    "SSLV3_ALERT_BAD_CERTIFICATE": "peer_refused_cert",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "peer_refused_cert",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "peer_refused_cert",
    "TLSV1_ALERT_DECRYPT_ERROR": "peer_refused_cert",
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "NO_PROTOCOLS_AVAILABLE": "protocol_version",
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "WRONG_VERSION_NUMBER": "not_tls",
    "HTTP_REQUEST": "not_tls",
    "UNKNOWN_PROTOCOL": "not_tls",
}


class TLSConfigError(Exception):
    """TLS settings or material that cannot be used; the message names the file."""


# --- handshake failures ----------------------------------------------------


def classify_tls_failure(exc: BaseException) -> tuple[str, str]:
    """(reason, detail) for a failed handshake; `reason` is a FAILURE_REASONS key,
    `detail` OpenSSL's own words (never secret: names of checks, not material)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        return _VERIFY_CODES.get(code, "cert_verify_failed"), str(exc.verify_message)
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "eof", exc.reason or "EOF"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        return _SSL_REASONS.get(reason, "tls_error"), reason.lower().replace("_", " ") or str(exc)
    if isinstance(exc, TimeoutError):
        return "handshake_timeout", "timed out"
    return "eof", str(exc) or type(exc).__name__


def describe_tls_failure(reason: str, detail: str) -> str:
    base = FAILURE_REASONS.get(reason, reason)
    if not detail or detail.lower() in base.lower():
        return base
    return f"{base} ({detail})"


# --- peers -----------------------------------------------------------------


def hostname_matches(pattern: str, host: str) -> bool:
    """RFC 6125 matching, as TLS stacks do it: exact (case-insensitive), or a
    `*.` wildcard standing for exactly one left-most label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


@dataclass(frozen=True)
class PeerInfo:
    """Who is on the other end of a connection, as far as TLS proved it.

    `verified` is true only when the peer presented a certificate and it was
    checked against our CA; the names below are empty otherwise, so a handler
    can authorize on them (e.g. Raft only from `server.<dc>.<domain>`).
    """

    address: tuple[str, int] | None
    tls: bool = False
    verified: bool = False
    common_name: str = ""
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    serial: str = ""
    not_after: str = ""

    def has_dns_name(self, name: str) -> bool:
        return self.verified and any(hostname_matches(p, name) for p in self.dns_names)

    def is_server(self, datacenter: str, domain: str) -> bool:
        """Whether the peer proved it is a server of `datacenter` (what
        `verify_server_hostname` checks from the other side)."""
        return self.has_dns_name(server_name(datacenter, domain))

    def describe(self) -> str:
        addr = format_address(self.address)
        if not self.verified:
            return f"{addr} ({'TLS' if self.tls else 'plaintext'}, no verified certificate)"
        return f"{addr} (certificate CN={self.common_name})"


def peer_info(address: Any, peercert: Mapping[str, Any] | None, *, tls: bool) -> PeerInfo:
    """Build a PeerInfo from `SSLObject.getpeercert()` (empty when not verified)."""
    addr = (str(address[0]), int(address[1])) if isinstance(address, tuple) else None
    if not peercert:
        return PeerInfo(address=addr, tls=tls)
    common_name = ""
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                common_name = str(value)
    sans = peercert.get("subjectAltName", ())
    return PeerInfo(
        address=addr,
        tls=tls,
        verified=True,
        common_name=common_name,
        dns_names=tuple(str(v) for k, v in sans if k == "DNS"),
        ip_addresses=tuple(str(v).strip() for k, v in sans if k == "IP Address"),
        uris=tuple(str(v) for k, v in sans if k == "URI"),
        serial=str(peercert.get("serialNumber", "")),
        not_after=str(peercert.get("notAfter", "")),
    )


def format_address(address: tuple[str, int] | None) -> str:
    if address is None:
        return "unknown peer"
    host, port = address
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


# --- settings -> contexts ----------------------------------------------------


def parse_min_version(value: str) -> ssl.TLSVersion:
    version = TLS_VERSIONS.get(value or DEFAULT_MIN_VERSION)
    if version is None:
        allowed = ", ".join(k for k in TLS_VERSIONS if k.startswith("TLS"))
        raise TLSConfigError(f"tls_min_version: unsupported TLS version {value!r} ({allowed})")
    return version


def parse_cipher_suites(value: str) -> list[str]:
    """OpenSSL names for Consul's comma-separated `tls_cipher_suites`."""
    names: list[str] = []
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            continue
        openssl_name = CIPHER_SUITES.get(name)
        if openssl_name is None:
            raise TLSConfigError(f"tls_cipher_suites: unsupported cipher suite {name!r}")
        names.append(openssl_name)
    return names


def load_ca_pem(ca_file: str = "", ca_path: str = "") -> str:
    """Every CA certificate from `ca_file` and from each file under `ca_path`, as
    one PEM bundle. Each file must hold at least one certificate."""
    bundle: list[str] = []
    if ca_file:
        bundle.append(_certificates_pem(_read(ca_file, "ca_file"), "ca_file", ca_file))
    if ca_path:
        root = Path(ca_path)
        if not root.is_dir():
            raise TLSConfigError(f"ca_path {ca_path!r} is not a directory")
        # Not load_verify_locations(capath=...): OpenSSL wants c_rehash-style
        # names there, while Consul reads every file in the directory.
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            bundle.append(_certificates_pem(_read(str(path), "ca_path"), "ca_path", str(path)))
    return "".join(bundle)


def server_context(
    settings: TLSSettings, *, allow_anonymous_tls: bool = False
) -> ssl.SSLContext | None:
    """The RPC server's context, or None to serve plaintext (no cert/key given).

    `allow_anonymous_tls` (a server with auto_encrypt `allow_tls`): under
    verify_incoming, a TLS client without a certificate still completes the
    handshake, so it can ask for one; `RPCServer` then lets such a peer call
    only its `anonymous_methods`. A certificate that is presented must still
    verify, so a wrong CA or an expired certificate is refused as before.
    """
    if not (settings.cert_file or settings.key_file):
        if settings.verify_incoming:
            raise TLSConfigError("verify_incoming is set but cert_file and key_file are not")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_common(ctx, settings)
    present_certificate(ctx, settings.cert_file, settings.key_file)
    if settings.verify_incoming:
        ca = load_ca_pem(settings.ca_file, settings.ca_path)
        if not ca:
            raise TLSConfigError("verify_incoming is set but neither ca_file nor ca_path is")
        ctx.load_verify_locations(cadata=ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL if allow_anonymous_tls else ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(settings: TLSSettings, *, force_tls: bool = False) -> ssl.SSLContext | None:
    """The context for dialing servers, or None to dial plaintext.

    TLS is used when `verify_outgoing` is set, or `force_tls` (auto_encrypt's
    `tls = true`). The server's chain is always checked against the CA;
    its name only with `verify_server_hostname` (pass the name from
    `rpc_server_hostname` to the client). A configured cert/key pair is
    presented to servers that ask for one.
    """
    if not (settings.verify_outgoing or force_tls):
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_common(ctx, settings)
    ca = load_ca_pem(settings.ca_file, settings.ca_path)
    if not ca:
        raise TLSConfigError("verify_outgoing is set but neither ca_file nor ca_path is")
    ctx.load_verify_locations(cadata=ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = settings.verify_server_hostname
    if settings.cert_file or settings.key_file:
        present_certificate(ctx, settings.cert_file, settings.key_file)
    return ctx


def rpc_server_hostname(datacenter: str, domain: str) -> str:
    """The name to dial servers by; checked when `verify_server_hostname` is set."""
    return server_name(datacenter, domain)


@dataclass(frozen=True)
class RPCTLS:
    """Everything the RPC server and client need from one agent's TLS settings."""

    server_context: ssl.SSLContext | None  # None: the server port is plaintext only
    accept_plaintext: bool  # the TLS port also takes plaintext (no verify_incoming)
    client_context: ssl.SSLContext | None  # None: dial servers in plaintext
    server_hostname: str


def rpc_tls(
    settings: TLSSettings,
    *,
    datacenter: str,
    domain: str,
    is_server: bool,
    auto_encrypt_tls: bool = False,
    auto_encrypt_allow_tls: bool = False,
) -> RPCTLS:
    """Contexts for `RPCServer` (servers only) and `RPCClient` from effective
    settings. `auto_encrypt_tls` is a client's `auto_encrypt { tls = true }`;
    `auto_encrypt_allow_tls` a server's `auto_encrypt { allow_tls = true }`."""
    server = (
        server_context(settings, allow_anonymous_tls=auto_encrypt_allow_tls) if is_server else None
    )
    return RPCTLS(
        server_context=server,
        accept_plaintext=server is not None and not settings.verify_incoming,
        client_context=client_context(settings, force_tls=auto_encrypt_tls),
        server_hostname=rpc_server_hostname(datacenter, domain),
    )


def present_certificate(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """Make `ctx` present `cert_file`/`key_file` (a server's certificate, or a
    client agent's when servers run with verify_incoming)."""
    if not cert_file or not key_file:
        missing = "key_file" if cert_file else "cert_file"
        raise TLSConfigError(f"cert_file and key_file must be given together ({missing} is not)")
    # Read and parse each file first so an error names the right one.
    _certificates_pem(_read(cert_file, "cert_file"), "cert_file", cert_file)
    _check_private_key(_read(key_file, "key_file"), key_file)
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(
                f"key_file {key_file!r} does not match cert_file {cert_file!r}"
            ) from None
        raise TLSConfigError(
            f"cert_file {cert_file!r} / key_file {key_file!r} cannot be used: {exc.reason}"
        ) from None


def roots_bundle(pems: Sequence[str]) -> str:
    """One PEM bundle of every CA certificate in `pems`; a `TLSConfigError` if
    any holds none. Nothing is trusted yet (see `trust_roots`)."""
    certs: list[x509.Certificate] = []
    for number, pem in enumerate(pems, 1):
        try:
            certs.extend(x509.load_pem_x509_certificates(pem.encode("ascii", "replace")))
        except ValueError:
            raise TLSConfigError(f"CA root {number} holds no valid PEM certificate") from None
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def trust_roots(ctx: ssl.SSLContext, pems: Sequence[str]) -> None:
    """Make `ctx` verify peers against the CA certificates in `pems` too, besides
    its ca_file (auto_encrypt: the roots the signing server sent). All are
    checked before any is added.

    OpenSSL's store only grows: a root once added stays trusted for the life
    of `ctx`, so a caller adds each root once and builds a new context to drop one.
    """
    bundle = roots_bundle(pems)
    if bundle:
        ctx.load_verify_locations(cadata=bundle)


def present_certificate_pem(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """Like `present_certificate` for PEM text held in memory (auto_encrypt)."""
    with tempfile.TemporaryDirectory(prefix="proconsul-tls-") as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        for path, text in ((cert_path, cert_pem), (key_path, key_pem)):
            # 0600 from the first byte: the key never sits readable by others.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(text)
        try:
            present_certificate(ctx, cert_path, key_path)
        except TLSConfigError as exc:
            # The temporary names mean nothing to a reader; say what it was.
            message = str(exc).replace(repr(cert_path), "(PEM)").replace(repr(key_path), "(PEM)")
            raise TLSConfigError(message) from None


def _apply_common(ctx: ssl.SSLContext, settings: TLSSettings) -> None:
    ctx.minimum_version = parse_min_version(settings.tls_min_version)
    if settings.tls_cipher_suites:
        if ctx.minimum_version == ssl.TLSVersion.TLSv1_3:
            raise TLSConfigError("tls_cipher_suites cannot be set when tls_min_version is TLSv1_3")
        try:
            ctx.set_ciphers(":".join(parse_cipher_suites(settings.tls_cipher_suites)))
        except ssl.SSLError:
            raise TLSConfigError("tls_cipher_suites: none of the suites is available") from None
    # Renegotiation and compression have no use here and a history of attacks.
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TLSConfigError(f"{setting} {path!r} does not exist") from None
    except PermissionError:
        raise TLSConfigError(f"{setting} {path!r} is not readable: permission denied") from None
    except IsADirectoryError:
        raise TLSConfigError(f"{setting} {path!r} is a directory, not a file") from None
    except OSError as exc:
        raise TLSConfigError(f"{setting} {path!r} cannot be read: {exc.strerror}") from None


def _certificates_pem(data: bytes, setting: str, path: str) -> str:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(f"{setting} {path!r} holds no valid PEM certificate") from None
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def _check_private_key(data: bytes, path: str) -> None:
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSConfigError(f"key_file {path!r} is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        # The library's message is not shown: it could quote the input.
        raise TLSConfigError(f"key_file {path!r} holds no valid PEM private key") from None
