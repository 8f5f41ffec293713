"""Turn user-written service and check definitions into catalog rows.

One place decides Consul's defaults: a service ID defaults to its name, a
service check's ID is `service:<id>` (or `service:<id>:<n>` when there are
several), its name `Service '<name>' check`, weights 1/1, initial status
critical. Config files, `/v1/agent/service/register` and `services register`
all come through here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import msgspec

from proconsul.checks.kinds import check_kind
from proconsul.structs.catalog import (
    CONNECT_PROXY_KIND,
    NODE_MAINT_CHECK_ID,
    SERVICE_MAINT_PREFIX,
    ConnectProxyConfig,
    HealthCheck,
    NodeService,
    ServiceAddress,
    ServiceConnect,
    Upstream,
    Weights,
)
from proconsul.structs.config_entries import ExposeConfig, MeshGatewayConfig
from proconsul.structs.definitions import CheckDefinition, ProxyDefinition, ServiceDefinition
from proconsul.structs.duration import Duration, format_duration
from proconsul.structs.naming import pascal_keys

CHECK_STATUSES = ("passing", "warning", "critical")


class DefinitionError(ValueError):
    """A definition Consul would refuse; the message is Consul's wording where it has one."""


UPSTREAM_TYPES = ("service", "prepared_query")


def multierror_text(problems: list[str]) -> str:
    """Several refusals as Consul prints its multierror lists."""
    head = "1 error occurred:" if len(problems) == 1 else f"{len(problems)} errors occurred:"
    return head + "".join(f"\n\t* {problem}" for problem in problems) + "\n\n"


def proxy_problems(service: NodeService) -> list[str]:
    """Consul's validation of a connect-proxy registration, in its words."""
    problems = []
    proxy = service.proxy
    destination = proxy.destination_service_name.strip()
    if not destination:
        problems.append("Proxy.DestinationServiceName must be non-empty for Connect proxy services")
    elif destination == "*":
        problems.append(
            "Proxy.DestinationServiceName must not be a wildcard for Connect proxy services"
        )
    if service.port == 0:
        problems.append("Port or SocketPath must be set for a Connect proxy")
    if service.connect.native:
        problems.append("A Proxy cannot also be Connect Native, only typical services")
    seen_names: set[tuple[str, str, str]] = set()
    seen_binds: set[str] = set()
    for upstream in proxy.upstreams:
        if upstream.destination_type not in UPSTREAM_TYPES:
            problems.append(f'unknown upstream destination type: "{upstream.destination_type}"')
            continue
        if not upstream.destination_name:
            problems.append("upstream destination name cannot be empty")
            continue
        if upstream.destination_name == "*":
            problems.append("upstream destination name cannot be a wildcard")
            continue
        if upstream.local_bind_port == 0:
            problems.append(
                "upstream local bind port or local socket path must be defined and nonzero"
            )
            continue
        key = (upstream.destination_type, upstream.datacenter, upstream.destination_name)
        if key in seen_names:
            problems.append(f"upstreams cannot contain duplicates of {_upstream_id(upstream)}")
            continue
        seen_names.add(key)
        bind = f"{upstream.local_bind_address}:{upstream.local_bind_port}"
        if bind in seen_binds:
            problems.append(
                "upstreams cannot contain duplicates by local bind address and port or "
                f'unix path; "{bind}" is specified twice'
            )
            continue
        seen_binds.add(bind)
    return problems


def _upstream_id(upstream: Upstream) -> str:
    """Consul's UpstreamID text: `[type:]name[?dc=dc]`."""
    text = upstream.destination_name
    if upstream.destination_type == "prepared_query":
        text = "prepared_query:" + text
    if upstream.datacenter:
        text += "?dc=" + upstream.datacenter
    return text


@dataclass
class CheckSpec:
    """A check ready for the agent: its catalog row plus what runs it."""

    row: HealthCheck
    definition: CheckDefinition
    token: str


def _duration_text(value: Duration | None) -> str:
    return format_duration(value) if value is not None else ""


def build_check(
    definition: CheckDefinition,
    node: str,
    *,
    service: NodeService | None = None,
    default_id: str = "",
    default_name: str = "",
    default_token: str = "",
) -> CheckSpec:
    """Validate a check definition and build its catalog row."""
    check_id = definition.id or definition.check_id or default_id or definition.name
    name = definition.name or default_name
    if not name:
        raise DefinitionError("Missing check name")
    if not check_id:
        check_id = name
    try:
        kind = check_kind(definition)
    except ValueError as exc:
        raise DefinitionError(f"Invalid check {check_id!r}: {exc}") from None
    status = definition.status or "critical"
    if status not in CHECK_STATUSES:
        raise DefinitionError(f"Invalid check status {status!r}")
    for count_name in ("success_before_passing", "failures_before_critical"):
        if getattr(definition, count_name) < 0:
            raise DefinitionError(f"Invalid check {check_id!r}: {count_name} must be >= 0")
    service_id = definition.service_id or (service.id if service else "")
    row = HealthCheck(
        node=node,
        check_id=check_id,
        name=name,
        status=status,
        notes=definition.notes,
        service_id=service_id,
        service_name=service.service if service else "",
        service_tags=list(service.tags) if service else [],
        type=kind,
        interval=_duration_text(definition.interval),
        timeout=_duration_text(definition.timeout),
        definition=_definition_summary(definition),
    )
    return CheckSpec(row=row, definition=definition, token=definition.token or default_token)


