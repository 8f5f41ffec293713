"""The server side of the agent's delegate: the replicated state, served on the RPC port.

Job: `ServerDelegate` is what an agent with `server = true` (or `-dev`)
holds as its delegate. It owns the state store and FSM, the `RaftLog`
(SQLite under `data_dir/raft/`, or memory for `-dev`), `ServerEndpoints`
behind the `LeaderRouter`, the ACL resolver and endpoints, the Connect CA
trust and the auto_encrypt signer, the operator surface, and the
`LeaderDuties`. One `RPCServer` on `bind_addr:ports.server` carries every
handler (not on a dev agent: it has no peers and no clients).

Rules:
- A dev agent is a lone voter on in-memory storage, bootstrapped at once;
  `ready()` waits until its first term's one-shot duties ran, so its first
  request already sees its own registration and the ACL rows.
- Bootstrap (`bootstrap_expect`): <= 1 bootstraps alone; N waits until gossip
  shows N alive servers of this datacenter (tags role=consul, id, port) and
  bootstraps with their sorted list, the same on every server -- unless one
  of them already has a Raft configuration (`Status.Peers` non-empty): then
  a cluster exists and this server waits for the leader's autopilot to add
  it, as Consul does. Raft state on disk means no bootstrap ever again.
- The Connect CA's leader-only calls ("ConnectCA.Sign",
  "ConnectCA.ConfigurationSet") are served by `ConnectCAEndpoints`
  (server/connect_ca_rpc.py) through the `LeaderRouter`; the agent reaches
  them with `call_raw`.
- Leader duties (server/leader_duties.py) start on every gain of leadership:
  the own registration, the Connect CA root, the ACL rows and reaping,
  session TTL expiry, member reconcile and autopilot. This is the one place they are listed.
- Graceful leave (`leave()`, or `stop()` after gossip left, as with
  leave_on_terminate): a leader hands leadership over, the server leaves
  gossip, and it waits (at most LEAVE_DRAIN_S) until the leader removed it
  from the configuration, so its exit never costs the cluster its quorum.
- A fatal Raft error reaches the agent through `on_fatal`.
- `Status.Leader` and `Status.Peers` stay open, as in Consul (bootstrap and
  leave use them between servers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from proconsul.acl.resolved import ResolvedToken
from proconsul.acl.service import ACLService
from proconsul.connect.ca_config import CAConfigError, settings
from proconsul.gossip import GossipCore
from proconsul.raft import Server
from proconsul.rpc import Handler, PeerInfo, RPCClient
from proconsul.rpc.acl_codec import RemoteACLEndpoints
from proconsul.rpc.codec import EndpointsClient
from proconsul.rpc.server import metrics_from_stats
from proconsul.rpc.tls import load_ca_pem
from proconsul.server.acl_endpoints import ACLEndpoints
from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.server.acl_rpc import acl_handlers
from proconsul.server.auto_encrypt_signer import SIGN_METHOD, signer_from_config
from proconsul.server.autopilot import SerfStatus
from proconsul.server.autopilot_loop import AutopilotLoop, autopilot_config, server_members
from proconsul.server.config_bootstrap import bootstrap_entries, write_bootstrap_entries
from proconsul.server.connect_ca import (
    CAInitError,
    RootTrust,
    active_signing_ca,
    configured_root,
    ensure_ca_root,
)
from proconsul.server.connect_ca_rpc import ConnectCAEndpoints, leaf_ttl
from proconsul.server.endpoints import ServerEndpoints
from proconsul.server.leader_duties import LeaderDuties, LeaderDuty, every, once
from proconsul.server.leader_router import LeaderRouter
from proconsul.server.member_catalog import MemberCatalog
from proconsul.server.operator import ServerOperator
from proconsul.server.raft_errors import RaftStoppedError
from proconsul.server.raft_log import RaftLog
from proconsul.server.raft_rpc import raft_handlers
from proconsul.server.rpc_config import agent_rpc_tls, hold_timeout_s, raft_params, rpc_server
from proconsul.server.rpc_handlers import endpoint_handlers
from proconsul.server.session_endpoints import SessionService
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import SERF_CHECK_ID, SERF_CHECK_NAME, HealthCheck, NodeService
from proconsul.structs.commands import ApplyResult, Command, RegisterRequest
from proconsul.structs.requests import ReadRequest, ReadResponse
from proconsul.structs.rpc import OperatorRequest

if TYPE_CHECKING:
    from proconsul.config.schema import RuntimeConfig

log = logging.getLogger("proconsul.agent")

STATUS_LEADER_METHOD = "Status.Leader"
STATUS_PEERS_METHOD = "Status.Peers"
# Asking a would-be peer whether it already has a cluster, before bootstrapping.
BOOTSTRAP_ASK_TIMEOUT_S = 2.0
# How long a leaving server waits to be removed from the configuration.
LEAVE_DRAIN_S = 10.0
# How long a dev agent waits for its first term's duties before it serves.
DEV_READY_TIMEOUT_S = 10.0
ACL_REAP_INTERVAL_S = 5.0
_POLL_S = 0.1
# The peer of a call this server makes to its own handlers.
IN_PROCESS = PeerInfo(address=("in-process", 0), tls=True)
_EXISTING_POLL_S = 1.0


class GossipPool(Protocol):
    """What a server needs of the agent's LAN pool."""

    @property
    def core(self) -> GossipCore | None: ...

    @property
    def left(self) -> bool: ...

    async def leave(self) -> None: ...


