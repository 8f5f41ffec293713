"""The translator: proxy snapshots -> the Envoy resources Consul generates for a sidecar."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cryptography import x509
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from tests.xds_helpers import (
    SHAPING_ENTRIES,
    TRUST_DOMAIN,
    entries,
    instance,
    intentions,
    mesh_ca,
    snapshot,
    upstream,
)

from proconsul.connect.intentions import HTTPRequest, authorize_http
from proconsul.structs.catalog import Weights
from proconsul.xds.common import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from proconsul.xds.rbac import rbac_rules
from proconsul.xds.translate import translate

CA = mesh_ca()
API_SNI = f"api.default.dc1.internal.{TRUST_DOMAIN}"
V1_SNI = f"v1.{API_SNI}"
V2_SNI = f"v2.{API_SNI}"


def unpack(packed: Any, cls: Any) -> Any:
    message = cls()
    assert packed.Unpack(message)
    return message


def walkthrough_web() -> Any:
    api = upstream(
        "api", 8081, endpoints={"api.default.default.dc1": [instance("api", "10.0.0.2", 21000)]}
    )
    return snapshot(CA, "web", upstreams=[api])


# ----------------------------------------------------------- walkthrough


def test_walkthrough_web_to_api_tcp() -> None:
    resources = translate(walkthrough_web())
    listeners = resources.unpacked(LISTENER_TYPE)
    assert sorted(listeners) == ["api:127.0.0.1:8081", "public_listener:0.0.0.0:21000"]

    outbound = listeners["api:127.0.0.1:8081"]
    assert outbound.address.socket_address.port_value == 8081
    proxy = unpack(outbound.filter_chains[0].filters[0].typed_config, tcp_proxy_pb2.TcpProxy)
    assert proxy.cluster == API_SNI
    assert proxy.stat_prefix == "upstream.api.default.default.dc1"

    public = listeners["public_listener:0.0.0.0:21000"]
    chain = public.filter_chains[0]
    assert [f.name for f in chain.filters] == [
        "envoy.filters.network.rbac",
        "envoy.filters.network.tcp_proxy",
    ]
    assert unpack(chain.filters[1].typed_config, tcp_proxy_pb2.TcpProxy).cluster == "local_app"
    tls = unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
    assert tls.require_client_certificate.value is True
    assert tls.common_tls_context.validation_context_sds_secret_config.name == "roots"
    assert tls.common_tls_context.tls_certificate_sds_secret_configs[0].name == "leaf:web"

    clusters = resources.unpacked(CLUSTER_TYPE)
    assert sorted(clusters) == [API_SNI, "local_app"]
    local = clusters["local_app"].load_assignment.endpoints[0].lb_endpoints[0]
    assert local.endpoint.address.socket_address.port_value == 8080
    upstream_tls = unpack(
        clusters[API_SNI].transport_socket.typed_config, tls_pb2.UpstreamTlsContext
    )
    assert upstream_tls.sni == API_SNI
    sans = upstream_tls.common_tls_context.combined_validation_context.default_validation_context
    assert [m.matcher.exact for m in sans.match_typed_subject_alt_names] == [
        f"spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/api"
    ]

    endpoints = resources.unpacked(ENDPOINT_TYPE)[API_SNI].endpoints[0].lb_endpoints
    assert [e.endpoint.address.socket_address.address for e in endpoints] == ["10.0.0.2"]
    assert resources.unpacked(ROUTE_TYPE) == {}  # tcp needs no routes


def test_secrets_hold_a_leaf_that_verifies_against_the_roots() -> None:
    secrets = translate(walkthrough_web()).unpacked(SECRET_TYPE)
    leaf = x509.load_pem_x509_certificate(
        secrets["leaf:web"].tls_certificate.certificate_chain.inline_string.encode()
    )
    root = x509.load_pem_x509_certificate(
        secrets["roots"].validation_context.trusted_ca.inline_string.encode()
    )
    leaf.verify_directly_issued_by(root)
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/web"
    ]


def test_versions_are_content_hashes() -> None:
    snap = walkthrough_web()
    first, again = translate(snap), translate(snap)
    for type_url in (LISTENER_TYPE, CLUSTER_TYPE, SECRET_TYPE):
        assert first.type_version(type_url) == again.type_version(type_url)
    denied = translate(
        snapshot(
            CA,
            "web",
            upstreams=list(snap.upstreams),
            ixns=intentions("web", {"Name": "db", "Action": "deny"}),
        )
    )
    # Only the public listener (its RBAC) changed; clusters are the same.
    assert denied.type_version(LISTENER_TYPE) != first.type_version(LISTENER_TYPE)
    assert denied.type_version(CLUSTER_TYPE) == first.type_version(CLUSTER_TYPE)
    public = "public_listener:0.0.0.0:21000"
    assert denied.of(LISTENER_TYPE)[public].version != first.of(LISTENER_TYPE)[public].version
    outbound = "api:127.0.0.1:8081"
    assert denied.of(LISTENER_TYPE)[outbound].version == first.of(LISTENER_TYPE)[outbound].version


def test_endpoint_health_and_weights() -> None:
    rows = [
        instance("api", "10.0.0.2", 21000, node="a"),
        instance("api", "10.0.0.3", 21000, node="b", status="warning", weights=Weights(3, 2)),
        instance("api", "10.0.0.4", 21000, node="c", status="critical"),
    ]
    api = upstream("api", 8081, endpoints={"api.default.default.dc1": rows})
    lbs = translate(snapshot(CA, "web", upstreams=[api])).unpacked(ENDPOINT_TYPE)[API_SNI]
    got = [
        (e.endpoint.address.socket_address.address, e.health_status, e.load_balancing_weight.value)
        for e in lbs.endpoints[0].lb_endpoints
    ]
    assert got == [("10.0.0.2", 1, 1), ("10.0.0.3", 1, 2), ("10.0.0.4", 2, 1)]  # 2 = UNHEALTHY


# ------------------------------------------------------- traffic shaping


def shaping_resources() -> Any:
    api = upstream(
        "api",
        8081,
        SHAPING_ENTRIES,
        endpoints={
            "v1.api.default.default.dc1": [
                instance("api", "10.0.0.2", 21000, meta={"version": "v1"})
            ],
            "v2.api.default.default.dc1": [
                instance("api", "10.0.0.3", 21000, meta={"version": "v2"})
            ],
        },
    )
    return translate(snapshot(CA, "web", upstreams=[api]))


def test_traffic_shaping_routes_and_weighted_clusters() -> None:
    resources = shaping_resources()
    route_config = resources.unpacked(ROUTE_TYPE)["api"]
    host = route_config.virtual_hosts[0]
    assert list(host.domains) == ["*"]
    header_route, catch_all = host.routes

    assert header_route.match.prefix == "/"
    (header,) = header_route.match.headers
    assert (header.name, header.string_match.exact) == ("x-api-version", "v2")
    assert header_route.route.cluster == V2_SNI
    assert header_route.route.retry_policy.num_retries.value == 3
    assert header_route.route.timeout.seconds == 2

    assert catch_all.match.prefix == "/"
    legs = catch_all.route.weighted_clusters.clusters
    assert [(leg.name, leg.weight.value) for leg in legs] == [(V1_SNI, 7500), (V2_SNI, 2500)]
    for leg, version in zip(legs, ("v1", "v2"), strict=True):
        (added,) = leg.response_headers_to_add
        assert (added.header.key, added.header.value) == ("x-api-version", version)
        assert added.append_action == added.OVERWRITE_IF_EXISTS_OR_ADD

    # One cluster per subset, each with its own SNI; endpoints per subset.
    clusters = resources.unpacked(CLUSTER_TYPE)
    assert sorted(clusters) == ["local_app", V1_SNI, V2_SNI]
    eps = resources.unpacked(ENDPOINT_TYPE)
    assert eps[V1_SNI].endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address == (
        "10.0.0.2"
    )
    # The outbound listener is HTTP and takes its routes by RDS.
    listener = resources.unpacked(LISTENER_TYPE)["api:127.0.0.1:8081"]
    manager = unpack(
        listener.filter_chains[0].filters[0].typed_config, hcm_pb2.HttpConnectionManager
    )
    assert manager.rds.route_config_name == "api"
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]


def test_router_match_kinds_and_header_changes() -> None:
    chain_entries = entries(
        {"Kind": "service-defaults", "Name": "api", "Protocol": "http"},
        {
            "Kind": "service-router",
            "Name": "api",
            "Routes": [
                {
                    "Match": {"HTTP": {"PathExact": "/exact", "Methods": ["GET", "PUT"]}},
                    "Destination": {
                        "PrefixRewrite": "/x",
                        "RetryOnConnectFailure": True,
                        "RetryOnStatusCodes": [503],
                        "RequestHeaders": {"Add": {"a": "1"}, "Set": {"b": "2"}, "Remove": ["c"]},
                    },
                },
                {"Match": {"HTTP": {"PathRegex": "/v[0-9]+"}}},
                {
                    "Match": {
                        "HTTP": {"QueryParam": [{"Name": "debug", "Present": True}]},
                    }
                },
            ],
        },
    )
    api = upstream("api", 8081, chain_entries)
    routes = translate(snapshot(CA, "web", upstreams=[api])).unpacked(ROUTE_TYPE)["api"]
    exact, by_regex, by_query, catch_all = routes.virtual_hosts[0].routes
    assert exact.match.path == "/exact"
    assert exact.match.headers[0].name == ":method"
    assert exact.match.headers[0].string_match.safe_regex.regex == "GET|PUT"
    assert exact.route.prefix_rewrite == "/x"
    assert exact.route.retry_policy.retry_on == "connect-failure,retriable-status-codes"
    assert list(exact.route.retry_policy.retriable_status_codes) == [503]
    assert [(h.header.key, h.append_action) for h in exact.request_headers_to_add] == [
        ("a", 0),  # APPEND_IF_EXISTS_OR_ADD
        ("b", 2),  # OVERWRITE_IF_EXISTS_OR_ADD
    ]
    assert list(exact.request_headers_to_remove) == ["c"]
    assert by_regex.match.safe_regex.regex == "/v[0-9]+"
    assert by_query.match.query_parameters[0].present_match is True
    assert catch_all.match.prefix == "/" and catch_all.route.cluster == API_SNI


def test_http_service_gets_http_rbac_and_inline_route() -> None:
    snap = snapshot(
        CA,
        "api",
        protocol="http",
        default_allow=False,
        ixns=intentions("api", {"Name": "web", "Action": "allow"}),
    )
    public = translate(snap).unpacked(LISTENER_TYPE)["public_listener:0.0.0.0:21000"]
    (hcm_filter,) = public.filter_chains[0].filters
    manager = unpack(hcm_filter.typed_config, hcm_pb2.HttpConnectionManager)
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]
    assert manager.route_config.virtual_hosts[0].routes[0].route.cluster == "local_app"
    rules = unpack(manager.http_filters[0].typed_config, http_rbac_pb2.RBAC).rules
    assert rules.action == rbac_pb2.RBAC.ALLOW
    assert list(rules.policies) == ["consul-intentions-layer4"]


# ------------------------------------------------------ intentions -> RBAC


class Request:
    """What Envoy's RBAC filter looks at: the peer's URI SAN and the request."""

    def __init__(self, source: str, method: str = "GET", path: str = "/", **headers: str) -> None:
        self.uri = f"spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/{source}"
        self.source = source
        self.http = HTTPRequest(method, path, {":method": method, **headers})


def _string(matcher: Any, value: str | None) -> bool:
    if value is None:
        return False
    kind = matcher.WhichOneof("match_pattern")
    if kind == "exact":
        return value == matcher.exact
    if kind == "prefix":
        return value.startswith(matcher.prefix)
    if kind == "suffix":
        return value.endswith(matcher.suffix)
    return re.fullmatch(matcher.safe_regex.regex, value) is not None


def _principal(p: Any, req: Request) -> bool:
    kind = p.WhichOneof("identifier")
    if kind == "authenticated":
        return _string(p.authenticated.principal_name, req.uri)
    if kind == "and_ids":
        return all(_principal(q, req) for q in p.and_ids.ids)
    if kind == "not_id":
        return not _principal(p.not_id, req)
    raise AssertionError(kind)


def _permission(p: Any, req: Request) -> bool:
    kind = p.WhichOneof("rule")
    if kind == "any":
        return True
    if kind == "and_rules":
        return all(_permission(q, req) for q in p.and_rules.rules)
    if kind == "not_rule":
        return not _permission(p.not_rule, req)
    if kind == "url_path":
        return _string(p.url_path.path, req.http.path)
    if kind == "header":
        h = p.header
        value = req.http.header(h.name)
        matched = value is not None if h.present_match else _string(h.string_match, value)
        return matched != h.invert_match
    raise AssertionError(kind)


def envoy_allows(rules: Any, req: Request) -> bool:
    """Envoy's RBAC semantics: a request matching any policy gets the action."""
    matched = any(
        any(_principal(pr, req) for pr in policy.principals)
        and any(_permission(pe, req) for pe in policy.permissions)
        for policy in rules.policies.values()
    )
    return matched == (rules.action == rbac_pb2.RBAC.ALLOW)


