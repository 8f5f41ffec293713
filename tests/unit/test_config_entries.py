"""Config entries: decoding in either key spelling, normalizing, and each kind's
rules with Consul's error texts (structs/config_entries.py, connect/config_entries.py)."""

from __future__ import annotations

from typing import Any

import hcl
import msgspec
import pytest

from proconsul.connect.config_entries import (
    ConfigEntryError,
    normalize,
    parse_config_entry,
    service_protocol,
)
from proconsul.structs.config_entries import (
    ConfigEntry,
    ProxyDefaults,
    ServiceDefaults,
    ServiceIntentions,
    ServiceResolver,
    ServiceRouter,
    ServiceSplitter,
    decode_config_entry,
    encode_config_entry,
)
from proconsul.structs.duration import Duration, dec_hook, enc_hook

# ------------------------------------------------------------------ decoding


def test_both_spellings_decode_to_the_same_entry() -> None:
    camel = {
        "Kind": "service-resolver",
        "Name": "api",
        "DefaultSubset": "v1",
        "ConnectTimeout": "15s",
        "Subsets": {"v1": {"Filter": "Service.Meta.version == v1", "OnlyPassing": True}},
        "Redirect": None,
    }
    snake = {
        "kind": "service-resolver",
        "name": "api",
        "default_subset": "v1",
        "connect_timeout": "15s",
        "subsets": {"v1": {"filter": "Service.Meta.version == v1", "only_passing": True}},
    }
    lower_camel = {
        "kind": "service-resolver",
        "name": "api",
        "defaultSubset": "v1",
        "connectTimeout": "15s",
        "subsets": {"v1": {"filter": "Service.Meta.version == v1", "onlyPassing": True}},
    }
    entries = [decode_config_entry(raw) for raw in (camel, snake, lower_camel)]
    assert entries[0] == entries[1] == entries[2]
    resolver = entries[0]
    assert isinstance(resolver, ServiceResolver)
    assert resolver.kind == "service-resolver"
    assert resolver.connect_timeout == Duration(15.0)
    assert resolver.subsets["v1"].only_passing


def test_user_data_keys_are_never_renamed() -> None:
    entry = decode_config_entry(
        {
            "kind": "service-splitter",
            "name": "api",
            "meta": {"OwnerTeam": "payments", "build": 42},
            "splits": [
                {
                    "weight": 100,
                    "response_headers": {"set": {"X-Split": "v1"}, "remove": ["X-Debug"]},
                }
            ],
        }
    )
    assert isinstance(entry, ServiceSplitter)
    assert entry.meta == {"OwnerTeam": "payments", "build": "42"}
    headers = entry.splits[0].response_headers
    assert headers is not None and headers.set == {"X-Split": "v1"}
    proxy = decode_config_entry(
        {"Kind": "proxy-defaults", "Config": {"local_connect_timeout_ms": 1000, "Protocol": "x"}}
    )
    assert isinstance(proxy, ProxyDefaults)
    assert proxy.config == {"local_connect_timeout_ms": 1000, "Protocol": "x"}


def test_encode_uses_consul_field_names_and_drops_empty_fields() -> None:
    # Consul always shows the nested objects MeshGateway, Expose and TransparentProxy.
    entry = decode_config_entry(
        {
            "kind": "service-defaults",
            "name": "web",
            "protocol": "http",
            "external_sni": "web.example",
            "upstream_config": {"overrides": [{"name": "db", "envoy_cluster_json": "{}"}]},
        }
    )
    assert encode_config_entry(entry) == {
        "Kind": "service-defaults",
        "Name": "web",
        "Protocol": "http",
        "ExternalSNI": "web.example",
        "UpstreamConfig": {"Overrides": [{"Name": "db", "EnvoyClusterJSON": "{}"}]},
        "TransparentProxy": {},
        "MeshGateway": {},
        "Expose": {},
    }