class RoutedEndpoints(ServerEndpoints):
    """ServerEndpoints whose reads go through the `LeaderRouter` (consistency modes)
    and carry KnownLeader/LastContact from this server's Raft status."""

    def __init__(
        self,
        store: StateStore,
        router: LeaderRouter,
        datacenter: str,
        rng: random.Random,
    ) -> None:
        super().__init__(store, router, datacenter, rng)
        self.router = router

    async def read(self, method: str, request: ReadRequest) -> ReadResponse:
        if not request.options.require_consistent and self.router.raft.is_leader():
            # The hot path: the leader answers from its store; its meta (a known
            # leader, no contact lag) is what the store's answer already says.
            return await ServerEndpoints.read(self, method, request)
        response = await self.router.read(method, request, self._read_here)
        known_leader, contact = self.router.raft.leader_contact()
        meta = response.meta
        last_contact_ms = 0 if contact is None else int(contact * 1000)
        if meta.known_leader == known_leader and meta.last_contact_ms == last_contact_ms:
            return response  # the leader's own answer: nothing to restate
        meta = msgspec.structs.replace(
            meta, known_leader=known_leader, last_contact_ms=last_contact_ms
        )
        return ReadResponse(meta=meta, value=response.value)

    async def _read_here(self, method: str, request: ReadRequest) -> ReadResponse:
        return await ServerEndpoints.read(self, method, request)


