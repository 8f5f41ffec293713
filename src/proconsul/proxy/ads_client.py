"""The ADS client: one gRPC stream to the agent, reconnecting with capped backoff.

Job: `AdsClient.run()` keeps a StreamAggregatedResources stream open to the
agent's xDS server, feeds each response to `AdsState` (ads_state.py), sends
its ACKs, NACKs and subscription changes, and hands every accepted config to
`apply`. It never returns until cancelled.

Rules:
- The token goes as `x-consul-token` metadata, never in logs.
- A stream that ends (agent restart, network, an error status) is reopened
  after a backoff doubling from `MIN_BACKOFF_S` to `MAX_BACKOFF_S` (reset by
  a response); the last config keeps serving meanwhile, and the new stream
  starts from the versions held.
- A NACK is logged with its reason; the last good config stays.
- Once a config is applied, the versions it is made of go to `stats.versions`
  (the admin's `*.version_text` readouts).
- PERMISSION_DENIED / UNAUTHENTICATED are logged as such and retried too
  (a token can be fixed while the proxy waits).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from proconsul.proxy.ads_state import AdsState
from proconsul.proxy.config import ProxyConfig
from proconsul.proxy.stats import Stats

log = logging.getLogger("proconsul.proxy")

MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
TOKEN_METADATA = "x-consul-token"


@dataclass(frozen=True)
class AgentTarget:
    """Where the agent's xDS server is: `host:port` (or `unix:path`), TLS or not."""

    address: str
    tls: bool = False
    ca_pem: bytes | None = None


class AdsClient:
    def __init__(
        self,
        target: AgentTarget,
        state: AdsState,
        token: str,
        apply: Callable[[ProxyConfig], Awaitable[None]],
        stats: Stats,
    ) -> None:
        self.target = target
        self.state = state
        self._token = token
        self.apply = apply
        self.stats = stats
        self.connected = asyncio.Event()

    def __repr__(self) -> str:
        return f"AdsClient({self.target.address!r}, node={self.state.node_id!r}, token=<redacted>)"

    def _channel(self) -> Any:
        if self.target.tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=self.target.ca_pem)
            return grpc.aio.secure_channel(self.target.address, credentials)
        return grpc.aio.insecure_channel(self.target.address)

    async def run(self) -> None:
        backoff = MIN_BACKOFF_S
        first = True
        while True:
            if not first:
                self.stats.control["ads.reconnects"] += 1
            first = False
            got_response = await self._stream_once()
            if got_response:
                backoff = MIN_BACKOFF_S
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _stream_once(self) -> bool:
        """One stream until it ends; whether it delivered anything."""
        got = False
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        for request in self.state.initial_requests():
            outbox.put_nowait(request)

        async def requests() -> AsyncIterator[Any]:
            while True:
                yield await outbox.get()

        metadata = ((TOKEN_METADATA, self._token),) if self._token else ()
        channel = self._channel()
        try:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            call = stub.StreamAggregatedResources(requests(), metadata=metadata)
            async for response in call:
                got = True
                self.connected.set()
                reaction = self.state.on_response(response)
                if reaction.nack:
                    self.stats.control["ads.nacks"] += 1
                    log.warning(
                        "xDS: rejected %s (nonce %s): %s",
                        response.type_url.rsplit(".", 1)[-1],
                        response.nonce,
                        reaction.nack,
                    )
                else:
                    self.stats.control["ads.acks"] += 1
                if reaction.config is not None:
                    await self.apply(reaction.config)
                    self.stats.versions.update(self.state.versions)
                for request in reaction.requests:
                    outbox.put_nowait(request)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            level = logging.WARNING if got or code != grpc.StatusCode.UNAVAILABLE else logging.INFO
            log.log(
                level,
                "xDS stream to %s ended: %s: %s",
                self.target.address,
                code.name,
                err.details(),
            )
        finally:
            self.connected.clear()
            await channel.close()
        return got
