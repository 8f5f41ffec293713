"""TLS contexts from the SDS secrets: the public listener's and each cluster's.

Job: `TLSContexts` makes (and caches by content) the `ssl.SSLContext` a
listener terminates mTLS with and the one a cluster connects with, and
tells the peer's SPIFFE ID (`peer_uri`).

Rules:
- Server: our leaf, client certificates required and verified against the
  roots (`CERT_REQUIRED`); no hostname check (SPIFFE IDs are checked by
  RBAC). Client: our leaf, the roots, SNI set by the caller; the server's
  URI SAN must be one of the cluster's SPIFFE IDs (`san_ok`).
- A listener keeps one live server context (`ServerContext`): a new leaf is
  loaded into it and new roots added to it, so the next handshake uses them
  and established connections keep theirs. A root that goes away cannot be
  taken out of a live context: the listener gets a new context and is
  rebound (runtime.py). Client contexts are looked up per connection.
- The private key reaches `ssl` through a 0600 temporary file removed at
  once (the ssl module loads keys only from files).
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
import urllib.parse
from typing import Any

from cryptography import x509

from proconsul.proxy.config import ClientTLS, SecretConfig, ServerTLS


class MissingSecret(LookupError):
    pass


def _load_chain(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    fd, path = tempfile.mkstemp(prefix="proxy-leaf-", suffix=".pem")  # 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(cert_pem if cert_pem.endswith("\n") else cert_pem + "\n")
            handle.write(key_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)


def peer_uris(ssl_object: Any) -> list[str]:
    """The URI SANs of the peer's (verified) certificate."""
    if ssl_object is None:
        return []
    cert = ssl_object.getpeercert()
    if not cert:
        return []
    return [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]


def leaf_uri(cert_pem: str) -> str:
    """The first URI SAN of our own leaf (its SPIFFE ID), "" if none."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return ""
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else ""


def client_cert_details(ssl_object: Any, by: str) -> str:
    """Envoy's `x-forwarded-client-cert` element for a verified peer: By, Hash,
    Cert, Subject, URI and DNS (the chain is not available from `ssl`)."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return ""
    cert = ssl_object.getpeercert() or {}
    subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    parts = [
        f"By={by}" if by else "",
        f"Hash={hashlib.sha256(der).hexdigest()}",
        f'Cert="{urllib.parse.quote(ssl.DER_cert_to_PEM_cert(der), safe="")}"',
        f'Subject="{subject}"',
    ]
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI":
            parts.append(f"URI={value}")
        elif kind == "DNS":
            parts.append(f"DNS={value}")
    return ";".join(p for p in parts if p)


def peer_uri(ssl_object: Any) -> str | None:
    uris = peer_uris(ssl_object)
    return uris[0] if uris else None


def pem_blocks(bundle: str) -> frozenset[str]:
    marker = "-----END CERTIFICATE-----"
    return frozenset(part.strip() + "\n" + marker for part in bundle.split(marker) if part.strip())


class ServerContext:
    """A listener's TLS context, updated in place as its secrets change."""

    def __init__(self, leaf: SecretConfig, roots: SecretConfig, require_client_cert: bool) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        _load_chain(context, leaf.cert_pem, leaf.key_pem)
        context.load_verify_locations(cadata=roots.roots_pem)
        self.context = context
        self.require_client_cert = require_client_cert
        self.leaf = (leaf.cert_pem, leaf.key_pem)
        self.roots = pem_blocks(roots.roots_pem)

    def refresh(self, leaf: SecretConfig, roots: SecretConfig) -> bool:
        """Take new secrets in; False when that needs a new context (a root removed)."""
        new_roots = pem_blocks(roots.roots_pem)
        if not self.roots <= new_roots:
            return False
        if (leaf.cert_pem, leaf.key_pem) != self.leaf:
            _load_chain(self.context, leaf.cert_pem, leaf.key_pem)
            self.leaf = (leaf.cert_pem, leaf.key_pem)
        added = new_roots - self.roots
        if added:
            # One PEM block per line group: blocks run together unseparated
            # do not parse (a rotation adds a root and its cross-signed copy).
            self.context.load_verify_locations(cadata="\n".join(sorted(added)) + "\n")
            self.roots = new_roots
        return True


class TLSContexts:
    def __init__(self) -> None:
        self.secrets: dict[str, SecretConfig] = {}
        self._cache: dict[tuple[str, str, str], ssl.SSLContext] = {}
        self._uris: dict[str, str] = {}

    def update(self, secrets: dict[str, SecretConfig]) -> None:
        self.secrets = dict(secrets)
        live = {(s.cert_pem, s.key_pem) for s in secrets.values() if s.cert_pem}
        self._cache = {k: v for k, v in self._cache.items() if (k[0], k[1]) in live}
        self._uris = {pem: uri for pem, uri in self._uris.items() if any(pem == c for c, _ in live)}

    def _pair(self, leaf: str, roots: str) -> tuple[SecretConfig, SecretConfig]:
        try:
            return self.secrets[leaf], self.secrets[roots]
        except KeyError as err:
            raise MissingSecret(f"secret {err.args[0]} not received yet") from None

    def leaf_uri(self, tls: ServerTLS) -> str:
        """Our SPIFFE ID on this listener (parsed once per leaf)."""
        leaf = self.secrets.get(tls.leaf_secret)
        if leaf is None:
            return ""
        found = self._uris.get(leaf.cert_pem)
        if found is None:
            found = self._uris[leaf.cert_pem] = leaf_uri(leaf.cert_pem)
        return found

    def server(self, tls: ServerTLS, current: ServerContext | None) -> ServerContext:
        """The listener's context for these secrets: `current` updated in place, or a
        new one (then the listener must be rebound with it)."""
        leaf, roots = self._pair(tls.leaf_secret, tls.roots_secret)
        same_mode = current is not None and current.require_client_cert == tls.require_client_cert
        if current is not None and same_mode and current.refresh(leaf, roots):
            return current
        return ServerContext(leaf, roots, tls.require_client_cert)

    def client(self, tls: ClientTLS) -> ssl.SSLContext:
        leaf, roots = self._pair(tls.leaf_secret, tls.roots_secret)
        key = (leaf.cert_pem, leaf.key_pem, roots.roots_pem)
        context = self._cache.get(key)
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.check_hostname = False  # the SPIFFE ID is checked instead
            context.verify_mode = ssl.CERT_REQUIRED
            _load_chain(context, leaf.cert_pem, leaf.key_pem)
            context.load_verify_locations(cadata=roots.roots_pem)
            self._cache[key] = context
        return context


def san_ok(tls: ClientTLS, ssl_object: Any) -> bool:
    if not tls.allowed_sans:
        return True
    return any(uri in tls.allowed_sans for uri in peer_uris(ssl_object))
