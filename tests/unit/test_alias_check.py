"""Alias checks on local services: the pure rule (checks/alias.py) and LocalState's refresh."""

from __future__ import annotations

import pytest

from proconsul.agent.local_state import LocalState
from proconsul.agent.service_def import CheckSpec
from proconsul.checks.alias import alias_status
from proconsul.structs.catalog import HealthCheck, NodeService
from proconsul.structs.definitions import CheckDefinition


def check(cid: str, status: str, service_id: str = "web", output: str = "") -> HealthCheck:
    return HealthCheck(
        node="n1", check_id=cid, name=cid, status=status, service_id=service_id, output=output
    )


@pytest.mark.parametrize(
    ("checks", "known", "expected"),
    [
        ([], True, ("passing", "No checks found.")),
        ([check("a", "passing")], True, ("passing", "All checks passing.")),
        (
            [check("a", "warning", output="slow"), check("b", "passing")],
            True,
            ("warning", 'Aliased check "a" failing: slow'),
        ),
        (
            [check("a", "warning"), check("b", "critical", output="down")],
            True,
            ("critical", 'Aliased check "b" failing: down'),
        ),
        # Another service's checks do not count; node checks do.
        ([check("x", "critical", service_id="db")], True, ("passing", "No checks found.")),
        (
            [check("maint", "critical", service_id="")],
            True,
            ("critical", 'Aliased check "maint" failing: '),
        ),
        ([], False, ("critical", "Service web could not be found on node n1")),
    ],
)
def test_alias_status(checks: list[HealthCheck], known: bool, expected: tuple[str, str]) -> None:
    assert alias_status("web", checks, service_known=known, node="n1") == expected


def spec(row: HealthCheck, definition: CheckDefinition) -> CheckSpec:
    return CheckSpec(row=row, definition=definition, token="")


def test_local_alias_follows_its_service() -> None:
    local = LocalState(node_name="n1")
    local.on_change = lambda: local.refresh_aliases(0.0)
    local.add_service(NodeService(id="web", service="web", port=80))
    local.add_service(NodeService(id="web-sidecar-proxy", service="web-sidecar-proxy", port=1))
    local.add_check(spec(check("web-http", "critical"), CheckDefinition(http="x")), 0.0)
    alias_row = check("alias", "critical", service_id="web-sidecar-proxy")
    local.add_check(spec(alias_row, CheckDefinition(alias_service="web")), 0.0)
    assert local.live_checks()["alias"].status == "critical"
    local.update_check("web-http", "passing", "ok", 1.0)
    assert local.live_checks()["alias"].status == "passing"
    assert local.live_checks()["alias"].output == "All checks passing."
    local.remove_service("web")
    alias = local.live_checks()["alias"]
    assert (alias.status, alias.output) == (
        "critical",
        "Service web could not be found on node n1",
    )