def test_hcl1_shapes_decode() -> None:
    # pyhcl reads a block inside a list as a list of one object, and a single
    # block where Consul wants a list as one object; both are accepted.
    parsed = hcl.loads(
        """
        Kind = "service-router"
        Name = "api"
        Routes = [
          {
            Match { HTTP { PathPrefix = "/admin", Header { Name = "x-debug", Present = true } } }
            Destination { Service = "admin", RequestTimeout = "2s" }
          },
        ]
        """
    )
    entry = decode_config_entry(parsed)
    assert isinstance(entry, ServiceRouter)
    route = entry.routes[0]
    assert route.match is not None and route.match.http is not None
    assert route.match.http.path_prefix == "/admin"
    assert route.match.http.header[0].name == "x-debug"
    assert route.destination is not None
    assert route.destination.request_timeout == Duration(2.0)


def test_every_kind_round_trips_through_msgpack() -> None:
    # The form the Raft log and RPC will carry: the union decodes by its Kind tag.
    for raw in VALID:
        entry = parse_config_entry(raw)
        data = msgspec.msgpack.encode(entry, enc_hook=enc_hook)
        assert msgspec.msgpack.decode(data, type=ConfigEntry, dec_hook=dec_hook) == entry


@pytest.mark.parametrize(
    ("raw", "text", "field"),
    [
        ({"Name": "x"}, "Payload does not contain a kind/Kind key at the top level", "Kind"),
        ({"Kind": 7}, "Kind value in payload is not a string", "Kind"),
        ({"Kind": "nope"}, "invalid config entry kind: nope", "Kind"),
        (
            {"Kind": "service-defaults", "Name": "web", "Connect": {}},
            'invalid config key "Connect"',
            "Connect",
        ),
        (
            {"kind": "service-router", "name": "x", "routes": [{"match": {"http": {"foo": 1}}}]},
            'invalid config key "Routes[0].Match.HTTP.foo"',
            "Routes[0].Match.HTTP.foo",
        ),
        (
            {"Kind": "service-splitter", "Splits": [{"Weight": "heavy"}]},
            "Splits[0].Weight: Expected `float`, got `str`",
            "Splits[0].Weight",
        ),
    ],
)
def test_decode_errors(raw: dict[str, Any], text: str, field: str) -> None:
    with pytest.raises(ConfigEntryError) as caught:
        decode_config_entry(raw)
    assert str(caught.value) == text
    assert caught.value.field == field


# ----------------------------------------------------------------- normalize


def test_normalize_applies_consuls_write_time_rules() -> None:
    proxy = normalize(decode_config_entry({"Kind": "proxy-defaults"}))
    assert proxy.name == "global"
    defaults = normalize(decode_config_entry({"Kind": "service-defaults", "Protocol": "HTTP"}))
    assert isinstance(defaults, ServiceDefaults) and defaults.protocol == "http"
    splitter = normalize(
        decode_config_entry(
            {"Kind": "service-splitter", "Splits": [{"Weight": 33.333}, {"Weight": 66.667}]}
        )
    )
    assert isinstance(splitter, ServiceSplitter)
    assert [split.weight for split in splitter.splits] == [33.33, 66.67]
    intentions = normalize(
        decode_config_entry(
            {
                "Kind": "service-intentions",
                "Name": "api",
                "Sources": [
                    {"Name": "*", "Action": "deny"},
                    {
                        "Name": "web",
                        "Permissions": [{"Action": "allow", "HTTP": {"Methods": ["get"]}}],
                    },
                ],
            }
        )
    )
    assert isinstance(intentions, ServiceIntentions)
    assert [(s.name, s.precedence, s.type) for s in intentions.sources] == [
        ("web", 9, "consul"),
        ("*", 8, "consul"),
    ]
    http = intentions.sources[0].permissions[0].http
    assert http is not None and http.methods == ["GET"]


