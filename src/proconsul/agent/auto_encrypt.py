"""auto_encrypt: servers sign client agents' RPC certificates; clients fetch them.

Job: `signer_from_config` gives a server with `auto_encrypt { allow_tls = true }`
the anonymous RPC handler "AutoEncrypt.Sign"; `CertFetcher` is the client
side of `auto_encrypt { tls = true }`: fetch a certificate at start, present
it on the agent's RPC client context, renew it before it expires.

The signing CA: the Connect CA's active root in the replicated state, asked
per request through `active_ca` (agent/connect_ca.py `active_signing_ca`). The
leader initializes it as Consul does: the CA in `connect { ca_config {
root_cert, private_key } }` when both are given, else a built-in root of its
own, which every server also trusts for incoming client certificates
(`RootTrust`). Until the leader has done so the signer answers an error and
the client asks again. Without `active_ca` (unit tests) the ca_config CA is
used directly. `ca_config.leaf_cert_ttl` (default 72h, as Consul) is the
validity.

The reply carries the roots along with the certificate, as Consul's does
(its ConnectCARoots and ManualCARoots): the signing CA's root, then the CA
certificates the server itself trusts (its ca_file/ca_path, `manual_roots`).
The client trusts them for verifying servers in addition to its own
ca_file, so servers whose certificates come from the signing CA verify too.

Rules:
- The request carries the client's public key (PEM), its node name and its
  agent token (`acl.tokens.agent`, else `default`); the private key never
  leaves the client. The server decides the names (client.<dc>.<domain>,
  localhost, 127.0.0.1): an anonymous caller cannot ask for a server name.
- With ACLs on, the server signs only for a token with `node:write` on the
  requesting node, as Consul does (`authorize` in `signer_from_config`): an
  unknown secret is refused with "ACL not found", a missing right with
  Consul's Permission denied text, both `ACL_DENIED`. With ACLs off anyone
  reaching the RPC port may ask. The token is never logged.
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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from proconsul.connect.ca import check_key_pair, sign_agent_client
from proconsul.rpc import ErrorCode, Handler, PeerInfo, RPCClient, RPCError
from proconsul.rpc.tls import (
    TLSConfigError,
    present_certificate_pem,
    roots_bundle,
    trust_roots,
)
from proconsul.structs.duration import parse_duration
from proconsul.structs.rpc import SignReply, SignRequest
from proconsul.tls.certs import (
    TLSError,
    generate_private_key,
    load_certificate,
    private_key_to_pem,
)

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
) -> Handler | None:
    """The "AutoEncrypt.Sign" handler; None when there is no `active_ca` and no
    CA key in `ca_config`.

    `active_ca()` is asked on every request (servers pass the state's active
    root). `manual_roots`: the server's own CA bundle (its ca_file/ca_path PEM,
    e.g. `rpc.tls.load_ca_pem(...)`), sent to clients after the signing CA's root.
    `authorize(token, node)` is called before signing (the server's ACL check)."""
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
    return _sign_handler(active_ca, list(manual_roots), datacenter, domain, ttl_s, authorize)


def _sign_handler(
    active_ca: ActiveCA,
    manual_roots: list[str],
    datacenter: str,
    domain: str,
    ttl_s: float,
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
            valid_for=timedelta(seconds=ttl_s),
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


def _no_credentials() -> tuple[str, str]:
    return "", ""


class CertFetcher:
    """A client's auto_encrypt certificate: fetched once at start, then renewed.

    `credentials()` gives the (node name, agent token) each request carries; it
    is asked on every fetch, so a token set at run time is used on the next one."""

    def __init__(
        self,
        ctx: ssl.SSLContext,
        anonymous: RPCClient,
        credentials: Callable[[], tuple[str, str]] = _no_credentials,
    ) -> None:
        self.ctx = ctx
        self.anonymous = anonymous
        self.credentials = credentials
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
        node, token = self.credentials()
        payload = msgspec.msgpack.encode(
            SignRequest(public_key_pem=public_pem, node=node, token=token)
        )
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
