"""What the HTTP API needs from the agent, as a Protocol, so this layer never imports it.

The agent (outer layer) implements it; handlers reach it through `request.app`.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from aiohttp import web

from proconsul.acl.resolved import ResolvedToken
from proconsul.http.common import request_token
from proconsul.structs.catalog import HealthCheck, NodeService
from proconsul.structs.commands import ApplyResult, Command
from proconsul.structs.connect import CAConfiguration, IndexedCARoots, IssuedCert
from proconsul.structs.definitions import CheckDefinition, ServiceDefinition
from proconsul.structs.requests import ReadRequest, ReadResponse
from proconsul.structs.session import Session


class GossipAPI(Protocol):
    """The agent's LAN gossip pool, for /v1/agent/join, force-leave, keyring and events.

    User errors raise ValueError, an unknown member LookupError, and a failed
    pool operation RuntimeError; each message is user-facing.
    """

    async def join_lan(self, address: str) -> int: ...

    def force_leave(self, node: str, prune: bool = False) -> None: ...

    async def keyring_operation(
        self, op: str, key_text: str
    ) -> tuple[dict[str, Any], str | None]: ...

    def fire_user_event(
        self, name: str, payload: bytes, node_filter: str, service_filter: str, tag_filter: str
    ) -> dict[str, Any]: ...

    def list_user_events(self, name: str = "") -> tuple[list[dict[str, Any]], int]: ...

    async def wait_user_events(self, timeout_s: float) -> bool: ...


class AgentAPI(Protocol):
    datacenter: str
    node_name: str
    kv_max_value_size: int

    async def rpc_read(self, method: str, request: ReadRequest) -> ReadResponse: ...

    async def rpc_write(self, command: Command, token: str = "") -> tuple[int, ApplyResult]: ...

    async def resolve_token(self, secret: str) -> ResolvedToken | None:
        """None while ACLs are disabled; raises ACLNotFound for an unknown secret."""

    def set_agent_token(self, kind: str, secret: str) -> bool:
        """Replace one of the agent's own tokens (`kind` as in /v1/agent/token/<kind>,
        old aliases included); returns whether it was persisted to acl-tokens.json.
        Raises LookupError for a kind the agent has no token of."""

    def effective_token(self, secret: str) -> str:
        """The token a request acts with: its own, else the agent's `default`, else
        the anonymous token's secret (never "", which means the agent itself)."""

    def datacenters(self) -> list[str]: ...

    def self_info(self) -> dict[str, Any]: ...

    def members(self) -> list[dict[str, Any]]: ...

    @property
    def gossip(self) -> GossipAPI | None: ...

    async def leader_address(self) -> str: ...

    async def peer_addresses(self) -> list[str]: ...

    # Operator calls take the caller's effective token (`caller_token`): a client
    # agent hands it to the server, which checks operator:read/write itself.

    async def raft_configuration(self, token: str = "") -> dict[str, Any]: ...

    async def remove_raft_peer(self, server_id: str, address: str, token: str = "") -> None: ...

    async def set_autopilot_configuration(
        self, config: dict[str, Any], cas_index: int | None, token: str = ""
    ) -> bool: ...

    async def transfer_leader(self, server_id: str = "", token: str = "") -> dict[str, Any]: ...

    async def autopilot_health(self, token: str = "") -> dict[str, Any]: ...

    async def autopilot_state(self, token: str = "") -> dict[str, Any]: ...

    async def autopilot_configuration(self, token: str = "") -> dict[str, Any]: ...

    async def snapshot_save(self, token: str = "", stale: bool = False) -> tuple[int, bytes]: ...

    async def snapshot_restore(self, archive: bytes, token: str = "") -> int: ...

    async def connect_ca_leaf(
        self, service: str, token: str, min_index: int = 0, wait_s: float = 0.0
    ) -> IssuedCert:
        """The agent's current leaf of `service`; blocks while its ModifyIndex is
        not above `min_index` (agent/leaf_certs.py)."""

    async def connect_ca_roots(
        self, min_index: int = 0, wait_s: float = 0.0
    ) -> tuple[int, IndexedCARoots]:
        """The agent's view of the CA roots and its index (blocking like a read)."""

    async def set_ca_configuration(self, config: CAConfiguration, token: str) -> None:
        """Write the CA configuration on the leader (it checks operator:write)."""

    async def renew_session(self, session_id: str, token: str) -> list[Session]:
        """Renew a session's TTL on the leader; [] when the session is unknown."""

    def local_services(self) -> dict[str, NodeService]: ...

    def xds_proxy_status(self, proxy_id: str) -> dict[str, Any]:
        """What the xDS server last sent a local proxy: `Streams`, `Versions`
        (type URL -> version) and `Error` (how the agent ended its last stream);
        {} when no stream of it was seen."""

    def local_checks(self) -> dict[str, HealthCheck]: ...

    async def wait_local_change(self, timeout_s: float) -> bool:
        """Wait for the next change of local services or checks; False on timeout."""

    async def register_service(
        self, definition: ServiceDefinition, replace_existing_checks: bool
    ) -> None: ...

    async def deregister_service(self, service_id: str) -> bool: ...

    async def register_check(self, definition: CheckDefinition) -> None: ...

    async def deregister_check(self, check_id: str) -> bool: ...

    def update_ttl_check(self, check_id: str, status: str, output: str) -> str | None: ...

    def set_node_maintenance(self, enable: bool, reason: str) -> None: ...

    def set_service_maintenance(self, service_id: str, enable: bool, reason: str) -> bool: ...

    async def reload(self) -> None: ...

    def leave(self) -> None: ...

    def metrics_json(self) -> dict[str, Any]: ...

    def log_formatter(self, as_json: bool) -> logging.Formatter:
        """The agent's log line format, text or JSON (`/v1/agent/monitor?logjson`)."""

    def live_state(self) -> dict[str, Any]:
        """This agent's gossip and Raft picture for /v1/agent/live (http/live.py)."""

    async def servers_raft_view(self, token: str) -> dict[str, Any] | None:
        """A server's Raft picture over RPC, for a client agent's live view
        (the server checks operator:read)."""

    def metrics_prometheus(self) -> str: ...


AGENT_KEY: web.AppKey[AgentAPI] = web.AppKey("agent")


def agent_of(request: web.Request) -> AgentAPI:
    return request.app[AGENT_KEY]


def caller_token(request: web.Request) -> str:
    """The token a request acts with (see `AgentAPI.effective_token`)."""
    return agent_of(request).effective_token(request_token(request))
