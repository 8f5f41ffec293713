"""The status of an alias check on a service of this agent, as a pure function.

Consul's rules for an alias check whose service is local: look at the local
checks of that service and at the node's own checks (node-level checks count
for every service). Any critical check makes it critical ("Aliased check
"<name>" failing: <output>"), else any warning makes it warning, else it is
passing ("All checks passing.", or "No checks found." when nothing applies).
A service with no checks that the agent does not know is critical
("Service <id> could not be found on node <node>").
"""

from __future__ import annotations

from collections.abc import Iterable

from proconsul.structs.catalog import HealthCheck


def alias_status(
    service_id: str,
    checks: Iterable[HealthCheck],
    *,
    service_known: bool,
    node: str = "",
) -> tuple[str, str]:
    """(status, output) of an alias check on `service_id`, from the local `checks`."""
    status, output = "passing", "No checks found."
    service_found = False
    for check in checks:
        if check.service_id and check.service_id != service_id:
            continue
        if check.service_id:
            service_found = True
        if check.status in ("critical", "warning", "maintenance"):
            down = "critical" if check.status == "maintenance" else check.status
            if status != "critical":
                status = down
                output = f'Aliased check "{check.name}" failing: {check.output}'
        elif status == "passing":
            output = "All checks passing."
    if not service_found and not service_known:
        return "critical", f"Service {service_id} could not be found on node {node}"
    return status, output
