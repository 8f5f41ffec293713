"""auto_encrypt, the client half: fetch this agent's RPC certificate from a server.

Job: `CertFetcher` is the client side of `auto_encrypt { tls = true }`: fetch
a certificate at start, present it on the agent's RPC client context, renew
it before it expires. The server half (signing) is
server/auto_encrypt_signer.py.

The reply carries the roots along with the certificate: the client trusts
them for verifying servers in addition to its own ca_file, so servers whose
certificates come from the signing CA verify too.

Rules:
- The request carries the client's public key (PEM), its node name and its
  agent token (`acl.tokens.agent`, else `default`); the private key never
  leaves the client. The token is never logged.
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
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from proconsul.rpc import RPCClient
from proconsul.rpc.tls import (
    TLSConfigError,
    present_certificate_pem,
    roots_bundle,
    trust_roots,
)
from proconsul.server.auto_encrypt_signer import SIGN_METHOD
from proconsul.structs.rpc import SignReply, SignRequest
from proconsul.tls.certs import TLSError, generate_private_key, load_certificate, private_key_to_pem

log = logging.getLogger("proconsul.agent")

RETRY_S = 2.0
CALL_TIMEOUT_S = 10.0


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
