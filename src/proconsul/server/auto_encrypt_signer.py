"""auto_encrypt, the server half: sign client agents' RPC certificates.

Job: `signer_from_config` gives a server with `auto_encrypt { allow_tls = true }`
the anonymous RPC handler "AutoEncrypt.Sign" (the client half, fetching and
renewing, is agent/auto_encrypt.py).

The signing CA: the Connect CA's active root in the replicated state, asked
per request through `active_ca` (server/connect_ca.py `active_signing_ca`).
The leader initializes it as Consul does: the CA in `connect { ca_config {
root_cert, private_key } }` when both are given, else a built-in root of its
own, which every server also trusts for incoming client certificates
(`RootTrust`). Until the leader has done so the signer answers an error and
the client asks again. Without `active_ca` (unit tests) the ca_config CA is
used directly. The CA configuration's LeafCertTTL (from `ca_config.leaf_cert_ttl`
at first, then as `/v1/connect/ca/configuration` sets it; default 72h, as
Consul) is the validity.

The reply carries the roots along with the certificate, as Consul's does
(its ConnectCARoots and ManualCARoots): the signing CA's root, then the CA
certificates the server itself trusts (its ca_file/ca_path, `manual_roots`).

Rules:
- The request carries the client's public key (PEM), its node name and its
  agent token; the private key never leaves the client. The server decides
  the names (client.<dc>.<domain>, localhost, 127.0.0.1): an anonymous caller
  cannot ask for a server name.
- With ACLs on, the server signs only for a token with `node:write` on the
  requesting node, as Consul does (`authorize`): an unknown secret is refused
  with "ACL not found", a missing right with Consul's Permission denied text,
  both `ACL_DENIED`. With ACLs off anyone reaching the RPC port may ask. The
  token is never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from proconsul.connect.ca import check_key_pair, sign_agent_client
from proconsul.rpc import ErrorCode, Handler, PeerInfo, RPCError
from proconsul.structs.duration import parse_duration
from proconsul.structs.rpc import SignReply, SignRequest

log = logging.getLogger("proconsul.agent")

SIGN_METHOD = "AutoEncrypt.Sign"
DEFAULT_LEAF_TTL_S = 72 * 3600.0
RETRY_S = 2.0
CALL_TIMEOUT_S = 10.0


# Raises ACLDenied unless `token` may have a certificate for `node`.
SignAuthorizer = Callable[[str, str], None]


def _pem_or_file(value: str) -> str:
    if value.lstrip().startswith("-----BEGIN"):
        return value
    with open(value, encoding="ascii") as handle:
        return handle.read()


# (certificate PEM, private key PEM) of the CA to sign with; None: not yet initialized.
ActiveCA = Callable[[], tuple[str, str] | None]


def signer_from_config(
    ca_config: dict[str, Any],
    *,
    datacenter: str,
    domain: str,
    active_ca: ActiveCA | None = None,
    manual_roots: Sequence[str] = (),
    authorize: SignAuthorizer | None = None,
    leaf_ttl_s: Callable[[], float] | None = None,
) -> Handler | None:
    """The "AutoEncrypt.Sign" handler; None when there is no `active_ca` and no
    CA key in `ca_config`.

    `active_ca()` is asked on every request (servers pass the state's active
    root). `manual_roots`: the server's own CA bundle (its ca_file/ca_path PEM,
    e.g. `rpc.tls.load_ca_pem(...)`), sent to clients after the signing CA's root.
    `authorize(token, node)` is called before signing (the server's ACL check).
    `leaf_ttl_s()`, when given, is the validity per request (servers pass the
    replicated CA configuration's LeafCertTTL); else ca_config's."""
    if active_ca is None:
        root = ca_config.get("root_cert") or ca_config.get("RootCert")
        key = ca_config.get("private_key") or ca_config.get("PrivateKey")
        if not root or not key:
            log.warning(
                "agent: auto_encrypt.allow_tls is set but connect.ca_config has no root_cert "
                "and private_key: clients cannot get certificates"
            )
            return None
        fixed = check_key_pair(_pem_or_file(str(root)), _pem_or_file(str(key)))

        def fixed_ca() -> tuple[str, str] | None:
            return fixed.cert_pem, fixed.key_pem

        active_ca = fixed_ca
    ttl = ca_config.get("leaf_cert_ttl") or ca_config.get("LeafCertTTL")
    ttl_s = float(parse_duration(str(ttl))) if ttl else DEFAULT_LEAF_TTL_S
    return _sign_handler(
        active_ca, list(manual_roots), datacenter, domain, leaf_ttl_s or (lambda: ttl_s), authorize
    )


def _sign_handler(
    active_ca: ActiveCA,
    manual_roots: list[str],
    datacenter: str,
    domain: str,
    ttl_s: Callable[[], float],
    authorize: SignAuthorizer | None = None,
) -> Handler:
    decoder = msgspec.msgpack.Decoder(SignRequest)

    async def handle(payload: bytes, peer: PeerInfo) -> bytes:
        try:
            request = decoder.decode(payload)
            public_key = load_certificate_key(request.public_key_pem)
        except Exception as exc:
            raise RPCError(f"AutoEncrypt.Sign: bad request: {exc}", ErrorCode.BAD_REQUEST) from None
        if authorize is not None:
            authorize(request.token, request.node)
        active = active_ca()
        if active is None:
            # The leader has not initialized the CA yet: the client asks again.
            raise RPCError("AutoEncrypt.Sign: the Connect CA is not initialized yet")
        root_pem, key_pem = active
        cert_pem = sign_agent_client(
            root_pem,
            key_pem,
            public_key,
            datacenter=datacenter,
            domain=domain,
            valid_for=timedelta(seconds=ttl_s()),
            now=datetime.now(UTC),
        )
        roots = [root_pem, *(pem for pem in manual_roots if pem and pem != root_pem)]
        log.info(
            "agent: auto_encrypt: signed a client certificate for node %r (%s)",
            request.node,
            peer.describe(),
        )
        return msgspec.msgpack.encode(SignReply(cert_pem=cert_pem, root_pems=roots))

    return handle


def load_certificate_key(public_key_pem: str) -> ec.EllipticCurvePublicKey:
    key = load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("expected an EC public key")
    return key
