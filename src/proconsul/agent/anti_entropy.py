"""Anti-entropy: keep the catalog's copy of this node equal to the agent's local state.

Changes are pushed as soon as they happen (coalesced: many changes in one loop
turn make one sync), and a full comparison with the catalog runs periodically
so rows lost or changed behind the agent's back are put right. A row is marked
in sync only if it did not change while its write was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from proconsul.agent.local_state import LocalState
from proconsul.state.fsm import ApplyError, ApplyResult
from proconsul.structs.catalog import SERF_CHECK_ID, HealthCheck, NodeService
from proconsul.structs.commands import Command, DeregisterRequest, RegisterRequest

log = logging.getLogger("proconsul.agent.anti_entropy")

Write = Callable[[Command], Awaitable[tuple[int, ApplyResult]]]
CatalogView = Callable[[], Awaitable[tuple[dict[str, NodeService], dict[str, HealthCheck]]]]

# Rows the agent does not own even though they sit on its node.
_UNOWNED_SERVICES = frozenset({"consul"})
_UNOWNED_CHECKS = frozenset({SERF_CHECK_ID})


class SyncFailed(Exception):
    pass


class AntiEntropy:
    def __init__(
        self,
        local: LocalState,
        node_registration: Callable[[], RegisterRequest],
        write: Write,
        catalog_view: CatalogView,
        full_sync_interval_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.local = local
        self.node_registration = node_registration
        self.write = write
        self.catalog_view = catalog_view
        self.full_sync_interval_s = full_sync_interval_s
        self.rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._full_sync_due = True
        self.syncs = 0
        self.full_syncs = 0
        self.errors = 0
        self.synced = asyncio.Event()

    def trigger(self) -> None:
        self.synced.clear()
        self._wake.set()

    def request_full_sync(self) -> None:
        self._full_sync_due = True
        self.trigger()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_full_s = loop.time()
        backoff_s = 0.1
        while True:
            if loop.time() >= next_full_s:
                self._full_sync_due = True
            try:
                if self._full_sync_due:
                    await self._full_sync()
                    self._full_sync_due = False
                    # Consul staggers full syncs so a fleet does not sync in lockstep.
                    next_full_s = loop.time() + self.full_sync_interval_s * self.rng.uniform(
                        1.0, 1.5
                    )
                await self.sync_changes()
                backoff_s = 0.1
                if not self._wake.is_set():
                    self.synced.set()
            except (SyncFailed, ConnectionError, TimeoutError) as exc:
                self.errors += 1
                log.warning("anti-entropy sync failed, retrying: %s", exc)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            timeout = max(0.0, next_full_s - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    async def _apply(self, command: Command) -> None:
        _, result = await self.write(command)
        if isinstance(result, ApplyError):
            raise SyncFailed(result.message)

    async def _full_sync(self) -> None:
        """Compare with the catalog and mark whatever differs out of sync."""
        self.full_syncs += 1
        services, checks = await self.catalog_view()
        local = self.local
        local.node_in_sync = False
        for sid, remote in services.items():
            entry = local.services.get(sid)
            if entry is None:
                if sid not in _UNOWNED_SERVICES:
                    await self._apply(DeregisterRequest(node=local.node_name, service_id=sid))
            elif not entry.deleted:
                entry.in_sync = _same_service(entry.service, remote)
        for sid, entry in local.services.items():
            if sid not in services:
                entry.in_sync = entry.deleted
        for cid, remote_check in checks.items():
            check_entry = local.checks.get(cid)
            if check_entry is None:
                if cid not in _UNOWNED_CHECKS and remote_check.service_id not in (
                    _UNOWNED_SERVICES
                ):
                    await self._apply(DeregisterRequest(node=local.node_name, check_id=cid))
            elif not check_entry.deleted:
                check_entry.in_sync = _same_check(check_entry.check, remote_check)
        for cid, check_entry in local.checks.items():
            if cid not in checks:
                check_entry.in_sync = check_entry.deleted

    async def sync_changes(self) -> None:
        self.syncs += 1
        local = self.local
        if not local.node_in_sync:
            await self._apply(self.node_registration())
            local.node_in_sync = True
        for sid, entry in list(local.services.items()):
            if entry.in_sync:
                continue
            if entry.deleted:
                await self._apply(DeregisterRequest(node=local.node_name, service_id=sid))
                if local.services.get(sid) is entry:
                    entry.in_sync = True
                continue
            check_entries = [
                c
                for c in local.checks.values()
                if c.check.service_id == sid and not c.deleted and not c.in_sync
            ]
            snapshots = [c.check for c in check_entries]
            service = entry.service
            await self._apply(
                RegisterRequest(
                    node=local.node_name,
                    service=service,
                    checks=snapshots,
                    skip_node_update=True,
                )
            )
            if local.services.get(sid) is entry and entry.service is service:
                entry.in_sync = True
            for check_entry, snapshot in zip(check_entries, snapshots, strict=True):
                if check_entry.check is snapshot:
                    check_entry.in_sync = True
        for cid, check_entry in list(local.checks.items()):
            if check_entry.in_sync:
                continue
            if check_entry.deleted:
                await self._apply(DeregisterRequest(node=local.node_name, check_id=cid))
                if local.checks.get(cid) is check_entry:
                    check_entry.in_sync = True
                continue
            snapshot = check_entry.check
            service_entry = local.services.get(snapshot.service_id) if snapshot.service_id else None
            if service_entry is not None and not service_entry.in_sync:
                continue  # goes with its service on the next pass
            await self._apply(
                RegisterRequest(node=local.node_name, check=snapshot, skip_node_update=True)
            )
            if check_entry.check is snapshot:
                check_entry.in_sync = True
        local.forget_deleted()


def _same_service(local: NodeService, remote: NodeService) -> bool:
    return (
        local.service == remote.service
        and local.tags == remote.tags
        and local.address == remote.address
        and local.port == remote.port
        and local.meta == remote.meta
        and local.kind == remote.kind
        and local.weights == remote.weights
        and local.tagged_addresses == remote.tagged_addresses
        and local.enable_tag_override == remote.enable_tag_override
        and local.proxy == remote.proxy
        and local.connect == remote.connect
    )


def _same_check(local: HealthCheck, remote: HealthCheck) -> bool:
    return (
        local.status == remote.status
        and local.output == remote.output
        and local.name == remote.name
        and local.notes == remote.notes
        and local.service_id == remote.service_id
        and local.definition == remote.definition
    )