INTENTION_TABLE = [
    ("allow", False, [{"Name": "web", "Action": "allow"}]),
    ("deny", True, [{"Name": "web", "Action": "deny"}]),
    ("default deny", False, []),
    ("default allow", True, []),
    (
        "deny one, allow the rest",
        False,
        [{"Name": "web", "Action": "deny"}, {"Name": "*", "Action": "allow"}],
    ),
    (
        "allow one, deny the rest",
        True,
        [{"Name": "web", "Action": "allow"}, {"Name": "*", "Action": "deny"}],
    ),
    (
        "L7 path, header and method",
        False,
        [
            {
                "Name": "web",
                "Permissions": [
                    {"Action": "deny", "HTTP": {"PathExact": "/admin"}},
                    {"Action": "allow", "HTTP": {"PathPrefix": "/api", "Methods": ["GET"]}},
                    {
                        "Action": "allow",
                        "HTTP": {"Header": [{"Name": "x-debug", "Present": True}]},
                    },
                ],
            },
            {"Name": "*", "Action": "allow"},
        ],
    ),
    (
        "L7 under default allow",
        True,
        [
            {
                "Name": "web",
                "Permissions": [
                    {"Action": "deny", "HTTP": {"PathRegex": "/secret/.*"}},
                    {"Action": "deny", "HTTP": {"Header": [{"Name": "x-bad", "Exact": "1"}]}},
                ],
            }
        ],
    ),
]

