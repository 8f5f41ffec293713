"""Connect CA rows, in the shape of Consul's `/v1/connect/ca/roots`.

Job: the plain data the state store keeps for the Connect CA and the HTTP API
serves. One definition serves JSON (HTTP) and msgpack (Raft log, RPC).

Rules:
- A `CARoot` row holds only public material. The signing key of a root lives
  apart, in the state's provider table (state/ca_tables.py), the way Consul's
  built-in provider keeps its key in provider state: so serving a row can
  never leak a key.
- Times are timezone-aware UTC with whole seconds (they come from the
  certificate), which JSON renders as Consul does: "2025-09-09T07:56:55Z".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from proconsul.structs.naming import pascal


class CARoot(msgspec.Struct, rename=pascal):
    """One trusted root, as Consul's CARoot shows it (no private key, ever)."""

    id: str  # SHA-1 fingerprint of the DER certificate, colon hex
    name: str
    serial_number: int
    signing_key_id: str  # the certificate's subject key ID, colon hex
    external_trust_domain: str  # the cluster ID
    not_before: datetime
    not_after: datetime
    root_cert: str  # PEM
    intermediate_certs: list[str] | None = None
    active: bool = False
    private_key_type: str = "ec"
    private_key_bits: int = 256
    create_index: int = 0
    modify_index: int = 0


class IndexedCARoots(msgspec.Struct, rename=pascal):
    """The body of GET /v1/connect/ca/roots."""

    active_root_id: str
    trust_domain: str
    roots: list[CARoot]


class CAConfiguration(msgspec.Struct, rename=pascal):
    """The CA's configuration, as Consul's `/v1/connect/ca/configuration` shows it.

    `config` holds the provider's settings in Consul's API spelling
    (`LeafCertTTL`, `RotationPeriod`, `IntermediateCertTTL`, `RootCertTTL`,
    `PrivateKeyType`, `PrivateKeyBits`, ...). The stored row never holds a
    `PrivateKey` or `RootCert`: the key is the provider's state
    (state/ca_tables.py) and the certificate is a root row."""

    provider: str = "consul"
    config: dict[str, Any] = {}
    state: dict[str, str] | None = None
    force_without_cross_signing: bool = False
    create_index: int = 0
    modify_index: int = 0

    def __repr__(self) -> str:  # a config given over the API may carry a key
        keys = sorted(self.config)
        return f"CAConfiguration(provider={self.provider!r}, config_keys={keys!r})"


class IssuedCert(msgspec.Struct, rename=pascal, omit_defaults=True, kw_only=True):
    """A leaf certificate the CA issued, in Consul's `IssuedCert` shape (the body
    of `/v1/agent/connect/ca/leaf/<service>`). `cert_pem` is the leaf followed by
    any intermediates; `private_key_pem` is filled in by the agent that made the
    key, never by a server."""

    serial_number: str  # colon hex
    cert_pem: str = ""
    private_key_pem: str = ""
    service: str = ""
    service_uri: str = ""
    valid_after: datetime
    valid_before: datetime
    create_index: int = 0
    modify_index: int = 0

    def __repr__(self) -> str:  # the private key must not reach a log
        return (
            f"IssuedCert(service={self.service!r}, serial={self.serial_number!r}, "
            f"valid_before={self.valid_before.isoformat()})"
        )