def _definition_summary(definition: CheckDefinition) -> dict[str, Any]:
    """The `Definition` object Consul shows for a check (only the interesting fields)."""
    summary: dict[str, Any] = {}
    if definition.script_args:
        summary["ScriptArgs"] = list(definition.script_args)
    if definition.grpc:
        summary["GRPC"] = definition.grpc
        summary["GRPCUseTLS"] = definition.grpc_use_tls
    if definition.h2ping:
        summary["H2PING"] = definition.h2ping
        summary["H2PingUseTLS"] = definition.h2ping_use_tls
    if definition.http:
        summary["HTTP"] = definition.http
        summary["Method"] = definition.method or "GET"
        summary["Header"] = definition.header or None
        summary["TLSSkipVerify"] = definition.tls_skip_verify
        summary["TLSServerName"] = definition.tls_server_name
    if definition.tcp:
        summary["TCP"] = definition.tcp
    summary["Interval"] = _duration_text(definition.interval) or "0s"
    summary["Timeout"] = _duration_text(definition.timeout) or "0s"
    summary["DeregisterCriticalServiceAfter"] = (
        _duration_text(definition.deregister_critical_service_after) or "0s"
    )
    return summary


def proxy_config(definition: ProxyDefinition) -> ConnectProxyConfig:
    """The catalog's form of a `proxy { ... }` block, as written (no defaults added)."""
    return ConnectProxyConfig(
        destination_service_name=definition.destination_service_name,
        destination_service_id=definition.destination_service_id,
        local_service_address=definition.local_service_address,
        local_service_port=definition.local_service_port,
        mode=definition.mode,
        config=dict(definition.config),
        upstreams=[
            Upstream(
                destination_name=upstream.destination_name,
                destination_type=upstream.destination_type or "service",
                destination_namespace=upstream.destination_namespace,
                datacenter=upstream.datacenter,
                local_bind_address=upstream.local_bind_address,
                local_bind_port=upstream.local_bind_port,
                config=dict(upstream.config),
                mesh_gateway=MeshGatewayConfig(mode=str(upstream.mesh_gateway.get("mode", ""))),
            )
            for upstream in definition.upstreams
        ],
        mesh_gateway=MeshGatewayConfig(mode=str(definition.mesh_gateway.get("mode", ""))),
        expose=msgspec.convert(pascal_keys(definition.expose), ExposeConfig, strict=False)
        if definition.expose
        else ExposeConfig(),
    )


def default_tagged_addresses(
    address: str, port: int, tagged: dict[str, ServiceAddress]
) -> dict[str, ServiceAddress]:
    """As Consul's agent does: a service with an IP address gets `lan_ipv4` and
    `wan_ipv4` (or the `_ipv6` pair) tagged addresses unless it sets them."""
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        return tagged  # no address, or a host name
    out = dict(tagged)
    for key in (f"lan_ipv{version}", f"wan_ipv{version}"):
        out.setdefault(key, ServiceAddress(address=address, port=port))
    return out


def build_service(
    definition: ServiceDefinition, node: str
) -> tuple[NodeService, list[CheckSpec], str]:
    """Validate a service definition; return the instance row, its checks and its token."""
    if not definition.name:
        raise DefinitionError("Missing service name")
    if not 0 <= definition.port <= 65535:
        raise DefinitionError(f"Invalid service port {definition.port}")
    weights = definition.weights
    if weights is not None and (weights.passing < 1 or weights.warning < 0):
        raise DefinitionError("Passing must be greater than 0")
    tagged = {
        key: ServiceAddress(address=value.address, port=value.port)
        for key, value in definition.tagged_addresses.items()
    }
    tagged = default_tagged_addresses(definition.address, definition.port, tagged)
    service = NodeService(
        id=definition.id or definition.name,
        service=definition.name,
        kind=definition.kind,
        tags=list(definition.tags),
        address=definition.address,
        tagged_addresses=tagged,
        meta=dict(definition.meta),
        port=definition.port,
        weights=Weights(weights.passing, weights.warning) if weights else Weights(),
        enable_tag_override=definition.enable_tag_override,
        proxy=proxy_config(definition.proxy) if definition.proxy else ConnectProxyConfig(),
        connect=ServiceConnect(native=definition.connect.native)
        if definition.connect
        else ServiceConnect(),
    )
    if service.kind == CONNECT_PROXY_KIND:
        problems = proxy_problems(service)
        if problems:
            raise DefinitionError(multierror_text(problems))
    check_defs = list(definition.checks)
    if definition.check is not None:
        check_defs.insert(0, definition.check)
    specs = []
    for number, check_def in enumerate(check_defs, start=1):
        default_id = f"service:{service.id}"
        if len(check_defs) > 1:
            default_id = f"{default_id}:{number}"
        specs.append(
            build_check(
                check_def,
                node,
                service=service,
                default_id=default_id,
                default_name=f"Service '{service.service}' check",
                default_token=definition.token,
            )
        )
    return service, specs, definition.token


_NODE_MAINT_DEFAULT = (
    "Maintenance mode is enabled for this node, but no reason was provided. "
    "This is a default message."
)
_SERVICE_MAINT_DEFAULT = (
    "Maintenance mode is enabled for this service, but no reason was provided. "
    "This is a default message."
)


def maintenance_check(node: str, reason: str, service: NodeService | None = None) -> CheckSpec:
    """The critical check of node (or, given `service`, service) maintenance mode."""
    if service is None:
        row = HealthCheck(
            node=node,
            check_id=NODE_MAINT_CHECK_ID,
            name="Node Maintenance Mode",
            status="critical",
            notes=reason or _NODE_MAINT_DEFAULT,
        )
    else:
        row = HealthCheck(
            node=node,
            check_id=SERVICE_MAINT_PREFIX + service.id,
            name="Service Maintenance Mode",
            status="critical",
            notes=reason or _SERVICE_MAINT_DEFAULT,
            service_id=service.id,
            service_name=service.service,
            service_tags=list(service.tags),
        )
    return CheckSpec(row=row, definition=CheckDefinition(), token="")