REQUESTS = [
    Request("web"),
    Request("web", path="/admin"),
    Request("web", path="/api/users"),
    Request("web", method="POST", path="/api/users"),
    Request("web", path="/other", **{"x-debug": "1"}),
    Request("web", path="/secret/x"),
    Request("web", path="/ok", **{"x-bad": "1"}),
    Request("db"),
    Request("db", path="/admin"),
]


@pytest.mark.parametrize(("case", "default_allow", "sources"), INTENTION_TABLE)
def test_rbac_decides_as_intentions_do(
    case: str, default_allow: bool, sources: list[dict[str, Any]]
) -> None:
    ixns = intentions("api", *sources) if sources else ()
    rules = rbac_rules(ixns, default_allow=default_allow, is_http=True, trust_domain=TRUST_DOMAIN)
    for req in REQUESTS:
        expected = authorize_http(ixns, req.source, "api", req.http, default_allow=default_allow)
        assert envoy_allows(rules, req) == expected.allowed, (case, req.source, req.http)


def test_rbac_shapes() -> None:
    deny_web = intentions(
        "api", {"Name": "web", "Action": "deny"}, {"Name": "*", "Action": "allow"}
    )
    rules = rbac_rules(deny_web, default_allow=False, is_http=False, trust_domain=TRUST_DOMAIN)
    assert rules.action == rbac_pb2.RBAC.ALLOW
    (principal,) = rules.policies["consul-intentions-layer4"].principals
    wildcard, not_web = principal.and_ids.ids
    domain = TRUST_DOMAIN.replace(".", r"\.")
    assert wildcard.authenticated.principal_name.safe_regex.regex == (
        f"^spiffe://{domain}/ns/default/dc/[^/]+/svc/[^/]+$"
    )
    assert not_web.not_id.authenticated.principal_name.safe_regex.regex == (
        f"^spiffe://{domain}/ns/default/dc/[^/]+/svc/web$"
    )
    # Default deny with nothing allowed: an ALLOW list with no policy.
    empty = rbac_rules((), default_allow=False, is_http=False, trust_domain=TRUST_DOMAIN)
    assert empty.action == rbac_pb2.RBAC.ALLOW and not empty.policies


