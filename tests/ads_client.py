"""An Envoy stand-in for the xDS tests: ADS streams spoken with grpcio, resources typed.

`SotwEnvoy` and `DeltaEnvoy` speak Envoy's side of the two ADS variants
(node on the first request, ACK by nonce, NACK with an error detail);
`typed` unpacks each resource into its xds-protos message, so a field Envoy
would not understand fails the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from proconsul.xds.common import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)

PROXY_ID = "web-sidecar-proxy"
CLASSES = {
    LISTENER_TYPE: listener_pb2.Listener,
    CLUSTER_TYPE: cluster_pb2.Cluster,
    ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
    ROUTE_TYPE: route_pb2.RouteConfiguration,
    SECRET_TYPE: secret_pb2.Secret,
}
READ_TIMEOUT_S = 5.0


def node(proxy_id: str = PROXY_ID) -> Any:
    return base_pb2.Node(id=proxy_id, cluster=proxy_id.removesuffix("-sidecar-proxy"))


async def read(call: Any, timeout_s: float = READ_TIMEOUT_S) -> Any:
    response = await asyncio.wait_for(call.read(), timeout_s)
    assert response is not grpc.aio.EOF
    return response


def typed(type_url: str, packed: Any) -> Any:
    message = CLASSES[type_url]()
    assert packed.Unpack(message), type_url
    return message


async def expect_status(call: Any, code: grpc.StatusCode) -> str:
    """The stream ends with `code`; its details."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while True:  # responses already on their way may come first
            await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
    assert err.value.code() == code, err.value.details()
    return str(err.value.details())


class SotwEnvoy:
    """Envoy's side of a state-of-the-world ADS stream."""

    def __init__(self, call: Any, proxy_id: str = PROXY_ID) -> None:
        self.call = call
        self.proxy_id = proxy_id
        self.last: dict[str, Any] = {}  # type -> last response
        self.first = True

    async def request(self, type_url: str, names: Sequence[str] = (), ack: bool = True) -> None:
        last = self.last.get(type_url)
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names))
        if self.first:
            request.node.CopyFrom(node(self.proxy_id))
            self.first = False
        if last is not None and ack:
            request.version_info = last.version_info
            request.response_nonce = last.nonce
        await self.call.write(request)

    async def nack(self, type_url: str, kept_version: str, message: str) -> None:
        last = self.last[type_url]
        await self.call.write(
            discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                version_info=kept_version,
                response_nonce=last.nonce,
                error_detail=status_pb2.Status(code=3, message=message),
            )
        )

    async def receive(self, timeout_s: float = READ_TIMEOUT_S) -> tuple[str, dict[str, Any]]:
        response = await read(self.call, timeout_s)
        self.last[response.type_url] = response
        resources = [typed(response.type_url, r) for r in response.resources]
        key = "cluster_name" if response.type_url == ENDPOINT_TYPE else "name"
        return response.type_url, {getattr(r, key): r for r in resources}


async def sotw_bring_up(envoy: SotwEnvoy, service: str = "web") -> dict[str, dict[str, Any]]:
    """Subscribe as Envoy does: CDS and LDS, then EDS, RDS and SDS by name."""
    got: dict[str, dict[str, Any]] = {}
    await envoy.request(CLUSTER_TYPE)
    await envoy.request(LISTENER_TYPE)
    for _ in range(2):
        type_url, resources = await envoy.receive()
        got[type_url] = resources
    eds = [n for n, c in got[CLUSTER_TYPE].items() if c.type == cluster_pb2.Cluster.EDS]
    secrets = [f"leaf:{service}", "roots"]
    await envoy.request(CLUSTER_TYPE)  # ACK
    await envoy.request(LISTENER_TYPE)  # ACK
    await envoy.request(ENDPOINT_TYPE, eds)
    await envoy.request(SECRET_TYPE, secrets)
    for _ in range(2):
        type_url, resources = await envoy.receive()
        got[type_url] = resources
    await envoy.request(ENDPOINT_TYPE, eds)
    await envoy.request(SECRET_TYPE, secrets)
    return got


class DeltaEnvoy:
    """Envoy's side of a delta ADS stream."""

    def __init__(self, call: Any, proxy_id: str = PROXY_ID) -> None:
        self.call = call
        self.proxy_id = proxy_id
        self.first = True

    async def send(self, type_url: str, subscribe: Sequence[str] = (), **fields: Any) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=list(subscribe), **fields
        )
        if self.first:
            request.node.CopyFrom(node(self.proxy_id))
            self.first = False
        await self.call.write(request)

    async def receive(self) -> Any:
        return await read(self.call)

    async def ack(self, response: Any) -> None:
        await self.send(response.type_url, response_nonce=response.nonce)


def delta_names(response: Any) -> dict[str, Any]:
    return {r.name: typed(response.type_url, r.resource) for r in response.resources}
