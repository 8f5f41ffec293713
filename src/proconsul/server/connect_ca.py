"""The Connect CA on servers: the leader creates the root; every server signs and trusts it.

Job:
- `ensure_ca_root` is a leader duty (run on each gain of leadership): when
  the state has no active root it records one through the log -- the root in
  `connect { ca_config { root_cert, private_key } }` when both are given,
  else a new built-in root (connect/ca.py) with a new cluster ID, as Consul's
  built-in provider does on CA initialization, together with the initial
  CA configuration (`ca_config`'s leaf_cert_ttl and the rest, Consul's
  defaults for what is missing) in one command. Either way signing then has
  one path: the active root in the replicated state.
- `active_signing_ca(store)` is what the auto_encrypt signer asks per
  request; `trusted_roots_pem(store)` the roots a server trusts for incoming
  client certificates besides its ca_file (Consul: "the server can accept
  incoming connections from both the built-in CA and the service mesh CA").
- `RootTrust` keeps a server's TLS context trusting every root in the state,
  the moment a root is applied (a watch on the roots' index key), on every
  server, so a client signed by one server is accepted by all.

Rules:
- Once a root exists, config changes to ca_config have no effect (Consul:
  after initialization the CA changes only through its API).
- The write is check-and-set on the roots' index: a second leader racing the
  first loses cleanly and keeps the winner's root.
- Private keys are never logged; log lines name root IDs only.
- Roots only ever get added to a context: OpenSSL's store cannot drop one, so
  a removed root stays trusted until the agent restarts (as rpc/tls.py says).
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from proconsul.connect.ca import (
    CAKeyPair,
    check_key_pair,
    generate_root,
    new_cluster_id,
    root_row,
)
from proconsul.connect.ca_config import PROVIDER_CONSUL, stored_config
from proconsul.state.ca_tables import ROOTS_KEY
from proconsul.state.store import StateStore
from proconsul.structs.commands import ApplyError, ApplyResult, CAConfigSetRequest, Command
from proconsul.structs.connect import CAConfiguration, CARoot

log = logging.getLogger("proconsul.agent")

LogApply = Callable[[Command], Awaitable[tuple[int, ApplyResult]]]


class CAInitError(Exception):
    """The CA could not be initialized (bad ca_config, or the write failed)."""


def _pem_or_file(value: str) -> str:
    if value.lstrip().startswith("-----BEGIN"):
        return value
    with open(value, encoding="ascii") as handle:
        return handle.read()


def configured_root(ca_config: Mapping[str, Any]) -> CAKeyPair | None:
    """The CA in ca_config (`root_cert`/`private_key`, PEM text or file paths;
    Consul's API spellings `RootCert`/`PrivateKey` too), None when not both given."""
    root = ca_config.get("root_cert") or ca_config.get("RootCert")
    key = ca_config.get("private_key") or ca_config.get("PrivateKey")
    if not root or not key:
        return None
    try:
        return check_key_pair(_pem_or_file(str(root)), _pem_or_file(str(key)))
    except Exception as exc:  # OSError, TLSError: say which setting, never the key
        raise CAInitError(
            f"connect.ca_config root_cert/private_key cannot be used: {exc}"
        ) from None


async def ensure_ca_root(
    store: StateStore,
    log_apply: LogApply,
    now: datetime,
    rng: random.Random,
    *,
    ca_config: Mapping[str, Any] | None = None,
) -> CARoot | None:
    """Make sure the state has an active root with its signing key; returns it.

    `log_apply` is the leader's own write (`Agent.leader_write`); `rng` must be
    a CSPRNG in production (`random.SystemRandom()`): it draws the root's key.
    Raises CAInitError when the write is refused and no other leader's root
    took its place (the caller retries on its next leadership round)."""
    tables = store.ca
    active = tables.active_root()
    have_root = active is not None and tables.has_signing_key(active.id)
    config = tables.config or CAConfiguration(
        provider=PROVIDER_CONSUL, config=stored_config(ca_config or {})
    )
    if have_root and tables.config is not None:
        return active
    if have_root:
        # A state from before the configuration was stored: record it alone.
        await log_apply(CAConfigSetRequest(config=config, config_cas_index=0))
        return tables.active_root()
    cluster_id = tables.cluster_id or new_cluster_id(rng)
    pair = configured_root(ca_config or {})
    source = "connect.ca_config"
    if pair is None:
        pair = generate_root(cluster_id=cluster_id, now=now, rng=rng)
        source = "a new built-in root"
    row = root_row(pair.cert_pem, cluster_id=cluster_id, active=True)
    # Roots already there stay (inactive) so certificates they signed keep
    # verifying; the new one becomes the active one.
    kept = [
        msgspec.structs.replace(root, active=False)
        for root in tables.roots.values()
        if root.id != row.id
    ]
    command = CAConfigSetRequest(
        config=config,
        config_cas_index=tables.config_index(),
        roots=[*kept, row],
        cluster_id=cluster_id,
        signing_keys={row.id: pair.key_pem},
        cas_index=tables.roots_index(),
    )
    _, result = await log_apply(command)
    active = tables.active_root()
    if isinstance(result, ApplyError):
        if active is not None and tables.has_signing_key(active.id):
            return active  # another leader initialized the CA first
        raise CAInitError(f"initializing the Connect CA failed: {result.message}")
    log.info(
        "connect: initialized primary datacenter CA from %s: root %s, trust domain %s",
        source,
        row.id,
        tables.trust_domain(),
    )
    return active


def active_signing_ca(store: StateStore) -> tuple[str, str] | None:
    """(certificate PEM, private key PEM) of the active root; None before the
    leader initialized the CA. For the auto_encrypt signer, per request."""
    return store.ca.active_signing()


def trusted_roots_pem(store: StateStore) -> list[str]:
    """Every root certificate in the state (active first), as PEM."""
    roots = sorted(store.ca.roots.values(), key=lambda root: not root.active)
    return [root.root_cert for root in roots]


class RootTrust:
    """Keeps `ctx` (a server's RPC context) trusting every root in `store`.

    Subscribes to the roots' index key, so a root applied by the FSM (or a
    snapshot restore) is trusted before the next handshake. `close()` ends
    the subscription."""

    def __init__(self, store: StateStore, ctx: ssl.SSLContext) -> None:
        self.store = store
        self.ctx = ctx
        self.trusted: set[str] = set()
        self.errors = 0
        self._handle = store.watches.subscribe([ROOTS_KEY], self.sync)
        self.sync()

    def sync(self) -> None:
        """Add roots not yet trusted; a root that does not load is logged and skipped."""
        for pem in trusted_roots_pem(self.store):
            if pem in self.trusted:
                continue
            try:
                self.ctx.load_verify_locations(cadata=pem)
            except Exception as exc:  # a watch callback runs inside fsm.apply: never raise
                self.errors += 1
                log.error("agent: cannot trust a Connect CA root: %s", exc)
                continue
            self.trusted.add(pem)
            log.info("agent: trusting the Connect CA root for incoming RPC client certificates")

    def close(self) -> None:
        self.store.watches.unsubscribe(self._handle)

    def stats(self) -> dict[str, int]:
        return {"trusted": len(self.trusted), "errors": self.errors}
