"""What this agent owns: its services and checks, their tokens, and what is in sync.

The agent is the source of truth for its own services; the catalog is a copy
that anti-entropy keeps equal. Every change here marks the row out of sync and
calls `on_change`, which wakes the syncer. No I/O and no clock here: callers
pass `now_s` (monotonic seconds).

Rules:
- `check_update_interval` (Consul's): a check's status change is pushed at
  once, with its latest output. A change of output alone is held back until
  `check_update_interval_s` has passed since the check last reached the
  catalog. `on_change` fires when an output is first held back (nothing to
  push yet, but the syncer must learn when to wake); the syncer asks
  `next_output_due_s()` when to wake and `release_due_outputs(now_s)` marks
  the held-back checks out of sync.
  An interval of 0 pushes every change.
- A row is in sync only if the catalog got the row the agent holds now: a
  write that raced with a change leaves the row out of sync (except that an
  output-only change that raced is held back like any other).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from proconsul.agent.service_def import CheckSpec
from proconsul.checks.alias import alias_status
from proconsul.structs.catalog import HealthCheck, NodeService
from proconsul.structs.definitions import CheckDefinition


@dataclass
class LocalService:
    service: NodeService
    token: str = ""
    in_sync: bool = False
    deleted: bool = False


@dataclass
class LocalCheck:
    check: HealthCheck
    definition: CheckDefinition
    token: str = ""
    in_sync: bool = False
    deleted: bool = False
    critical_since_s: float | None = None
    # When this check's row last reached the catalog (None: not yet).
    synced_at_s: float | None = None
    # An output-only change waits until then (None: nothing held back).
    output_due_s: float | None = None


def output_held_until_s(interval_s: float, synced_at_s: float | None, now_s: float) -> float | None:
    """Until when an output-only change waits, or None if it may be pushed now.

    Consul syncs a check's output at most once per `check_update_interval`,
    counted here from the check's last sync; 0 means every change goes at once.
    """
    if interval_s <= 0 or synced_at_s is None:
        return None
    due_s = synced_at_s + interval_s
    return due_s if due_s > now_s else None


def same_check_row(local: HealthCheck, remote: HealthCheck, *, ignore_output: bool = False) -> bool:
    """Whether the catalog's row says what the agent's does (indexes and the
    service name/tags the catalog fills in are not the agent's to compare)."""
    return (
        local.status == remote.status
        and (ignore_output or local.output == remote.output)
        and local.name == remote.name
        and local.notes == remote.notes
        and local.service_id == remote.service_id
        and local.definition == remote.definition
    )


@dataclass
class LocalState:
    node_name: str
    on_change: Callable[[], None] = lambda: None
    services: dict[str, LocalService] = field(default_factory=dict)
    checks: dict[str, LocalCheck] = field(default_factory=dict)
    node_in_sync: bool = False
    check_update_interval_s: float = 0.0
    _refreshing_aliases: bool = False

    # ----- services ----------------------------------------------------------

    def add_service(self, service: NodeService, token: str = "") -> None:
        existing = self.services.get(service.id)
        if existing is not None and not existing.deleted and existing.service == service:
            existing.token = token
            return
        self.services[service.id] = LocalService(service=service, token=token)
        self.on_change()

    def remove_service(self, service_id: str) -> bool:
        """Remove a service and its checks; False if the agent has no such service."""
        entry = self.services.get(service_id)
        if entry is None or entry.deleted:
            return False
        entry.deleted = True
        entry.in_sync = False
        for check in self.checks.values():
            if check.check.service_id == service_id and not check.deleted:
                check.deleted = True
                check.in_sync = False
        self.on_change()
        return True

    def live_services(self) -> dict[str, NodeService]:
        return {sid: e.service for sid, e in self.services.items() if not e.deleted}

    def service(self, service_id: str) -> NodeService | None:
        entry = self.services.get(service_id)
        return None if entry is None or entry.deleted else entry.service

    # ----- checks ------------------------------------------------------------

    def add_check(self, spec: CheckSpec, now_s: float, *, keep_status: bool = True) -> None:
        """Add or replace a check. A replaced check keeps its last status and output.

        A check that starts critical (Consul's default) is critical from `now_s`,
        which is what deregister_critical_service_after counts from.
        """
        row = spec.row
        existing = self.checks.get(row.check_id)
        critical_since_s = now_s if row.status == "critical" else None
        if keep_status and existing is not None and not existing.deleted:
            row = msgspec.structs.replace(
                row, status=existing.check.status, output=existing.check.output
            )
            critical_since_s = existing.critical_since_s
            if existing.check == row and existing.definition == spec.definition:
                existing.token = spec.token
                return
        self.checks[row.check_id] = LocalCheck(
            check=row,
            definition=spec.definition,
            token=spec.token,
            critical_since_s=critical_since_s,
        )
        self.on_change()

    def remove_check(self, check_id: str) -> bool:
        entry = self.checks.get(check_id)
        if entry is None or entry.deleted:
            return False
        entry.deleted = True
        entry.in_sync = False
        self.on_change()
        return True

    def live_checks(self) -> dict[str, HealthCheck]:
        return {cid: e.check for cid, e in self.checks.items() if not e.deleted}

    def check(self, check_id: str) -> LocalCheck | None:
        entry = self.checks.get(check_id)
        return None if entry is None or entry.deleted else entry

    def update_check(self, check_id: str, status: str, output: str, now_s: float) -> bool:
        """Record a check result; returns False for an unknown check."""
        entry = self.check(check_id)
        if entry is None:
            return False
        if status == "critical":
            if entry.check.status != "critical" or entry.critical_since_s is None:
                entry.critical_since_s = now_s
        else:
            entry.critical_since_s = None
        if entry.check.status == status and entry.check.output == output:
            return True
        status_changed = entry.check.status != status
        entry.check = msgspec.structs.replace(entry.check, status=status, output=output)
        if not status_changed and entry.in_sync:
            held_until_s = output_held_until_s(
                self.check_update_interval_s, entry.synced_at_s, now_s
            )
            if held_until_s is not None:
                # Output alone (often a timestamp) would otherwise cost one
                # catalog write per run of the check.
                if entry.output_due_s is None:
                    entry.output_due_s = held_until_s
                    self.on_change()  # nothing to push; the syncer learns when to wake
                return True
        entry.in_sync = False
        entry.output_due_s = None
        self.on_change()
        return True

    def refresh_aliases(self, now_s: float) -> None:
        """Alias checks on local services follow those services' checks
        (checks/alias.py). An alias of another node's service is left as it is."""
        if self._refreshing_aliases:
            return  # the updates below call on_change, which comes back here
        self._refreshing_aliases = True
        try:
            entries = [e for e in self.checks.values() if not e.deleted]
            aliases = [
                e
                for e in entries
                if e.definition.alias_service and e.definition.alias_node in ("", self.node_name)
            ]
            if not aliases:
                return
            # Each alias looks only at its service's checks and the node's own,
            # gathered in one pass (in check order), not at every check.
            relevant: dict[str, list[LocalCheck]] = {
                e.definition.alias_service: [] for e in aliases
            }
            for e in entries:
                service_id = e.check.service_id
                if not service_id:
                    for found in relevant.values():
                        found.append(e)
                elif service_id in relevant:
                    relevant[service_id].append(e)
            for entry in aliases:
                target = entry.definition.alias_service
                status, output = alias_status(
                    target,
                    (e.check for e in relevant[target] if e is not entry),
                    service_known=self.service(target) is not None,
                    node=self.node_name,
                )
                if (status, output) != (entry.check.status, entry.check.output):
                    self.update_check(entry.check.check_id, status, output, now_s)
        finally:
            self._refreshing_aliases = False

    def check_synced(self, entry: LocalCheck, sent: HealthCheck, now_s: float) -> None:
        """Record that the catalog accepted `sent` for `entry`.

        If the row changed while the write was in flight it stays out of sync,
        unless only its output changed: that waits out the interval as usual.
        """
        if entry.deleted or self.checks.get(entry.check.check_id) is not entry:
            return  # deleted or replaced meanwhile: that change still has to go
        entry.synced_at_s = now_s
        if entry.check is sent:
            entry.in_sync = True
            entry.output_due_s = None
            return
        if same_check_row(entry.check, sent, ignore_output=True):
            held_until_s = output_held_until_s(self.check_update_interval_s, now_s, now_s)
            if held_until_s is not None:
                entry.in_sync = True
                entry.output_due_s = held_until_s

    def next_output_due_s(self) -> float | None:
        """The earliest time a held-back output is due (None: none is held back)."""
        dues = [
            e.output_due_s
            for e in self.checks.values()
            if e.output_due_s is not None and not e.deleted
        ]
        return min(dues) if dues else None

    def release_due_outputs(self, now_s: float) -> bool:
        """Mark checks whose held-back output is due out of sync; True if any were."""
        released = False
        for entry in self.checks.values():
            if entry.output_due_s is None or entry.output_due_s > now_s:
                continue
            entry.output_due_s = None
            if not entry.deleted and entry.in_sync:
                entry.in_sync = False
                released = True
        return released

    def mark_all_out_of_sync(self) -> None:
        self.node_in_sync = False
        for service in self.services.values():
            service.in_sync = False
        for check in self.checks.values():
            check.in_sync = False
            check.output_due_s = None
        self.on_change()

    def forget_deleted(self) -> None:
        """Drop rows whose deletion has reached the catalog."""
        for sid in [s for s, e in self.services.items() if e.deleted and e.in_sync]:
            del self.services[sid]
        for cid in [c for c, e in self.checks.items() if e.deleted and e.in_sync]:
            del self.checks[cid]
