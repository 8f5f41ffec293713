"""What the agent says about itself: addresses, /v1/agent/self, members, metrics.

Shapes follow Consul's JSON; secrets (tokens, keys) are never included.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from typing import Any, Protocol

from aiohttp import web

from proconsul import CONSUL_COMPAT_VERSION, __version__
from proconsul.agent.anti_entropy import AntiEntropy
from proconsul.agent.delegate import Delegate
from proconsul.agent.local_state import LocalState
from proconsul.config.schema import RuntimeConfig
from proconsul.http.server import STATS_KEY

BUILD = f"{CONSUL_COMPAT_VERSION}:proconsul-{__version__}"
PROTOCOL_VERSION = "2"


class Stats(Protocol):
    def stats(self) -> dict[str, float]: ...


class GossipMetrics(Protocol):
    def metrics(self) -> dict[str, float]: ...


class Agent(Protocol):
    """What this module reads of the agent (the Agent class implements it)."""

    config: RuntimeConfig
    node_name: str
    node_id: str
    advertise_addr: str
    started_at_s: float
    local: LocalState
    anti_entropy: AntiEntropy
    delegate: Delegate

    @property
    def leaf_certs(self) -> Stats: ...

    @property
    def http_addresses(self) -> list[tuple[str, int]]: ...

    @property
    def http_app(self) -> web.Application | None: ...

    @property
    def dns(self) -> Stats | None: ...

    @property
    def xds(self) -> Stats | None: ...

    @property
    def proxycfg(self) -> Stats: ...

    @property
    def gossip(self) -> GossipMetrics | None: ...


def http_addresses(config: RuntimeConfig) -> list[tuple[str, int]]:
    """Where the HTTP API listens: `addresses.http` or `client_addr`, on `ports.http`.

    A host may be `unix:///path` (the port then means nothing; see
    agent/http_listeners.py)."""
    return [(host, config.ports.http) for host in config.listen_addresses("http")]


def _http_addr(host: str, port: int) -> str:
    """Consul's DebugConfig spelling: `tcp://127.0.0.1:8500` or `unix:///path`."""
    if host.startswith("unix://"):
        return host
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def member_tags(config: RuntimeConfig, node_id: str) -> dict[str, str]:
    """The agent's gossip tags: servers are found by role=consul and the port tag."""
    tags = {
        "role": "consul" if config.server else "node",
        "dc": config.datacenter,
        "vsn": PROTOCOL_VERSION,
        "vsn_min": "2",
        "vsn_max": "3",
        "build": BUILD,
        "id": node_id,
        "segment": "",
    }
    if config.server:
        # Only servers advertise an RPC port: clients find servers by this tag.
        tags["port"] = str(config.ports.server)
        tags["expect"] = str(config.bootstrap_expect or 1)
    return tags


def member(agent: Agent) -> dict[str, Any]:
    config = agent.config
    tags = member_tags(config, agent.node_id)
    return {
        "Name": agent.node_name,
        "Addr": agent.advertise_addr,
        "Port": config.ports.serf_lan,
        "Tags": tags,
        "Status": 1,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    }


def self_info(agent: Agent) -> dict[str, Any]:
    config = agent.config
    return {
        "Config": {
            "Datacenter": config.datacenter,
            "PrimaryDatacenter": config.datacenter,
            "NodeName": agent.node_name,
            "NodeID": agent.node_id,
            "Partition": "",
            "Revision": "proconsul",
            "Server": config.server,
            "Version": CONSUL_COMPAT_VERSION,
            "BuildDate": "",
        },
        "DebugConfig": {
            "Datacenter": config.datacenter,
            "NodeName": agent.node_name,
            "NodeID": agent.node_id,
            "DataDir": config.data_dir,
            "DevMode": config.dev_mode,
            "ServerMode": config.server,
            "BindAddr": config.bind_addr,
            "AdvertiseAddrLAN": agent.advertise_addr,
            "ClientAddrs": (config.client_addr or "").split(),
            "DNSDomain": config.domain,
            "HTTPAddrs": [_http_addr(host, port) for host, port in agent.http_addresses],
            "ACLsEnabled": config.acl.enabled,
            "UIConfig": {"Enabled": config.ui_config.enabled},
            "ProxyVersion": __version__,
        },
        "Coord": None,
        "Member": member(agent),
        "Stats": {},
        "Meta": dict(config.node_meta),
        "xDS": {
            "SupportedProxies": {"envoy": ["1.26.0", "1.25.4", "1.24.6", "1.23.8"]},
            "Port": config.ports.grpc,
            "Ports": {"Plaintext": config.ports.grpc, "TLS": config.ports.grpc_tls},
        },
    }


