"""Client agents: reads and writes go to a server found through gossip.

Job: `ClientRPC` is what a client agent's `rpc_read`/`rpc_write` call. It
picks a server from the gossip members (alive or suspect, tags role=consul,
this datacenter, the member's address plus the `port` tag), sends the call
with `EndpointsClient` over one `RPCClient` (TLS as configured), and keeps
using that server until a call to it fails or it is time to rebalance.

Rules:
- No server known -> `NoServersError("No known Consul servers")` (the HTTP
  layer answers 500 with that text, as Consul does).
- A transport failure (`ConnectionError`) moves on to the next server and
  tries it, for reads and writes: a connection that failed did not deliver a
  complete request to a server that answered. A read that times out moves on
  too (a read changes nothing). A write that times out, and any error the
  server answered with (`RPCError`), goes to the caller: the write may have
  happened, only the caller knows whether repeating it is safe.
- Every server is tried at most once per call.
- A frozen server (a stalled process, a half-open partition) keeps its
  connections open and never answers: when gossip declares it failed
  (`server_failed`), calls in flight to it stop waiting. A read moves on to
  the next server; a write fails with `ServerFailedError`, its outcome
  unknown.
- Rebalancing, as Consul's clients do: the server a client sticks to is kept
  for `rebalance_interval_s` (two minutes, longer in big clusters so at most
  REBALANCE_CONNS_PER_S_PER_SERVER clients per server move each second, plus
  up to a minute of jitter), then the next call picks afresh at random, so the
  load spreads over servers that joined meanwhile. The choice is the pure
  `choose_servers` (rng, server list, clock passed in).
- Timeouts: a non-blocking read or a write waits `limits.rpc_client_timeout`
  (Consul's 60s); a blocking read its wait plus jitter plus that much.
- limits.rpc_rate / rpc_max_burst (Consul's client-side rate limiter) are
  not enforced: parsed and ignored.
- With `auto_encrypt { tls = true }` and no cert_file, calls wait (bounded)
  for the certificate auto_encrypt.py fetches; nothing is sent anonymously
  except the signing request, which carries the node name and the agent
  token (servers with ACLs on want node:write on this node).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from proconsul.agent.auto_encrypt import CertFetcher
from proconsul.gossip import Member, State
from proconsul.rpc import RPCClient
from proconsul.rpc.codec import ANY_DECODER, EndpointsClient, decode_reply, read_timeout_s
from proconsul.rpc.errors import RPCError
from proconsul.server.rpc_config import agent_rpc_tls
from proconsul.structs.commands import ApplyResult, Command
from proconsul.structs.requests import ReadRequest, ReadResponse

if TYPE_CHECKING:
    from proconsul.config.schema import RuntimeConfig

T = TypeVar("T")

log = logging.getLogger("proconsul.agent")

NO_SERVERS = "No known Consul servers"
STATUS_TIMEOUT_S = 5.0
CERT_WAIT_S = 10.0  # how long a call waits for the first auto_encrypt certificate
DEFAULT_CLIENT_TIMEOUT_S = 60.0  # Consul's limits.rpc_client_timeout
# Consul's client: keep a server at least this long, plus up to REUSE_JITTER_S ...
MIN_REUSE_S = 120.0
REUSE_JITTER_S = 60.0
# ... and longer in a big cluster, so that across the cluster no more than this
# many clients per server and second move to a new server.
REBALANCE_CONNS_PER_S_PER_SERVER = 64


class ServerFailedError(RPCError):
    """Gossip declared the server failed while a call to it was in flight."""

    def __init__(self, server: str) -> None:
        super().__init__(f"rpc: server {server} failed during the call; the outcome is unknown")


class NoServersError(ConnectionError):
    """No server could be asked (Consul's 500 "No known Consul servers")."""

    def __init__(self, message: str = NO_SERVERS) -> None:
        super().__init__(message)


def _no_credentials() -> tuple[str, str]:
    return "", ""


def client_timeout_s(config: RuntimeConfig) -> float:
    """limits.rpc_client_timeout: the base timeout of a client's reads and writes
    (0 or less falls back to Consul's default, 60s: every call needs a deadline)."""
    value = float(config.limits.rpc_client_timeout)
    return value if value > 0 else DEFAULT_CLIENT_TIMEOUT_S


def rebalance_interval_s(rng: random.Random, servers: int, members: int) -> float:
    """How long a client keeps its server before it picks afresh (module rules)."""
    base = MIN_REUSE_S
    if servers > 0:
        base = max(base, members / (servers * REBALANCE_CONNS_PER_S_PER_SERVER))
    return base + rng.random() * REUSE_JITTER_S


def choose_servers(
    rng: random.Random,
    servers: Sequence[str],
    current: str | None,
    *,
    now: float,
    rebalance_at: float,
    members: int,
) -> tuple[list[str], float]:
    """The order a call tries `servers` in, and the next rebalance time.

    The servers are shuffled; `current` (the one the client sticks to) goes
    first while it is still a known server. Once `now` reaches `rebalance_at`
    the client lets go of `current` (a fresh random pick, which may be the same
    server) and the next rebalance is due `rebalance_interval_s` later."""
    if now >= rebalance_at:
        current = None
        rebalance_at = now + rebalance_interval_s(rng, len(servers), members)
    order = sorted(servers)
    rng.shuffle(order)
    if current is not None and current in order:
        order.remove(current)
        order.insert(0, current)
    return order, rebalance_at


class ClientRPC:
    def __init__(
        self,
        config: RuntimeConfig,
        rng: random.Random,
        *,
        members: Callable[[], Sequence[Member]] = tuple,
        credentials: Callable[[], tuple[str, str]] = _no_credentials,
    ) -> None:
        """`members()`: the gossip pool's members (servers are found among them);
        `credentials()`: (node name, agent token) for the auto_encrypt request."""
        tls = agent_rpc_tls(config, is_server=False)
        self.datacenter = config.datacenter
        self.rng = rng
        self.members = members
        self.client = RPCClient(tls.client_context, tls.server_hostname)
        self.endpoints = EndpointsClient(self.client)
        self.timeout_s = client_timeout_s(config)
        self.current: str | None = None
        self.rebalance_at = 0.0  # monotonic; 0: the first call picks and sets it
        self.rebalances = 0
        self.fetcher: CertFetcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._calls: dict[str, set[asyncio.Future[Any]]] = {}  # in flight, per server
        settings = config.tls_settings("internal_rpc")
        if config.auto_encrypt.tls and tls.client_context is not None and not settings.cert_file:
            # A second, certificate-less context for the one anonymous call.
            bare = agent_rpc_tls(config, is_server=False)
            anonymous = RPCClient(bare.client_context, bare.server_hostname)
            # Credentials are read per fetch: the agent token may be set at run time.
            self.fetcher = CertFetcher(tls.client_context, anonymous, credentials)

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
        found: list[str] = []
        for member in self.members():
            tags = member.tags
            if (
                member.state in (State.ALIVE, State.SUSPECT)
                and tags.get("role") == "consul"
                and tags.get("dc") == self.datacenter
                and tags.get("port", "").isdigit()
            ):
                found.append(f"{member.addr[0]}:{tags['port']}")
        return sorted(found)

    def _order(self) -> list[str]:
        servers = self.servers()
        had = self.rebalance_at
        order, self.rebalance_at = choose_servers(
            self.rng,
            servers,
            self.current,
            now=time.monotonic(),
            rebalance_at=self.rebalance_at,
            members=len(self.members()),
        )
        if self.rebalance_at != had and self.current is not None:
            self.rebalances += 1
            log.debug("agent: rebalancing: picking a server afresh (was %s)", self.current)
            self.current = None
        return order

    async def _each_server(
        self, call: Callable[[str], Awaitable[T]], *, timeouts_move_on: bool
    ) -> T:
        """`call(server)` on the servers in `_order()` until one answers (module
        rules: transport failures move on; timeouts and servers that gossip
        declares failed mid-call only when `timeouts_move_on`)."""
        last: Exception | None = None
        for server in self._order():
            task = asyncio.ensure_future(call(server))
            calls = self._calls.setdefault(server, set())
            calls.add(task)
            try:
                await asyncio.wait({task})
            finally:
                calls.discard(task)
                if not task.done():
                    task.cancel()  # our caller went away
            if task.cancelled():
                # `server_failed`: a frozen server keeps its connections open and
                # never answers, so only gossip can tell us to stop waiting.
                failed = ServerFailedError(server)
                if not timeouts_move_on:
                    raise failed
                last = self._failed(server, failed)
                continue
            try:
                result = task.result()
            except ConnectionError as exc:
                last = self._failed(server, exc)
                continue
            except TimeoutError as exc:
                if not timeouts_move_on:
                    raise
                self._failed(server, exc)
                last = exc  # all timed out: the caller sees the timeout
                continue
            self.current = server
            return result
        raise last or NoServersError()

    def server_failed(self, server: str) -> None:
        """Gossip declared the server at `server` (RPC address) failed: stop
        waiting for its answers (reads move on, writes fail: their outcome
        is unknown)."""
        for task in self._calls.pop(server, set()):
            task.cancel()

    async def read(self, method: str, request: ReadRequest) -> ReadResponse:
        await self._ready()
        timeout = read_timeout_s(request, self.timeout_s)
        # A read changes nothing: after a timeout, too, the next server may answer.
        return await self._each_server(
            lambda server: self.endpoints.read(server, method, request, timeout),
            timeouts_move_on=True,
        )

    async def write(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        await self._ready()
        return await self._each_server(
            lambda server: self.endpoints.write(
                server, command, timeout_s=self.timeout_s, token=token
            ),
            timeouts_move_on=False,
        )

    async def status(self, method: str) -> object:
        """ "Status.Leader" / "Status.Peers" as a server reports it; None when none answers.

        With no server known at all this is Consul's 500 "No known Consul servers"."""
        if not self.servers():
            raise NoServersError()
        if self.fetcher is not None and not self.fetcher.ready.is_set():
            return None
        try:
            data = await self._each_server(
                lambda server: self.client.call(server, method, b"\xc0", STATUS_TIMEOUT_S),
                timeouts_move_on=True,
            )
        except Exception:
            return None
        return decode_reply(ANY_DECODER, data, method)

    async def call_raw(
        self, method: str, payload: bytes, timeout_s: float = STATUS_TIMEOUT_S
    ) -> bytes:
        """Any server's answer to `method`, undecoded (the caller knows its type)."""
        await self._ready()
        return await self._each_server(
            lambda server: self.client.call(server, method, payload, timeout_s),
            timeouts_move_on=False,
        )

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