def test_l7_intention_on_a_tcp_service_counts_as_deny() -> None:
    ixns = intentions(
        "api", {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}
    )
    snap = snapshot(CA, "api", ixns=ixns, default_allow=True)
    public = translate(snap).unpacked(LISTENER_TYPE)["public_listener:0.0.0.0:21000"]
    config = unpack(public.filter_chains[0].filters[0].typed_config, network_rbac_pb2.RBAC)
    assert config.stat_prefix == "connect_authz"
    assert config.rules.action == rbac_pb2.RBAC.DENY
    assert envoy_allows(config.rules, Request("web")) is False
    assert envoy_allows(config.rules, Request("db")) is True


def test_failover_targets_come_at_lower_priority() -> None:
    chain_entries = entries(
        {"Kind": "service-resolver", "Name": "api", "Failover": {"*": {"Datacenters": ["dc2"]}}}
    )
    api = upstream(
        "api",
        8081,
        chain_entries,
        endpoints={
            "api.default.default.dc1": [instance("api", "10.0.0.2", 21000)],
            "api.default.default.dc2": [instance("api", "10.9.0.2", 21000, node="far")],
        },
    )
    resources = translate(snapshot(CA, "web", upstreams=[api]))
    groups = resources.unpacked(ENDPOINT_TYPE)[API_SNI].endpoints
    got = [
        (g.priority, [e.endpoint.address.socket_address.address for e in g.lb_endpoints])
        for g in groups
    ]
    assert got == [(0, ["10.0.0.2"]), (1, ["10.9.0.2"])]
    tls = unpack(
        resources.unpacked(CLUSTER_TYPE)[API_SNI].transport_socket.typed_config,
        tls_pb2.UpstreamTlsContext,
    )
    sans = tls.common_tls_context.combined_validation_context.default_validation_context
    assert [m.matcher.exact.split("/dc/")[1] for m in sans.match_typed_subject_alt_names] == [
        "dc1/svc/api",
        "dc2/svc/api",
    ]
