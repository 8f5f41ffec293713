"""Anti-entropy: keep the catalog's copy of this node equal to the agent's local state.

Job: push the agent's node, services and checks (agent/local_state.py) to the
catalog through `write(command, token)`, and remove rows on this node that
the agent does not know about.

Rules (Consul's where Consul has one):
- Changes are pushed as soon as they happen (coalesced: many changes in one
  loop turn make one sync). A full comparison with the catalog runs at start
  and about every minute (staggered) so rows lost or changed behind the
  agent's back are put right, and rows the agent does not own are removed.
- A row is marked in sync only if it did not change while its write was in
  flight.
- Tokens, read afresh on every write because they change at run time: the
  node registration goes with the agent token (`agent`, else `default`). A
  service goes with the token from its definition, else `default`; its
  checks ride along with it only when they would go with that same token,
  otherwise each goes alone with its own token (else, for a node-level check,
  the agent token; for a service check, `default`). Deregistrations go with
  the agent token, as in Consul 1.15+ (node:write covers every row on the
  node); if that is refused, with the row's own token.
- `check_update_interval` is decided in local_state; here the loop wakes when
  a held-back output falls due, and a full sync ignores the output of a check
  whose output is being held back (else it would push it every minute).
- A write the servers refuse (an ACL 403, or a row the catalog rejects) is
  logged once per (row, reason) until that row syncs again; the row then
  waits for the next full sync, a change to it or a change of its token,
  and the rest of the sync goes on. Transport failures and other remote
  errors retry the whole round with backoff.
- Secrets are never logged: the server's reason is logged with the token
  masked should it appear in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from proconsul.acl.errors import ACLDenied
from proconsul.agent.local_state import LocalCheck, LocalState, same_check_row
from proconsul.rpc.errors import RPCError
from proconsul.structs.catalog import SERF_CHECK_ID, HealthCheck, NodeService
from proconsul.structs.commands import (
    ApplyError,
    ApplyResult,
    Command,
    DeregisterRequest,
    RegisterRequest,
)

log = logging.getLogger("proconsul.agent.anti_entropy")

Write = Callable[[Command, str], Awaitable[tuple[int, ApplyResult]]]
CatalogView = Callable[[], Awaitable[tuple[dict[str, NodeService], dict[str, HealthCheck]]]]

# Rows the agent does not own even though they sit on its node.
_UNOWNED_SERVICES = frozenset({"consul"})
_UNOWNED_CHECKS = frozenset({SERF_CHECK_ID})
_MASK = "<hidden>"
_DEREGISTER = "deregister"


class SyncTokens(Protocol):
    """The agent's own tokens (agent/agent_tokens.py `AgentTokens` fits)."""

    @property
    def agent(self) -> str: ...

    @property
    def default(self) -> str: ...


class NoTokens:
    """For agents without ACLs: every write goes with the anonymous token."""

    agent = ""
    default = ""


