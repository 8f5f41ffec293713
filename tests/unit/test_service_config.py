"""Central service config (connect/service_config.py) and its server read:
precedence upstream > proxy registration > service-defaults > proxy-defaults,
field by field, as Consul 1.16 resolves and merges it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.unit.test_config_endpoints import MGMT, acl_world, token_with

from proconsul.acl.errors import ACLDenied
from proconsul.connect.config_entries import parse_config_entry
from proconsul.connect.service_config import merge_service_config, resolve_service_config
from proconsul.structs.catalog import ConnectProxyConfig, Upstream
from proconsul.structs.commands import ConfigEntryRequest
from proconsul.structs.config_entries import (
    ExposeConfig,
    ExposePath,
    MeshGatewayConfig,
    ProxyDefaults,
)
from proconsul.structs.requests import QueryOptions, ReadRequest

PROXY = {
    "Kind": "proxy-defaults",
    "Name": "global",
    "Config": {"protocol": "http", "local_connect_timeout_ms": 1000, "handshake_timeout_ms": 10},
    "MeshGateway": {"Mode": "remote"},
    "Expose": {"Paths": [{"Path": "/metrics", "LocalPathPort": 9102, "ListenerPort": 20200}]},
}
WEB = {
    "Kind": "service-defaults",
    "Name": "web",
    "Protocol": "grpc",
    "MeshGateway": {"Mode": "local"},
    "Expose": {"Checks": True},
    "LocalRequestTimeoutMs": 3000,
    "UpstreamConfig": {
        "Defaults": {"ConnectTimeoutMs": 500, "Limits": {"MaxConnections": 10}},
        "Overrides": [{"Name": "db", "Protocol": "tcp", "ConnectTimeoutMs": 900}],
    },
}
API = {"Kind": "service-defaults", "Name": "api", "Protocol": "http2"}


def parsed(raw: dict[str, Any]) -> Any:
    return parse_config_entry(raw)


def resolve(**kwargs: Any) -> Any:
    proxy = parsed(PROXY)
    assert isinstance(proxy, ProxyDefaults)
    defaults = {raw["Name"]: parsed(raw) for raw in (WEB, API)}
    return resolve_service_config(
        kwargs.pop("service", "web"),
        kwargs.pop("upstreams", ["api", "db", "cache"]),
        proxy_defaults=proxy,
        service_defaults=defaults,
        **kwargs,
    )


def test_service_defaults_overlay_proxy_defaults() -> None:
    reply = resolve()
    assert reply.proxy_config == {
        "protocol": "grpc",  # service-defaults beat proxy-defaults
        "local_connect_timeout_ms": 1000,
        "handshake_timeout_ms": 10,
        "local_request_timeout_ms": 3000,
    }
    assert reply.mesh_gateway.mode == "local"
    assert reply.expose.checks is True
    assert [p.path for p in reply.expose.paths] == ["/metrics"]  # web sets none of its own


def test_upstream_configs_resolve_in_consuls_order() -> None:
    reply = resolve()
    limits = {"MaxConnections": 10}
    # api: its own service-defaults protocol, then web's upstream defaults.
    assert reply.upstream_config("api") == {
        "protocol": "http2",
        "connect_timeout_ms": 500,
        "limits": limits,
        "mesh_gateway": {"Mode": "local"},
    }
    # db: the override wins over defaults and over the global protocol.
    assert reply.upstream_config("db") == {
        "protocol": "tcp",
        "connect_timeout_ms": 900,
        "limits": limits,
        "mesh_gateway": {"Mode": "local"},
    }
    # cache: proxy-defaults' protocol, web's defaults.
    assert reply.upstream_config("cache") == {
        "protocol": "http",
        "connect_timeout_ms": 500,
        "limits": limits,
        "mesh_gateway": {"Mode": "local"},
    }
    # Not asked about: the `*` defaults.
    assert reply.upstream_config("other") == {
        "connect_timeout_ms": 500,
        "limits": limits,
        "mesh_gateway": {"Mode": "local"},
    }


def test_the_registrations_mesh_gateway_beats_upstream_defaults() -> None:
    reply = resolve(registration_mesh_gateway=MeshGatewayConfig(mode="none"))
    assert reply.upstream_config("api")["mesh_gateway"] == {"Mode": "none"}


def test_nothing_stored_resolves_to_nothing() -> None:
    reply = resolve_service_config("web", ["api"], proxy_defaults=None, service_defaults={})
    assert reply.proxy_config == {} and reply.upstream_configs == []
    assert reply.mesh_gateway.mode == ""


def test_merge_keeps_what_the_registration_says() -> None:
    registration = ConnectProxyConfig(
        destination_service_name="web",
        config={"protocol": "http", "bind_port": 21000},
        mesh_gateway=MeshGatewayConfig(mode=""),
        expose=ExposeConfig(paths=[ExposePath(path="/health", local_path_port=8080)]),
        upstreams=[
            Upstream(
                destination_name="api", local_bind_port=8081, config={"connect_timeout_ms": 1}
            ),
            Upstream(
                destination_name="db",
                local_bind_port=5432,
                mesh_gateway=MeshGatewayConfig(mode="remote"),
            ),
            Upstream(destination_name="q", destination_type="prepared_query", local_bind_port=1),
        ],
    )
    before = registration.config.copy()
    merged = merge_service_config(resolve(), registration)
    assert registration.config == before  # the input is left alone
    # registration > service-defaults > proxy-defaults
    assert merged.config["protocol"] == "http"
    assert merged.config["bind_port"] == 21000
    assert merged.config["local_request_timeout_ms"] == 3000
    assert merged.config["handshake_timeout_ms"] == 10
    assert merged.mesh_gateway.mode == "local"
    assert merged.expose.checks is True
    assert [p.path for p in merged.expose.paths] == ["/health"]
    api, db, query = merged.upstreams
    # upstream > central: its own connect timeout, the rest from the server.
    assert api.config == {
        "protocol": "http2",
        "connect_timeout_ms": 1,
        "limits": {"MaxConnections": 10},
    }
    assert api.mesh_gateway.mode == "local"
    assert db.config["protocol"] == "tcp" and db.mesh_gateway.mode == "remote"
    assert query.config == {}


# ----- the server read ---------------------------------------------------------------


def test_the_server_read_resolves_from_the_store_and_checks_service_read() -> None:
    async def body() -> None:
        endpoints, acl = await acl_world()
        store = endpoints.store
        for raw in (PROXY, WEB, API):
            request = ConfigEntryRequest(op="upsert", entry=parsed(raw))
            assert (await endpoints.write(request, MGMT))[1] is True
        read = ReadRequest(name="web", upstreams=["api"], options=QueryOptions(token=MGMT))
        response = await endpoints.read("ConfigEntry.ResolveServiceConfig", read)
        assert response.value.proxy_config["protocol"] == "grpc"
        assert response.value.upstream_config("api")["protocol"] == "http2"
        assert response.meta.index == store.index("config-entries")
        made = await token_with(acl, 'service "api" { policy = "read" }')
        read.options = QueryOptions(token=made.secret_id)
        with pytest.raises(ACLDenied, match="lacks permission 'service:read' on \"web\""):
            await endpoints.read("ConfigEntry.ResolveServiceConfig", read)

    asyncio.run(body())
