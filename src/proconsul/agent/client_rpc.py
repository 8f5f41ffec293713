"""Client agents: reads and writes go to a server found through gossip.

Job: `ClientRPC` is what a client agent's `rpc_read`/`rpc_write` call. It
picks a server from the gossip members (alive or suspect, tags role=consul,
this datacenter, the member's address plus the `port` tag), sends the call
with `EndpointsClient` over one `RPCClient` (TLS as configured), and keeps
using that server until a call to it fails in transport.

Rules:
- No server known -> `NoServersError("No known Consul servers")` (the HTTP
  layer answers 500 with that text, as Consul does).
- A transport failure (`ConnectionError`) moves on to the next server and
  tries it, for reads and writes: a connection that failed did not deliver a
  complete request to a server that answered. A timeout or an error the server
  answered with (`RPCError`) goes to the caller: the write may have happened.
- Every server is tried at most once per call.
- With `auto_encrypt { tls = true }` and no cert_file, calls wait (bounded)
  for the certificate auto_encrypt.py fetches; nothing is sent anonymously
  except the signing request, which carries the node name and the agent
  token (servers with ACLs on want node:write on this node).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any

import msgspec

from proconsul.agent.auto_encrypt import CertFetcher
from proconsul.gossip import State
from proconsul.rpc import RPCClient
from proconsul.rpc.codec import EndpointsClient
from proconsul.rpc.tls import rpc_tls
from proconsul.state.fsm import ApplyResult
from proconsul.structs.commands import Command
from proconsul.structs.requests import ReadRequest, ReadResponse

if TYPE_CHECKING:
    from proconsul.agent.agent import Agent

log = logging.getLogger("proconsul.agent")

NO_SERVERS = "No known Consul servers"
STATUS_TIMEOUT_S = 5.0
CERT_WAIT_S = 10.0  # how long a call waits for the first auto_encrypt certificate


class NoServersError(ConnectionError):
    pass


class ClientRPC:
    def __init__(self, agent: Agent, rng: random.Random) -> None:
        config = agent.config
        tls = rpc_tls(
            config.tls_settings("internal_rpc"),
            datacenter=config.datacenter,
            domain=config.domain,
            is_server=False,
            auto_encrypt_tls=config.auto_encrypt.tls,
        )
        self.agent = agent
        self.rng = rng
        self.client = RPCClient(tls.client_context, tls.server_hostname)
        self.endpoints = EndpointsClient(self.client)
        self.current: str | None = None
        self.fetcher: CertFetcher | None = None
        self._task: asyncio.Task[None] | None = None
        settings = config.tls_settings("internal_rpc")
        if config.auto_encrypt.tls and tls.client_context is not None and not settings.cert_file:
            # A second, certificate-less context for the one anonymous call.
            bare = rpc_tls(
                settings,
                datacenter=config.datacenter,
                domain=config.domain,
                is_server=False,
                auto_encrypt_tls=True,
            )
            anonymous = RPCClient(bare.client_context, bare.server_hostname)
            self.fetcher = CertFetcher(
                tls.client_context,
                anonymous,
                # Read per fetch: the agent token may be set at run time.
                lambda: (agent.node_name, agent.acl.tokens.agent),
            )

    def start(self) -> None:
        """Start fetching the auto_encrypt certificate (once gossip runs)."""
        if self.fetcher is not None:
            self._task = asyncio.create_task(self.fetcher.run(self.servers), name="auto-encrypt")

    async def _ready(self) -> None:
        if self.fetcher is None or self.fetcher.ready.is_set():
            return
        try:
            await asyncio.wait_for(self.fetcher.ready.wait(), CERT_WAIT_S)
        except TimeoutError:
            raise NoServersError(
                "auto_encrypt: no client certificate yet (no server signed one)"
            ) from None

    def servers(self) -> list[str]:
        """RPC addresses of the known servers of this datacenter."""
        gossip = self.agent.gossip
        if gossip is None or gossip.core is None:
            return []
        found: list[str] = []
        for member in gossip.core.members():
            tags = member.tags
            if (
                member.state in (State.ALIVE, State.SUSPECT)
                and tags.get("role") == "consul"
                and tags.get("dc") == self.agent.datacenter
                and tags.get("port", "").isdigit()
            ):
                found.append(f"{member.addr[0]}:{tags['port']}")
        return sorted(found)

    def _order(self) -> list[str]:
        servers = self.servers()
        self.rng.shuffle(servers)
        if self.current in servers:
            servers.remove(self.current)
            servers.insert(0, self.current)
        return servers

    async def read(self, method: str, request: ReadRequest) -> ReadResponse:
        await self._ready()
        last: ConnectionError | None = None
        for server in self._order():
            try:
                response = await self.endpoints.read(server, method, request)
            except ConnectionError as exc:
                last = self._failed(server, exc)
                continue
            self.current = server
            return response
        raise last or NoServersError(NO_SERVERS)

    async def write(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        await self._ready()
        last: ConnectionError | None = None
        for server in self._order():
            try:
                result = await self.endpoints.write(server, command, token=token)
            except ConnectionError as exc:
                last = self._failed(server, exc)
                continue
            self.current = server
            return result
        raise last or NoServersError(NO_SERVERS)

    async def status(self, method: str) -> object:
        """ "Status.Leader" / "Status.Peers" as a server reports it; None when none answers.

        With no server known at all this is Consul's 500 "No known Consul servers"."""
        if not self.servers():
            raise NoServersError(NO_SERVERS)
        if self.fetcher is not None and not self.fetcher.ready.is_set():
            return None
        for server in self._order():
            try:
                data = await self.client.call(server, method, b"\xc0", STATUS_TIMEOUT_S)
            except (ConnectionError, TimeoutError) as exc:
                self._failed(server, exc)
                continue
            except Exception:
                return None
            self.current = server
            return msgspec.msgpack.decode(data)
        return None

    async def call(self, method: str, payload: bytes, timeout_s: float = STATUS_TIMEOUT_S) -> Any:
        """Any server's answer to `method` (msgpack-decoded); transport failures move on."""
        return msgspec.msgpack.decode(await self.call_raw(method, payload, timeout_s))

    async def call_raw(
        self, method: str, payload: bytes, timeout_s: float = STATUS_TIMEOUT_S
    ) -> bytes:
        """Any server's answer to `method`, undecoded (the caller knows its type)."""
        await self._ready()
        last: ConnectionError | None = None
        for server in self._order():
            try:
                data = await self.client.call(server, method, payload, timeout_s)
            except ConnectionError as exc:
                last = self._failed(server, exc)
                continue
            self.current = server
            return data
        raise last or NoServersError(NO_SERVERS)

    def _failed(self, server: str, exc: Exception) -> ConnectionError:
        log.warning("agent: rpc to server %s failed: %s", server, exc)
        if self.current == server:
            self.current = None
        if isinstance(exc, ConnectionError):
            return exc
        return ConnectionError(str(exc))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.fetcher is not None:
            await self.fetcher.anonymous.close()
        await self.client.close()
