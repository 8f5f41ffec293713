"""The agent's Connect CA view: the roots, and one leaf certificate per local service.

Job: `LeafCerts` serves `/v1/agent/connect/ca/roots` and
`/v1/agent/connect/ca/leaf/<service>` (and the agent's proxy view) from
memory, as Consul's agent cache does:
- **Roots**: one background task keeps a blocking read of "ConnectCA.Roots"
  open through the delegate (a server answers from its store, a client asks
  a server), started on first use. `roots(min_index, wait_s)` answers from
  that view and blocks while its index is not above `min_index`.
- **Leaves**: per service one P-256 key and certificate. The first request
  makes the key and a CSR naming the service's SPIFFE ID (connect/ca.py
  `leaf_csr`) and asks the leader to sign it ("ConnectCA.Sign" through the
  delegate's `call_raw`, with the caller's token); errors (Permission denied,
  No cluster leader) go back to that caller. Then a task per service renews
  the certificate:
  - at a random point between 60% and 90% of its lifetime (Consul's soft
    expiry window; `renew_after_s`);
  - when the active root changes (its SigningKeyID differs from the leaf's
    authority key ID), after a random delay in [0, CA_CHANGE_JITTER_S) so a
    rotation does not bring every agent to the leader in the same instant
    (Consul spreads these over 30 s; a smaller window here, since a
    cross-signed chain keeps both generations valid meanwhile);
  - a failed renewal is retried with a growing delay (1 s doubling to 30 s);
    renewals of one service are at least MIN_RENEW_INTERVAL_S apart.
- `leaf(service, token, min_index, wait_s)` returns the current
  `IssuedCert` (PrivateKeyPEM filled in). With `min_index` it blocks until a
  certificate with a higher `ModifyIndex` is there or the wait ends (default
  5 min, at most 10, plus up to 1/16 jitter: Consul's blocking wait), then
  returns the current one. `ModifyIndex` grows strictly with every
  certificate of a service, so a blocking caller never misses a renewal.

Rules:
- The private key never leaves the agent except in the reply to a caller
  allowed service:write (the HTTP layer checks; the leader checks again
  when signing); never logged, never in a repr.
- Renewals sign with the token of the latest successful request; a leaf not
  asked for in IDLE_S (72 h) is dropped when it is due, not renewed.
- `close()` cancels every task and waits for them: nothing outlives the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

from proconsul.connect.ca import CSRError, leaf_authority_key_id, leaf_csr
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.server.connect_ca_rpc import SIGN_METHOD, decode_issued
from proconsul.server.read_options import wait_with_jitter_s
from proconsul.structs.connect import IndexedCARoots, IssuedCert
from proconsul.structs.requests import QueryOptions, ReadRequest, ReadResponse
from proconsul.structs.rpc import CASignRequest
from proconsul.tls.certs import private_key_to_pem

log = logging.getLogger("proconsul.agent")

ROOTS_METHOD = "ConnectCA.Roots"
# Consul renews a leaf at a random point in this part of its lifetime.
SOFT_RENEW_FRACTION = 0.6
HARD_RENEW_FRACTION = 0.9
# After the active root changes, each leaf renews within this window.
CA_CHANGE_JITTER_S = 5.0
RETRY_MIN_S = 1.0
MIN_RENEW_INTERVAL_S = 0.5
RETRY_MAX_S = 30.0
SIGN_TIMEOUT_S = 20.0
ROOTS_WAIT_S = 300.0
# A leaf nobody asked for this long is dropped instead of renewed (Consul's
# agent cache forgets an entry three days after its last use).
IDLE_S = 72 * 3600.0

Read = Callable[[str, ReadRequest], Awaitable[ReadResponse]]
Call = Callable[[str, bytes, float], Awaitable[bytes]]


def renew_after_s(
    valid_after: datetime, valid_before: datetime, now: datetime, rng: random.Random
) -> float:
    """Seconds from `now` until a leaf valid over [valid_after, valid_before)
    should be renewed: a random point between 60% and 90% of its lifetime,
    not before now; 0 once past 90% (Consul's soft and hard renewal marks)."""
    lifetime = (valid_before - valid_after).total_seconds()
    if lifetime <= 0:
        return 0.0
    soft = valid_after.timestamp() + lifetime * SOFT_RENEW_FRACTION
    hard = valid_after.timestamp() + lifetime * HARD_RENEW_FRACTION
    now_s = now.timestamp()
    if now_s >= hard:
        return 0.0
    start = max(soft, now_s)
    return start + rng.random() * (hard - start) - now_s


@dataclass(eq=False)
class _Leaf:
    service: str
    token: str
    cert: IssuedCert | None = None
    authority_key_id: str = ""
    index: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # a root change
    task: asyncio.Task[None] | None = None
    last_used: float = 0.0  # loop time of the last request

    def __repr__(self) -> str:
        return f"_Leaf(service={self.service!r}, index={self.index})"


class LeafCerts:
    """See the module docstring."""

    def __init__(
        self, *, datacenter: str, read: Read, call: Call, rng: random.Random | None = None
    ) -> None:
        self.datacenter = datacenter
        self._read = read
        self._call = call
        self.rng = rng or random.Random()
        self._roots: IndexedCARoots | None = None
        self._roots_index = 0
        self._roots_changed = asyncio.Event()
        self._roots_task: asyncio.Task[None] | None = None
        self._leaves: dict[str, _Leaf] = {}
        self._closed = False
        self.signed = 0
        self.renewals = 0
        self.failures = 0

    # ----- roots -------------------------------------------------------------

    async def roots(self, min_index: int = 0, wait_s: float = 0.0) -> tuple[int, IndexedCARoots]:
        """The roots as this agent sees them and their index; blocks while the
        index is not above `min_index` (Consul's blocking wait)."""
        await self._ensure_roots()
        await self._block(lambda: self._roots_index, lambda: self._roots_changed, min_index, wait_s)
        assert self._roots is not None
        return self._roots_index, self._roots

    async def _block(
        self,
        index: Callable[[], int],
        changed: Callable[[], asyncio.Event],
        min_index: int,
        wait_s: float,
    ) -> None:
        """Consul's blocking wait: until `index()` passes `min_index` (each change
        sets the event `changed()` returns) or the jittered wait ends."""
        if min_index <= 0 or index() > min_index:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_with_jitter_s(wait_s, self.rng)):
                while index() <= min_index:
                    await changed().wait()

    async def _ensure_roots(self) -> None:
        if self._roots is None:
            # The first answer comes straight from a read, so its error (no
            # leader, no servers) reaches the caller; then the watch keeps it.
            response = await self._read(ROOTS_METHOD, ReadRequest())
            self._set_roots(response.meta.index, response.value)
        if self._roots_task is None and not self._closed:
            self._roots_task = asyncio.create_task(self._watch_roots(), name="connect-ca-roots")

    def _set_roots(self, index: int, roots: IndexedCARoots) -> None:
        if self._roots is not None and index <= self._roots_index:
            return
        old_active = self._active_key_id()
        self._roots, self._roots_index = roots, index
        self._roots_changed.set()
        self._roots_changed = asyncio.Event()
        if self._active_key_id() != old_active:
            for leaf in self._leaves.values():
                leaf.wake.set()

    def _active_key_id(self) -> str:
        roots = self._roots
        if roots is None:
            return ""
        for root in roots.roots:
            if root.active:
                return root.signing_key_id
        return ""

    async def _watch_roots(self) -> None:
        delay = RETRY_MIN_S
        while True:
            options = QueryOptions(min_index=self._roots_index, max_query_time_s=ROOTS_WAIT_S)
            try:
                response = await self._read(ROOTS_METHOD, ReadRequest(options=options))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("agent: watching the Connect CA roots failed: %s", exc)
                await asyncio.sleep(delay * (1 + self.rng.random()))
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_MIN_S
            self._set_roots(response.meta.index, response.value)

    # ----- leaves --------------------------------------------------------------

    async def leaf(
        self, service: str, token: str, min_index: int = 0, wait_s: float = 0.0
    ) -> IssuedCert:
        """The current leaf of `service` (see the module docstring)."""
        if self._closed:
            raise RPCError("the agent is stopping")
        entry = self._leaves.get(service)
        if entry is None:
            entry = self._leaves.setdefault(service, _Leaf(service, token))
        entry.last_used = asyncio.get_running_loop().time()
        async with entry.lock:
            if entry.cert is None:
                try:
                    await self._issue(entry, token)
                except BaseException:
                    if self._leaves.get(service) is entry:
                        del self._leaves[service]  # nothing kept for a refused request
                    raise
                entry.task = asyncio.create_task(
                    self._renew_loop(entry), name=f"connect-leaf-{service}"
                )
            elif token != entry.token:
                entry.token = token
        await self._block(lambda: entry.index, lambda: entry.changed, min_index, wait_s)
        assert entry.cert is not None
        return entry.cert

    async def _issue(self, entry: _Leaf, token: str) -> None:
        """A new key, a CSR, the leader's signature: the entry's next certificate."""
        await self._ensure_roots()
        roots = self._roots
        if roots is None or not roots.trust_domain:
            raise RPCError("cluster has no CA bootstrapped yet")
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            csr = leaf_csr(
                key,
                trust_domain=roots.trust_domain,
                datacenter=self.datacenter,
                service=entry.service,
            )
        except CSRError as exc:
            raise RPCError(str(exc), ErrorCode.BAD_QUERY) from None
        request = CASignRequest(
            csr=csr, token=token, datacenter=self.datacenter, service=entry.service
        )
        data = await self._call(SIGN_METHOD, msgspec.msgpack.encode(request), SIGN_TIMEOUT_S)
        issued = decode_issued(data)
        index = max(issued.modify_index, entry.index + 1)
        entry.cert = msgspec.structs.replace(
            issued, private_key_pem=private_key_to_pem(key), modify_index=index
        )
        entry.authority_key_id = leaf_authority_key_id(issued.cert_pem)
        entry.index = index
        entry.token = token
        entry.wake.clear()
        self.signed += 1
        entry.changed.set()
        entry.changed = asyncio.Event()

    async def _renew_loop(self, entry: _Leaf) -> None:
        delay = RETRY_MIN_S
        while True:
            cert = entry.cert
            assert cert is not None
            wait = renew_after_s(cert.valid_after, cert.valid_before, datetime.now(UTC), self.rng)
            if self._active_key_id() not in ("", entry.authority_key_id):
                wait = min(wait, self.rng.random() * CA_CHANGE_JITTER_S)
            # Never a hot loop, whatever TTL a skip_validate configuration allows.
            wait = max(wait, MIN_RENEW_INTERVAL_S)
            try:
                async with asyncio.timeout(wait):
                    await entry.wake.wait()
                # The active root changed: renew within the jitter window.
                entry.wake.clear()
                continue
            except TimeoutError:
                pass
            if asyncio.get_running_loop().time() - entry.last_used > IDLE_S:
                # Unused for days: forget it (the next request starts afresh).
                self._leaves.pop(entry.service, None)
                return
            try:
                async with entry.lock:
                    await self._issue(entry, entry.token)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                log.warning(
                    "agent: renewing the leaf certificate of service %r failed: %s",
                    entry.service,
                    exc,
                )
                await asyncio.sleep(delay * (1 + self.rng.random()))
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_MIN_S
            self.renewals += 1
            log.info(
                "agent: renewed the leaf certificate of service %r (index %d)",
                entry.service,
                entry.index,
            )

    # ----- lifecycle ----------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        tasks = [leaf.task for leaf in self._leaves.values() if leaf.task is not None]
        if self._roots_task is not None:
            tasks.append(self._roots_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._leaves.clear()
        self._roots_task = None

    def stats(self) -> dict[str, float]:
        return {
            "leaves": len(self._leaves),
            "signed": self.signed,
            "renewals": self.renewals,
            "renewal_failures": self.failures,
        }
