"""The proxy view's pure half: which watches a proxy needs, and its snapshot from the inputs."""

from __future__ import annotations

import pytest
from tests.xds_helpers import (
    DC,
    SHAPING_ENTRIES,
    TRUST_DOMAIN,
    instance,
    mesh_ca,
    sidecar,
)

from proconsul.agent.proxycfg import next_min_index
from proconsul.agent.proxycfg_inputs import (
    CHAIN,
    CONFIG,
    HEALTH,
    INTENTIONS,
    LEAF,
    ROOTS,
    ProxyInputs,
    WatchKey,
    build_snapshot,
    wanted_watches,
)
from proconsul.connect.config_entries import parse_config_entry
from proconsul.connect.discovery_chain import ChainEntries, compile_chain
from proconsul.structs.catalog import Upstream
from proconsul.structs.config_entries import ServiceIntentions
from proconsul.structs.connect import IndexedCARoots
from proconsul.structs.service_config import ServiceConfigResponse, UpstreamServiceConfig

CA = mesh_ca()
API = "api.default.default.dc1"
V1 = f"v1.{API}"
V2 = f"v2.{API}"


def web_inputs(*, acl: bool = False, policy: str = "allow", **proxy_config: object) -> ProxyInputs:
    proxy = sidecar("web", upstreams=[Upstream(destination_name="api", local_bind_port=8081)])
    proxy.proxy.config = dict(proxy_config)
    return ProxyInputs(proxy=proxy, datacenter=DC, acl_enabled=acl, default_policy=policy)


ROOTS_VALUE = IndexedCARoots(active_root_id=CA.root.id, trust_domain=TRUST_DOMAIN, roots=[CA.root])


def ixn_entry(destination: str, *sources: tuple[str, str]) -> ServiceIntentions:
    entry = parse_config_entry(
        {
            "Kind": "service-intentions",
            "Name": destination,
            "Sources": [{"Name": name, "Action": action} for name, action in sources],
        }
    )
    assert isinstance(entry, ServiceIntentions)
    return entry


def chain(entries: ChainEntries | None = None, name: str = "api") -> object:
    return compile_chain(name, entries or ChainEntries(), datacenter=DC, trust_domain=TRUST_DOMAIN)


def ready(inputs: ProxyInputs, config: ServiceConfigResponse | None = None) -> ProxyInputs:
    inputs.store(WatchKey(ROOTS), ROOTS_VALUE)
    inputs.store(WatchKey(LEAF, "web"), CA.issued("web", 7))
    inputs.store(WatchKey(INTENTIONS), [])
    inputs.store(WatchKey(CONFIG, "web", upstreams=("api",)), config or ServiceConfigResponse())
    return inputs


def test_no_snapshot_until_roots_leaf_intentions_and_config_arrived() -> None:
    inputs = web_inputs()
    steps = [
        (WatchKey(ROOTS), ROOTS_VALUE),
        (WatchKey(LEAF, "web"), CA.issued("web", 7)),
        (WatchKey(INTENTIONS), []),
        (WatchKey(CONFIG, "web", upstreams=("api",)), ServiceConfigResponse()),
    ]
    for key, value in steps:
        assert build_snapshot(inputs) is None
        assert inputs.store(key, value)
    snapshot = build_snapshot(inputs)
    assert snapshot is not None
    assert (snapshot.proxy_id, snapshot.service, snapshot.trust_domain) == (
        "web-sidecar-proxy",
        "web",
        TRUST_DOMAIN,
    )
    assert snapshot.roots == (CA.root,)
    assert snapshot.leaf.cert_pem == CA.leaf("web").cert_pem
    assert "PRIVATE" not in repr(snapshot.leaf)
    # The upstream's chain has not arrived: no upstream yet.
    assert snapshot.upstreams == ()


def test_roots_without_a_trust_domain_are_not_enough() -> None:
    inputs = ready(web_inputs())
    inputs.store(WatchKey(ROOTS), IndexedCARoots(active_root_id="", trust_domain="", roots=[]))
    assert build_snapshot(inputs) is None


def test_watches_follow_upstreams_and_chain_targets() -> None:
    inputs = ready(web_inputs())
    base = {
        WatchKey(ROOTS),
        WatchKey(LEAF, "web"),
        WatchKey(INTENTIONS),
        WatchKey(CONFIG, "web", upstreams=("api",)),
        WatchKey(CHAIN, "api"),
    }
    assert wanted_watches(inputs) == base
    # A default chain: one target, api itself.
    inputs.store(WatchKey(CHAIN, "api"), chain())
    assert wanted_watches(inputs) == base | {WatchKey(HEALTH, "api")}
    # Subsets of one service share one watch of its instances.
    inputs.store(WatchKey(CHAIN, "api"), chain(SHAPING_ENTRIES))
    assert wanted_watches(inputs) == base | {WatchKey(HEALTH, "api")}
    # A redirect moves the target to another service.
    redirect = ChainEntries.of(
        [
            parse_config_entry(
                {"Kind": "service-resolver", "Name": "api", "Redirect": {"Service": "api2"}}
            )
        ]
    )
    inputs.store(WatchKey(CHAIN, "api"), chain(redirect))
    assert wanted_watches(inputs) == base | {WatchKey(HEALTH, "api2")}
    # Prepared-query upstreams get no chain.
    inputs.proxy.proxy.upstreams.append(
        Upstream(destination_name="q", destination_type="prepared_query", local_bind_port=9)
    )
    assert WatchKey(CHAIN, "q") not in wanted_watches(inputs)