@dataclass(frozen=True)
class _Target:
    """A row anti-entropy writes: what the log line names."""

    kind: str  # "node", "service", "check" or "catalog" (the full sync's read)
    name: str

    @property
    def key(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class _Refusal:
    """A parked write: not retried until what was sent or its token changes."""

    sent: object
    token: str


def mask_secrets(text: str, secrets: Sequence[str]) -> str:
    """`text` with every non-empty secret in it replaced, for logging."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _MASK)
    return text


class AntiEntropy:
    def __init__(
        self,
        local: LocalState,
        node_registration: Callable[[], RegisterRequest],
        write: Write,
        catalog_view: CatalogView,
        full_sync_interval_s: float = 60.0,
        rng: random.Random | None = None,
        tokens: SyncTokens | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self.node_registration = node_registration
        self.write = write
        self.catalog_view = catalog_view
        self.full_sync_interval_s = full_sync_interval_s
        self.rng = rng or random.Random()
        self.tokens: SyncTokens = tokens if tokens is not None else NoTokens()
        # Must be the clock whose readings the agent passes local_state as now_s.
        self.clock = clock
        self._wake = asyncio.Event()
        self._full_sync_due = True
        # row key -> reasons already logged (cleared when the row syncs again)
        self._logged_refusals: dict[str, set[str]] = {}
        # row key -> the refused write, skipped until it changes or a full sync
        self._parked: dict[str, _Refusal] = {}
        self.syncs = 0
        self.full_syncs = 0
        self.errors = 0
        self.refused = 0
        self.synced = asyncio.Event()

    def trigger(self) -> None:
        self.synced.clear()
        self._wake.set()

    def request_full_sync(self) -> None:
        """Compare with the catalog now (e.g. after the agent's tokens changed)."""
        self._full_sync_due = True
        self.trigger()

    def stats(self) -> dict[str, int]:
        return {
            "syncs": self.syncs,
            "full_syncs": self.full_syncs,
            "errors": self.errors,
            "refused": self.refused,
            "blocked_rows": len(self._logged_refusals),
        }

    async def run(self) -> None:
        next_full_s = self.clock()
        backoff_s = 0.1
        while True:
            if self.clock() >= next_full_s:
                self._full_sync_due = True
            try:
                if self._full_sync_due:
                    await self._full_sync()
                    self._full_sync_due = False
                    # Consul staggers full syncs so a fleet does not sync in lockstep.
                    next_full_s = self.clock() + self.full_sync_interval_s * self.rng.uniform(
                        1.0, 1.5
                    )
                await self.sync_changes()
                backoff_s = 0.1
                if not self._wake.is_set():
                    self.synced.set()
            except (ConnectionError, TimeoutError, RPCError) as exc:
                self.errors += 1
                log.warning("agent.anti_entropy: failed to sync remote state, retrying: %s", exc)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            wake_at_s = next_full_s
            output_due_s = self.local.next_output_due_s()
            if output_due_s is not None:
                wake_at_s = min(wake_at_s, output_due_s)
            timeout_s = max(0.0, wake_at_s - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout_s)
            self._wake.clear()

    # ----- tokens ------------------------------------------------------------

    def _agent_token(self) -> str:
        return self.tokens.agent or self.tokens.default

    def _service_token(self, own: str) -> str:
        return own or self.tokens.default

    def _check_token(self, entry: LocalCheck) -> str:
        if entry.token:
            return entry.token
        return self.tokens.default if entry.check.service_id else self._agent_token()

    def _deregister_tokens(self, own: str) -> list[str]:
        # The row's own token is only a fallback, for servers that (unlike
        # Consul's) do not let node:write remove a service's rows.
        return [self._agent_token(), own or self.tokens.default]

    # ----- writes ------------------------------------------------------------

    async def _submit(
        self,
        target: _Target,
        action: str,
        command: Command,
        tokens: Sequence[str],
        sent: object,
    ) -> bool:
        """Write `command` with the first token the servers accept.

        False if every token was refused or the catalog rejected the row: the
        refusal is logged (once per reason) and the row parked.
        """
        parked = self._parked.get(target.key)
        if parked is not None and parked.token == tokens[0] and parked.sent == sent:
            return False
        reason = ""
        acl = True
        secrets = [*tokens, self.tokens.agent, self.tokens.default]
        for token in dict.fromkeys(tokens):  # in order, without repeats
            try:
                _, result = await self.write(command, token)
            except ACLDenied as exc:
                reason = mask_secrets(exc.message, secrets)
                continue
            if isinstance(result, ApplyError):
                reason, acl = mask_secrets(result.message, secrets), False
                break
            self._accepted(target)
            return True
        self._refused(target, action, reason, acl)
        self._parked[target.key] = _Refusal(sent=sent, token=tokens[0])
        return False

    def _accepted(self, target: _Target) -> None:
        self._parked.pop(target.key, None)
        if self._logged_refusals.pop(target.key, None) is not None:
            log.info("agent: %s %s is in sync again", target.kind, target.name)

    def _refused(self, target: _Target, action: str, reason: str, acl: bool) -> None:
        self.refused += 1
        logged = self._logged_refusals.setdefault(target.key, set())
        if reason in logged:
            return  # said once already; it will be retried quietly
        logged.add(reason)
        if acl:
            log.warning(
                "agent: %s blocked by ACLs: %s=%s reason=%s",
                action,
                target.kind,
                target.name,
                reason,
            )
        else:
            log.warning(
                "agent: catalog refused %s: %s=%s reason=%s",
                action.lower(),
                target.kind,
                target.name,
                reason,
            )

    # ----- full sync ---------------------------------------------------------

    async def _full_sync(self) -> None:
        """Compare with the catalog: mark whatever differs out of sync and
        deregister rows on this node the agent does not know about."""
        self.full_syncs += 1
        self._parked.clear()  # refused writes get another try each full sync
        local = self.local
        try:
            services, checks = await self.catalog_view()
        except ACLDenied as exc:
            # Without the catalog's view there is nothing to compare; pushing
            # local changes must not wait for that.
            reason = mask_secrets(exc.message, [self.tokens.agent, self.tokens.default])
            self._refused(_Target("catalog", local.node_name), "Full sync read", reason, acl=True)
            return
        now_s = self.clock()
        local.node_in_sync = False
        node = local.node_name
        removed_services: set[str] = set()
        for sid, remote in services.items():
            entry = local.services.get(sid)
            if entry is None:
                if sid not in _UNOWNED_SERVICES and await self._submit(
                    _Target("service", sid),
                    "Service deregistration",
                    DeregisterRequest(node=node, service_id=sid),
                    [self._agent_token()],
                    _DEREGISTER,
                ):
                    removed_services.add(sid)  # its checks went with it
            elif not entry.deleted:
                entry.in_sync = _same_service(entry.service, remote)
        for sid, entry in local.services.items():
            if sid not in services:
                entry.in_sync = entry.deleted
        for cid, remote_check in checks.items():
            check_entry = local.checks.get(cid)
            if check_entry is None:
                service_id = remote_check.service_id
                if (
                    cid not in _UNOWNED_CHECKS
                    and service_id not in _UNOWNED_SERVICES
                    and service_id not in removed_services
                ):
                    await self._submit(
                        _Target("check", cid),
                        "Check deregistration",
                        DeregisterRequest(node=node, check_id=cid),
                        [self._agent_token()],
                        _DEREGISTER,
                    )
            elif not check_entry.deleted:
                same = same_check_row(
                    check_entry.check,
                    remote_check,
                    ignore_output=check_entry.output_due_s is not None,
                )
                check_entry.in_sync = same
                if same and check_entry.synced_at_s is None:
                    check_entry.synced_at_s = now_s
        for cid, check_entry in local.checks.items():
            if cid not in checks:
                check_entry.in_sync = check_entry.deleted

    # ----- changes -----------------------------------------------------------

    async def sync_changes(self, now_s: float | None = None) -> None:
        """Push every out-of-sync row; `now_s` defaults to the clock."""
        self.syncs += 1
        local = self.local
        now_s = self.clock() if now_s is None else now_s
        local.release_due_outputs(now_s)
        node = local.node_name
        node_registration = self.node_registration()
        if not local.node_in_sync and await self._submit(
            _Target("node", node),
            "Node info update",
            node_registration,
            [self._agent_token()],
            node_registration,
        ):
            local.node_in_sync = True
        # Service and check registrations carry the node's address so that a
        # catalog that lost the node gets it back rather than refusing the row.
        base = msgspec.structs.replace(node_registration, skip_node_update=True)
        for sid, entry in list(local.services.items()):
            if entry.in_sync:
                continue
            if entry.deleted:
                if (
                    await self._submit(
                        _Target("service", sid),
                        "Service deregistration",
                        DeregisterRequest(node=node, service_id=sid),
                        self._deregister_tokens(entry.token),
                        _DEREGISTER,
                    )
                    and local.services.get(sid) is entry
                    and entry.deleted
                ):
                    entry.in_sync = True
                continue
            service_token = self._service_token(entry.token)
            # A check rides with its service only if it would go with the same
            # token, so it never gains rights its own token lacks.
            riders = [
                c
                for c in local.checks.values()
                if c.check.service_id == sid
                and not c.deleted
                and not c.in_sync
                and self._check_token(c) == service_token
            ]
            sent_checks = [c.check for c in riders]
            service = entry.service
            accepted = await self._submit(
                _Target("service", sid),
                "Service registration",
                msgspec.structs.replace(base, service=service, checks=sent_checks),
                [service_token],
                (service, sent_checks),
            )
            if not accepted:
                continue
            if local.services.get(sid) is entry and entry.service is service and not entry.deleted:
                entry.in_sync = True
            for check_entry, sent in zip(riders, sent_checks, strict=True):
                local.check_synced(check_entry, sent, now_s)
        for cid, check_entry in list(local.checks.items()):
            if check_entry.in_sync:
                continue
            if check_entry.deleted:
                if (
                    await self._submit(
                        _Target("check", cid),
                        "Check deregistration",
                        DeregisterRequest(node=node, check_id=cid),
                        self._deregister_tokens(check_entry.token),
                        _DEREGISTER,
                    )
                    and local.checks.get(cid) is check_entry
                    and check_entry.deleted
                ):
                    check_entry.in_sync = True
                continue
            sent = check_entry.check
            service_entry = local.services.get(sent.service_id) if sent.service_id else None
            if service_entry is not None and not service_entry.in_sync:
                continue  # its service is not in the catalog as it should be yet
            if await self._submit(
                _Target("check", cid),
                "Check registration",
                msgspec.structs.replace(base, check=sent),
                [self._check_token(check_entry)],
                sent,
            ):
                local.check_synced(check_entry, sent, now_s)
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
