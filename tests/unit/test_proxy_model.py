"""The built-in proxy's pure parts against our translator's real output.

Config model (every resource the translator emits parses; anything else is
NACKed with a reason and the last good config stays), RBAC decisions (the
same as connect/intentions.py, request by request), route matching and
weighted picking, round robin and outlier ejection.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.service.discovery.v3 import discovery_pb2
from tests.unit.test_xds_translate import INTENTION_TABLE, REQUESTS
from tests.xds_helpers import (
    SHAPING_ENTRIES,
    SHAPING_RESOLVER,
    TRUST_DOMAIN,
    entries,
    instance,
    intentions,
    mesh_ca,
    snapshot,
    upstream,
)

from proconsul.connect.intentions import authorize_http
from proconsul.lab.explain import parse_stats
from proconsul.proxy.ads_state import AdsState
from proconsul.proxy.balancer import Balancer
from proconsul.proxy.config import (
    TYPES,
    ClusterConfig,
    Endpoint,
    Outlier,
    SecretConfig,
    Unsupported,
    parse_resources,
)
from proconsul.proxy.matchers import RequestView
from proconsul.proxy.rbac import compile_rbac
from proconsul.proxy.stats import Stats
from proconsul.proxy.tls import ServerContext
from proconsul.xds.common import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    pack,
)
from proconsul.xds.rbac import rbac_rules
from proconsul.xds.translate import Resources, translate

CA = mesh_ca()
V1 = f"v1.api.default.dc1.internal.{TRUST_DOMAIN}"
V2 = f"v2.api.default.dc1.internal.{TRUST_DOMAIN}"


def shaped_web() -> Resources:
    rows = {
        "v1.api.default.default.dc1": [instance("api", "10.0.0.1", 21000, meta={"version": "v1"})],
        "v2.api.default.default.dc1": [instance("api", "10.0.0.2", 21000, meta={"version": "v2"})],
    }
    api = upstream("api", 8081, SHAPING_ENTRIES, endpoints=rows)
    return translate(snapshot(CA, "web", upstreams=[api], protocol="http"))


def response(resources: Resources, type_url: str, nonce: str, extra: tuple[Any, ...] = ()) -> Any:
    return discovery_pb2.DiscoveryResponse(
        type_url=type_url,
        version_info=f"v-{nonce}",
        nonce=nonce,
        resources=[r.packed for r in resources.of(type_url).values()] + list(extra),
    )


def view(path: str = "/", method: str = "GET", **headers: str) -> RequestView:
    return RequestView(method, path, "", {k.replace("_", "-"): v for k, v in headers.items()})


# ------------------------------------------------------------------ config


def test_every_resource_the_translator_emits_parses() -> None:
    resources = shaped_web()
    parsed = {t: parse_resources(t, [r.packed for r in resources.of(t).values()]) for t in TYPES}
    public = parsed[LISTENER_TYPE]["public_listener:0.0.0.0:21000"]
    assert public.tls is not None and public.tls.require_client_cert
    assert public.http is not None and public.http.rbac is not None
    outbound = parsed[LISTENER_TYPE]["api:127.0.0.1:8081"]
    assert outbound.tls is None and outbound.http is not None and outbound.http.rds_name == "api"
    cluster = parsed[CLUSTER_TYPE][V1]
    assert cluster.eds and cluster.tls is not None and cluster.tls.sni == V1
    assert cluster.tls.allowed_sans == {f"spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/api"}
    assert parsed[ENDPOINT_TYPE][V2] == (Endpoint("10.0.0.2", 21000, 1, 0),)
    assert set(parsed[SECRET_TYPE]) == {"leaf:web", "roots"}
    assert "PRIVATE KEY" not in repr(parsed[SECRET_TYPE]["leaf:web"])


def test_unhealthy_endpoints_are_left_out() -> None:
    rows = [
        instance("api", "10.0.0.1", 21000, node="a"),
        instance("api", "10.0.0.2", 21000, node="b", status="critical"),
    ]
    api = upstream("api", 8081, endpoints={"api.default.default.dc1": rows})
    resources = translate(snapshot(CA, "web", upstreams=[api]))
    parsed = parse_resources(
        ENDPOINT_TYPE, [r.packed for r in resources.of(ENDPOINT_TYPE).values()]
    )
    (endpoints,) = parsed.values()
    assert [e.host for e in endpoints] == ["10.0.0.1"]


def _state_with_all(resources: Resources) -> tuple[AdsState, list[Any]]:
    state = AdsState(node_id="web-sidecar-proxy", cluster="web")
    first = state.initial_requests()
    assert first[0].node.id == "web-sidecar-proxy"
    sent: list[Any] = []
    for i, type_url in enumerate(TYPES):
        sent += state.on_response(response(resources, type_url, f"n{i}")).requests
    return state, sent


def test_ads_state_acks_subscribes_and_becomes_ready() -> None:
    state, sent = _state_with_all(shaped_web())
    assert state.ready and state.nacks == 0
    assert not any(r.HasField("error_detail") for r in sent)
    endpoint_requests = [r for r in sent if r.type_url == ENDPOINT_TYPE]
    assert set(endpoint_requests[-1].resource_names) == {V1, V2}
    assert [r.resource_names for r in sent if r.type_url == ROUTE_TYPE][-1] == ["api"]
    assert state.config.routes["api"].name == "api"


def _bad_listener() -> Any:
    listener = listener_pb2.Listener(name="bad")
    listener.address.socket_address.address = "127.0.0.1"
    listener.address.socket_address.port_value = 1
    listener.filter_chains.append(
        listener_components_pb2.FilterChain(
            filters=[
                listener_components_pb2.Filter(
                    name="envoy.filters.network.redis_proxy",
                    typed_config=pack(cluster_pb2.Cluster()),
                )
            ]
        )
    )
    return pack(listener)


def test_unsupported_resource_is_nacked_and_the_last_config_stays() -> None:
    resources = shaped_web()
    state, _ = _state_with_all(resources)
    before = state.config
    reaction = state.on_response(response(resources, LISTENER_TYPE, "bad", [_bad_listener()]))
    assert reaction.config is None
    (nack,) = reaction.requests
    assert nack.response_nonce == "bad" and nack.version_info == "v-n2"
    assert "redis_proxy" in nack.error_detail.message
    assert state.config is before and state.nacks == 1


def test_malformed_bytes_and_http2_clusters_are_unsupported() -> None:
    garbage = pack(listener_pb2.Listener(name="x"))
    garbage.value = b"\xff\xff\xff"
    with pytest.raises(Unsupported, match="malformed"):
        parse_resources(LISTENER_TYPE, [garbage])
    grpc_api = upstream(
        "api",
        8081,
        None,
        endpoints={},
    )
    resources = translate(snapshot(CA, "web", upstreams=[grpc_api], protocol="grpc"))
    with pytest.raises(Unsupported, match="HTTP/2"):
        parse_resources(CLUSTER_TYPE, [r.packed for r in resources.of(CLUSTER_TYPE).values()])


# -------------------------------------------------------------------- RBAC


@pytest.mark.parametrize(("case", "default_allow", "sources"), INTENTION_TABLE)
def test_rbac_decides_as_intentions_do(
    case: str, default_allow: bool, sources: list[dict[str, Any]]
) -> None:
    ixns = intentions("api", *sources) if sources else ()
    rules = rbac_rules(ixns, default_allow=default_allow, is_http=True, trust_domain=TRUST_DOMAIN)
    compiled = compile_rbac(rules)
    for req in REQUESTS:
        expected = authorize_http(ixns, req.source, "api", req.http, default_allow=default_allow)
        headers = {k: v for k, v in req.http.headers.items() if not k.startswith(":")}
        request = RequestView(req.http.method, req.http.path, "", headers)
        assert compiled.allows(req.uri, request) == expected.allowed, (case, req.source, req.http)


def test_network_rbac_and_callers_without_identity() -> None:
    ixns = intentions("api", {"Name": "web", "Action": "allow"})
    rules = compile_rbac(
        rbac_rules(ixns, default_allow=False, is_http=False, trust_domain=TRUST_DOMAIN)
    )
    web = f"spiffe://{TRUST_DOMAIN}/ns/default/dc/dc2/svc/web"
    assert rules.allows(web)
    assert not rules.allows(f"spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/db")
    assert not rules.allows("spiffe://other.consul/ns/default/dc/dc1/svc/web")
    assert not rules.allows(None)


# ------------------------------------------------------------------ routes


def test_routes_header_match_and_weighted_split() -> None:
    state, _ = _state_with_all(shaped_web())
    table = state.config.routes["api"]
    to_v2 = table.select(view(x_api_version="v2"))
    assert to_v2 is not None and [leg.cluster for leg in to_v2.legs] == [V2]
    assert to_v2.retry.num_retries == 3 and to_v2.timeout_s == 2.0
    split = table.select(view("/anything"))
    assert split is not None
    assert split.pick(0.0).cluster == V1 and split.pick(0.7499).cluster == V1
    assert split.pick(0.7501).cluster == V2 and split.pick(0.9999).cluster == V2
    assert split.pick(0.1).response_headers.add == (("x-api-version", "v1", True),)
    rng = random.Random(7)
    share = sum(split.pick(rng.random()).cluster == V1 for _ in range(10000)) / 10000
    assert 0.73 < share < 0.77


def test_path_prefix_exact_and_regex_matches() -> None:
    raw = {
        "Kind": "service-router",
        "Name": "api",
        "Routes": [
            {"Match": {"HTTP": {"PathExact": "/exact"}}, "Destination": {"ServiceSubset": "v2"}},
            {"Match": {"HTTP": {"PathPrefix": "/pre"}}, "Destination": {"ServiceSubset": "v2"}},
            {
                "Match": {"HTTP": {"PathRegex": "/re/[0-9]+"}},
                "Destination": {"ServiceSubset": "v2"},
            },
        ],
    }
    chain = entries(
        {"Kind": "service-defaults", "Name": "api", "Protocol": "http"},
        SHAPING_RESOLVER,
        raw,
    )
    resources = translate(snapshot(CA, "web", upstreams=[upstream("api", 8081, chain)]))
    table = parse_resources(ROUTE_TYPE, [r.packed for r in resources.of(ROUTE_TYPE).values()])[
        "api"
    ]

    def cluster(path: str) -> str:
        route = table.select(view(path))
        assert route is not None
        return route.legs[0].cluster

    assert cluster("/exact") == V2 and cluster("/exact/more") == V1
    assert cluster("/prefix") == V2 and cluster("/other") == V1
    assert cluster("/re/42") == V2 and cluster("/re/x") == V1


# --------------------------------------------------------- balancer, outlier


ENVOY_OUTLIER = Outlier(5, 30.0, 10)


def _cluster(outlier: Outlier | None = ENVOY_OUTLIER) -> ClusterConfig:
    return ClusterConfig("c", 1.0, True, (), None, 1024, 1024, 1024, outlier)


def test_round_robin_and_priorities() -> None:
    a, b, c = Endpoint("a", 1), Endpoint("b", 1), Endpoint("c", 1, priority=1)
    balancer = Balancer(_cluster(), (a, b, c))
    assert [balancer.pick(0.0) for _ in range(4)] == [a, b, a, b]
    weighted = Balancer(_cluster(), (Endpoint("a", 1, weight=3), b))
    picks = [weighted.pick(0.0) for _ in range(8)]
    assert picks.count(b) == 2


def test_outlier_ejection_moves_traffic_and_expires() -> None:
    a, b = Endpoint("a", 1), Endpoint("b", 1)
    balancer = Balancer(_cluster(), (a, b))
    for _ in range(4):
        assert not balancer.report(a, False, 0.0)
    assert balancer.report(a, False, 0.0)  # the fifth failure in a row
    assert {balancer.pick(1.0) for _ in range(4)} == {b}
    for _ in range(5):  # b failing too: at most one of two may be out (10 %, at least one)
        balancer.report(b, False, 1.0)
    assert balancer.pick(1.0) == b
    assert balancer.pick(31.0) in (a, b) and {balancer.pick(31.0) for _ in range(3)} == {a, b}


def test_a_success_resets_the_failure_count() -> None:
    a, b = Endpoint("a", 1), Endpoint("b", 1)
    balancer = Balancer(_cluster(), (a, b))
    for _ in range(4):
        balancer.report(a, False, 0.0)
    balancer.report(a, True, 0.0)
    assert not balancer.report(a, False, 0.0)
    assert balancer.ejected_count(0.0) == 0


def test_circuit_breaker_limits_from_the_cluster() -> None:
    cluster = _cluster()
    limited = ClusterConfig("c", 1.0, True, (), None, 2, 1, 1024, None)
    assert Balancer(cluster, ()).may_connect()
    balancer = Balancer(limited, (Endpoint("a", 1),))
    balancer.connections = 2
    assert not balancer.may_connect()
    balancer.connections, balancer.pending = 0, 1
    assert balancer.may_connect() and not balancer.may_queue()
    assert Balancer(limited, ()).pick(0.0) is None  # no endpoint: no healthy upstream


def test_a_server_context_takes_several_new_roots_at_once() -> None:
    """A root rotation adds the new root and its cross-signed copy in one update."""
    old, new, cross = mesh_ca(seed=1), mesh_ca(seed=2), mesh_ca(seed=3)
    leaf = old.leaf("api")
    leaf_secret = SecretConfig(name="leaf:api", cert_pem=leaf.cert_pem, key_pem=leaf.key_pem)
    before = SecretConfig(name="roots", roots_pem=old.cert_pem)
    context = ServerContext(leaf_secret, before, require_client_cert=True)
    after = SecretConfig(name="roots", roots_pem=old.cert_pem + new.cert_pem + cross.cert_pem)
    assert context.refresh(leaf_secret, after)
    assert len(context.context.get_ca_certs()) == 3


def test_stats_show_the_applied_versions_and_explain_reads_them_back() -> None:
    """/stats carries the version applied per xDS type, as Envoy's text readouts; the
    troubleshooter's parser gets both them and the counters out again."""
    stats = Stats()
    stats.listener("public_listener").rbac_denied = 3
    stats.versions = {CLUSTER_TYPE: "c0ffee", LISTENER_TYPE: "beef"}
    text = stats.render_text()
    assert 'cluster_manager.cds.version_text: "c0ffee"' in text.splitlines()
    assert 'listener_manager.lds.version_text: "beef"' in text.splitlines()
    assert "version_text" not in stats.render_prometheus()
    counters, readouts = parse_stats(text)
    assert counters["listener.public_listener.rbac.denied"] == 3
    assert readouts == {
        "cluster_manager.cds.version_text": "c0ffee",
        "listener_manager.lds.version_text": "beef",
    }