def test_service_protocol_precedence() -> None:
    web = ServiceDefaults(name="web", protocol="HTTP2")
    plain = ServiceDefaults(name="db")
    proxy = ProxyDefaults(name="global", config={"protocol": "http"})
    assert service_protocol(web, proxy) == "http2"
    assert service_protocol(plain, proxy) == "http"
    assert service_protocol(None, None) == "tcp"


# ------------------------------------------------------------------ validate

ROUTER = "service-router"
SPLITTER = "service-splitter"
RESOLVER = "service-resolver"
INTENTIONS = "service-intentions"


def _route(match: dict[str, Any], **destination: Any) -> dict[str, Any]:
    return {"Match": {"HTTP": match}, "Destination": destination or {"Service": "api"}}


def _source(**fields: Any) -> dict[str, Any]:
    return {"Name": "web", **fields}


def _permission(http: dict[str, Any] | None, action: str = "allow") -> dict[str, Any]:
    return {"Action": action, "HTTP": http} if http is not None else {"Action": action}


INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # (kind, fields, Consul's text, field)
    (
        "proxy-defaults",
        {"Name": "web"},
        'invalid name ("web"), only "global" is supported',
        "Name",
    ),
    (
        "proxy-defaults",
        {"Config": {"protocol": "smtp"}},
        'Config.protocol: unknown protocol "smtp"; use one of tcp, http, http2, grpc',
        "Config.protocol",
    ),
    ("proxy-defaults", {"Mode": "magic"}, 'invalid proxy mode: "magic"', "Mode"),
    ("service-defaults", {}, "Name is required", "Name"),
    (
        "service-defaults",
        {"Name": "*"},
        "service-defaults name must be the name of a service, and not a wildcard",
        "Name",
    ),
    (
        "service-defaults",
        {"Name": "web", "Protocol": "udp"},
        'Protocol: unknown protocol "udp"; use one of tcp, http, http2, grpc',
        "Protocol",
    ),
    (
        "service-defaults",
        {"Name": "web", "Meta": {"k" * 129: "v"}},
        f'Meta key "{"k" * 129}" exceeds maximum length 128',
        "Meta",
    ),
    (
        "service-defaults",
        {"Name": "web", "Namespace": "team-a"},
        'Namespace: "team-a" needs Consul Enterprise; only "default" exists',
        "Namespace",
    ),
    (
        "service-defaults",
        {"Name": "web", "Destination": {"Addresses": ["a.example"], "Port": 0}},
        "Invalid Port number 0",
        "Destination.Port",
    ),
    # service-splitter
    (SPLITTER, {"Name": "api"}, "no splits configured", "Splits"),
    (
        SPLITTER,
        {"Name": "api", "Splits": [{"Weight": 70, "ServiceSubset": "v1"}, {"Weight": 10}]},
        "the sum of all split weights must be 100, not 80.000000",
        "Splits",
    ),
    (
        SPLITTER,
        {"Name": "api", "Splits": [{"Weight": 99.99}]},
        "the sum of all split weights must be 100, not 99.990000",
        "Splits",
    ),
    (
        SPLITTER,
        {"Name": "api", "Splits": [{"Weight": 50}, {"Weight": 50, "Service": "api"}]},
        'split destination occurs more than once: service="api", subset="", '
        'namespace="", partition=""',
        "Splits[1]",
    ),
    (
        SPLITTER,
        {"Name": "api", "Splits": [{"Weight": 150}, {"Weight": -50, "Service": "b"}]},
        "Splits[0].Weight must be between 0 and 100",
        "Splits[0].Weight",
    ),
    # service-router
    (
        ROUTER,
        {"Name": "api", "Routes": [_route({"PathExact": "/a", "PathPrefix": "/b"})]},
        "Route[0] should only contain at most one of PathExact, PathPrefix, or PathRegex",
        "Routes[0].Match.HTTP",
    ),
    (
        ROUTER,
        {"Name": "api", "Routes": [_route({"PathPrefix": "admin"})]},
        "Route[0] PathPrefix doesn't start with '/': \"admin\"",
        "Routes[0].Match.HTTP.PathPrefix",
    ),
    (
        ROUTER,
        {"Name": "api", "Routes": [_route({"Header": [{"Exact": "1"}]})]},
        "Route[0] Header[0] missing required Name field",
        "Routes[0].Match.HTTP.Header[0].Name",
    ),
    (
        ROUTER,
        {
            "Name": "api",
            "Routes": [_route({"Header": [{"Name": "x", "Exact": "1", "Prefix": "a"}]})],
        },
        "Route[0] Header[0] should only contain one of Present, Exact, Prefix, Suffix, or Regex",
        "Routes[0].Match.HTTP.Header[0]",
    ),
    (
        ROUTER,
        {"Name": "api", "Routes": [_route({"QueryParam": [{"Name": "q"}]})]},
        "Route[0] QueryParam[0] should only contain one of Present, Exact, or Regex",
        "Routes[0].Match.HTTP.QueryParam[0]",
    ),
    (
        ROUTER,
        {"Name": "api", "Routes": [_route({"Methods": ["GET", "get"]})]},
        'Route[0] Methods contains "GET" more than once',
        "Routes[0].Match.HTTP.Methods",
    ),
    (
        ROUTER,
        {"Name": "api", "Routes": [_route({"Methods": ["FETCH"]})]},
        'Route[0] Methods contains an invalid method "FETCH"',
        "Routes[0].Match.HTTP.Methods",
    ),
    (
        ROUTER,
        {"Name": "api", "Routes": [_route({"PathRegex": "/v[0-9]+"}, PrefixRewrite="/")]},
        "Route[0] cannot make use of PrefixRewrite without configuring either "
        "PathExact or PathPrefix",
        "Routes[0].Destination.PrefixRewrite",
    ),
    (
        ROUTER,
        {"Name": "api", "Routes": [_route({}, Service="api", RetryOn=["sometimes"])]},
        'Route[0] contains an invalid retry condition: "sometimes"',
        "Routes[0].Destination.RetryOn",
    ),
    # service-resolver
    (
        RESOLVER,
        {"Name": "api", "DefaultSubset": "v3", "Subsets": {"v1": {}}},
        'DefaultSubset "v3" is not a valid subset',
        "DefaultSubset",
    ),
    (
        RESOLVER,
        {"Name": "api", "Subsets": {"V1": {"Filter": "x"}}},
        "Subset \"V1\" is invalid: must be a valid DNS label (lowercase letters, digits and '-')",
        "Subsets[V1]",
    ),
    (
        RESOLVER,
        {"Name": "api", "Redirect": {"Datacenter": "dc2"}, "Failover": {"*": {"Service": "b"}}},
        "Redirect and Failover cannot both be set",
        "Redirect",
    ),
    (RESOLVER, {"Name": "api", "Redirect": {}}, "Redirect is empty", "Redirect"),
    (
        RESOLVER,
        {"Name": "api", "Redirect": {"ServiceSubset": "v1"}},
        "Redirect.ServiceSubset defined without Redirect.Service",
        "Redirect.ServiceSubset",
    ),
    (
        RESOLVER,
        {"Name": "api", "Failover": {"v9": {"Datacenters": ["dc2"]}}},
        'Bad Failover["v9"]: not a valid subset',
        "Failover[v9]",
    ),
    (
        RESOLVER,
        {"Name": "api", "Failover": {"*": {}}},
        'Bad Failover["*"]: one of Service, ServiceSubset, Namespace, Targets, '
        "or Datacenters is required",
        "Failover[*]",
    ),
    (
        RESOLVER,
        {"Name": "api", "Failover": {"*": {"Datacenters": ["dc2", ""]}}},
        'Bad Failover["*"].Datacenters: found empty datacenter',
        "Failover[*]",
    ),
    (
        RESOLVER,
        {"Name": "api", "ConnectTimeout": "-1s"},
        "Bad ConnectTimeout '-1s', must be >= 0",
        "ConnectTimeout",
    ),
    (
        RESOLVER,
        {"Name": "api", "LoadBalancer": {"Policy": "fastest"}},
        'Bad LoadBalancer policy: "fastest" is not supported',
        "LoadBalancer.Policy",
    ),
    (
        RESOLVER,
        {"Name": "api", "LoadBalancer": {"Policy": "random", "HashPolicies": [{"SourceIP": True}]}},
        "Bad LoadBalancer configuration: "
        'HashPolicies specified for non-hash-based Policy: "random"',
        "LoadBalancer.HashPolicies",
    ),
    # service-intentions
    (INTENTIONS, {"Name": "api"}, "At least one source is required", "Sources"),
    (
        INTENTIONS,
        {"Name": "api-*", "Sources": [_source(Action="allow")]},
        "Name: wildcard character '*' cannot be used with partial values",
        "Name",
    ),
    (
        INTENTIONS,
        {"Name": "api", "Sources": [{"Action": "allow"}]},
        "Sources[0].Name is required",
        "Sources[0].Name",
    ),
    (
        INTENTIONS,
        {"Name": "api", "Sources": [_source()]},
        "Sources[0].Action must be set to 'allow' or 'deny'",
        "Sources[0].Action",
    ),
    (
        INTENTIONS,
        {"Name": "api", "Sources": [_source(Action="permit")]},
        "Sources[0].Action must be set to 'allow' or 'deny'",
        "Sources[0].Action",
    ),
    (
        INTENTIONS,
        {
            "Name": "api",
            "Sources": [_source(Action="allow", Permissions=[_permission({"PathPrefix": "/"})])],
        },
        "Sources[0].Action must be omitted if Permissions are specified",
        "Sources[0].Action",
    ),
    (
        INTENTIONS,
        {"Name": "*", "Sources": [_source(Permissions=[_permission({"PathPrefix": "/"})])]},
        "Sources[0].Permissions cannot be specified on intentions with wildcarded destinations",
        "Sources[0].Permissions",
    ),
    (
        INTENTIONS,
        {"Name": "api", "Sources": [_source(Permissions=[_permission(None)])]},
        "Sources[0].Permissions[0].HTTP is required",
        "Sources[0].Permissions[0].HTTP",
    ),
    (
        INTENTIONS,
        {"Name": "api", "Sources": [_source(Permissions=[_permission({})])]},
        "Sources[0].Permissions[0].HTTP should not be empty",
        "Sources[0].Permissions[0].HTTP",
    ),
    (
        INTENTIONS,
        {
            "Name": "api",
            "Sources": [_source(Permissions=[_permission({"PathExact": "/a", "PathRegex": "/b"})])],
        },
        "Sources[0].Permissions[0].HTTP should only contain at most one of "
        "PathExact, PathPrefix, or PathRegex",
        "Sources[0].Permissions[0].HTTP",
    ),
    (
        INTENTIONS,
        {"Name": "api", "Sources": [_source(Permissions=[_permission({"PathExact": "a"})])]},
        "Sources[0].Permissions[0].HTTP.PathExact doesn't start with '/': \"a\"",
        "Sources[0].Permissions[0].HTTP.PathExact",
    ),
    (
        INTENTIONS,
        {
            "Name": "api",
            "Sources": [_source(Permissions=[_permission({"PathExact": "/"}, "maybe")])],
        },
        "Sources[0].Permissions[0].Action must be set to 'allow' or 'deny'",
        "Sources[0].Permissions[0].Action",
    ),
    (
        INTENTIONS,
        {
            "Name": "api",
            "Sources": [_source(Permissions=[_permission({"Header": [{"Name": "x"}]})])],
        },
        "Sources[0].Permissions[0].HTTP.Header[0] should only contain one of "
        "Present, Exact, Prefix, Suffix, or Regex",
        "Sources[0].Permissions[0].HTTP.Header[0]",
    ),
    (
        INTENTIONS,
        {"Name": "api", "Sources": [_source(Action="allow"), _source(Action="deny")]},
        'Sources[1] defines "web" more than once',
        "Sources[1].Name",
    ),
    (
        INTENTIONS,
        {"Name": "api", "Sources": [_source(Action="allow", Type="aws")]},
        "Sources[0].Type must be set to 'consul'",
        "Sources[0].Type",
    ),
    (
        INTENTIONS,
        {"Name": "api", "Sources": [_source(Action="allow", LegacyID="abc")]},
        "Sources[0].LegacyID must be omitted",
        "Sources[0].LegacyID",
    ),
]


