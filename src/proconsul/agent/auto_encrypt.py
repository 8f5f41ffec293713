"""auto_encrypt: servers sign client agents' RPC certificates; clients fetch them.

Job: `signer_from_config` gives a server with `auto_encrypt { allow_tls = true }`
the anonymous RPC handler "AutoEncrypt.Sign"; `CertFetcher` is the client
side of `auto_encrypt { tls = true }`: fetch a certificate at start, present
it on the agent's RPC client context, renew it before it expires.

The signing CA: the CA in `connect { ca_config { root_cert, private_key } }`
(PEM text, or a path to a PEM file), i.e. Consul's built-in Connect CA
provider settings. For the walkthrough's setup that is the agent CA
(`consul-agent-ca.pem` and its key), so the certificates it signs are trusted
by every server's `ca_file`. When the mesh issue grows a Connect CA in the
state store, the signer takes its active root instead; the wire shape stays.
`ca_config.leaf_cert_ttl` (default 72h, as Consul) is the validity.

The reply carries the roots along with the certificate, as Consul's does
(its ConnectCARoots and ManualCARoots): the signing CA's root, then the CA
certificates the server itself trusts (its ca_file/ca_path, `manual_roots`).
The client trusts them for verifying servers in addition to its own
ca_file, so servers whose certificates come from the signing CA verify too.

Rules:
- The request carries only the client's public key (PEM); the private key
  never leaves the client. The server decides the names (client.<dc>.<domain>,
  localhost, 127.0.0.1): an anonymous caller cannot ask for a server name.
- The fetch is the only RPC a client makes without a certificate (the server
  lets anonymous TLS peers call only "AutoEncrypt.Sign"), on a separate RPC
  client that is closed afterwards.
- Renewal starts at half the validity, retried every few seconds on failure.
- A reply whose certificate or roots cannot be used counts as that server
  failing: nothing of it is installed, the next server is asked. Each root
  is added once (the context's trust store only grows).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from proconsul.rpc import ErrorCode, Handler, PeerInfo, RPCClient, RPCError
from proconsul.rpc.tls import (
    TLSConfigError,
    present_certificate_pem,
    roots_bundle,
    trust_roots,
)
from proconsul.structs.duration import parse_duration
from proconsul.tls.agent import agent_cert_spec
from proconsul.tls.certs import (
    CertificateAuthority,
    TLSError,
    generate_private_key,
    load_ca,
    load_certificate,
    private_key_to_pem,
    sign_public_key,
)

log = logging.getLogger("proconsul.agent")

SIGN_METHOD = "AutoEncrypt.Sign"
DEFAULT_LEAF_TTL_S = 72 * 3600.0
RETRY_S = 2.0
CALL_TIMEOUT_S = 10.0


class SignRequest(msgspec.Struct):
    public_key_pem: str


class SignReply(msgspec.Struct):
    cert_pem: str
    root_pems: list[str]


def _pem_or_file(value: str) -> str:
    if value.lstrip().startswith("-----BEGIN"):
        return value
    with open(value, encoding="ascii") as handle:
        return handle.read()


def signer_from_config(
    ca_config: dict[str, Any],
    *,
    datacenter: str,
    domain: str,
    manual_roots: Sequence[str] = (),
) -> Handler | None:
    """The "AutoEncrypt.Sign" handler, or None when no CA key is configured.

    `manual_roots`: the server's own CA bundle (its ca_file/ca_path PEM, e.g.
    `rpc.tls.load_ca_pem(...)`), sent to clients after the signing CA's root."""
    root = ca_config.get("root_cert") or ca_config.get("RootCert")
    key = ca_config.get("private_key") or ca_config.get("PrivateKey")
    if not root or not key:
        log.warning(
            "agent: auto_encrypt.allow_tls is set but connect.ca_config has no root_cert and "
            "private_key: clients cannot get certificates"
        )
        return None
    root_pem = _pem_or_file(str(root))
    ca = load_ca(root_pem, _pem_or_file(str(key)))
    ttl = ca_config.get("leaf_cert_ttl") or ca_config.get("LeafCertTTL")
    ttl_s = float(parse_duration(str(ttl))) if ttl else DEFAULT_LEAF_TTL_S
    roots = [root_pem, *(pem for pem in manual_roots if pem and pem != root_pem)]
    return _sign_handler(ca, roots, datacenter, domain, ttl_s)


