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
