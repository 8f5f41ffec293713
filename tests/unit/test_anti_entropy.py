"""Anti-entropy over a fake catalog: tokens per write, ACL refusals, check_update_interval.

The fake catalog applies register/deregister commands to two dicts and can
refuse writes the way servers do (an RPCError with code ACL_DENIED). No I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import pytest
from tests.agent_process import wait_for_async

from proconsul.agent.anti_entropy import AntiEntropy, mask_secrets
from proconsul.agent.local_state import LocalState, output_held_until_s
from proconsul.agent.service_def import CheckSpec
from proconsul.rpc.errors import RemoteACLDenied
from proconsul.structs.catalog import HealthCheck, NodeService
from proconsul.structs.commands import (
    ApplyError,
    ApplyResult,
    Command,
    DeregisterRequest,
    RegisterRequest,
)
from proconsul.structs.definitions import CheckDefinition

NODE = "node-1"
AGENT_TOKEN = "agent-secret-1111"
DEFAULT_TOKEN = "default-secret-2222"
WEB_TOKEN = "web-secret-3333"
API_TOKEN = "api-secret-4444"
DENIED = 'Permission denied: token with AccessorID "abc" lacks permission "service:write" on "web"'

# (command, token) -> reason to refuse it with, or None to accept
Refuse = Callable[[Command, str], str | None]


def what(command: Command) -> str:
    """A short name for a write, to assert on: `node`, `service web`, `-check x`."""
    if isinstance(command, DeregisterRequest):
        return (
            f"-service {command.service_id}" if command.service_id else f"-check {command.check_id}"
        )
    assert isinstance(command, RegisterRequest)
    if command.service is not None:
        return f"service {command.service.id}"
    if command.check is not None:
        return f"check {command.check.check_id}"
    return "node"


class FakeCatalog:
    def __init__(self) -> None:
        self.services: dict[str, NodeService] = {}
        self.checks: dict[str, HealthCheck] = {}
        self.writes: list[tuple[str, str]] = []  # (what, token)
        self.commands: list[Command] = []
        self.refuse: Refuse = lambda command, token: None
        self.reject: Callable[[Command], str | None] = lambda command: None
        # Runs while a write is "in flight": after it was sent, before it applies.
        self.in_flight: Callable[[str], object] = lambda what: None

    async def write(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        self.writes.append((what(command), token))
        self.commands.append(command)
        self.in_flight(what(command))
        reason = self.refuse(command, token)
        if reason is not None:
            raise RemoteACLDenied(reason)
        rejected = self.reject(command)
        if rejected is not None:
            return len(self.writes), ApplyError(rejected)
        if isinstance(command, DeregisterRequest):
            if command.service_id:
                self.services.pop(command.service_id, None)
                for cid in [
                    c for c, row in self.checks.items() if row.service_id == command.service_id
                ]:
                    del self.checks[cid]
            else:
                self.checks.pop(command.check_id, None)
        else:
            assert isinstance(command, RegisterRequest)
            if command.service is not None:
                self.services[command.service.id] = msgspec.structs.replace(command.service)
            for check in [*command.checks, *([command.check] if command.check else [])]:
                self.checks[check.check_id] = msgspec.structs.replace(check)
        return len(self.writes), None

    async def view(self) -> tuple[dict[str, NodeService], dict[str, HealthCheck]]:
        return dict(self.services), dict(self.checks)

    def take(self) -> list[tuple[str, str]]:
        writes, self.writes = self.writes, []
        return writes


@dataclass
class Tokens:
    agent: str = AGENT_TOKEN
    default: str = DEFAULT_TOKEN


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def node_registration() -> RegisterRequest:
    return RegisterRequest(node=NODE, address="10.0.0.1")


def check_spec(
    check_id: str, service_id: str = "", token: str = "", status: str = "critical"
) -> CheckSpec:
    row = HealthCheck(
        node=NODE, check_id=check_id, name=check_id, status=status, service_id=service_id
    )
    return CheckSpec(row=row, definition=CheckDefinition(), token=token)


def make(
    interval_s: float = 0.0, tokens: Tokens | None = None
) -> tuple[LocalState, AntiEntropy, FakeCatalog]:
    local = LocalState(node_name=NODE, check_update_interval_s=interval_s)
    catalog = FakeCatalog()
    clock = Clock()
    syncer = AntiEntropy(
        local,
        node_registration,
        catalog.write,
        catalog.view,
        tokens=tokens or Tokens(),
        clock=clock,
    )
    local.on_change = syncer.trigger
    return local, syncer, catalog


# ----- tokens ----------------------------------------------------------------


async def test_each_write_goes_with_the_right_token() -> None:
    local, syncer, catalog = make()
    local.add_service(NodeService(id="web", service="web"), WEB_TOKEN)
    local.add_check(check_spec("web-check", "web", token=WEB_TOKEN), syncer.clock())
    local.add_service(NodeService(id="plain", service="plain"), "")
    local.add_check(check_spec("plain-check", "plain"), syncer.clock())
    local.add_check(check_spec("disk"), syncer.clock())  # node-level, no token of its own
    local.add_check(check_spec("mem", token=API_TOKEN), syncer.clock())  # node-level with a token
    await syncer.sync_changes()
    assert catalog.take() == [
        ("node", AGENT_TOKEN),
        ("service web", WEB_TOKEN),
        ("service plain", DEFAULT_TOKEN),
        ("check disk", AGENT_TOKEN),
        ("check mem", API_TOKEN),
    ]
    # The service checks rode along with their services.
    assert set(catalog.checks) == {"web-check", "plain-check", "disk", "mem"}


async def test_a_check_with_another_token_does_not_ride_with_its_service() -> None:
    local, syncer, catalog = make()
    local.add_service(NodeService(id="web", service="web"), WEB_TOKEN)
    local.add_check(check_spec("web-check", "web", token=API_TOKEN), syncer.clock())
    local.add_check(check_spec("web-added", "web"), syncer.clock())  # added alone: default token
    await syncer.sync_changes()
    assert catalog.take() == [
        ("node", AGENT_TOKEN),
        ("service web", WEB_TOKEN),
        ("check web-check", API_TOKEN),
        ("check web-added", DEFAULT_TOKEN),
    ]
    service_write = catalog.commands[1]
    assert isinstance(service_write, RegisterRequest) and service_write.checks == []


async def test_deregistrations_go_with_the_agent_token() -> None:
    local, syncer, catalog = make()
    local.add_service(NodeService(id="web", service="web"), WEB_TOKEN)
    local.add_check(check_spec("web-check", "web", token=WEB_TOKEN), syncer.clock())
    await syncer.sync_changes()
    catalog.take()
    local.remove_service("web")
    await syncer.sync_changes()
    assert catalog.take() == [("-service web", AGENT_TOKEN), ("-check web-check", AGENT_TOKEN)]
    assert catalog.services == {} and local.services == {} and local.checks == {}


async def test_a_refused_deregistration_falls_back_to_the_rows_own_token() -> None:
    local, syncer, catalog = make()
    local.add_service(NodeService(id="web", service="web"), WEB_TOKEN)
    await syncer.sync_changes()
    catalog.take()
    catalog.refuse = lambda command, token: DENIED if token == AGENT_TOKEN else None
    local.remove_service("web")
    await syncer.sync_changes()
    assert catalog.take() == [("-service web", AGENT_TOKEN), ("-service web", WEB_TOKEN)]
    assert catalog.services == {} and local.services == {}


async def test_tokens_are_read_at_each_write() -> None:
    tokens = Tokens(agent="", default=DEFAULT_TOKEN)
    local, syncer, catalog = make(tokens=tokens)
    await syncer.sync_changes()
    assert catalog.take() == [("node", DEFAULT_TOKEN)]  # no agent token: the default one
    tokens.agent = AGENT_TOKEN
    local.node_in_sync = False
    local.add_service(NodeService(id="plain", service="plain"), "")
    tokens.default = "new-default"
    await syncer.sync_changes()
    assert catalog.take() == [("node", AGENT_TOKEN), ("service plain", "new-default")]


# ----- refusals --------------------------------------------------------------


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_a_refused_service_is_logged_once_and_does_not_block_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="proconsul.agent.anti_entropy")
    local, syncer, catalog = make()
    catalog.refuse = lambda command, token: DENIED if what(command) == "service web" else None
    local.add_service(NodeService(id="web", service="web"), WEB_TOKEN)
    local.add_check(check_spec("web-check", "web", token=WEB_TOKEN), syncer.clock())
    local.add_service(NodeService(id="api", service="api"), API_TOKEN)
    await syncer.sync_changes()
    assert catalog.take() == [
        ("node", AGENT_TOKEN),
        ("service web", WEB_TOKEN),
        ("service api", API_TOKEN),
    ]
    assert set(catalog.services) == {"api"}
    assert warnings(caplog) == [
        f"agent: Service registration blocked by ACLs: service=web reason={DENIED}"
    ]
    assert not local.services["web"].in_sync and not local.checks["web-check"].in_sync

    # Another change wakes the syncer: the parked write is not sent again.
    local.add_service(NodeService(id="db", service="db"), "")
    await syncer.sync_changes()
    assert catalog.take() == [("service db", DEFAULT_TOKEN)]
    # A full sync retries it; the same refusal is not logged again.
    await syncer._full_sync()
    await syncer.sync_changes()
    assert catalog.take() == [("node", AGENT_TOKEN), ("service web", WEB_TOKEN)]
    assert len(warnings(caplog)) == 1
    # A different reason is news.
    catalog.refuse = lambda command, token: (
        "ACL not found" if what(command) == "service web" else None
    )
    await syncer._full_sync()
    await syncer.sync_changes()
    assert warnings(caplog)[1:] == [
        "agent: Service registration blocked by ACLs: service=web reason=ACL not found"
    ]
    # Once it goes through, a later refusal is logged again.
    catalog.refuse = lambda command, token: None
    await syncer._full_sync()
    await syncer.sync_changes()
    assert local.services["web"].in_sync and "web-check" in catalog.checks
    assert "agent: service web is in sync again" in caplog.messages
    catalog.refuse = lambda command, token: DENIED if what(command) == "service web" else None
    local.add_service(NodeService(id="web", service="web", port=81), WEB_TOKEN)
    await syncer.sync_changes()
    assert len(warnings(caplog)) == 3
    assert syncer.stats()["refused"] == 4
    assert not any(secret in caplog.text for secret in (WEB_TOKEN, AGENT_TOKEN, DEFAULT_TOKEN))


async def test_a_changed_row_or_token_is_retried_at_once() -> None:
    tokens = Tokens()
    local, syncer, catalog = make(tokens=tokens)
    catalog.refuse = lambda command, token: DENIED if token == DEFAULT_TOKEN else None
    local.add_service(NodeService(id="plain", service="plain"), "")
    await syncer.sync_changes()
    assert catalog.take() == [("node", AGENT_TOKEN), ("service plain", DEFAULT_TOKEN)]
    local.add_service(NodeService(id="plain", service="plain", port=81), "")
    await syncer.sync_changes()
    assert catalog.take() == [("service plain", DEFAULT_TOKEN)]
    tokens.default = "better-default"
    syncer.trigger()
    await syncer.sync_changes()
    assert catalog.take() == [("service plain", "better-default")]
    assert catalog.services["plain"].port == 81


async def test_a_refused_node_does_not_block_services(caplog: pytest.LogCaptureFixture) -> None:
    local, syncer, catalog = make()
    reason = f"Permission denied: bad token {AGENT_TOKEN}"
    catalog.refuse = lambda command, token: reason if what(command) == "node" else None
    local.add_service(NodeService(id="web", service="web"), WEB_TOKEN)
    await syncer.sync_changes()
    assert catalog.take() == [("node", AGENT_TOKEN), ("service web", WEB_TOKEN)]
    assert warnings(caplog) == [
        "agent: Node info update blocked by ACLs: node=node-1 "
        "reason=Permission denied: bad token <hidden>"
    ]
    # The service registration carries the node's address all the same.
    service_write = catalog.commands[1]
    assert isinstance(service_write, RegisterRequest)
    assert (service_write.address, service_write.skip_node_update) == ("10.0.0.1", True)


async def test_a_row_the_catalog_rejects_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    local, syncer, catalog = make()
    catalog.reject = lambda command: (
        "Must provide check name or ID" if what(command) == "check bad" else None
    )
    local.add_check(check_spec("bad"), syncer.clock())
    local.add_check(check_spec("good"), syncer.clock())
    await syncer.sync_changes()
    await syncer._full_sync()
    await syncer.sync_changes()
    assert warnings(caplog) == [
        "agent: catalog refused check registration: check=bad reason=Must provide check name or ID"
    ]
    assert "good" in catalog.checks


def test_mask_secrets() -> None:
    assert mask_secrets("token abc and abc", ["abc", ""]) == "token <hidden> and <hidden>"
    assert mask_secrets("nothing here", ["", "zzz"]) == "nothing here"


# ----- orphans ---------------------------------------------------------------


async def test_full_sync_removes_rows_the_agent_does_not_know() -> None:
    local, syncer, catalog = make()
    catalog.services = {
        "legacy": NodeService(id="legacy", service="legacy"),
        "consul": NodeService(id="consul", service="consul"),
    }
    catalog.checks = {
        "legacy-check": HealthCheck(node=NODE, check_id="legacy-check", service_id="legacy"),
        "serfHealth": HealthCheck(node=NODE, check_id="serfHealth", status="passing"),
        "stray": HealthCheck(node=NODE, check_id="stray"),
    }
    local.add_service(NodeService(id="web", service="web"), WEB_TOKEN)
    await syncer._full_sync()
    assert catalog.take() == [
        ("-service legacy", AGENT_TOKEN),
        ("-check stray", AGENT_TOKEN),
    ]
    await syncer.sync_changes()
    assert set(catalog.services) == {"consul", "web"}
    assert set(catalog.checks) == {"serfHealth"}


async def test_full_sync_repairs_rows_changed_behind_the_agents_back() -> None:
    local, syncer, catalog = make()
    local.add_service(NodeService(id="web", service="web", port=80), WEB_TOKEN)
    local.add_check(check_spec("disk"), syncer.clock())
    await syncer.sync_changes()
    catalog.take()
    catalog.services["web"] = NodeService(id="web", service="web", port=9999)
    del catalog.checks["disk"]
    await syncer._full_sync()
    await syncer.sync_changes()
    assert catalog.take() == [
        ("node", AGENT_TOKEN),
        ("service web", WEB_TOKEN),
        ("check disk", AGENT_TOKEN),
    ]
    assert catalog.services["web"].port == 80 and "disk" in catalog.checks


# ----- check_update_interval -------------------------------------------------


@pytest.mark.parametrize(
    ("interval_s", "synced_at_s", "now_s", "held_until_s"),
    [
        (0.0, 100.0, 101.0, None),  # 0: every change goes at once
        (300.0, None, 101.0, None),  # never synced: nothing to hold back against
        (300.0, 100.0, 101.0, 400.0),
        (300.0, 100.0, 399.9, 400.0),
        (300.0, 100.0, 400.0, None),  # the interval has passed
        (300.0, 100.0, 500.0, None),
    ],
)
def test_output_held_until(
    interval_s: float, synced_at_s: float | None, now_s: float, held_until_s: float | None
) -> None:
    assert output_held_until_s(interval_s, synced_at_s, now_s) == held_until_s


def update(local: LocalState, check_id: str, status: str, output: str, now_s: float) -> None:
    assert local.update_check(check_id, status, output, now_s)


async def test_output_alone_waits_for_the_interval_and_status_goes_at_once() -> None:
    local, syncer, catalog = make(interval_s=300.0)
    local.add_check(check_spec("disk"), syncer.clock())
    await syncer.sync_changes(now_s=1000.0)
    catalog.take()

    update(local, "disk", "critical", "disk 91%", 1010.0)
    await syncer.sync_changes(now_s=1010.0)
    assert catalog.take() == [] and catalog.checks["disk"].output == ""
    assert local.next_output_due_s() == 1300.0
    # A full sync in between does not push the held-back output either.
    await syncer._full_sync()
    await syncer.sync_changes(now_s=1020.0)
    assert ("check disk", AGENT_TOKEN) not in catalog.take()

    # A status change goes at once, with the latest output.
    update(local, "disk", "warning", "disk 95%", 1030.0)
    await syncer.sync_changes(now_s=1030.0)
    assert catalog.take() == [("check disk", AGENT_TOKEN)]
    assert (catalog.checks["disk"].status, catalog.checks["disk"].output) == ("warning", "disk 95%")
    assert local.next_output_due_s() is None

    # Output alone again: the interval counts from that last sync.
    update(local, "disk", "warning", "disk 96%", 1040.0)
    update(local, "disk", "warning", "disk 97%", 1050.0)
    assert local.next_output_due_s() == 1330.0
    await syncer.sync_changes(now_s=1329.0)
    assert catalog.take() == []
    await syncer.sync_changes(now_s=1330.0)
    assert catalog.take() == [("check disk", AGENT_TOKEN)]
    assert catalog.checks["disk"].output == "disk 97%"
    assert local.next_output_due_s() is None

    # Long after the last sync, an output change goes at once.
    update(local, "disk", "warning", "disk 98%", 2000.0)
    await syncer.sync_changes(now_s=2000.0)
    assert catalog.checks["disk"].output == "disk 98%"


async def test_interval_zero_pushes_every_change() -> None:
    local, syncer, catalog = make(interval_s=0.0)
    local.add_check(check_spec("disk"), syncer.clock())
    await syncer.sync_changes(now_s=1000.0)
    update(local, "disk", "critical", "disk 91%", 1001.0)
    await syncer.sync_changes(now_s=1001.0)
    assert catalog.checks["disk"].output == "disk 91%"
    assert local.next_output_due_s() is None


async def test_an_output_change_during_the_write_is_held_back() -> None:
    local, syncer, catalog = make(interval_s=300.0)
    local.add_check(check_spec("disk"), syncer.clock())
    catalog.in_flight = lambda w: (
        w == "check disk" and local.update_check("disk", "critical", "late output", 1000.0)
    )
    await syncer.sync_changes(now_s=1000.0)
    entry = local.checks["disk"]
    assert entry.in_sync and entry.output_due_s == 1300.0
    assert catalog.checks["disk"].output == ""


async def test_a_status_change_during_the_write_is_pushed_next() -> None:
    local, syncer, catalog = make(interval_s=300.0)
    local.add_check(check_spec("disk"), syncer.clock())
    catalog.in_flight = lambda w: (
        w == "check disk" and local.update_check("disk", "passing", "ok", 1000.0)
    )
    await syncer.sync_changes(now_s=1000.0)
    assert not local.checks["disk"].in_sync
    await syncer.sync_changes(now_s=1001.0)
    assert catalog.checks["disk"].status == "passing"


async def test_a_removal_during_the_write_still_deregisters() -> None:
    local, syncer, catalog = make()
    local.add_service(NodeService(id="web", service="web"), WEB_TOKEN)
    local.add_check(check_spec("web-check", "web", token=WEB_TOKEN), syncer.clock())
    catalog.in_flight = lambda w: w == "service web" and local.remove_service("web")
    await syncer.sync_changes()
    assert "web" in catalog.services and not local.services["web"].in_sync
    await syncer.sync_changes()
    assert catalog.services == {} and catalog.checks == {}
    assert local.services == {} and local.checks == {}


async def test_run_wakes_when_a_held_back_output_is_due() -> None:
    local = LocalState(node_name=NODE, check_update_interval_s=0.3)
    catalog = FakeCatalog()
    syncer = AntiEntropy(local, node_registration, catalog.write, catalog.view, tokens=Tokens())
    local.on_change = syncer.trigger
    local.add_check(check_spec("disk"), syncer.clock())
    task = asyncio.create_task(syncer.run())
    try:
        await asyncio.wait_for(syncer.synced.wait(), 5.0)
        update(local, "disk", "critical", "new output", syncer.clock())
        await asyncio.sleep(0)  # let the syncer run if it (wrongly) woke
        assert catalog.checks["disk"].output == ""
        await wait_for_async(lambda: catalog.checks["disk"].output == "new output", 5.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_survives_a_refused_full_sync_read(caplog: pytest.LogCaptureFixture) -> None:
    local, syncer, catalog = make()

    async def refused_view() -> tuple[dict[str, NodeService], dict[str, HealthCheck]]:
        raise RemoteACLDenied("ACL not found")

    syncer.catalog_view = refused_view
    syncer.clock = asyncio.get_running_loop().time
    local.add_service(NodeService(id="web", service="web"), WEB_TOKEN)
    task = asyncio.create_task(syncer.run())
    try:
        await asyncio.wait_for(syncer.synced.wait(), 5.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "web" in catalog.services
    assert warnings(caplog) == [
        "agent: Full sync read blocked by ACLs: catalog=node-1 reason=ACL not found"
    ]
