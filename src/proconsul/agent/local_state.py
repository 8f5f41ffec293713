"""What this agent owns: its services and checks, their tokens, and what is in sync.

The agent is the source of truth for its own services; the catalog is a copy
that anti-entropy keeps equal. Every change here marks the row out of sync and
calls `on_change`, which wakes the syncer. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from proconsul.agent.service_def import CheckSpec
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


@dataclass
class LocalState:
    node_name: str
    on_change: Callable[[], None] = lambda: None
    services: dict[str, LocalService] = field(default_factory=dict)
    checks: dict[str, LocalCheck] = field(default_factory=dict)
    node_in_sync: bool = False

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
        entry.check = msgspec.structs.replace(entry.check, status=status, output=output)
        entry.in_sync = False
        self.on_change()
        return True

    def mark_all_out_of_sync(self) -> None:
        self.node_in_sync = False
        for service in self.services.values():
            service.in_sync = False
        for check in self.checks.values():
            check.in_sync = False
        self.on_change()

    def forget_deleted(self) -> None:
        """Drop rows whose deletion has reached the catalog."""
        for sid in [s for s, e in self.services.items() if e.deleted and e.in_sync]:
            del self.services[sid]
        for cid in [c for c, e in self.checks.items() if e.deleted and e.in_sync]:
            del self.checks[cid]