class ServerDelegate:
    """One server's state, Raft, RPC and leader duties; see the module docstring."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        node_id: str,
        node_name: str,
        advertise_addr: str,
        rng: random.Random,
        node_registration: Callable[[], RegisterRequest],
        on_fatal: Callable[[], None],
    ) -> None:
        self.config = config
        self.node_name = node_name
        self.dev = bool(config.dev_mode)
        self.rng = rng
        self.node_registration = node_registration
        self.on_fatal = on_fatal
        self.store = StateStore()
        self.fsm = FSM(self.store)
        tls = agent_rpc_tls(config, is_server=True)
        self.verify_incoming = tls.server_context is not None and not tls.accept_plaintext
        self.client = RPCClient(tls.client_context, tls.server_hostname)
        self.handlers: dict[str, Handler] = {}
        self.address = f"{advertise_addr}:{config.ports.server}"
        self.raft = RaftLog(
            node_id,
            self.address,
            self.fsm,
            self.client,
            data_dir=None if self.dev else (config.data_dir or None),
            params=raft_params(config),
            rng=rng,
            on_fatal=self._fatal,
        )
        self.router = LeaderRouter(
            self.raft, EndpointsClient(self.client), hold_timeout_s=hold_timeout_s(config)
        )
        self.endpoints = RoutedEndpoints(self.store, self.router, config.datacenter, rng)
        self.acl: ACLEndpoints | None = None
        if config.acl.enabled:
            acl = config.acl
            self.endpoints.acl = ServerACLResolver(
                self.store,
                config.datacenter,
                default_policy="deny" if acl.default_policy == "deny" else "allow",
                enable_key_list_policy=acl.enable_key_list_policy,
            )
            self.acl = ACLEndpoints(
                self.store,
                self.router,
                config.datacenter,
                config.data_dir,
                resolver=self.endpoints.acl,
            )
        # The ACL API in process goes through the same handlers as over RPC, so a
        # write on a follower is served on the leader (server/acl_rpc.py).
        self.acl_api: ACLService | None = (
            RemoteACLEndpoints(self._call_here) if self.acl is not None else None
        )
        try:
            # A ca_config Consul would refuse stops the start (skip_validate allows it).
            settings(config.connect.ca_config)
        except CAConfigError as exc:
            raise CAInitError(f"connect.ca_config: {exc}") from None
        self.connect_ca = ConnectCAEndpoints(
            self.store,
            self.router,
            config.datacenter,
            resolve=self.endpoints.resolve,
            leader_write=self.leader_write,
        )
        self.sessions = SessionService(
            self.store, self.router, resolve=self.endpoints.resolve, leader_write=self.leader_write
        )
        self.signer: Handler | None = None
        self.ca_trust: RootTrust | None = None
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
                leaf_ttl_s=lambda: leaf_ttl(self.store.ca.config).total_seconds(),
            )
            if tls.server_context is not None:
                # auto_encrypt clients present certificates from the Connect CA:
                # servers trust its roots besides their ca_file (as Consul).
                self.ca_trust = RootTrust(self.store, tls.server_context)
        self.rpc = rpc_server(
            config,
            self.handlers,
            tls,
            anonymous_methods=(SIGN_METHOD,) if self.signer is not None else (),
        )
        self.autopilot_config = autopilot_config(config.autopilot)
        self.autopilot: AutopilotLoop | None = None
        self.member_catalog: MemberCatalog | None = None
        self.gossip: GossipPool | None = None
        self.operator = ServerOperator(self)
        self.duties = LeaderDuties()
        self._tasks: list[asyncio.Task[None]] = []
        self._left = False

    # ----- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        if not self.dev:
            host = config.bind_addr
            try:
                await self.rpc.start(host, config.ports.server)
            except OSError as exc:
                raise OSError(
                    f"Failed to start RPC server on {host}:{config.ports.server}: "
                    f"{exc.strerror or exc}"
                ) from None
        await self.raft.start()
        self.handlers.update(endpoint_handlers(self.endpoints))
        self.handlers[STATUS_LEADER_METHOD] = self._status_leader
        self.handlers[STATUS_PEERS_METHOD] = self._status_peers
        self.handlers.update(self.operator.handlers())
        self.handlers.update(self.connect_ca.handlers())
        self.handlers.update(self.sessions.handlers())
        if self.signer is not None:
            self.handlers[SIGN_METHOD] = self.signer
        if self.acl is not None:
            self.handlers.update(acl_handlers(self.acl, self.router))
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
        if not self.dev:
            log.info(
                "agent: started RPC server on %s:%d (tcp)", config.bind_addr, config.ports.server
            )

    def attach_gossip(self, gossip: GossipPool) -> None:
        """Once gossip runs: bootstrap, and the leader duties from now on."""
        self.gossip = gossip
        core = gossip.core
        config = self.config
        if core is not None:
            self.member_catalog = MemberCatalog(
                core,
                self.node_name,
                config.datacenter,
                read=self.leader_read,
                write=self.leader_write,
            )
            self.autopilot = AutopilotLoop(
                self.raft,
                core,
                config.datacenter,
                self.autopilot_config,
                stored=lambda: self.store.autopilot,
            )
        self._add_duties()
        self._tasks.append(asyncio.create_task(self._bootstrap(), name="raft-bootstrap"))
        self.raft.on_leadership(self.duties.set_leading)

    def _add_duties(self) -> None:
        """Every leader duty, in one place (see server/leader_duties.py)."""
        config = self.config
        duties = self.duties
        duties.add(once("register-self", self._register_self))
        if config.connect.enabled or config.auto_encrypt.allow_tls:
            # Consul initializes the Connect CA on leadership (allow_tls turns Connect on).
            duties.add(once("ca-root", self._ensure_ca_root))
        if self.acl is not None:
            acl = self.acl
            initial = config.acl.tokens.initial_management
            duties.add(once("acl-establish", lambda: acl.establish(initial)))
            duties.add(every("acl-reap", acl.reap_expired, ACL_REAP_INTERVAL_S))
        # Sessions not renewed within 2 x TTL are destroyed by the leader.
        duties.add(LeaderDuty("session-ttl", self.sessions.run_ttl_duty))
        if self.member_catalog is not None:
            duties.add(LeaderDuty("member-reconcile", self.member_catalog.run))
        if self.autopilot is not None:
            duties.add(LeaderDuty("autopilot", self.autopilot.run))
        if config.config_entries.bootstrap:
            entries = bootstrap_entries(config.config_entries.bootstrap)
            duties.add(
                once(
                    "config-entries",
                    lambda: write_bootstrap_entries(entries, self.store, self.leader_write),
                )
            )

    async def ready(self) -> None:
        """A dev agent waits for its first term's duties (see the module rules)."""
        if self.dev:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.duties.established.wait(), DEV_READY_TIMEOUT_S)

    async def stop(self) -> None:
        gossip = self.gossip
        if gossip is not None and gossip.left and not self._left:
            # Gossip left on the way out (leave_on_terminate): finish the leave.
            await self._drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.endpoints.coordinates.close()
        await self.duties.stop()
        await self.rpc.close()
        await self.raft.close()
        await self.client.close()
        if self.ca_trust is not None:
            self.ca_trust.close()

    async def leave(self) -> None:
        """Graceful leave: hand leadership over, leave gossip, wait to be removed."""
        await self._hand_over()
        if self.gossip is not None:
            await self.gossip.leave()  # idempotent: the agent's own call then does nothing
        await self._drain()

    def _fatal(self, exc: BaseException) -> None:
        log.error("agent: raft failed, stopping: %s", exc)
        self.on_fatal()

    # ----- the delegate's calls ----------------------------------------------

    async def read(self, method: str, request: ReadRequest) -> ReadResponse:
        return await self.endpoints.read(method, request)

    async def write(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        return await self.endpoints.write(command, token)

    async def operator_call(self, method: str, request: OperatorRequest) -> Any:
        """An operator call made on this server (the HTTP layer checked the token)."""
        return await self.operator.serve(method, request)

    async def leader_address(self) -> str:
        return self.raft.leader_address() or ""

    async def peer_addresses(self) -> list[str]:
        return self.raft.status().peers()

    async def resolve_token(self, secret: str) -> ResolvedToken | None:
        resolver = self.endpoints.acl
        return resolver.resolve(secret) if resolver is not None else None

    def acl_service(self) -> ACLService | None:
        return self.acl_api

    async def call_raw(self, method: str, payload: bytes, timeout_s: float = 10.0) -> bytes:
        """A server RPC (e.g. "ConnectCA.Sign") answered by this server's own
        handler, which routes it to the leader and checks the token there."""
        return await self._call_here(method, payload, timeout_s)

    async def _call_here(self, method: str, payload: bytes, timeout_s: float) -> bytes:
        """One of this server's RPC handlers, called in process."""
        return await self.handlers[method](payload, IN_PROCESS)

    def on_member_change(self, name: str) -> None:
        if self.member_catalog is not None:
            self.member_catalog.mark(name)

    def self_stats(self) -> dict[str, dict[str, str]]:
        config = self.config
        consul = {
            "acl": "enabled" if config.acl.enabled else "disabled",
            "bootstrap": str(config.bootstrap or config.dev_mode).lower(),
            "known_datacenters": "1",
            "leader": "false",
            "leader_addr": "",
            "server": "true",
        }
        try:
            status = self.raft.status()
        except RaftStoppedError:  # Raft not started yet
            return {"consul": consul}
        consul["leader"] = str(status.role == "leader").lower()
        consul["leader_addr"] = status.leader_address or ""
        contact = status.last_contact_s
        raft = {
            "state": status.role.capitalize(),
            "term": str(status.term),
            "commit_index": str(status.commit_index),
            "applied_index": str(status.applied_index),
            "last_log_index": str(status.last_index),
            "last_snapshot_index": str(status.snapshot_index),
            "num_peers": str(max(0, len(status.peers()) - 1)),
            "last_contact": "never" if contact is None else f"{contact * 1000:g}ms",
        }
        return {"consul": consul, "raft": raft}

    def stats(self) -> dict[str, float]:
        stats = metrics_from_stats("consul.rpc", self.rpc.stats())
        stats.update(metrics_from_stats("consul.client.rpc", self.client.stats()))
        stats.update(self.duties.stats())
        stats.update(self.sessions.stats())
        for name, value in self.connect_ca.stats().items():
            stats[f"consul.connect.ca.{name}"] = value
        resolver = self.endpoints.acl
        if resolver is not None:
            for name, value in resolver.stats().items():
                stats[f"consul.acl.resolve.{name}"] = value
        return stats

    # ----- the leader's own reads and writes ----------------------------------

    async def leader_read(self, method: str, request: ReadRequest) -> ReadResponse:
        """A read the leader makes for itself from its own store: no ACL check."""
        return await self.endpoints.local_read(method, request)

    async def leader_write(self, command: Command) -> tuple[int, ApplyResult]:
        """A write the leader makes itself (reconcile, its own registration): no token."""
        return await self.raft.apply(command)

    # ----- leader duties -------------------------------------------------------

    async def _register_self(self) -> None:
        """The leader's own node, its serfHealth check and the consul service."""
        registration = self.node_registration()
        registration.service = NodeService(
            id="consul", service="consul", port=self.config.ports.server
        )
        registration.checks = [
            HealthCheck(
                node=self.node_name,
                check_id=SERF_CHECK_ID,
                name=SERF_CHECK_NAME,
                status="passing",
                output="Agent alive and reachable",
            )
        ]
        await self.leader_write(registration)

    async def _ensure_ca_root(self) -> None:
        # SystemRandom: the root's key is drawn from it.
        await ensure_ca_root(
            self.store,
            self.leader_write,
            datetime.now(UTC),
            random.SystemRandom(),
            ca_config=self.config.connect.ca_config,
        )

    # ----- graceful leave ------------------------------------------------------

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

    # ----- status handlers -------------------------------------------------------

    async def _status_leader(self, payload: bytes, peer: PeerInfo) -> bytes:
        return msgspec.msgpack.encode(self.raft.leader_address() or "")

    async def _status_peers(self, payload: bytes, peer: PeerInfo) -> bytes:
        return msgspec.msgpack.encode(self.raft.status().peers())

    # ----- auto_encrypt ------------------------------------------------------------

    def _authorize_sign(self, token: str, node: str) -> None:
        """AutoEncrypt.Sign with ACLs on: node:write on the requesting node."""
        resolved = self.endpoints.resolve(token)
        if resolved is not None and not resolved.authorizer.node_write(node):
            raise resolved.deny("node", "write", node)

    # ----- bootstrap -----------------------------------------------------------------

    def expected_servers(self) -> list[Server] | None:
        """The bootstrap configuration once enough servers are known, else None."""
        config = self.config
        expect = config.bootstrap_expect
        if self.dev or config.bootstrap or expect <= 1:
            return [Server(self.raft.id, self.address)]
        core = self.gossip.core if self.gossip is not None else None
        if core is None:
            return None
        found = {
            m.id: m.address
            for m in server_members(core, config.datacenter)
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
