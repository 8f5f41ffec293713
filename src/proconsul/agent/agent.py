"""The agent: wires config, local state, check monitors, anti-entropy, gossip,
DNS and the HTTP API around one delegate, and implements `AgentAPI`.

The delegate (agent/delegate.py) is the part that differs by mode: a
`ServerDelegate` (server/delegate.py; a dev agent is a lone in-memory voter)
or a `ClientDelegate` (agent/client_delegate.py). The agent never branches
on the mode itself; its parts get values and callables, never the agent.

Lifecycle: `start()` brings every part up or fails before serving anything;
`reload()` re-reads the same config sources and changes services and checks in
place (nothing else restarts); `stop()` ends every task and socket. A fatal
error in a part (Raft, retry_join) stops the agent with exit code 1 through
`_fatal`. Services and checks from config files are tracked apart from
API-registered ones, so a reload removes only what the files no longer declare.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from proconsul.acl.resolved import ResolvedToken
from proconsul.acl.service import ACLService
from proconsul.agent import info
from proconsul.agent.acl_setup import AgentACL
from proconsul.agent.agent_tokens import AgentTokens
from proconsul.agent.anti_entropy import AntiEntropy
from proconsul.agent.central_config import CentralConfig
from proconsul.agent.client_delegate import ClientDelegate
from proconsul.agent.client_rpc import NoServersError
from proconsul.agent.coordinate_sync import run_coordinate_sync
from proconsul.agent.delegate import Delegate
from proconsul.agent.dns_setup import DnsHandle, start_dns
from proconsul.agent.gossip_setup import GossipHandle, PoolIdentity, start_gossip
from proconsul.agent.http_listeners import HTTPListener, start_listener
from proconsul.agent.leaf_certs import SIGN_TIMEOUT_S, LeafCerts
from proconsul.agent.local_state import LocalState
from proconsul.agent.logs import JSONFormatter, TextFormatter
from proconsul.agent.persisted import PersistedRegistrations
from proconsul.agent.proxycfg import CONNECT_PROXY, ProxyCfgDeps, ProxyConfigManager
from proconsul.agent.service_def import CheckSpec, build_check, maintenance_check
from proconsul.agent.sidecar import Registration, build_registrations, sidecar_id
from proconsul.agent.xds_setup import XdsHandle, start_xds
from proconsul.checks.runner import CheckMonitor, CheckRunnerSet
from proconsul.config.agent_args import AgentArgs
from proconsul.config.loader import load_config
from proconsul.config.schema import RuntimeConfig
from proconsul.fileio import write_file_atomic
from proconsul.http.live import live_state
from proconsul.http.server import build_app
from proconsul.server.connect_ca_rpc import CONFIG_SET_METHOD
from proconsul.server.delegate import ServerDelegate
from proconsul.server.operator import (
    AUTOPILOT_CONFIG_METHOD,
    AUTOPILOT_HEALTH_METHOD,
    AUTOPILOT_SET_METHOD,
    AUTOPILOT_STATE_METHOD,
    RAFT_CONFIG_METHOD,
    RAFT_LIVE_METHOD,
    RAFT_REMOVE_METHOD,
    RAFT_TRANSFER_METHOD,
    raft_live_view,
)
from proconsul.server.session_endpoints import (
    RENEW_METHOD,
    decode_renew_reply,
    renew_payload,
)
from proconsul.server.snapshot_calls import RESTORE_METHOD as SNAPSHOT_RESTORE_METHOD
from proconsul.server.snapshot_calls import SAVE_METHOD as SNAPSHOT_SAVE_METHOD
from proconsul.state.store import StateStore
from proconsul.structs.catalog import (
    NODE_MAINT_CHECK_ID,
    SERVICE_MAINT_PREFIX,
    HealthCheck,
    NodeService,
)
from proconsul.structs.commands import ApplyResult, Command, RegisterRequest
from proconsul.structs.connect import CAConfiguration, IndexedCARoots, IssuedCert
from proconsul.structs.definitions import CheckDefinition, ServiceDefinition
from proconsul.structs.requests import QueryOptions, ReadRequest, ReadResponse
from proconsul.structs.rpc import CAConfigRequest, OperatorRequest
from proconsul.structs.session import Session
from proconsul.xds.sources import SnapshotHub

log = logging.getLogger("proconsul.agent")

_REAP_INTERVAL_S = 1.0

SCRIPTS_OFF_REMOTE = (
    "Scripts are disabled on this agent from remote calls; "
    "to enable, configure 'enable_script_checks' to true"
)
SCRIPTS_OFF_LOCAL = (
    "Scripts are disabled on this agent; "
    "to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true"
)


def is_maintenance(check_id: str) -> bool:
    return check_id == NODE_MAINT_CHECK_ID or check_id.startswith(SERVICE_MAINT_PREFIX)


def vet_scripts(specs: list[CheckSpec], config: RuntimeConfig, *, remote: bool) -> None:
    """Consul's gate on script checks (`args`): off by default; from the HTTP API
    only with enable_script_checks, from config files with either setting."""
    if not any(spec.definition.script_args for spec in specs):
        return
    if config.enable_script_checks:
        return
    if remote:
        raise ValueError(SCRIPTS_OFF_REMOTE)
    if not config.enable_local_script_checks:
        raise ValueError(SCRIPTS_OFF_LOCAL)


__all__ = ["Agent", "NoServersError"]


@dataclass
class Sources:
    """Which services and checks came from config files (reload replaces only these)."""

    services: set[str] = field(default_factory=set)
    checks: set[str] = field(default_factory=set)


class Agent:
    def __init__(self, args: AgentArgs, config: RuntimeConfig) -> None:
        self.args = args
        self.config = config
        self.datacenter = config.datacenter
        self.node_name = config.node_name
        self.kv_max_value_size = config.limits.kv_max_value_size
        self.node_id = config.node_id or ""
        self.advertise_addr = config.advertise_addr
        self.started_at_s = time.time()
        self.rng = random.Random()
        self._load_node_id()
        self.local = LocalState(
            node_name=self.node_name,
            check_update_interval_s=float(config.check_update_interval),
        )
        self.sources = Sources()
        # API registrations kept across restarts (agent/persisted.py); not in -dev.
        self.persisted = PersistedRegistrations("" if config.dev_mode else config.data_dir)
        # Sidecar ID -> its parent's ID, for the sidecars this agent expanded:
        # removing the parent removes them (Consul's LocallyRegisteredAsSidecar).
        self.sidecar_parents: dict[str, str] = {}
        self._local_version = asyncio.Event()
        self.monitors: dict[str, CheckMonitor] = {}
        self.runners = CheckRunnerSet(rng=self.rng)
        acl = config.acl
        self.tokens = AgentTokens(
            acl.tokens,
            config.data_dir,
            persist=acl.enable_token_persistence and not config.dev_mode,
        )
        self.delegate = self._make_delegate()
        # The Connect CA view: roots and per-service leaves (agent/leaf_certs.py).
        self.leaf_certs = LeafCerts(
            datacenter=self.datacenter,
            read=self.rpc_read,
            call=self.delegate.call_raw,
            rng=self.rng,
        )
        self.acl = AgentACL(acl.enabled, self.node_name, self.tokens, lambda: self.delegate)
        self.anti_entropy = AntiEntropy(
            self.local,
            self._node_registration,
            self.rpc_write,
            self._catalog_view,
            rng=self.rng,
            tokens=self.tokens,
        )
        self.local.on_change = self._local_changed
        # Connect proxies merged with proxy-defaults/service-defaults (agent/central_config.py).
        self.central = CentralConfig(
            enabled=config.enable_central_service_config,
            read=self.rpc_read,
            on_merged=self._central_merged,
            token_for=self.effective_token,
            rng=self.rng,
        )
        self.http_app: web.Application | None = None
        self._listeners: list[HTTPListener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Future[None]] = set()
        self.stopped = asyncio.Event()
        self.exit_code = 0  # what `proconsul agent` exits with once stopped
        self.http_addresses: list[tuple[str, int]] = []
        self.dns: DnsHandle | None = None
        self.gossip: GossipHandle | None = None
        # Proxy snapshots for the xDS server; the proxy view (proxycfg) publishes here.
        self.proxy_snapshots = SnapshotHub()
        self.xds: XdsHandle | None = None
        self.proxycfg = ProxyConfigManager(
            ProxyCfgDeps(
                datacenter=self.datacenter,
                acl_enabled=acl.enabled,
                default_policy=acl.default_policy,
                hub=self.proxy_snapshots,
                proxies=self.local_proxies,
                wait_local_change=self.wait_local_change,
                read=self.rpc_read,
                roots=self.connect_ca_roots,
                leaf=self.connect_ca_leaf,
                resolve_token=self.resolve_token,
            ),
            rng=self.rng,
        )

    def _make_delegate(self) -> Delegate:
        if self.config.server:
            return ServerDelegate(
                self.config,
                node_id=self.node_id,
                node_name=self.node_name,
                advertise_addr=self.advertise_addr,
                rng=self.rng,
                node_registration=self._node_registration,
                on_fatal=self._fatal,
            )
        return ClientDelegate(
            self.config, self.rng, node_name=self.node_name, agent_token=lambda: self.tokens.agent
        )

    @property
    def store(self) -> StateStore | None:
        """The replicated store on servers (the DNS cache keys on its indexes)."""
        return self.delegate.store

    def _fatal(self) -> None:
        """A part failed for good (Raft, retry_join): stop with exit code 1."""
        self.exit_code = 1
        self.stopped.set()

    # ----- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        if self.config.dev_mode:
            log.warning(
                "agent: running in -dev mode: in-memory, a single server, %s. "
                "Do not use it in production.",
                "ACLs on" if self.config.acl.enabled else "no ACLs",
            )
        self._apply_config_definitions(self.config)
        self._restore_persisted()
        await self.delegate.start()
        self.gossip = await start_gossip(
            self.config,
            PoolIdentity(
                node_name=self.node_name,
                advertise_addr=self.advertise_addr,
                datacenter=self.datacenter,
                tags=info.member_tags(self.config, self.node_id),
                local_services=lambda: [
                    (s.service, list(s.tags)) for s in self.local.live_services().values()
                ],
                on_member_change=self.delegate.on_member_change,
                on_fatal=self._fatal,
            ),
        )
        self.delegate.attach_gossip(self.gossip)
        await self.delegate.ready()
        self.central.start()
        self.dns = await start_dns(self)
        self.xds = await start_xds(self, self.proxy_snapshots)
        self.proxycfg.start()
        self.http_app = build_app(self, self.config.ui_config.enabled)
        for host, port in info.http_addresses(self.config):
            listener = await start_listener(self.http_app, host, port, self.config)
            self._listeners.append(listener)
            self.http_addresses.append((host, port))
            log.info("agent: started HTTP server on %s", listener.display)
        self._tasks.append(asyncio.create_task(self.anti_entropy.run(), name="anti-entropy"))
        self._tasks.append(asyncio.create_task(self._reap_critical(), name="reaper"))
        gossip = self.gossip
        self._tasks.append(
            asyncio.create_task(
                run_coordinate_sync(
                    self.node_name,
                    gossip.coordinate,
                    gossip.member_count,
                    self.rpc_write,
                    lambda: self.tokens.agent,
                    self.rng,
                ),
                name="coordinate-sync",
            )
        )
        for monitor in self.monitors.values():
            monitor.start()
        log.info(
            "agent: Consul-compatible agent running: node=%s datacenter=%s server=%s",
            self.node_name,
            self.datacenter,
            self.config.server,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.central.close()
        await self.runners.close()
        self.monitors.clear()
        for listener in self._listeners:
            await listener.close()
        self._listeners.clear()
        if self.dns is not None:
            await self.dns.close()
        if self.xds is not None:
            await self.xds.close()
        await self.proxycfg.close()
        await self.leaf_certs.close()
        if self.gossip is not None:
            # Consul's leave_on_terminate: clients leave gracefully, servers do not.
            leave = self.config.leave_on_terminate
            await self.gossip.stop(leave=not self.config.server if leave is None else leave)
        await self.delegate.stop()
        self.stopped.set()

    def _load_node_id(self) -> None:
        if self.node_id:
            return
        data_dir = self.config.data_dir
        if data_dir and not self.config.dev_mode:
            path = os.path.join(data_dir, "node-id")
            try:
                with open(path, encoding="utf-8") as handle:
                    self.node_id = handle.read().strip()
            except FileNotFoundError:
                self.node_id = str(uuid.uuid4())
                os.makedirs(data_dir, mode=0o700, exist_ok=True)
                write_file_atomic(path, self.node_id.encode(), 0o600)
        else:
            self.node_id = str(uuid.uuid4())

    def acl_endpoints(self) -> ACLService | None:
        """ACL reads and writes (see agent/acl_setup.py); None while ACLs are disabled."""
        return self.acl.endpoints()

    def _node_registration(self) -> RegisterRequest:
        address = self.advertise_addr
        return RegisterRequest(
            node=self.node_name,
            address=address,
            id=self.node_id,
            datacenter=self.datacenter,
            tagged_addresses={
                "lan": address,
                "lan_ipv4": address,
                "wan": address,
                "wan_ipv4": address,
            },
            node_meta=dict(self.config.node_meta),
        )

    # ----- reads and writes, through the delegate ------------------------------

    async def rpc_read(self, method: str, request: ReadRequest) -> ReadResponse:
        return await self.delegate.read(method, request)

    async def rpc_write(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        """A write on behalf of the holder of `token` (checked by the server's ACLs;
        "" is the anonymous token). Anti-entropy picks its own tokens."""
        return await self.delegate.write(command, token)

    def effective_token(self, secret: str) -> str:
        """The token a request acts with: its own, else `default`, else anonymous."""
        return self.acl.effective_token(secret)

    async def resolve_token(self, secret: str) -> ResolvedToken | None:
        """The caller's rights; None while ACLs are disabled (see agent/acl_setup.py)."""
        return await self.acl.resolve(secret)

    def set_agent_token(self, kind: str, secret: str) -> bool:
        persisted = self.tokens.set(kind, secret)
        # As Consul does: new agent tokens start a full sync (may unblock refused rows).
        self.anti_entropy.request_full_sync()
        return persisted

    async def _catalog_view(self) -> tuple[dict[str, NodeService], dict[str, HealthCheck]]:
        # Read with the agent's own token, as its writes are made.
        options = QueryOptions(token=self.effective_token(self.tokens.agent))
        request = ReadRequest(name=self.node_name, options=options)
        services = await self.rpc_read("Catalog.NodeServices", request)
        checks = await self.rpc_read("Health.NodeChecks", request)
        _, service_rows = services.value
        return {s.id: s for s in service_rows}, {c.check_id: c for c in checks.value}

    # ----- services and checks ----------------------------------------------

    def _local_changed(self) -> None:
        """Every change of local state: sync it, refresh alias checks, wake `?hash` waiters."""
        self.anti_entropy.trigger()
        self.local.refresh_aliases(time.monotonic())
        self._local_version.set()
        self._local_version = asyncio.Event()

    def _central_merged(self, service_id: str, merged: NodeService) -> None:
        """A proxy's central config changed: hold its newly merged registration."""
        entry = self.local.services.get(service_id)
        if entry is not None and not entry.deleted:
            self.local.add_service(merged, entry.token)

    async def wait_local_change(self, timeout_s: float) -> bool:
        """Wait for the next change of local services or checks; False on timeout."""
        try:
            await asyncio.wait_for(self._local_version.wait(), max(timeout_s, 0.0))
        except TimeoutError:
            return False
        return True

    def _registrations(
        self, definition: ServiceDefinition, config: RuntimeConfig, pending: list[Registration]
    ) -> list[Registration]:
        """The service and its expanded sidecar; sidecar ports avoid every local
        service's and those of `pending` (registered in the same batch)."""
        local = self.local.live_services()
        local.update({r.service.id: r.service for r in pending})
        ports = config.ports
        port_range = (ports.sidecar_min_port, ports.sidecar_max_port)
        return build_registrations(definition, self.node_name, local, port_range)

    def _apply_config_definitions(self, config: RuntimeConfig) -> None:
        """Make local services/checks from config match `config` (used at start and reload)."""
        wanted_services: dict[str, Registration] = {}
        for definition in config.services:
            pending = list(wanted_services.values())
            for registration in self._registrations(definition, config, pending):
                wanted_services[registration.service.id] = registration
        wanted_checks: dict[str, CheckSpec] = {}
        for check_def in config.checks:
            spec = build_check(check_def, self.node_name)
            service_id = spec.row.service_id
            if (
                service_id
                and service_id not in wanted_services
                and self.local.service(service_id) is None
            ):
                raise ValueError(
                    f"ServiceID {service_id!r} does not exist (check {spec.row.check_id!r})"
                )
            wanted_checks[spec.row.check_id] = spec
        vet_scripts(list(wanted_checks.values()), config, remote=False)
        for registration in wanted_services.values():
            vet_scripts(registration.checks, config, remote=False)
        for service_id in self.sources.services - set(wanted_services):
            self._remove_service(service_id)
        for check_id in self.sources.checks - set(wanted_checks):
            self._remove_check(check_id)
        for registration in wanted_services.values():
            self._add_registration(registration, replace_existing_checks=True)
        for spec in wanted_checks.values():
            self._add_check(spec)
        self.sources.services = set(wanted_services)
        self.sources.checks = set(wanted_checks) | {
            spec.row.check_id for r in wanted_services.values() for spec in r.checks
        }

    def _restore_persisted(self) -> None:
        """Bring back what was registered over the API before the last stop;
        a config file's service or check of the same ID wins."""
        loaded = self.persisted.load()
        for item in loaded.services:
            service = item.service
            if service.id in self.sources.services:
                continue
            self._add_service(service, [], item.token, replace_existing_checks=False)
            if item.sidecar_for:
                self.sidecar_parents[service.id] = item.sidecar_for
        for check in loaded.checks:
            row = check.check
            if row.check_id in self.sources.checks:
                continue
            if row.service_id and self.local.service(row.service_id) is None:
                log.warning(
                    "agent: persisted check for a service that is gone, purged: check=%s",
                    row.check_id,
                )
                self.persisted.remove_check(row.check_id)
                continue
            if is_maintenance(row.check_id):
                # Maintenance mode survives a restart, as in Consul; it has no monitor.
                spec = CheckSpec(row=row, definition=check.definition, token=check.token)
                self.local.add_check(spec, time.monotonic(), keep_status=False)
                continue
            if check.definition.ttl is None:
                # Only a TTL check keeps its last status; others start over.
                row = msgspec.structs.replace(
                    row, status=check.definition.status or "critical", output=""
                )
            try:
                spec = CheckSpec(row=row, definition=check.definition, token=check.token)
                vet_scripts([spec], self.config, remote=True)
                self._add_check(spec)
            except ValueError as exc:
                log.error("agent: persisted check %s not restored: %s", row.check_id, exc)

    def _persist_registration(self, registration: Registration) -> None:
        self.persisted.save_service(
            registration.service, registration.token, registration.sidecar_for
        )
        for spec in registration.checks:
            self.persisted.save_check(spec.row, spec.definition, spec.token)

    def _add_registration(self, registration: Registration, replace_existing_checks: bool) -> None:
        service = registration.service
        self._add_service(service, registration.checks, registration.token, replace_existing_checks)
        if registration.sidecar_for:
            self.sidecar_parents[service.id] = registration.sidecar_for

    def _add_service(
        self,
        service: NodeService,
        specs: list[CheckSpec],
        token: str,
        replace_existing_checks: bool,
    ) -> None:
        if replace_existing_checks:
            keep = {spec.row.check_id for spec in specs}
            for check_id, check in list(self.local.live_checks().items()):
                if (
                    check.service_id == service.id
                    and check_id not in keep
                    and not check_id.startswith(SERVICE_MAINT_PREFIX)
                ):
                    self._remove_check(check_id)
        self.local.add_service(self.central.track(service, token), token)
        for spec in specs:
            self._add_check(spec)

    def _add_check(self, spec: CheckSpec) -> None:
        check_id = spec.row.check_id
        existing = self.local.check(check_id)
        unchanged = existing is not None and existing.definition == spec.definition
        self.local.add_check(spec, time.monotonic())
        if unchanged and check_id in self.monitors:
            return
        self._stop_monitor(check_id)
        try:
            monitor = self.runners.make_monitor(check_id, spec.definition, self._report)
        except ValueError:
            self.local.remove_check(check_id)
            raise
        self.monitors[check_id] = monitor
        if self._tasks:  # already running; at start-up `start()` starts them all
            monitor.start()

    def _stop_monitor(self, check_id: str) -> None:
        monitor = self.monitors.pop(check_id, None)
        if monitor is not None:
            task = asyncio.ensure_future(monitor.stop())
            self._background(task)

    def _background(self, task: asyncio.Future[None]) -> None:
        """Keep a reference until done (the loop holds tasks only weakly)."""
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _remove_check(self, check_id: str) -> bool:
        self._stop_monitor(check_id)
        self.persisted.remove_check(check_id)
        self.sources.checks.discard(check_id)
        return self.local.remove_check(check_id)

    def _remove_service(self, service_id: str) -> bool:
        """Remove a service, its checks and the sidecar this agent expanded for it."""
        for check_id, check in list(self.local.live_checks().items()):
            if check.service_id == service_id:
                self._stop_monitor(check_id)
                self.persisted.remove_check(check_id)
                self.sources.checks.discard(check_id)
        self.sources.services.discard(service_id)
        self.sidecar_parents.pop(service_id, None)
        self.persisted.remove_service(service_id)
        self.central.forget(service_id)
        removed = self.local.remove_service(service_id)
        sidecar = sidecar_id(service_id)
        if self.sidecar_parents.get(sidecar) == service_id:
            self._remove_service(sidecar)
        return removed

    def _report(self, check_id: str, status: str, output: str) -> None:
        self.local.update_check(check_id, status, output, time.monotonic())

    async def _reap_critical(self) -> None:
        """Deregister services critical for longer than deregister_critical_service_after."""
        while True:
            await asyncio.sleep(_REAP_INTERVAL_S)
            now_s = time.monotonic()
            for entry in list(self.local.checks.values()):
                limit = entry.definition.deregister_critical_service_after
                since = entry.critical_since_s
                if entry.deleted or limit is None or since is None or not entry.check.service_id:
                    continue
                if now_s - since >= limit:
                    log.info(
                        "agent: check has been critical for too long; deregistered service: "
                        "service=%s check=%s",
                        entry.check.service_id,
                        entry.check.check_id,
                    )
                    self._remove_service(entry.check.service_id)

    # ----- AgentAPI ----------------------------------------------------------

    def datacenters(self) -> list[str]:
        return [self.datacenter]

    def self_info(self) -> dict[str, Any]:
        found = info.self_info(self)
        found["Stats"] = info.self_stats(self, self.delegate.self_stats())
        if self.gossip is not None:
            found["Member"] = self.gossip.local_member()
            found["Stats"]["serf_lan"] = self.gossip.serf_stats()
            coord = self.gossip.coordinate()
            if coord is not None:
                found["Coord"] = msgspec.to_builtins(coord)  # Consul's LAN coordinate
        return found

    def members(self) -> list[dict[str, Any]]:
        return self.gossip.members() if self.gossip is not None else [info.member(self)]

    def live_state(self) -> dict[str, Any]:
        return live_state(self)

    def xds_proxy_status(self, proxy_id: str) -> dict[str, Any]:
        return self.xds.proxy_status(proxy_id) if self.xds is not None else {}

    def live_gossip(self) -> tuple[list[Any], dict[str, float]] | None:
        gossip = self.gossip
        if gossip is None or gossip.core is None:
            return None
        return list(gossip.core.members()), gossip.stats()

    def live_raft(self) -> dict[str, Any] | None:
        delegate = self.delegate
        if not isinstance(delegate, ServerDelegate):
            return None
        return raft_live_view(delegate.raft)

    async def servers_raft_view(self, token: str) -> dict[str, Any] | None:
        """A server's Raft picture, asked over RPC (operator:read, checked there)."""
        found: dict[str, Any] | None = await self.delegate.operator_call(
            RAFT_LIVE_METHOD, OperatorRequest(token=token)
        )
        return found

    async def leader_address(self) -> str:
        return await self.delegate.leader_address()

    async def peer_addresses(self) -> list[str]:
        return await self.delegate.peer_addresses()

    # Operator calls: `token` is the caller's effective token; a client agent sends
    # it to a server, which checks operator:read/write (server/operator.py).

    async def raft_configuration(self, token: str = "") -> dict[str, Any]:
        found: dict[str, Any] = await self.delegate.operator_call(
            RAFT_CONFIG_METHOD, OperatorRequest(token=token)
        )
        return found

    async def remove_raft_peer(self, server_id: str, address: str, token: str = "") -> None:
        request = OperatorRequest(token=token, id=server_id, address=address)
        await self.delegate.operator_call(RAFT_REMOVE_METHOD, request)

    async def autopilot_health(self, token: str = "") -> dict[str, Any]:
        found: dict[str, Any] = await self.delegate.operator_call(
            AUTOPILOT_HEALTH_METHOD, OperatorRequest(token=token)
        )
        return found

    async def autopilot_state(self, token: str = "") -> dict[str, Any]:
        found: dict[str, Any] = await self.delegate.operator_call(
            AUTOPILOT_STATE_METHOD, OperatorRequest(token=token)
        )
        return found

    async def set_autopilot_configuration(
        self, config: dict[str, Any], cas_index: int | None, token: str = ""
    ) -> bool:
        request = OperatorRequest(token=token, config=config, cas_index=cas_index)
        return bool(await self.delegate.operator_call(AUTOPILOT_SET_METHOD, request))

    async def transfer_leader(self, server_id: str = "", token: str = "") -> dict[str, Any]:
        found: dict[str, Any] = await self.delegate.operator_call(
            RAFT_TRANSFER_METHOD, OperatorRequest(token=token, id=server_id)
        )
        return found

    async def snapshot_save(self, token: str = "", stale: bool = False) -> tuple[int, bytes]:
        """A snapshot archive of the servers' state and its index (server/snapshot_calls.py)."""
        found = await self.delegate.operator_call(
            SNAPSHOT_SAVE_METHOD, OperatorRequest(token=token, stale=stale)
        )
        return int(found["Index"]), bytes(found["Archive"])

    async def snapshot_restore(self, archive: bytes, token: str = "") -> int:
        """Restore a snapshot archive on every server; the log index it took."""
        found = await self.delegate.operator_call(
            SNAPSHOT_RESTORE_METHOD, OperatorRequest(token=token, data=archive)
        )
        return int(found["Index"])

    async def autopilot_configuration(self, token: str = "") -> dict[str, Any]:
        found: dict[str, Any] = await self.delegate.operator_call(
            AUTOPILOT_CONFIG_METHOD, OperatorRequest(token=token)
        )
        return found

    # The Connect CA: leaves and roots from the agent's view (agent/leaf_certs.py);
    # the configuration through a server ("ConnectCA.ConfigurationSet").

    async def connect_ca_leaf(
        self, service: str, token: str, min_index: int = 0, wait_s: float = 0.0
    ) -> IssuedCert:
        return await self.leaf_certs.leaf(service, token, min_index, wait_s)

    async def connect_ca_roots(
        self, min_index: int = 0, wait_s: float = 0.0
    ) -> tuple[int, IndexedCARoots]:
        return await self.leaf_certs.roots(min_index, wait_s)

    async def set_ca_configuration(self, config: CAConfiguration, token: str) -> None:
        payload = msgspec.msgpack.encode(CAConfigRequest(config=config, token=token))
        await self.delegate.call_raw(CONFIG_SET_METHOD, payload, SIGN_TIMEOUT_S)

    async def renew_session(self, session_id: str, token: str) -> list[Session]:
        """ "Session.Renew" on the leader, which keeps the TTL timers."""
        payload = renew_payload(session_id, token)
        data = await self.delegate.call_raw(RENEW_METHOD, payload, SIGN_TIMEOUT_S)
        return decode_renew_reply(data)

    def local_services(self) -> dict[str, NodeService]:
        return self.local.live_services()

    def local_proxies(self) -> dict[str, tuple[NodeService, str]]:
        """Local connect-proxies, each with the token its proxy view reads with:
        the one it was registered with, else `default`, else anonymous."""
        return {
            service_id: (entry.service, self.effective_token(entry.token))
            for service_id, entry in self.local.services.items()
            if not entry.deleted and entry.service.kind == CONNECT_PROXY
        }

    def local_checks(self) -> dict[str, HealthCheck]:
        return self.local.live_checks()

    async def register_service(
        self, definition: ServiceDefinition, replace_existing_checks: bool
    ) -> None:
        # A proxy's first central config, briefly awaited; the registrations are
        # built again afterwards, since local services (sidecar ports) may have moved.
        first = self._registrations(definition, self.config, [])
        for registration in first:
            vet_scripts(registration.checks, self.config, remote=True)
        await self.central.prime((r.service, r.token) for r in first)
        for registration in self._registrations(definition, self.config, []):
            self.sources.services.discard(registration.service.id)
            self._add_registration(registration, replace_existing_checks)
            self._persist_registration(registration)

    async def deregister_service(self, service_id: str) -> bool:
        return self._remove_service(service_id)

    async def register_check(self, definition: CheckDefinition) -> None:
        service = None
        if definition.service_id:
            service = self.local.service(definition.service_id)
            if service is None:
                raise ValueError(f"ServiceID {definition.service_id!r} does not exist")
        spec = build_check(definition, self.node_name, service=service)
        vet_scripts([spec], self.config, remote=True)
        self.sources.checks.discard(spec.row.check_id)
        self._add_check(spec)
        self.persisted.save_check(spec.row, spec.definition, spec.token)

    async def deregister_check(self, check_id: str) -> bool:
        return self._remove_check(check_id)

    def update_ttl_check(self, check_id: str, status: str, output: str) -> str | None:
        entry = self.local.check(check_id)
        monitor = self.monitors.get(check_id)
        if entry is None or monitor is None:
            return (
                f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
                "not the check name."
            )
        if entry.definition.ttl is None:
            return f'CheckID "{check_id}" does not have associated TTL'
        monitor.set_status(status, output)
        if check_id not in self.sources.checks:
            # Kept so that a restart does not flap it (Consul's check state).
            self.persisted.save_check(entry.check, entry.definition, entry.token)
        return None

    def set_node_maintenance(self, enable: bool, reason: str) -> None:
        if not enable:
            self.local.remove_check(NODE_MAINT_CHECK_ID)
            self.persisted.remove_check(NODE_MAINT_CHECK_ID)
            return
        spec = maintenance_check(self.node_name, reason)
        self.local.add_check(spec, time.monotonic(), keep_status=False)
        self.persisted.save_check(spec.row, spec.definition, spec.token)

    def set_service_maintenance(self, service_id: str, enable: bool, reason: str) -> bool:
        service = self.local.service(service_id)
        if service is None:
            return False
        check_id = SERVICE_MAINT_PREFIX + service_id
        if not enable:
            self.local.remove_check(check_id)
            self.persisted.remove_check(check_id)
            return True
        spec = maintenance_check(self.node_name, reason, service)
        self.local.add_check(spec, time.monotonic(), keep_status=False)
        self.persisted.save_check(spec.row, spec.definition, spec.token)
        return True

    async def reload(self) -> None:
        """Re-read the config sources; apply service and check changes in place."""
        loaded = load_config(self.args)
        for warning in loaded.warnings:
            log.warning("agent: %s", warning)
        self._apply_config_definitions(loaded.config)
        self.config = loaded.config
        if self.dns is not None:
            self.dns.reload(loaded.config)
        log.info("agent: reloaded configuration")

    def leave(self) -> None:
        log.info("agent: graceful leave requested")

        async def leave_then_stop() -> None:
            try:
                await self.delegate.leave()
                if self.gossip is not None:
                    await self.gossip.leave()
            finally:
                self.stopped.set()

        self._background(asyncio.ensure_future(leave_then_stop()))

    def log_formatter(self, as_json: bool) -> logging.Formatter:
        return JSONFormatter() if as_json else TextFormatter()

    def metrics_json(self) -> dict[str, Any]:
        return info.metrics_json(self, info.agent_stats(self))

    def metrics_prometheus(self) -> str:
        return info.metrics_prometheus(info.agent_stats(self))
