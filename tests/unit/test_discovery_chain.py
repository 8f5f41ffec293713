"""connect/discovery_chain.py: config entries compiled into the chain
`/v1/discovery-chain/:service` shows, written out in Consul's JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hcl
import msgspec
import pytest

from proconsul.connect.config_entries import parse_config_entry
from proconsul.connect.discovery_chain import (
    ChainEntries,
    ChainError,
    compile_chain,
    instances_for,
    select_health_rows,
)
from proconsul.structs.catalog import CheckServiceNode, Node, NodeService
from proconsul.structs.duration import enc_hook

TRUST_DOMAIN = "7c9e6679-7425-40de-944b-e07fc1f90ae7.consul"


def entries_from_hcl(*texts: str) -> ChainEntries:
    """Entries as a user writes them for `consul config write`."""
    return ChainEntries.of(parse_config_entry(hcl.loads(text)) for text in texts)


def entries_from(*raws: dict[str, Any]) -> ChainEntries:
    return ChainEntries.of(parse_config_entry(raw) for raw in raws)


def compiled(service: str, entries: ChainEntries, datacenter: str = "dc1") -> dict[str, Any]:
    chain = compile_chain(service, entries, datacenter=datacenter, trust_domain=TRUST_DOMAIN)
    out: dict[str, Any] = msgspec.to_builtins(chain, enc_hook=enc_hook)
    return out


def sni(target: str) -> str:
    """`v1.api.default.default.dc1` -> `v1.api.default.dc1.internal.<trust domain>`."""
    parts = target.split(".")
    return ".".join([*parts[:-3], parts[-3], parts[-1], "internal", TRUST_DOMAIN])


def target(tid: str, service: str, subset: str = "", filter_text: str = "") -> dict[str, Any]:
    datacenter = tid.rsplit(".", 1)[1]
    out: dict[str, Any] = {"ID": tid, "Service": service}
    if subset:
        out["ServiceSubset"] = subset
    out |= {
        "Namespace": "default",
        "Partition": "default",
        "Datacenter": datacenter,
        "MeshGateway": {},
        "Subset": {"Filter": filter_text} if filter_text else {},
        "ConnectTimeout": "5s",
        "SNI": sni(tid),
        "Name": sni(tid),
    }
    return out


def resolver(tid: str, default: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"Default": True} if default else {}
    body |= {"ConnectTimeout": "5s", "Target": tid, **extra}
    return {"Type": "resolver", "Name": tid, "Resolver": body}


# --------------------------------------------------- the traffic-shaping lab

# api-v1 and api-v2 are instances of `api` registered with meta { version = "v1" }
# and meta { version = "v2" }. Header x-api-version: v2 pins v2; everything
# else is split 75/25, each response saying which side served it.
TRAFFIC_SHAPING = (
    """
    Kind     = "service-defaults"
    Name     = "api"
    Protocol = "http"
    """,
    """
    Kind = "service-resolver"
    Name = "api"
    Subsets {
      v1 { Filter = "Service.Meta.version == v1" }
      v2 { Filter = "Service.Meta.version == v2" }
    }
    """,
    """
    Kind = "service-router"
    Name = "api"
    Routes = [
      {
        Match { HTTP { Header = [{ Name = "x-api-version", Exact = "v2" }] } }
        Destination { Service = "api", ServiceSubset = "v2" }
      },
    ]
    """,
    """
    Kind = "service-splitter"
    Name = "api"
    Splits = [
      {
        Weight        = 75
        ServiceSubset = "v1"
        ResponseHeaders { Set { "x-split" = "v1" } }
      },
      {
        Weight        = 25
        ServiceSubset = "v2"
        ResponseHeaders { Set { "x-split" = "v2" } }
      },
    ]
    """,
)

V1 = "v1.api.default.default.dc1"
V2 = "v2.api.default.default.dc1"
TRAFFIC_SHAPING_CHAIN = {
    "ServiceName": "api",
    "Namespace": "default",
    "Partition": "default",
    "Datacenter": "dc1",
    "Protocol": "http",
    "StartNode": "router:api.default.default",
    "Nodes": {
        f"resolver:{V1}": resolver(V1),
        f"resolver:{V2}": resolver(V2),
        "router:api.default.default": {
            "Type": "router",
            "Name": "api.default.default",
            "Routes": [
                {
                    "Definition": {
                        "Match": {"HTTP": {"Header": [{"Name": "x-api-version", "Exact": "v2"}]}},
                        "Destination": {"Service": "api", "ServiceSubset": "v2"},
                    },
                    "NextNode": f"resolver:{V2}",
                },
                {
                    "Definition": {
                        "Match": {"HTTP": {"PathPrefix": "/"}},
                        "Destination": {
                            "Service": "api",
                            "Namespace": "default",
                            "Partition": "default",
                        },
                    },
                    "NextNode": "splitter:api.default.default",
                },
            ],
        },
        "splitter:api.default.default": {
            "Type": "splitter",
            "Name": "api.default.default",
            "Splits": [
                {
                    "Definition": {
                        "Weight": 75,
                        "ServiceSubset": "v1",
                        "ResponseHeaders": {"Set": {"x-split": "v1"}},
                    },
                    "Weight": 75,
                    "NextNode": f"resolver:{V1}",
                },
                {
                    "Definition": {
                        "Weight": 25,
                        "ServiceSubset": "v2",
                        "ResponseHeaders": {"Set": {"x-split": "v2"}},
                    },
                    "Weight": 25,
                    "NextNode": f"resolver:{V2}",
                },
            ],
        },
    },
    "Targets": {
        V1: target(V1, "api", "v1", "Service.Meta.version == v1"),
        V2: target(V2, "api", "v2", "Service.Meta.version == v2"),
    },
}


def test_the_traffic_shaping_example_compiles() -> None:
    assert compiled("api", entries_from_hcl(*TRAFFIC_SHAPING)) == TRAFFIC_SHAPING_CHAIN


def test_the_traffic_shaping_subsets_select_their_instances() -> None:
    chain = compile_chain(
        "api", entries_from_hcl(*TRAFFIC_SHAPING), datacenter="dc1", trust_domain=TRUST_DOMAIN
    )
    instances = [
        {"ID": "api-v1", "Meta": {"version": "v1"}},
        {"ID": "api-v2", "Meta": {"version": "v2"}},
    ]
    calls: list[str] = []

    def select(filter_text: str, given: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        # A stand-in for the filter language: just `Service.Meta.<key> == <value>`.
        calls.append(filter_text)
        left, value = (part.strip() for part in filter_text.split("=="))
        key = left.removeprefix("Service.Meta.")
        return [instance for instance in given if instance["Meta"].get(key) == value]

    assert [i["ID"] for i in instances_for(chain.targets[V1], instances, select)] == ["api-v1"]
    assert [i["ID"] for i in instances_for(chain.targets[V2], instances, select)] == ["api-v2"]
    assert calls == ["Service.Meta.version == v1", "Service.Meta.version == v2"]


def test_subsets_select_health_rows_with_the_filter_language() -> None:
    chain = compile_chain(
        "api", entries_from_hcl(*TRAFFIC_SHAPING), datacenter="dc1", trust_domain=TRUST_DOMAIN
    )
    rows = [
        CheckServiceNode(
            node=Node(node="n1", address="10.0.0.1"),
            service=NodeService(service="api", id=f"api-{v}", meta={"version": v}),
            checks=[],
        )
        for v in ("v1", "v2", "v3")
    ]
    for tid, wanted in ((V1, ["api-v1"]), (V2, ["api-v2"])):
        kept = instances_for(chain.targets[tid], rows, select_health_rows)
        assert [row.service.id for row in kept] == wanted


# ------------------------------------------------------- other compilations


def test_no_entries_give_the_default_chain() -> None:
    tid = "web.default.default.dc1"
    assert compiled("web", ChainEntries()) == {
        "ServiceName": "web",
        "Namespace": "default",
        "Partition": "default",
        "Datacenter": "dc1",
        "Default": True,
        "Protocol": "tcp",
        "StartNode": f"resolver:{tid}",
        "Nodes": {f"resolver:{tid}": resolver(tid, default=True)},
        "Targets": {tid: target(tid, "web")},
    }


def test_protocol_comes_from_proxy_defaults_when_the_service_has_none() -> None:
    entries = entries_from({"Kind": "proxy-defaults", "Config": {"protocol": "http"}})
    assert compiled("web", entries)["Protocol"] == "http"


def test_version_split_for_another_datacenter() -> None:
    entries = entries_from_hcl(
        """
        kind           = "service-resolver"
        name           = "web"
        default_subset = "v1"
        subsets = {
          "v1" = { filter = "Service.Meta.version == v1" }
          "v2" = { filter = "Service.Meta.version == v2" }
        }
        """,
        'kind = "service-defaults"\nname = "web"\nprotocol = "http"\n',
        """
        kind = "service-splitter"
        name = "web"
        splits = [
          { weight = 90, service_subset = "v1" },
          { weight = 10, service_subset = "v2" },
        ]
        """,
    )
    chain = compiled("web", entries, datacenter="dc2")
    v1, v2 = "v1.web.default.default.dc2", "v2.web.default.default.dc2"
    assert chain["StartNode"] == "splitter:web.default.default"
    splits = chain["Nodes"]["splitter:web.default.default"]["Splits"]
    assert [(s["Weight"], s["NextNode"]) for s in splits] == [
        (90, f"resolver:{v1}"),
        (10, f"resolver:{v2}"),
    ]
    assert chain["Targets"] == {
        v1: target(v1, "web", "v1", "Service.Meta.version == v1"),
        v2: target(v2, "web", "v2", "Service.Meta.version == v2"),
    }


def test_path_routing_to_another_service_and_a_canary_subset() -> None:
    entries = entries_from(
        {"Kind": "proxy-defaults", "Config": {"protocol": "http"}},
        {
            "Kind": "service-resolver",
            "Name": "web",
            "Subsets": {"canary": {"Filter": "Service.Meta.flavor == canary"}},
        },
        {
            "Kind": "service-router",
            "Name": "web",
            "Routes": [
                {
                    "Match": {"HTTP": {"PathPrefix": "/admin"}},
                    "Destination": {
                        "Service": "admin",
                        "PrefixRewrite": "/",
                        "RequestTimeout": "15s",
                    },
                },
                {
                    "Match": {"HTTP": {"Header": [{"Name": "x-debug", "Exact": "1"}]}},
                    "Destination": {
                        "ServiceSubset": "canary",
                        "NumRetries": 5,
                        "RetryOnStatusCodes": [401, 409],
                    },
                },
            ],
        },
    )
    chain = compiled("web", entries)
    routes = chain["Nodes"]["router:web.default.default"]["Routes"]
    assert [route["NextNode"] for route in routes] == [
        "resolver:admin.default.default.dc1",
        "resolver:canary.web.default.default.dc1",
        "resolver:web.default.default.dc1",
    ]
    assert routes[0]["Definition"]["Destination"] == {
        "Service": "admin",
        "PrefixRewrite": "/",
        "RequestTimeout": "15s",
    }
    nodes = chain["Nodes"]
    # admin has no resolver entry: its defaults are synthesized.
    assert nodes["resolver:admin.default.default.dc1"]["Resolver"]["Default"] is True
    assert "Default" not in nodes["resolver:web.default.default.dc1"]["Resolver"]
    assert sorted(chain["Targets"]) == [
        "admin.default.default.dc1",
        "canary.web.default.default.dc1",
        "web.default.default.dc1",
    ]


def test_failover_to_other_datacenters() -> None:
    entries = entries_from_hcl(
        """
        kind            = "service-resolver"
        name            = "web"
        connect_timeout = "15s"
        failover = {
          "*" = { datacenters = ["dc1", "dc3", "dc4"] }
        }
        """,
        """
        Kind = "proxy-defaults"
        MeshGateway { Mode = "local" }
        """,
    )
    chain = compiled("web", entries)
    assert chain["Nodes"]["resolver:web.default.default.dc1"]["Resolver"] == {
        "ConnectTimeout": "15s",
        "Target": "web.default.default.dc1",
        # The primary datacenter is never a failover target of itself.
        "Failover": {"Targets": ["web.default.default.dc3", "web.default.default.dc4"]},
    }
    targets = chain["Targets"]
    assert targets["web.default.default.dc3"]["ConnectTimeout"] == "15s"
    assert targets["web.default.default.dc3"]["MeshGateway"] == {"Mode": "local"}
    assert targets["web.default.default.dc1"]["MeshGateway"] == {}


def test_redirect_to_another_datacenter_and_service() -> None:
    entries = entries_from(
        {"Kind": "service-resolver", "Name": "web", "Redirect": {"Datacenter": "dc2"}},
        {"Kind": "service-resolver", "Name": "web-next", "Redirect": {"Service": "web"}},
    )
    assert compiled("web", entries)["StartNode"] == "resolver:web.default.default.dc2"
    chain = compiled("web-next", entries)
    assert chain["StartNode"] == "resolver:web.default.default.dc2"
    assert list(chain["Targets"]) == ["web.default.default.dc2"]


def test_nested_splitters_are_flattened() -> None:
    entries = entries_from(
        {"Kind": "proxy-defaults", "Config": {"protocol": "http"}},
        {
            "Kind": "service-splitter",
            "Name": "web",
            "Splits": [
                {"Weight": 50},
                {
                    "Weight": 50,
                    "Service": "web-next",
                    "RequestHeaders": {"Set": {"x-from": "web", "x-hop": "outer"}},
                    "ResponseHeaders": {"Set": {"x-served": "outer"}},
                },
            ],
        },
        {
            "Kind": "service-resolver",
            "Name": "web-next",
            "Subsets": {"blue": {}, "green": {}},
        },
        {
            "Kind": "service-splitter",
            "Name": "web-next",
            "Splits": [
                {
                    "Weight": 50,
                    "ServiceSubset": "blue",
                    "RequestHeaders": {"Set": {"x-hop": "inner"}},
                    "ResponseHeaders": {"Set": {"x-served": "inner"}},
                },
                {"Weight": 50, "ServiceSubset": "green"},
            ],
        },
    )
    splits = compiled("web", entries)["Nodes"]["splitter:web.default.default"]["Splits"]
    assert [(s["Weight"], s["NextNode"]) for s in splits] == [
        (50, "resolver:web.default.default.dc1"),
        (25, "resolver:blue.web-next.default.default.dc1"),
        (25, "resolver:green.web-next.default.default.dc1"),
    ]
    blue = splits[1]["Definition"]
    # Requests pass the outer split first, responses pass it last.
    assert blue["RequestHeaders"] == {"Set": {"x-from": "web", "x-hop": "inner"}}
    assert blue["ResponseHeaders"] == {"Set": {"x-served": "outer"}}


HTTP = {"Kind": "service-defaults", "Name": "api", "Protocol": "http"}


@pytest.mark.parametrize(
    ("raws", "text"),
    [
        (
            [
                {"Kind": "service-defaults", "Name": "api", "Protocol": "tcp"},
                {"Kind": "service-splitter", "Name": "api", "Splits": [{"Weight": 100}]},
            ],
            'discovery chain "api" uses a protocol "tcp" that does not permit '
            "advanced routing or splitting behavior",
        ),
        (
            [{"Kind": "service-router", "Name": "api", "Routes": []}],
            'discovery chain "api" uses a protocol "tcp" that does not permit '
            "advanced routing or splitting behavior",
        ),
        (
            [
                HTTP,
                {"Kind": "service-defaults", "Name": "b", "Protocol": "grpc"},
                {
                    "Kind": "service-router",
                    "Name": "api",
                    "Routes": [{"Destination": {"Service": "b"}}],
                },
            ],
            'discovery chain "api" uses inconsistent protocols; service "b" has "grpc" '
            'which is not "http"',
        ),
        (
            [
                HTTP,
                {
                    "Kind": "service-splitter",
                    "Name": "api",
                    "Splits": [{"Weight": 100, "ServiceSubset": "v3"}],
                },
            ],
            'service "api" does not have a subset named "v3"',
        ),
        (
            [
                {"Kind": "service-resolver", "Name": "api", "Redirect": {"Service": "b"}},
                {"Kind": "service-resolver", "Name": "b", "Redirect": {"Service": "api"}},
            ],
            "detected circular resolver redirect: api.default.default.dc1 -> "
            "b.default.default.dc1 -> api.default.default.dc1",
        ),
    ],
)
def test_invalid_chains(raws: list[dict[str, Any]], text: str) -> None:
    with pytest.raises(ChainError) as caught:
        compile_chain("api", entries_from(*raws), datacenter="dc1", trust_domain=TRUST_DOMAIN)
    assert str(caught.value) == text


def test_a_target_without_a_filter_keeps_every_instance() -> None:
    chain = compile_chain("web", ChainEntries(), datacenter="dc1", trust_domain=TRUST_DOMAIN)

    def select(filter_text: str, given: Sequence[str]) -> list[str]:
        raise AssertionError("no filter to evaluate")

    assert instances_for(chain.targets["web.default.default.dc1"], ["a", "b"], select) == ["a", "b"]