@pytest.mark.parametrize(
    ("kind", "fields", "text", "field"),
    INVALID,
    ids=[f"{kind}:{text[:50]}" for kind, _, text, _ in INVALID],
)
def test_invalid_entries_are_refused_with_consuls_text(
    kind: str, fields: dict[str, Any], text: str, field: str
) -> None:
    with pytest.raises(ConfigEntryError) as caught:
        parse_config_entry({"Kind": kind, **fields})
    assert str(caught.value) == text
    assert caught.value.field == field


VALID: list[dict[str, Any]] = [
    {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}},
    {"kind": "proxy-defaults", "config": {"protocol": "grpc"}, "mesh_gateway": {"mode": "local"}},
    {"Kind": "service-defaults", "Name": "web", "Protocol": "http2", "Mode": "transparent"},
    {
        "Kind": SPLITTER,
        "Name": "api",
        "Splits": [{"Weight": 99.99}, {"Weight": 0.01, "ServiceSubset": "canary"}],
    },
    # A route without a path is a catch-all; several matchers may be combined.
    {"Kind": ROUTER, "Name": "api", "Routes": [_route({"Methods": ["GET"], "Header": []})]},
    {"Kind": ROUTER, "Name": "api", "Routes": [{"Destination": {"Service": "b"}}]},
    # A subset with no filter selects every healthy instance.
    {"Kind": RESOLVER, "Name": "api", "Subsets": {"all": {}}, "DefaultSubset": "all"},
    {
        "Kind": RESOLVER,
        "Name": "api",
        "ConnectTimeout": "15s",
        "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}},
        "Failover": {"v1": {"Datacenters": ["dc2"]}, "*": {"Targets": [{"Datacenter": "dc3"}]}},
    },
    {"Kind": RESOLVER, "Name": "api", "Redirect": {"Service": "api-v2", "ServiceSubset": "x"}},
    {
        "Kind": INTENTIONS,
        "Name": "api",
        "Sources": [
            _source(Action="allow"),
            {"Name": "*", "Action": "deny"},
            {"Name": "admin", "Permissions": [_permission({"PathPrefix": "/admin"}, "deny")]},
        ],
    },
]


@pytest.mark.parametrize("raw", VALID, ids=[f"{raw.get('Kind', raw.get('kind'))}" for raw in VALID])
def test_valid_entries_pass(raw: dict[str, Any]) -> None:
    parse_config_entry(raw)


def test_subset_filters_are_checked_by_the_given_parser() -> None:
    def check(text: str) -> None:
        if "==" not in text:
            raise ValueError("expected ==")

    raw = {"Kind": RESOLVER, "Name": "api", "Subsets": {"v1": {"Filter": "Service.Meta"}}}
    parse_config_entry(raw)  # carried as text when no parser is given
    with pytest.raises(ConfigEntryError) as caught:
        parse_config_entry(raw, check_filter=check)
    assert str(caught.value) == 'Filter for subset "v1" is not a valid expression: expected =='
    assert caught.value.field == "Subsets[v1].Filter"
