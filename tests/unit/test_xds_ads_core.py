"""The ADS protocol cores (xds/ads.py), the snapshot hub and the gRPC listen mapping."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from tests.xds_helpers import instance, intentions, mesh_ca, snapshot, upstream

from proconsul.agent.xds_setup import grpc_address, listens_from_config
from proconsul.config.agent_args import parse_agent_args
from proconsul.config.loader import load_config
from proconsul.config.schema import RuntimeConfig
from proconsul.xds.ads import DeltaStream, ProtocolError, SotwStream
from proconsul.xds.common import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE
from proconsul.xds.sources import SnapshotHub, UnknownProxy
from proconsul.xds.translate import translate

CA = mesh_ca()
API_TARGET = "api.default.default.dc1"


def resources(*hosts: str) -> Any:
    rows = [instance("api", h, 21000, node=h) for h in hosts]
    return translate(
        snapshot(CA, "web", upstreams=[upstream("api", 8081, endpoints={API_TARGET: rows})])
    )


def sotw(type_url: str, names: tuple[str, ...] = (), **fields: Any) -> Any:
    return discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names), **fields)


def test_sotw_ack_stale_nonce_and_subscription_change() -> None:
    stream = SotwStream()
    assert stream.on_request(sotw(ENDPOINT_TYPE, ("nope",))).responses == []  # no snapshot yet
    first = stream.on_resources(resources("10.0.0.2")).responses
    assert [r.type_url for r in first] == [ENDPOINT_TYPE]
    assert list(first[0].resources) == []  # asked for a name that does not exist
    cluster = next(iter(resources("10.0.0.2").of(ENDPOINT_TYPE)))
    step = stream.on_request(
        sotw(
            ENDPOINT_TYPE,
            (cluster,),
            version_info=first[0].version_info,
            response_nonce=first[0].nonce,
        )
    )
    assert step.acks == 1 and len(step.responses[0].resources) == 1
    # An ACK of an older nonce is stale: ignored.
    stale = stream.on_request(sotw(ENDPOINT_TYPE, (), response_nonce=first[0].nonce))
    assert stale.responses == [] and stale.acks == 0
    # Same resources again: nothing to send.
    assert stream.on_resources(resources("10.0.0.2")).responses == []


def test_sotw_rejected_content_is_not_sent_again() -> None:
    good = translate(snapshot(CA, "web"))
    bad = translate(snapshot(CA, "web", ixns=intentions("web", {"Name": "db", "Action": "deny"})))
    stream = SotwStream()
    stream.on_resources(good)
    (first,) = stream.on_request(sotw(LISTENER_TYPE)).responses
    ack = sotw(LISTENER_TYPE, version_info=first.version_info, response_nonce=first.nonce)
    assert stream.on_request(ack).acks == 1
    (rejected,) = stream.on_resources(bad).responses
    nack = sotw(
        LISTENER_TYPE,
        version_info=first.version_info,
        response_nonce=rejected.nonce,
        error_detail=status_pb2.Status(code=3, message="no"),
    )
    step = stream.on_request(nack)
    assert [(n.message, n.version_kept) for n in step.nacks] == [("no", first.version_info)]
    assert step.responses == []
    (back,) = stream.on_resources(good).responses  # a change: the good listeners again
    assert back.version_info == first.version_info
    stream.on_request(
        sotw(LISTENER_TYPE, version_info=back.version_info, response_nonce=back.nonce)
    )
    assert stream.on_resources(bad).responses == []  # known to be rejected: not sent again


def test_unknown_and_empty_type_urls_are_protocol_errors() -> None:
    streams = (
        (SotwStream(), discovery_pb2.DiscoveryRequest),
        (DeltaStream(), discovery_pb2.DeltaDiscoveryRequest),
    )
    for stream, cls in streams:
        with pytest.raises(ProtocolError, match="unknown type URL"):
            stream.on_request(cls(type_url="type.googleapis.com/nope"))
        with pytest.raises(ProtocolError, match="required"):
            stream.on_request(cls())


def test_delta_removes_what_is_gone_and_unsubscribe_forgets() -> None:
    stream = DeltaStream()
    stream.on_resources(resources("10.0.0.2"))
    (clusters,) = stream.on_request(
        discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER_TYPE)
    ).responses
    names = sorted(r.name for r in clusters.resources)
    stream.on_request(
        discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER_TYPE, response_nonce=clusters.nonce)
    )
    no_upstreams = translate(snapshot(CA, "web"))
    (update,) = stream.on_resources(no_upstreams).responses
    assert list(update.resources) == []
    assert list(update.removed_resources) == [n for n in names if n != "local_app"]
    # A named subscription: sent when subscribed, forgotten when unsubscribed.
    stream.on_resources(resources("10.0.0.2"))
    cluster = next(iter(resources("10.0.0.2").of(ENDPOINT_TYPE)))
    subscribe = discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT_TYPE, resource_names_subscribe=[cluster]
    )
    (eds,) = stream.on_request(subscribe).responses
    assert [r.name for r in eds.resources] == [cluster]
    unsubscribe = discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT_TYPE, response_nonce=eds.nonce, resource_names_unsubscribe=[cluster]
    )
    stream.on_request(unsubscribe)
    moved = stream.on_resources(resources("10.0.0.3")).responses
    assert ENDPOINT_TYPE not in [r.type_url for r in moved]


async def test_hub_latest_wins_unknown_and_forget() -> None:
    hub = SnapshotHub(unknown_wait_s=0.05)
    with pytest.raises(UnknownProxy, match="ghost"):
        await anext(hub.watch("ghost"))
    assert hub.proxies() == []
    first, second, third = (snapshot(CA, "web", port=p) for p in (21000, 21001, 21002))
    hub.publish(first)
    watch = hub.watch("web-sidecar-proxy")
    assert (await anext(watch)).public_port == 21000
    hub.publish(second)
    hub.publish(third)  # the watcher was busy: it sees only the latest
    assert (await anext(watch)).public_port == 21002
    waiting = asyncio.ensure_future(anext(watch, None))
    await asyncio.sleep(0)
    hub.forget("web-sidecar-proxy")
    assert await waiting is None
    assert hub.proxies() == []


def config(tmp_path: Path, *argv: str) -> RuntimeConfig:
    return load_config(
        parse_agent_args(["-data-dir", str(tmp_path), "-bind", "127.0.0.1", *argv]),
        hostname=lambda: "box",
    ).config


def test_listens_from_config(tmp_path: Path) -> None:
    assert listens_from_config(config(tmp_path)) == []  # -1 by default
    dev = listens_from_config(config(tmp_path, "-dev"))
    assert [listen.address for listen in dev] == ["127.0.0.1:8502"]
    assert grpc_address("::1", 8502) == "[::1]:8502"
    assert grpc_address("unix:///run/consul/grpc.sock", 0) == "unix:/run/consul/grpc.sock"
    with pytest.raises(OSError, match="cert_file"):
        listens_from_config(config(tmp_path, "-grpc-tls-port", "8503"))
