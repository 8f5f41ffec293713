"""The Connect CA's leader-only RPCs: "ConnectCA.Sign" and "ConnectCA.ConfigurationSet".

Job: `ConnectCAEndpoints` gives every server the two handlers. Each runs on
the leader (`LeaderRouter.call`: a follower passes the payload on as it
came, token and all, and the leader checks it):
- "ConnectCA.Sign" (`CASignRequest` -> `IssuedCert`): the service's CSR,
  signed by the active root with the configured LeafCertTTL; CertPEM is the
  leaf followed by the active root's intermediates (the cross-signed root
  after a rotation). Needs service:write on the CSR's service (Consul checks
  the service the CSR names, so a CSR for another service is refused with
  the Permission denied text naming that service); a CSR of another trust
  domain or datacenter, or, when the request names a service, of another
  service, is refused as Consul refuses an invalid CSR (`BAD_QUERY`: 400).
- "ConnectCA.ConfigurationSet" (`CAConfigRequest` -> true): operator:write;
  validates with Consul's rules and texts (connect/ca_config.py); writes
  the configuration, and when the root key changes (a new `PrivateKey` or
  `RootCert`), rotates: the new root becomes active, every old root stays
  (inactive) so the leaves it signed keep verifying, and the new root is
  cross-signed by the old one and carried in its IntermediateCerts, so a
  peer that holds only the old root accepts new leaves. Configuration and
  roots are one command (`CAConfigSetRequest`), check-and-set on both.

Rules:
- Private keys never reach a log, an error text or a reply (only root IDs
  and service names are logged). The CSR's key stays the caller's.
- The built-in provider generates EC P-256 keys only: a configuration asking
  for another generated key type is refused with a clear text.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import msgspec

from proconsul.acl.resolved import ResolvedToken
from proconsul.connect.ca import (
    CAKeyPair,
    CSRError,
    check_key_pair,
    check_root_for_cluster,
    cross_sign,
    generate_root,
    read_service_csr,
    root_row,
    sign_service_leaf,
)
from proconsul.connect.ca_config import (
    PROVIDER_CONSUL,
    CAConfigError,
    CASettings,
    settings,
    stored_config,
)
from proconsul.rpc import ErrorCode, Handler, PeerInfo, RPCError
from proconsul.rpc.codec import decode_payload
from proconsul.server.leader_router import LeaderRouter
from proconsul.state.store import StateStore
from proconsul.structs.commands import ApplyError, ApplyResult, CAConfigSetRequest, Command
from proconsul.structs.connect import CAConfiguration, IssuedCert
from proconsul.structs.rpc import CAConfigRequest, CASignRequest
from proconsul.tls.certs import TLSError, load_private_key

log = logging.getLogger("proconsul.agent")

SIGN_METHOD = "ConnectCA.Sign"
CONFIG_SET_METHOD = "ConnectCA.ConfigurationSet"
NOT_INITIALIZED = "CA is uninitialized and unable to sign certificates yet: no root certificate"

LogApply = Callable[[Command], Awaitable[tuple[int, ApplyResult]]]
Resolve = Callable[[str], ResolvedToken | None]

_sign_decoder = msgspec.msgpack.Decoder(CASignRequest)
_config_decoder = msgspec.msgpack.Decoder(CAConfigRequest)
_issued_decoder = msgspec.msgpack.Decoder(IssuedCert)


def decode_issued(data: bytes) -> IssuedCert:
    return _issued_decoder.decode(data)


def leaf_ttl(config: CAConfiguration | None) -> timedelta:
    """LeafCertTTL of a stored configuration (validated when it was written)."""
    raw = dict(config.config) if config is not None else {}
    raw["SkipValidate"] = True
    return timedelta(seconds=settings(raw).leaf_ttl_s)


class ConnectCAEndpoints:
    """See the module docstring. `leader_write` is the leader's own log write."""

    def __init__(
        self,
        store: StateStore,
        router: LeaderRouter,
        datacenter: str,
        *,
        resolve: Resolve,
        leader_write: LogApply,
    ) -> None:
        self.store = store
        self.router = router
        self.datacenter = datacenter
        self.resolve = resolve
        self.leader_write = leader_write
        self.signed = 0
        self.rotations = 0

    def handlers(self) -> dict[str, Handler]:
        return {SIGN_METHOD: self._handle_sign, CONFIG_SET_METHOD: self._handle_config_set}

    def stats(self) -> dict[str, int]:
        return {"signed": self.signed, "rotations": self.rotations}

    # ----- ConnectCA.Sign ---------------------------------------------------

    async def _handle_sign(self, payload: bytes, peer: PeerInfo) -> bytes:
        request: CASignRequest = decode_payload(_sign_decoder, payload, SIGN_METHOD)

        async def here() -> bytes:
            return msgspec.msgpack.encode(self.sign(request))

        return await self.router.call(SIGN_METHOD, payload, here)

    def sign(self, request: CASignRequest) -> IssuedCert:
        """Sign on this server (the leader): checks, then the active root signs."""
        try:
            _, found = read_service_csr(request.csr)
        except CSRError as exc:
            raise RPCError(str(exc), ErrorCode.BAD_QUERY) from None
        resolved = self.resolve(request.token)
        if resolved is not None and not resolved.authorizer.service_write(found.service):
            raise resolved.deny("service", "write", found.service)
        tables = self.store.ca
        active = tables.active_root()
        key = tables.signing_key(active.id) if active is not None else None
        if active is None or key is None:
            raise RPCError(NOT_INITIALIZED)
        try:
            issued = sign_service_leaf(
                active.root_cert,
                key,
                request.csr,
                trust_domain=tables.trust_domain(),
                datacenter=self.datacenter,
                service=request.service,
                valid_for=leaf_ttl(tables.config),
                now=datetime.now(UTC),
                intermediates=active.intermediate_certs or (),
            )
        except CSRError as exc:
            raise RPCError(str(exc), ErrorCode.BAD_QUERY) from None
        index = max(1, self.store.last_index)
        issued.create_index = issued.modify_index = index
        self.signed += 1
        log.debug("connect: signed a leaf for service %r (root %s)", issued.service, active.id)
        return issued

    # ----- ConnectCA.ConfigurationSet ----------------------------------------

    async def _handle_config_set(self, payload: bytes, peer: PeerInfo) -> bytes:
        request: CAConfigRequest = decode_payload(_config_decoder, payload, CONFIG_SET_METHOD)

        async def here() -> bytes:
            await self.set_configuration(request)
            return msgspec.msgpack.encode(True)

        return await self.router.call(CONFIG_SET_METHOD, payload, here)

    def _authorize_operator_write(self, token: str) -> None:
        resolved = self.resolve(token)
        if resolved is not None and not resolved.authorizer.operator_write():
            raise resolved.deny("operator", "write")

    async def set_configuration(self, request: CAConfigRequest) -> None:
        """On the leader: validate, then store the configuration, rotating the
        root when its key changes (module docstring)."""
        self._authorize_operator_write(request.token)
        given = request.config
        provider = given.provider or PROVIDER_CONSUL
        if provider != PROVIDER_CONSUL:
            raise RPCError(f"unknown CA provider {provider!r}", ErrorCode.BAD_QUERY)
        try:
            found = settings(given.config)
        except CAConfigError as exc:
            raise RPCError(str(exc), ErrorCode.BAD_QUERY) from None
        tables = self.store.ca
        active = tables.active_root()
        old_key = tables.signing_key(active.id) if active is not None else None
        if active is None or old_key is None:
            raise RPCError(NOT_INITIALIZED)
        config = CAConfiguration(
            provider=PROVIDER_CONSUL,
            config=stored_config(given.config),
            force_without_cross_signing=given.force_without_cross_signing,
        )
        pair = self._new_root(found, tables.cluster_id)
        command = CAConfigSetRequest(config=config, config_cas_index=tables.config_index())
        if pair is not None:
            row = root_row(pair.cert_pem, cluster_id=tables.cluster_id, active=True)
            if row.id != active.id:
                now = datetime.now(UTC)
                bridge = cross_sign(pair.cert_pem, active.root_cert, old_key, now=now)
                row.intermediate_certs = [bridge]
                kept = [
                    msgspec.structs.replace(root, active=False)
                    for root in tables.roots.values()
                    if root.id != row.id
                ]
                command.roots = [*kept, row]
                command.cluster_id = tables.cluster_id
                command.signing_keys = {row.id: pair.key_pem}
                command.cas_index = tables.roots_index()
        _, result = await self.leader_write(command)
        if isinstance(result, ApplyError):
            raise RPCError(result.message)
        if command.roots is not None:
            self.rotations += 1
            new_active = tables.active_root()
            log.info(
                'connect: CA rotated to new root under provider "consul": root %s, old root %s',
                new_active.id if new_active is not None else "?",
                active.id,
            )
        else:
            log.info("connect: CA provider config updated")

    def _new_root(self, found: CASettings, cluster_id: str) -> CAKeyPair | None:
        """The root the configuration names (a PrivateKey, with or without its
        RootCert), or None when it names none (the current root stays)."""
        if found.key_type != "ec" or found.key_bits != 256:
            raise RPCError(
                "the built-in CA generates EC P-256 keys only "
                f"(PrivateKeyType {found.key_type!r}, PrivateKeyBits {found.key_bits})",
                ErrorCode.BAD_QUERY,
            )
        if not found.private_key and not found.root_cert:
            return None
        if not found.private_key:
            raise RPCError("RootCert was given without its PrivateKey", ErrorCode.BAD_QUERY)
        try:
            if found.root_cert:
                pair = check_key_pair(found.root_cert, found.private_key)
            else:
                key = load_private_key(found.private_key)
                pair = generate_root(
                    cluster_id=cluster_id,
                    now=datetime.now(UTC),
                    rng=random.SystemRandom(),
                    key=key,
                )
            check_root_for_cluster(pair.cert_pem, cluster_id)
        except TLSError as exc:
            # The texts name what is wrong, never the key itself.
            raise RPCError(f"invalid CA root or key: {exc}", ErrorCode.BAD_QUERY) from None
        return pair
