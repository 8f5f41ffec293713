"""Expand `connect { sidecar_service { ... } }` into the sidecar proxy's own registration.

Pure: given the parent's definition and row, the services the agent holds
and the sidecar port range, it returns the sidecar's definition with Consul's
defaults filled in; `build_service` then makes the row and checks as for any
service. Config files (start and SIGHUP reload) and
`PUT /v1/agent/service/register` both come through `expand_sidecar`.

Consul's defaults (its sidecar service registration docs):
- ID `<parent-id>-sidecar-proxy` (the user may not set it), name
  `<parent-name>-sidecar-proxy`, kind `connect-proxy` (fixed, whatever is written);
- tags, meta and weights: the parent's when the sidecar sets none;
- port: the one given, else the port this sidecar already holds in
  `sidecar_min_port..sidecar_max_port` (stable across reloads), else the
  lowest port in that range no other local service uses;
- proxy: `destination_service_name/id` the parent's; when neither
  `local_service_address` nor `local_service_port` is set, 127.0.0.1 and the
  parent's port;
- checks: the user's when the sidecar has `check` or `checks`; otherwise a TCP
  check "Connect Sidecar Listening" on the sidecar's address (else the local
  service address) and port every 10s, and the alias check
  "Connect Sidecar Aliasing <parent-id>" on the parent;
- token: the sidecar's own, else the parent's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from proconsul.agent.service_def import CheckSpec, DefinitionError, build_service, multierror_text
from proconsul.structs.catalog import CONNECT_PROXY_KIND, SIDECAR_PROXY_SUFFIX, NodeService
from proconsul.structs.definitions import CheckDefinition, ProxyDefinition, ServiceDefinition
from proconsul.structs.duration import Duration

LOCAL_SERVICE_ADDRESS = "127.0.0.1"
LISTENING_CHECK_NAME = "Connect Sidecar Listening"
ALIAS_CHECK_PREFIX = "Connect Sidecar Aliasing "
LISTENING_CHECK_INTERVAL_S = 10.0


def sidecar_id(parent_id: str) -> str:
    return parent_id + SIDECAR_PROXY_SUFFIX


def nested_problems(definition: ServiceDefinition) -> list[str]:
    """Consul's refusals of a parent's `sidecar_service` block itself."""
    sidecar = definition.connect.sidecar_service if definition.connect else None
    if sidecar is None:
        return []
    problems = []
    if sidecar.id:
        problems.append("A SidecarService cannot specify an ID as this is managed by the agent")
    if sidecar.connect is not None and sidecar.connect.sidecar_service is not None:
        problems.append("A SidecarService cannot have a nested SidecarService")
    return problems


def allocate_port(
    wanted_id: str, local: Mapping[str, NodeService], port_range: tuple[int, int]
) -> int:
    """The sidecar port for `wanted_id` when none is given (Consul's rules).

    Raises DefinitionError when the range is off (a bound <= 0) or full.
    """
    low, high = port_range
    if low <= 0 or high <= 0:
        raise DefinitionError(
            "no port provided for sidecar_service and auto-assignment disabled in config"
        )
    used: set[int] = set()
    for service in local.values():
        if low <= service.port <= high:
            if service.id == wanted_id:
                return service.port  # already holds one: keep it across reloads
            used.add(service.port)
    for port in range(low, high + 1):
        if port not in used:
            return port
    raise DefinitionError(
        "no port provided for sidecar_service and none left in the configured range "
        f"[{low}, {high}]"
    )


def _default_checks(parent_id: str, address: str, port: int) -> list[CheckDefinition]:
    return [
        CheckDefinition(
            name=LISTENING_CHECK_NAME,
            tcp=f"[{address}]:{port}" if ":" in address else f"{address}:{port}",
            interval=Duration(LISTENING_CHECK_INTERVAL_S),
        ),
        CheckDefinition(name=ALIAS_CHECK_PREFIX + parent_id, alias_service=parent_id),
    ]


def expand_sidecar(
    definition: ServiceDefinition,
    parent: NodeService,
    parent_token: str,
    local: Mapping[str, NodeService],
    port_range: tuple[int, int],
) -> ServiceDefinition | None:
    """The sidecar's full definition (None when the parent declares no sidecar).

    `parent` is the parent's row as `build_service` made it; `local` the
    services the agent holds (and any expanded before this one in the same
    batch), for the port allocation. Raises DefinitionError with Consul's text.
    """
    sidecar = definition.connect.sidecar_service if definition.connect else None
    if sidecar is None:
        return None
    problems = nested_problems(definition)
    if problems:
        raise DefinitionError(multierror_text(problems))
    new_id = sidecar_id(parent.id)
    proxy = sidecar.proxy if sidecar.proxy is not None else ProxyDefinition()
    if not proxy.local_service_address and not proxy.local_service_port:
        proxy = msgspec.structs.replace(
            proxy, local_service_address=LOCAL_SERVICE_ADDRESS, local_service_port=parent.port
        )
    proxy = msgspec.structs.replace(
        proxy,
        destination_service_name=proxy.destination_service_name or parent.service,
        destination_service_id=proxy.destination_service_id or parent.id,
    )
    try:
        port = sidecar.port or allocate_port(new_id, local, port_range)
    except DefinitionError as exc:
        raise DefinitionError(f"Invalid SidecarService: {exc}") from None
    checks = list(sidecar.checks)
    if sidecar.check is not None:
        checks.insert(0, sidecar.check)
    if not checks:
        checks = _default_checks(parent.id, sidecar.address or proxy.local_service_address, port)
    return msgspec.structs.replace(
        sidecar,
        id=new_id,
        name=sidecar.name or parent.service + SIDECAR_PROXY_SUFFIX,
        kind=CONNECT_PROXY_KIND,
        tags=list(sidecar.tags) or list(parent.tags),
        meta=dict(sidecar.meta) or dict(parent.meta),
        weights=sidecar.weights or definition.weights,
        port=port,
        proxy=proxy,
        check=None,
        checks=checks,
        token=sidecar.token or parent_token,
    )


@dataclass
class Registration:
    """One service the agent is to hold: its row, its checks and its token."""

    service: NodeService
    checks: list[CheckSpec]
    token: str
    sidecar_for: str = ""  # the parent's ID when this is an expanded sidecar


def build_registrations(
    definition: ServiceDefinition,
    node: str,
    local: Mapping[str, NodeService],
    port_range: tuple[int, int],
) -> list[Registration]:
    """The service a definition declares, then its sidecar if it has one.

    Nothing is registered until both are valid, so a refused sidecar leaves
    the parent unregistered too (Consul validates both first).
    """
    service, checks, token = build_service(definition, node)
    found = [Registration(service, checks, token)]
    sidecar = expand_sidecar(definition, service, token, local, port_range)
    if sidecar is not None:
        proxy, proxy_checks, proxy_token = build_service(sidecar, node)
        found.append(Registration(proxy, proxy_checks, proxy_token, sidecar_for=service.id))
    return found