def self_stats(agent: Agent, delegate_sections: dict[str, dict[str, str]]) -> dict[str, Any]:
    """`/v1/agent/self` Stats: Consul's sections, every value a string."""
    checks = agent.local.live_checks()
    ttl_checks = sum(1 for c in checks.values() if c.type == "ttl")
    return {
        "agent": {
            "check_monitors": str(len(checks) - ttl_checks),
            "check_ttls": str(ttl_checks),
            "checks": str(len(checks)),
            "services": str(len(agent.local.live_services())),
        },
        "build": {
            "prerelease": "",
            "revision": "proconsul",
            "version": CONSUL_COMPAT_VERSION,
            "version_metadata": "",
        },
        "runtime": {
            "arch": _GO_ARCH.get(platform.machine(), platform.machine()),
            "cpu_count": str(os.cpu_count() or 1),
            "goroutines": str(len(asyncio.all_tasks())),
            "max_procs": str(os.cpu_count() or 1),
            "os": sys.platform,
            "version": f"python{platform.python_version()}",
        },
        **delegate_sections,
    }


_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386"}


def metrics_json(agent: Agent, stats: dict[str, float]) -> dict[str, Any]:
    """Consul's /v1/agent/metrics shape: every stat as a gauge."""
    return {
        "Timestamp": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime()),
        "Gauges": [
            {"Name": name, "Value": value, "Labels": {}} for name, value in sorted(stats.items())
        ],
        "Points": [],
        "Counters": [],
        "Samples": [],
    }


def metrics_prometheus(stats: dict[str, float]) -> str:
    lines = []
    for name, value in sorted(stats.items()):
        metric = name.replace(".", "_").replace("-", "_")
        lines.append(f"# HELP {metric} {name}")
        lines.append(f"# TYPE {metric} gauge")
        lines.append(f"{metric} {value:g}")
    return "\n".join(lines) + "\n"


def agent_stats(agent: Agent) -> dict[str, float]:
    """Every counter and gauge the agent reports at /v1/agent/metrics."""
    stats: dict[str, float] = {
        "consul.agent.services": len(agent.local.live_services()),
        "consul.agent.checks": len(agent.local.live_checks()),
        "consul.agent.anti_entropy.syncs": agent.anti_entropy.syncs,
        "consul.agent.anti_entropy.full_syncs": agent.anti_entropy.full_syncs,
        "consul.agent.anti_entropy.errors": agent.anti_entropy.errors,
        "consul.runtime.uptime_seconds": time.time() - agent.started_at_s,
    }
    if agent.http_app is not None:
        for name, value in agent.http_app[STATS_KEY].as_dict().items():
            stats[f"consul.http.{name}"] = value
    store = agent.delegate.store
    if store is not None:
        stats["consul.state.nodes"] = len(store.nodes)
        stats["consul.state.services"] = len(store.instances)
        stats["consul.state.service_instances"] = sum(len(r) for r in store.instances.values())
        stats["consul.state.kv_entries"] = len(store.kvs)
        stats["consul.state.index"] = store.last_index
        stats["consul.state.blocking_queries"] = len(store.watches)
    if agent.dns is not None:
        stats.update(agent.dns.stats())
    if agent.xds is not None:
        stats.update(agent.xds.stats())
    if agent.gossip is not None:
        stats.update(agent.gossip.metrics())
    for name, count in agent.proxycfg.stats().items():
        stats[f"consul.agent.proxycfg.{name}"] = count
    for name, count in agent.leaf_certs.stats().items():
        stats[f"consul.agent.connect.leaf.{name}"] = count
    stats.update(agent.delegate.stats())
    return stats
