"""Server mode: the state store replicated by Raft, served on the RPC port.

Job: `start_server(agent)` builds what a (non-dev) server agent runs: the
store and FSM, the `RaftLog` over SQLite in `data_dir/raft/`, `RoutedEndpoints`
over a `ForwardingLog`, and one `RPCServer` on `bind_addr:ports.server`
carrying the endpoint handlers, "Status.Leader" and `Raft.Step`.
`ServerHandle.start_duties()` (once gossip runs) bootstraps the cluster and
runs the leader duties whenever this server gains leadership.

Rules:
- Bootstrap: `bootstrap_expect` <= 1 bootstraps alone; N waits until gossip
  shows N alive servers of this datacenter (tags role=consul, id, port) and
  bootstraps with their sorted list, the same on every server -- unless one
  of them already has a Raft configuration (`Status.Peers` non-empty): then
  a cluster exists and this server waits for the leader's autopilot to add
  it, as Consul does. Raft state on disk means no bootstrap ever again.
- Membership after bootstrap is autopilot's (agent/autopilot_loop.py) on the
  leader: new servers join as non-voters and are promoted once stable; left
  and (with cleanup_dead_servers) dead servers are removed.
- Graceful leave (`leave()`, or `stop()` after gossip left, as with
  leave_on_terminate): a leader hands leadership over, the server leaves
  gossip, and it waits (at most LEAVE_DRAIN_S) until the leader removed it
  from the configuration, so its exit never costs the cluster its quorum.
- Reads: `?stale` reads are served locally; other reads on a follower go to
  the leader; `?consistent` on the leader passes a read barrier first. Every
  answer carries KnownLeader/LastContact from this server's Raft status.
- Leader duties (own node + serfHealth + consul service, gossip members into
  the catalog) run only on the Raft leader, again each time leadership is
  gained. Other servers leave the catalog alone.
- A fatal Raft error stops the agent with exit code 1.
- Tuning comes from the config, through the factories below (tests build
  the same objects with them): `raft_params` (performance.raft_multiplier,
  raft_snapshot_threshold, raft_trailing_logs, raft_snapshot_interval),
  `rpc_server` (limits.rpc_max_conns_per_client, limits.rpc_handshake_timeout)
  and `hold_timeout_s` (performance.rpc_hold_timeout: how long a read or a
  forwarded write waits for a leader to be elected).
- The operator and autopilot calls and their `Operator.*` RPCs (ACL-checked)
  are `handle.operator`'s (agent/server_operator.py). `Status.Leader` and
  `Status.Peers` stay open, as in Consul (bootstrap and leave use them between
  servers).
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from proconsul.agent.auto_encrypt import SIGN_METHOD, signer_from_config
from proconsul.agent.autopilot_loop import AutopilotLoop, autopilot_config, server_members
from proconsul.agent.connect_ca import (
    RootTrust,
    active_signing_ca,
    configured_root,
    ensure_ca_root,
)
from proconsul.agent.server_operator import ServerOperator
from proconsul.raft import RaftParams, Server, params_from_multiplier
from proconsul.rpc import Handler, PeerInfo, RPCClient, RPCError, RPCServer
from proconsul.rpc.codec import EndpointsClient
from proconsul.rpc.errors import NO_LEADER
from proconsul.rpc.tls import RPCTLS, load_ca_pem, rpc_tls
from proconsul.server.autopilot import SerfStatus
from proconsul.server.endpoints import Log, ServerEndpoints
from proconsul.server.raft_log import RaftLog
from proconsul.server.raft_rpc import DEFAULT_HOLD_TIMEOUT_S, ForwardingLog, raft_handlers
from proconsul.server.read_route import ReadStep, route_read
from proconsul.server.rpc_handlers import endpoint_handlers
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.requests import ReadRequest, ReadResponse

if TYPE_CHECKING:
    from proconsul.agent.agent import Agent
    from proconsul.config.schema import RuntimeConfig

log = logging.getLogger("proconsul.agent")

STATUS_LEADER_METHOD = "Status.Leader"
STATUS_PEERS_METHOD = "Status.Peers"
# Asking a would-be peer whether it already has a cluster, before bootstrapping.
BOOTSTRAP_ASK_TIMEOUT_S = 2.0
# How long a leaving server waits to be removed from the configuration.
LEAVE_DRAIN_S = 10.0
_POLL_S = 0.1
_EXISTING_POLL_S = 1.0


def raft_params(config: RuntimeConfig) -> RaftParams:
    """The Raft tuning a server runs with, from its config (Consul's keys)."""
    return params_from_multiplier(
        config.performance.raft_multiplier,
        snapshot_threshold=config.raft_snapshot_threshold,
        trailing_logs=config.raft_trailing_logs,
        snapshot_interval=float(config.raft_snapshot_interval),
    )


def hold_timeout_s(config: RuntimeConfig) -> float:
    """performance.rpc_hold_timeout: how long a request waits out a leader election."""
    return float(config.performance.rpc_hold_timeout)


def rpc_server(
    config: RuntimeConfig,
    handlers: dict[str, Handler],
    tls: RPCTLS,
    *,
    anonymous_methods: tuple[str, ...] = (),
) -> RPCServer:
    """The server's RPC port with the config's limits (0 disables either, as in Consul)."""
    limits = config.limits
    return RPCServer(
        handlers,
        ssl_context=tls.server_context,
        accept_plaintext=tls.accept_plaintext,
        anonymous_methods=anonymous_methods,
        max_conns_per_client=limits.rpc_max_conns_per_client,
        handshake_timeout_s=float(limits.rpc_handshake_timeout),
    )


class RoutedEndpoints(ServerEndpoints):
    """ServerEndpoints whose reads follow Consul's consistency modes (see module rules)."""

    def __init__(
        self,
        store: StateStore,
        log_: Log,
        datacenter: str,
        rng: random.Random,
        raft: RaftLog,
        remote: EndpointsClient,
        *,
        hold_timeout_s: float = DEFAULT_HOLD_TIMEOUT_S,
    ) -> None:
        super().__init__(store, log_, datacenter, rng)
        self.raft = raft
        self.remote = remote
        self.hold_timeout_s = hold_timeout_s

    async def read(self, method: str, request: ReadRequest) -> ReadResponse:
        options = request.options
        loop = asyncio.get_running_loop()
        hold_until = loop.time() + self.hold_timeout_s
        while True:
            # Decided afresh after every wait (server/read_route.py).
            route = route_read(
                allow_stale=options.allow_stale,
                require_consistent=options.require_consistent,
                leading=self.raft.is_leader(),
                leader_address=self.raft.leader_address(),
            )
            if route.step is ReadStep.WAIT:
                try:
                    await self.raft.wait_for_leader(max(0.0, hold_until - loop.time()))
                except TimeoutError:
                    raise RPCError(NO_LEADER) from None
                continue
            if route.step is ReadStep.FORWARD:
                assert route.address is not None
                try:
                    return await self.remote.read(route.address, method, request)
                except (ConnectionError, TimeoutError) as exc:
                    # The caller reached this server; its hop to the leader failed.
                    raise RPCError(
                        f"rpc: forwarding {method} to the leader failed: {exc}"
                    ) from None
            if route.step is ReadStep.BARRIER:
                await self.raft.read_barrier()
            break
        response = await super().read(method, request)
        status = self.raft.status()
        contact = status.last_contact_s
        meta = msgspec.structs.replace(
            response.meta,
            known_leader=status.known_leader,
            last_contact_ms=0 if contact is None else int(contact * 1000),
        )
        return ReadResponse(meta=meta, value=response.value)


class ServerHandle:
    """One server's Raft, RPC server and client; see the module docstring."""

    def __init__(self, agent: Agent) -> None:
        config = agent.config
        self.agent = agent
        self.store = StateStore()
        self.fsm = FSM(self.store)
        tls = rpc_tls(
            config.tls_settings("internal_rpc"),
            datacenter=config.datacenter,
            domain=config.domain,
            is_server=True,
            auto_encrypt_allow_tls=config.auto_encrypt.allow_tls,
        )
        self.verify_incoming = tls.server_context is not None and not tls.accept_plaintext
        self.client = RPCClient(tls.client_context, tls.server_hostname)
        self.handlers: dict[str, Handler] = {}
        self.signer: Handler | None = None
        if config.auto_encrypt.allow_tls:
            rpc_settings = config.tls_settings("internal_rpc")
            # A bad ca_config root/key stops the start here, not each leadership round.
            configured_root(config.connect.ca_config)
            self.signer = signer_from_config(
                config.connect.ca_config,
                datacenter=config.datacenter,
                domain=config.domain,
                # The Connect CA's active root, from the replicated state.
                active_ca=lambda: active_signing_ca(self.store),
                # Consul's ManualCARoots: clients trust what this server trusts.
                manual_roots=[load_ca_pem(rpc_settings.ca_file, rpc_settings.ca_path)],
                authorize=self._authorize_sign,
            )
        # auto_encrypt clients present certificates from the Connect CA: with
        # allow_tls, servers trust its roots besides their ca_file (as Consul).
        self.ca_trust: RootTrust | None = None
        if config.auto_encrypt.allow_tls and tls.server_context is not None:
            self.ca_trust = RootTrust(self.store, tls.server_context)
        self.rpc = rpc_server(
            config,
            self.handlers,
            tls,
            anonymous_methods=(SIGN_METHOD,) if self.signer is not None else (),
        )
        self.address = f"{agent.advertise_addr}:{config.ports.server}"
        self.raft = RaftLog(
            agent.node_id,
            self.address,
            self.fsm,
            self.client,
            data_dir=config.data_dir or None,
            params=raft_params(config),
            rng=agent.rng,
            on_fatal=self._fatal,
        )
        hold = hold_timeout_s(config)
        self.endpoints = RoutedEndpoints(
            self.store,
            ForwardingLog(self.raft, EndpointsClient(self.client), hold_timeout_s=hold),
            config.datacenter,
            agent.rng,
            self.raft,
            EndpointsClient(self.client),
            hold_timeout_s=hold,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.autopilot_config = autopilot_config(config.autopilot)
        self.autopilot: AutopilotLoop | None = None
        self.operator = ServerOperator(self)
        self._left = False

    async def start(self) -> None:
        config = self.agent.config
        host = config.bind_addr
        try:
            await self.rpc.start(host, config.ports.server)
        except OSError as exc:
            raise OSError(
                f"Failed to start RPC server on {host}:{config.ports.server}: {exc.strerror or exc}"
            ) from None
        await self.raft.start()
        self.handlers.update(endpoint_handlers(self.endpoints))
        self.handlers[STATUS_LEADER_METHOD] = self._status_leader
        self.handlers[STATUS_PEERS_METHOD] = self._status_peers
        self.handlers.update(self.operator.handlers())
        if self.signer is not None:
            self.handlers[SIGN_METHOD] = self.signer
        self.handlers.update(
            raft_handlers(
                self.raft,
                self.endpoints,
                data_dir=config.data_dir,
                require_server_cert=self.verify_incoming,
                datacenter=config.datacenter,
                domain=config.domain,
            )
        )
        log.info("agent: started RPC server on %s:%d (tcp)", host, config.ports.server)

    def start_duties(self) -> None:
        """Bootstrap and leader duties; call once gossip runs."""
        self._tasks.append(asyncio.create_task(self._bootstrap(), name="raft-bootstrap"))
        self._tasks.append(asyncio.create_task(self._leadership(), name="raft-leadership"))
        gossip = self.agent.gossip
        if gossip is not None and gossip.core is not None:
            self.autopilot = AutopilotLoop(
                self.raft, gossip.core, self.agent.config.datacenter, self.autopilot_config
            )
            self._tasks.append(asyncio.create_task(self.autopilot.run(), name="autopilot"))

    async def stop(self) -> None:
        gossip = self.agent.gossip
        if gossip is not None and gossip.left and not self._left:
            # Gossip left on the way out (leave_on_terminate): finish the leave.
            await self._drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.rpc.close()
        await self.raft.close()
        await self.client.close()

    async def leave(self) -> None:
        """Graceful leave: hand leadership over, leave gossip, wait to be removed."""
        await self._hand_over()
        gossip = self.agent.gossip
        if gossip is not None:
            await gossip.leave()  # idempotent: the agent's own call then does nothing
        await self._drain()

    async def _hand_over(self) -> None:
        if self.raft.is_leader() and len(self.raft.status().peers()) > 1:
            try:
                await self.raft.transfer_leadership()
            except Exception as exc:
                log.warning("agent: leadership transfer failed: %s", exc)

    async def _drain(self) -> None:
        """Wait (bounded) until the leader removed this server from the configuration."""
        self._left = True
        if self.raft.failed is not None or not self._in_configuration():
            return
        # A leader that left gossip without leave() (leave_on_terminate) hands over now.
        await self._hand_over()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEAVE_DRAIN_S
        while loop.time() < deadline and not await self._removed():
            if self.raft.is_leader():
                # Nobody took over (the transfer failed): remove ourselves, as
                # Consul's leaving leader does; the core steps down once it commits.
                try:
                    await self.raft.remove_server(self.raft.id, max(0.1, deadline - loop.time()))
                except Exception as exc:
                    log.warning("agent: removing ourselves from Raft failed: %s", exc)
            await asyncio.sleep(_POLL_S)
        if await self._removed():
            log.info("agent: removed from the Raft configuration")
        else:
            log.warning("agent: still in the Raft configuration after %.0fs", LEAVE_DRAIN_S)

    def _in_configuration(self) -> bool:
        servers = self.raft.latest_configuration().servers
        return any(s.id == self.raft.id for s in servers) and len(servers) > 1

    async def _removed(self) -> bool:
        """Out of the configuration by our own log, or no longer a voter by the
        leader's word (`Status.Peers`, which needs no token). The leader's word
        is needed: when the removal commits at once (one voter left) the leader
        stops replicating to us before we ever see the entry. A non-voter's exit
        costs no quorum, so it need not wait for the entry either."""
        if not self._in_configuration():
            return True
        leader = self.raft.leader_address()
        if leader is None or leader == self.address:
            return False
        try:
            payload = await self.client.call(leader, STATUS_PEERS_METHOD, b"\xc0", _POLL_S * 5)
            voters = msgspec.msgpack.decode(payload, type=list[str])
        except Exception:
            return False  # ask again next poll
        return bool(voters) and self.address not in voters

    # ----- status ------------------------------------------------------------

    def leader_address(self) -> str:
        return self.raft.leader_address() or ""

    def peer_addresses(self) -> list[str]:
        return self.raft.status().peers()

    async def _status_leader(self, payload: bytes, peer: PeerInfo) -> bytes:
        return msgspec.msgpack.encode(self.leader_address())

    async def _status_peers(self, payload: bytes, peer: PeerInfo) -> bytes:
        return msgspec.msgpack.encode(self.peer_addresses())

    # ----- auto_encrypt -------------------------------------------------------

    def _authorize_sign(self, token: str, node: str) -> None:
        """AutoEncrypt.Sign with ACLs on: node:write on the requesting node."""
        resolved = self.endpoints.resolve(token)
        if resolved is not None and not resolved.authorizer.node_write(node):
            raise resolved.deny("node", "write", node)

    # ----- bootstrap and leadership -----------------------------------------

    def expected_servers(self) -> list[Server] | None:
        """The bootstrap configuration once enough servers are known, else None."""
        config = self.agent.config
        expect = config.bootstrap_expect
        if config.bootstrap or expect <= 1:
            return [Server(self.raft.id, self.address)]
        gossip = self.agent.gossip
        if gossip is None or gossip.core is None:
            return None
        found = {
            m.id: m.address
            for m in server_members(gossip.core, config.datacenter)
            if m.status is SerfStatus.ALIVE
        }
        if len(found) < expect:
            return None
        return [Server(node_id, addr) for node_id, addr in sorted(found.items())]

    async def _cluster_exists(self, servers: list[Server]) -> bool | None:
        """Whether another of `servers` has a Raft configuration; None when one
        could not be asked (then it is too early to decide)."""
        for server in servers:
            if server.id == self.raft.id:
                continue
            try:
                payload = await self.client.call(
                    server.address, STATUS_PEERS_METHOD, b"\xc0", BOOTSTRAP_ASK_TIMEOUT_S
                )
                peers = msgspec.msgpack.decode(payload)
            except Exception as exc:
                log.debug("agent: asking %s for its peers failed: %s", server.address, exc)
                return None
            if peers:
                return True
        return False

    async def _bootstrap(self) -> None:
        announced = False
        while not self.raft.has_state():
            servers = self.expected_servers()
            if servers is not None:
                exists = await self._cluster_exists(servers)
                if self.raft.has_state():
                    return  # the leader reached us meanwhile
                if exists is False:
                    self.raft.bootstrap(servers)
                    return
                if exists and not announced:
                    announced = True
                    log.info("agent: existing Raft peers found, not bootstrapping")
            # Once a cluster is known to exist, only its leader's autopilot can
            # add us: no point asking the peers ten times a second.
            await asyncio.sleep(_EXISTING_POLL_S if announced else _POLL_S)

    async def _leadership(self) -> None:
        leading = False
        while True:
            now_leading = self.raft.is_leader()
            if now_leading and not leading:
                try:
                    await self._establish_leadership()
                except Exception as exc:
                    log.warning("agent: establishing leadership failed: %s", exc)
                    now_leading = False  # try again on the next round
            elif leading and not now_leading:
                log.info("agent: cluster leadership lost")
            leading = now_leading
            await asyncio.sleep(_POLL_S)

    async def _establish_leadership(self) -> None:
        log.info("agent: cluster leadership acquired")
        await self.agent._establish_leadership()
        config = self.agent.config
        if config.connect.enabled or config.auto_encrypt.allow_tls:
            # Consul initializes the Connect CA on leadership (allow_tls turns
            # Connect on); SystemRandom: the root's key is drawn from it.
            await ensure_ca_root(
                self.store,
                self.agent.leader_write,
                datetime.now(UTC),
                random.SystemRandom(),
                ca_config=config.connect.ca_config,
            )
        gossip = self.agent.gossip
        if gossip is not None and gossip.catalog is not None and gossip.core is not None:
            for member in gossip.core.members():
                gossip.catalog.mark(member.name)

    def _fatal(self, exc: BaseException) -> None:
        log.error("agent: raft failed, stopping: %s", exc)
        self.agent.exit_code = 1
        self.agent.stopped.set()


async def start_server(agent: Agent) -> ServerHandle:
    handle = ServerHandle(agent)
    await handle.start()
    return handle
