"""Service and check definitions as users write them: in config files and in
`/v1/agent/service/register` / `/v1/agent/check/register` bodies.

Fields use the config-file spelling (snake_case). Request bodies in any spelling
are passed through `naming.conform_keys` first, so one struct serves both.
Durations are `Duration` (float seconds). Unknown keys are errors.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proconsul.structs.duration import Duration


class Def(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base for definition structs: strict about keys, quiet about defaults."""


class CheckDefinition(Def):
    id: str = ""
    check_id: str = ""  # API spelling of `id`
    name: str = ""
    notes: str = ""
    service_id: str = ""
    token: str = ""
    status: str = ""
    # HTTP check
    http: str = ""
    method: str = ""
    header: dict[str, list[str]] = {}
    body: str = ""
    tls_skip_verify: bool = False
    tls_server_name: str = ""
    disable_redirects: bool = False
    # TCP check
    tcp: str = ""
    # TTL check
    ttl: Duration | None = None
    # Script check (`args`): only with enable_script_checks / enable_local_script_checks
    script_args: list[str] = []
    # gRPC health checking protocol (`host:port[/service]`) and HTTP/2 ping (`host:port`)
    grpc: str = ""
    grpc_use_tls: bool = False
    h2ping: str = ""
    h2ping_use_tls: bool = True
    output_max_size: int = 0
    # Alias check (used by sidecar proxies)
    alias_service: str = ""
    alias_node: str = ""
    interval: Duration | None = None
    timeout: Duration | None = None
    success_before_passing: int = 0
    failures_before_critical: int = 0
    failures_before_warning: int = 0
    deregister_critical_service_after: Duration | None = None


class Upstream(Def):
    destination_name: str = ""
    destination_type: str = ""
    destination_namespace: str = ""
    datacenter: str = ""
    local_bind_address: str = ""
    local_bind_port: int = 0
    config: dict[str, Any] = {}
    mesh_gateway: dict[str, Any] = {}


class ProxyDefinition(Def):
    destination_service_name: str = ""
    destination_service_id: str = ""
    local_service_address: str = ""
    local_service_port: int = 0
    mode: str = ""
    config: dict[str, Any] = {}
    upstreams: list[Upstream] = []
    mesh_gateway: dict[str, Any] = {}
    expose: dict[str, Any] = {}


class WeightsDefinition(Def):
    passing: int = 1
    warning: int = 1


class ConnectDefinition(Def):
    native: bool = False
    sidecar_service: ServiceDefinition | None = None


class TaggedAddressDefinition(Def):
    address: str = ""
    port: int = 0


class ServiceDefinition(Def):
    name: str = ""
    id: str = ""
    kind: str = ""
    tags: list[str] = []
    address: str = ""
    tagged_addresses: dict[str, TaggedAddressDefinition] = {}
    meta: dict[str, str] = {}
    port: int = 0
    weights: WeightsDefinition | None = None
    enable_tag_override: bool = False
    token: str = ""
    check: CheckDefinition | None = None
    checks: list[CheckDefinition] = []
    connect: ConnectDefinition | None = None
    proxy: ProxyDefinition | None = None