def _sign_handler(
    ca: CertificateAuthority, roots: list[str], datacenter: str, domain: str, ttl_s: float
) -> Handler:
    decoder = msgspec.msgpack.Decoder(SignRequest)

    async def handle(payload: bytes, peer: PeerInfo) -> bytes:
        try:
            request = decoder.decode(payload)
            public_key = load_certificate_key(request.public_key_pem)
        except Exception as exc:
            raise RPCError(f"AutoEncrypt.Sign: bad request: {exc}", ErrorCode.BAD_REQUEST) from None
        spec = agent_cert_spec(
            "client", datacenter=datacenter, domain=domain, valid_for=timedelta(seconds=ttl_s)
        )
        cert_pem = sign_public_key(ca, public_key, spec, now=datetime.now(UTC))
        log.info("agent: auto_encrypt: signed a client certificate for %s", peer.describe())
        return msgspec.msgpack.encode(SignReply(cert_pem=cert_pem, root_pems=roots))

    return handle


def load_certificate_key(public_key_pem: str) -> ec.EllipticCurvePublicKey:
    key = load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("expected an EC public key")
    return key


class CertFetcher:
    """A client's auto_encrypt certificate: fetched once at start, then renewed."""

    def __init__(self, ctx: ssl.SSLContext, anonymous: RPCClient) -> None:
        self.ctx = ctx
        self.anonymous = anonymous
        self.ready = asyncio.Event()
        self.expires: datetime | None = None
        self.renewals = 0
        self.roots: set[str] = set()  # root PEMs already added to ctx

    async def fetch(self, servers: list[str]) -> bool:
        """Ask each server in turn; True once a certificate is presented."""
        key = generate_private_key()
        public_pem = (
            key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        )
        payload = msgspec.msgpack.encode(SignRequest(public_key_pem=public_pem))
        for server in servers:
            try:
                data = await self.anonymous.call(server, SIGN_METHOD, payload, CALL_TIMEOUT_S)
                reply = msgspec.msgpack.decode(data, type=SignReply)
            except Exception as exc:
                log.warning("agent: auto_encrypt: %s could not sign: %s", server, exc)
                continue
            try:
                self._install(reply, private_key_to_pem(key))
            except (TLSConfigError, TLSError) as exc:
                log.warning("agent: auto_encrypt: %s sent an unusable reply: %s", server, exc)
                continue
            if self.ready.is_set():
                self.renewals += 1
                log.info("agent: auto_encrypt: renewed the client certificate")
            else:
                log.info("agent: auto_encrypt: got a client certificate from %s", server)
            self.ready.set()
            return True
        return False

    def _install(self, reply: SignReply, key_pem: str) -> None:
        """Trust the reply's new roots and present its certificate."""
        expires = load_certificate(reply.cert_pem).not_valid_after_utc
        new = [pem for pem in dict.fromkeys(reply.root_pems) if pem not in self.roots]
        # Everything is checked before anything changes; no await in between,
        # so no call sees the new certificate without the new roots.
        roots_bundle(new)
        present_certificate_pem(self.ctx, reply.cert_pem, key_pem)
        trust_roots(self.ctx, new)
        self.roots.update(new)
        self.expires = expires

    def renew_in_s(self, now: datetime) -> float:
        """Seconds until renewal: half the remaining validity."""
        if self.expires is None:
            return RETRY_S
        return max(0.0, (self.expires - now).total_seconds() / 2)

    async def run(self, servers: Any) -> None:
        """`servers()` lists the known servers' RPC addresses (gossip)."""
        while True:
            if not await self.fetch(list(servers())):
                await asyncio.sleep(RETRY_S)
                continue
            await asyncio.sleep(max(self.renew_in_s(datetime.now(UTC)), RETRY_S / 4))
