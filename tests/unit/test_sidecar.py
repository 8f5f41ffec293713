"""Sidecar expansion (agent/sidecar.py): Consul's defaults, user checks, ports, refusals."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from proconsul.agent.service_def import DefinitionError, build_service
from proconsul.agent.sidecar import allocate_port, build_registrations
from proconsul.structs.catalog import NodeService
from proconsul.structs.definitions import ServiceDefinition
from proconsul.structs.duration import dec_hook

PORTS = (21000, 21255)


def definition(raw: dict[str, Any]) -> ServiceDefinition:
    return msgspec.convert(raw, ServiceDefinition, dec_hook=dec_hook)


def expand(raw: dict[str, Any], local: dict[str, NodeService] | None = None) -> Any:
    found = build_registrations(definition(raw), "n1", local or {}, PORTS)
    assert len(found) == 2
    return found[1]


WEB = {
    "name": "web",
    "id": "web-1",
    "port": 8080,
    "tags": ["v1"],
    "meta": {"team": "a"},
    "weights": {"passing": 3, "warning": 2},
    "token": "parent-secret",
    "connect": {"sidecar_service": {}},
}


def test_minimal_sidecar_gets_consuls_defaults() -> None:
    sidecar = expand(WEB)
    service = sidecar.service
    assert sidecar.sidecar_for == "web-1"
    assert (service.id, service.service, service.kind) == (
        "web-1-sidecar-proxy",
        "web-sidecar-proxy",
        "connect-proxy",
    )
    assert service.port == 21000
    assert service.tags == ["v1"] and service.meta == {"team": "a"}
    assert (service.weights.passing, service.weights.warning) == (3, 2)
    proxy = service.proxy
    assert proxy.destination_service_name == "web"
    assert proxy.destination_service_id == "web-1"
    assert proxy.local_service_address == "127.0.0.1"
    assert proxy.local_service_port == 8080
    assert sidecar.token == "parent-secret"
    rows = [spec.row for spec in sidecar.checks]
    assert [(r.check_id, r.name, r.type) for r in rows] == [
        ("service:web-1-sidecar-proxy:1", "Connect Sidecar Listening", "tcp"),
        ("service:web-1-sidecar-proxy:2", "Connect Sidecar Aliasing web-1", "alias"),
    ]
    listening, alias = (spec.definition for spec in sidecar.checks)
    assert listening.tcp == "127.0.0.1:21000" and listening.interval == 10.0
    assert alias.alias_service == "web-1"
    assert all(spec.token == "parent-secret" for spec in sidecar.checks)


def test_own_fields_win_over_inherited_ones() -> None:
    raw = {
        **WEB,
        "connect": {
            "sidecar_service": {
                "name": "edge",
                "kind": "typical",
                "port": 9999,
                "address": "10.0.0.5",
                "tags": ["proxy"],
                "meta": {"x": "y"},
                "token": "own-secret",
                "proxy": {"local_service_port": 9090, "destination_service_name": "web"},
            }
        },
    }
    sidecar = expand(raw)
    service = sidecar.service
    assert service.id == "web-1-sidecar-proxy"  # the ID is always the agent's
    assert service.kind == "connect-proxy"  # and so is the kind
    assert (service.service, service.port, service.tags, service.meta) == (
        "edge",
        9999,
        ["proxy"],
        {"x": "y"},
    )
    # One of address/port given: no local address is made up.
    assert service.proxy.local_service_address == ""
    assert service.proxy.local_service_port == 9090
    assert sidecar.token == "own-secret"
    assert sidecar.checks[0].definition.tcp == "10.0.0.5:9999"


def test_walkthrough_api_check_replaces_the_defaults() -> None:
    raw = {
        "name": "api",
        "port": 8080,
        "tags": ["fake-service-api"],
        "connect": {
            "sidecar_service": {
                "port": 20000,
                "check": {
                    "name": "API Connect Envoy Sidecar",
                    "tcp": "127.0.0.1:20000",
                    "interval": "10s",
                    "timeout": "1s",
                },
                "proxy": {"upstreams": [{"destination_name": "db", "local_bind_port": 8081}]},
            }
        },
    }
    sidecar = expand(raw)
    assert sidecar.service.port == 20000
    assert [(s.row.check_id, s.row.name) for s in sidecar.checks] == [
        ("service:api-sidecar-proxy", "API Connect Envoy Sidecar")
    ]
    (upstream,) = sidecar.service.proxy.upstreams
    assert (upstream.destination_type, upstream.destination_name, upstream.local_bind_port) == (
        "service",
        "db",
        8081,
    )
    assert upstream.local_bind_address == ""  # as Consul stores it; 127.0.0.1 when bound


def test_no_sidecar_no_second_registration() -> None:
    found = build_registrations(definition({"name": "web", "port": 1}), "n1", {}, PORTS)
    assert [r.service.id for r in found] == ["web"]


def svc(sid: str, port: int) -> NodeService:
    return NodeService(id=sid, service=sid, port=port)


def test_port_is_the_lowest_free_one_and_stable() -> None:
    local = {"a": svc("a", 21000), "b": svc("b", 21002), "other": svc("other", 8080)}
    assert allocate_port("web-sidecar-proxy", local, PORTS) == 21001
    local["web-sidecar-proxy"] = svc("web-sidecar-proxy", 21007)
    assert allocate_port("web-sidecar-proxy", local, PORTS) == 21007
    # A port outside the range (the range moved) is not kept.
    local["web-sidecar-proxy"] = svc("web-sidecar-proxy", 30000)
    assert allocate_port("web-sidecar-proxy", local, PORTS) == 21001


def test_port_range_exhausted_or_disabled() -> None:
    local = {f"s{p}": svc(f"s{p}", p) for p in range(21000, 21003)}
    with pytest.raises(DefinitionError) as info:
        allocate_port("web-sidecar-proxy", local, (21000, 21002))
    assert str(info.value) == (
        "no port provided for sidecar_service and none left in the configured range [21000, 21002]"
    )
    with pytest.raises(DefinitionError, match="auto-assignment disabled in config"):
        allocate_port("web-sidecar-proxy", {}, (0, 0))
    with pytest.raises(DefinitionError) as info:
        build_registrations(definition(WEB), "n1", local, (21000, 21002))
    assert str(info.value).startswith("Invalid SidecarService: no port provided")


@pytest.mark.parametrize(
    ("sidecar", "problem"),
    [
        (
            {"connect": {"sidecar_service": {}}},
            "A SidecarService cannot have a nested SidecarService",
        ),
        (
            {"id": "mine"},
            "A SidecarService cannot specify an ID as this is managed by the agent",
        ),
        (
            {"proxy": {"upstreams": [{"local_bind_port": 1}]}},
            "upstream destination name cannot be empty",
        ),
        (
            {"proxy": {"upstreams": [{"destination_name": "db"}]}},
            "upstream local bind port or local socket path must be defined and nonzero",
        ),
        (
            {"proxy": {"upstreams": [{"destination_name": "db", "destination_type": "x"}]}},
            'unknown upstream destination type: "x"',
        ),
        (
            {
                "proxy": {
                    "upstreams": [
                        {"destination_name": "db", "local_bind_port": 1},
                        {"destination_name": "db", "local_bind_port": 2},
                    ]
                }
            },
            "upstreams cannot contain duplicates of db",
        ),
        (
            {
                "proxy": {
                    "upstreams": [
                        {"destination_name": "a", "local_bind_port": 1},
                        {"destination_name": "b", "local_bind_port": 1},
                    ]
                }
            },
            "upstreams cannot contain duplicates by local bind address and port or unix "
            'path; ":1" is specified twice',
        ),
    ],
)
def test_refusals_use_consuls_texts(sidecar: dict[str, Any], problem: str) -> None:
    raw = {**WEB, "connect": {"sidecar_service": sidecar}}
    with pytest.raises(DefinitionError) as info:
        build_registrations(definition(raw), "n1", {}, PORTS)
    assert str(info.value) == f"1 error occurred:\n\t* {problem}\n\n"


def test_direct_proxy_registration_is_validated_too() -> None:
    with pytest.raises(DefinitionError) as info:
        build_service(definition({"name": "p", "kind": "connect-proxy"}), "n1")
    assert str(info.value) == (
        "2 errors occurred:\n"
        "\t* Proxy.DestinationServiceName must be non-empty for Connect proxy services\n"
        "\t* Port or SocketPath must be set for a Connect proxy\n\n"
    )
