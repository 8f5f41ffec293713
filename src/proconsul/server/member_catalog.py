"""Gossip members into the catalog, on servers: nodes with a `serfHealth` check.

Job: the leader's reconcile: whenever gossip reports a member change, make
the catalog match that member, as Consul's leader does (only on the Raft
leader, or a dev server; a server that gains leadership marks every member):
- alive (or suspect): the node at the member's address, `serfHealth` passing
  "Agent alive and reachable", and for servers (`role = consul`) the `consul`
  service on the server RPC port from the tags;
- failed: `serfHealth` critical "Agent not live or unreachable";
- left or reaped: the node is deregistered.

And, as Consul's leader does every `reconcile_interval` (60 s) and when it
gains leadership, a full pass: every current member as above, then the
catalog side: a node with a `serfHealth` check whose name (case-insensitive)
is no gossip member at all was reaped while no leader watched, or the change
was lost across a leader change, so it is deregistered. Nodes without a
`serfHealth` check (registered through /v1/catalog/register, with no agent)
are left alone. A reaped server's Raft membership is autopilot's business.

Rules:
- `run()` is a leader duty (server/leader_duties.py): it runs exactly while
  this server leads, so it never asks who leads. It starts with a full pass.
- Changes are coalesced by member name (a set, so memory is bounded by the
  pool) and applied by one task; a failed write is retried after a second.
  Marks made while not leading wait in that set; the full pass a term starts
  with covers them anyway.
- Writes go through `write` (the leader's own, no token), so nothing here
  touches the store; a write that would change nothing is skipped (no index
  churn).
- The agent's own node is left alone: it registers itself.
- Reads go through `read` (the leader's own store, no ACL check).
- The full pass runs at most once per `reconcile_interval_s` (a class
  attribute, so tests can shorten it) plus once per term; a failed pass is
  retried after RETRY_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from proconsul.gossip import Member, State
from proconsul.structs.catalog import SERF_CHECK_ID, SERF_CHECK_NAME, HealthCheck, NodeService
from proconsul.structs.commands import ApplyResult, Command, DeregisterRequest, RegisterRequest
from proconsul.structs.requests import ReadRequest, ReadResponse

log = logging.getLogger("proconsul.agent")

ALIVE_OUTPUT = "Agent alive and reachable"
FAILED_OUTPUT = "Agent not live or unreachable"
RETRY_S = 1.0
RECONCILE_INTERVAL_S = 60.0  # Consul's reconcile_interval


class Members(Protocol):
    """The gossip pool's view of its members."""

    def members(self) -> list[Member]: ...

    def member(self, name: str) -> Member | None: ...


LeaderRead = Callable[[str, ReadRequest], Awaitable[ReadResponse]]
LeaderWrite = Callable[[Command], Awaitable[tuple[int, ApplyResult]]]


class MemberCatalog:
    reconcile_interval_s: float = RECONCILE_INTERVAL_S

    def __init__(
        self,
        core: Members,
        node_name: str,
        datacenter: str,
        *,
        read: LeaderRead,
        write: LeaderWrite,
    ) -> None:
        self.core = core
        self.node_name = node_name
        self.datacenter = datacenter
        self.read = read
        self.write = write
        self._dirty: set[str] = set()
        self._wakeup = asyncio.Event()
        self.full_passes = 0  # completed full passes (tests read it)

    def mark(self, name: str) -> None:
        """A member changed; reconcile it soon."""
        self._dirty.add(name)
        self._wakeup.set()

    async def run(self) -> None:
        """The leader duty: reconcile marked members, and every member once per
        `reconcile_interval_s` (the first time at once)."""
        loop = asyncio.get_running_loop()
        full_due = loop.time()
        wait_s = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait_s)
            self._wakeup.clear()
            full = loop.time() >= full_due
            if full:
                full_due = loop.time() + self.reconcile_interval_s
                self._dirty.update(m.name for m in self.core.members())
            names, self._dirty = sorted(self._dirty), set()
            for name in names:
                try:
                    await self.reconcile(name)
                except Exception as exc:
                    log.warning("agent: reconciling member %s failed: %s", name, exc)
                    self._dirty.add(name)
            if full:
                try:
                    await self.reconcile_reaped()
                    self.full_passes += 1
                except Exception as exc:
                    log.warning("agent: reconciling reaped members failed: %s", exc)
                    full_due = loop.time() + RETRY_S
            if self._dirty:
                await asyncio.sleep(RETRY_S)
                self._wakeup.set()
            wait_s = max(0.0, full_due - loop.time())

    async def reconcile_reaped(self) -> list[str]:
        """Deregister `serfHealth` nodes that are no gossip member; returns their names."""
        found = await self.read("Health.ChecksInState", ReadRequest(state="any"))
        # Members are read after the checks: one that joined meanwhile counts as known.
        known = {m.name.lower() for m in self.core.members()}
        known.add(self.node_name.lower())
        reaped = sorted(
            {
                c.node
                for c in found.value
                if c.check_id == SERF_CHECK_ID and c.node.lower() not in known
            }
        )
        for name in reaped:
            log.info("agent: deregistering reaped member: member=%s", name)
            await self.write(DeregisterRequest(node=name))
        return reaped

    async def reconcile(self, name: str) -> None:
        """Make the catalog match one member (see the module docstring)."""
        if name == self.node_name:
            return
        member = self.core.member(name)
        found = await self.read("Catalog.NodeServices", ReadRequest(name=name))
        node_row, _ = found.value
        if member is None or member.state == State.LEFT:
            if node_row is not None:
                log.info("agent: deregistering member: member=%s", name)
                await self.write(DeregisterRequest(node=name))
            return
        alive = member.state != State.DEAD
        status, output = ("passing", ALIVE_OUTPUT) if alive else ("critical", FAILED_OUTPUT)
        checks = await self.read("Health.NodeChecks", ReadRequest(name=name))
        current = {c.check_id: c for c in checks.value}.get(SERF_CHECK_ID)
        addr = member.addr[0]
        same_node = node_row is not None and node_row.address == addr
        unchanged = current is not None and (current.status, current.output) == (status, output)
        if same_node and unchanged:
            return
        tags = member.tags
        service = None
        if alive and tags.get("role") == "consul" and tags.get("port", "").isdigit():
            service = NodeService(id="consul", service="consul", port=int(tags["port"]))
        check = HealthCheck(
            node=name, check_id=SERF_CHECK_ID, name=SERF_CHECK_NAME, status=status, output=output
        )
        await self.write(
            RegisterRequest(
                node=name,
                address=addr,
                id=tags.get("id", ""),
                datacenter=tags.get("dc", self.datacenter),
                service=service,
                checks=[check],
                skip_node_update=same_node,
            )
        )