def test_subsets_select_instances_per_target_id() -> None:
    inputs = ready(web_inputs())
    inputs.store(WatchKey(CHAIN, "api"), chain(SHAPING_ENTRIES))
    v1 = instance("api", "10.0.0.1", 21000, node="n1", meta={"version": "v1"})
    v2 = instance("api", "10.0.0.2", 21000, node="n2", meta={"version": "v2"})
    warn = instance("api", "10.0.0.3", 21000, node="n3", meta={"version": "v2"}, status="warning")
    assert inputs.store(WatchKey(HEALTH, "api"), [v1, v2, warn])
    snapshot = build_snapshot(inputs)
    assert snapshot is not None
    (up,) = snapshot.upstreams
    assert up.upstream.destination_name == "api" and up.upstream.local_bind_port == 8081
    assert sorted(up.endpoints) == [V1, V2]
    assert up.endpoints[V1] == (v1,)
    # Health is the translator's to judge: the warning instance is kept.
    assert up.endpoints[V2] == (v2, warn)
    # The same rows again change nothing.
    assert not inputs.store(WatchKey(HEALTH, "api"), [v1, v2, warn])


def test_a_target_whose_instances_have_not_arrived_has_none() -> None:
    inputs = ready(web_inputs())
    inputs.store(WatchKey(CHAIN, "api"), chain())
    snapshot = build_snapshot(inputs)
    assert snapshot is not None
    assert dict(snapshot.upstreams[0].endpoints) == {API: ()}
    inputs.store(WatchKey(HEALTH, "api"), [instance("api", "10.0.0.1", 21000)])
    inputs.drop(WatchKey(HEALTH, "api"))
    snapshot = build_snapshot(inputs)
    assert snapshot is not None and dict(snapshot.upstreams[0].endpoints) == {API: ()}


def test_intentions_towards_the_service_or_wildcard_in_match_order() -> None:
    inputs = ready(web_inputs())
    inputs.store(
        WatchKey(INTENTIONS),
        [
            ixn_entry("*", ("*", "deny")),
            ixn_entry("db", ("web", "allow")),
            ixn_entry("web", ("api", "allow"), ("*", "deny")),
        ],
    )
    snapshot = build_snapshot(inputs)
    assert snapshot is not None
    found = [(i.source_name, i.destination_name, i.action) for i in snapshot.intentions]
    assert found == [("api", "web", "allow"), ("*", "web", "deny"), ("*", "*", "deny")]


@pytest.mark.parametrize(
    ("acl", "policy", "allow"),
    [(False, "deny", True), (False, "allow", True), (True, "deny", False), (True, "allow", True)],
)
def test_default_allow_follows_the_acl_settings(acl: bool, policy: str, allow: bool) -> None:
    snapshot = build_snapshot(ready(web_inputs(acl=acl, policy=policy)))
    assert snapshot is not None and snapshot.default_allow is allow


def test_central_config_sets_protocol_and_upstream_config_under_the_registration() -> None:
    resolved = ServiceConfigResponse(
        proxy_config={"protocol": "http", "local_connect_timeout_ms": 1000},
        upstream_configs=[UpstreamServiceConfig("api", {"protocol": "http", "x": 1})],
    )
    inputs = ready(web_inputs(), resolved)
    inputs.store(WatchKey(CHAIN, "api"), chain())
    snapshot = build_snapshot(inputs)
    assert snapshot is not None
    assert snapshot.protocol == "http"
    assert snapshot.local_connect_timeout_ms == 1000
    assert snapshot.upstreams[0].upstream.config == {"protocol": "http", "x": 1}
    # What the registration says wins; the inputs' registration is not changed.
    inputs = ready(web_inputs(protocol="tcp"), resolved)
    snapshot = build_snapshot(inputs)
    assert snapshot is not None and snapshot.protocol == "tcp"
    assert inputs.proxy.proxy.config == {"protocol": "tcp"}
    assert build_snapshot(ready(web_inputs())) is not None
    plain = build_snapshot(ready(web_inputs()))
    assert plain is not None and plain.protocol == "tcp"


def test_reset_forgets_every_answer() -> None:
    inputs = ready(web_inputs())
    inputs.store(WatchKey(CHAIN, "api"), chain())
    inputs.reset()
    assert build_snapshot(inputs) is None
    assert WatchKey(HEALTH, "api") not in wanted_watches(inputs)


@pytest.mark.parametrize(
    ("last", "got", "expected"), [(0, 0, 1), (0, 5, 5), (5, 5, 5), (5, 9, 9), (9, 5, 0)]
)
def test_next_min_index(last: int, got: int, expected: int) -> None:
    assert next_min_index(last, got) == expected


def test_complete_once_every_wanted_watch_answered() -> None:
    inputs = ready(web_inputs())
    assert not inputs.complete()  # the chain of api
    inputs.store(WatchKey(CHAIN, "api"), chain())
    assert not inputs.complete()  # api's instances, now that the chain names them
    inputs.store(WatchKey(HEALTH, "api"), [])
    assert inputs.complete()
    inputs.drop(WatchKey(HEALTH, "api"))
    assert not inputs.complete()


def test_watch_labels_for_log_lines() -> None:
    assert WatchKey(INTENTIONS).label() == "intentions"
    assert WatchKey(HEALTH, "api", "dc2").label() == "health api dc2"
