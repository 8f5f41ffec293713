"""Operator and autopilot surface of a server: Raft configuration, peer removal,
autopilot health/state/configuration, in process and as RPCs.

Job: `ServerOperator` (owned by a `ServerHandle` as `handle.operator`) answers
those calls for one server and provides the `Operator.*` RPC handlers the
handle registers on its RPC port; the module-level functions answer the same
calls on any agent (server, client or -dev).

Rules:
- Operator RPCs (`Operator.RaftGetConfiguration`, `Operator.ServerHealth`,
  `Operator.AutopilotGetConfiguration`, `Operator.AutopilotState` need
  `operator:read`; `Operator.RaftRemovePeer` needs `operator:write`) carry the
  caller's token in an `OperatorRequest` and are checked by this server's
  resolver when ACLs are on: an unknown secret is `ACLNotFound` ("ACL not
  found"), a missing right `ACLDenied` (Consul's Permission denied). A follower
  that forwards one to the leader forwards the token too. `Status.Leader` and
  `Status.Peers` stay open, as in Consul (bootstrap and leave use them between
  servers). The in-process methods (`remove_peer`, `autopilot_health`, ...)
  do not check: the agent's HTTP layer did (http/acl_rules.py).
- Autopilot health and state are the leader's view: the leader renders its
  autopilot loop's, a follower asks the leader, a client agent a server, a
  -dev agent reports itself as a healthy leader of one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from proconsul.agent.autopilot_loop import autopilot_config, config_json, health_json, state_json
from proconsul.agent.info import BUILD
from proconsul.rpc import ErrorCode, Handler, PeerInfo, RPCError
from proconsul.rpc.errors import NO_LEADER
from proconsul.server.autopilot import ClusterHealth, SerfStatus, ServerHealth
from proconsul.structs.rpc import OperatorRequest

if TYPE_CHECKING:
    from proconsul.agent.agent import Agent
    from proconsul.agent.server_setup import ServerHandle

Access = Literal["read", "write"]

log = logging.getLogger("proconsul.agent")

RAFT_CONFIG_METHOD = "Operator.RaftGetConfiguration"
RAFT_REMOVE_METHOD = "Operator.RaftRemovePeer"
AUTOPILOT_HEALTH_METHOD = "Operator.ServerHealth"
AUTOPILOT_CONFIG_METHOD = "Operator.AutopilotGetConfiguration"
AUTOPILOT_STATE_METHOD = "Operator.AutopilotState"
REMOVE_TIMEOUT_S = 15.0
FORWARD_TIMEOUT_S = 10.0


_operator_decoder = msgspec.msgpack.Decoder(OperatorRequest | None)


def operator_payload(token: str = "", server_id: str = "", address: str = "") -> bytes:
    """An `Operator.*` request as it goes on the wire."""
    return msgspec.msgpack.encode(OperatorRequest(token=token, id=server_id, address=address))


def decode_operator_request(payload: bytes, method: str) -> OperatorRequest:
    """A nil payload is a request without a token (the anonymous token)."""
    try:
        found = _operator_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RPCError(f"rpc: bad {method} request: {exc}", ErrorCode.BAD_REQUEST) from None
    return OperatorRequest() if found is None else found


class ServerOperator:
    """One server's operator and autopilot calls; see the module docstring."""

    def __init__(self, handle: ServerHandle) -> None:
        self.handle = handle

    def handlers(self) -> dict[str, Handler]:
        """The `Operator.*` RPC handlers, for the handle's RPC server."""
        return {
            RAFT_CONFIG_METHOD: self._raft_config,
            RAFT_REMOVE_METHOD: self._raft_remove,
            AUTOPILOT_HEALTH_METHOD: self._autopilot_health,
            AUTOPILOT_CONFIG_METHOD: self._autopilot_config,
            AUTOPILOT_STATE_METHOD: self._autopilot_state,
        }

    # ----- operator raft ----------------------------------------------------

    def raft_configuration(self) -> dict[str, Any]:
        """The body of `/v1/operator/raft/configuration`."""
        raft = self.handle.raft
        index, configuration = raft.configuration()
        names: dict[str, str] = {raft.id: self.handle.agent.node_name}
        gossip = self.handle.agent.gossip
        if gossip is not None and gossip.core is not None:
            for member in gossip.core.members():
                if member.tags.get("id"):
                    names[member.tags["id"]] = member.name
        leader = raft.leader_address()
        servers = [
            {
                "ID": server.id,
                "Node": names.get(server.id, ""),
                "Address": server.address,
                "Leader": server.address == leader,
                "ProtocolVersion": "3",
                "Voter": server.voter,
            }
            for server in configuration.servers
        ]
        return {"Servers": servers, "Index": index}

    def authorize_operator(self, token: str, access: Access) -> None:
        """Raise `ACLDenied` unless `token` has operator:`access`
        (nothing to check while ACLs are off)."""
        resolved = self.handle.endpoints.resolve(token)
        if resolved is None:
            return
        authz = resolved.authorizer
        if not (authz.operator_write() if access == "write" else authz.operator_read()):
            raise resolved.deny("operator", access)

    async def remove_peer(self, server_id: str, address: str, token: str = "") -> None:
        """Remove a server from the Raft configuration by ID or address (on the
        leader). `token` goes along when a follower forwards the request."""
        raft = self.handle.raft
        _, configuration = raft.configuration()
        found = [
            s.id
            for s in configuration.servers
            if (server_id and s.id == server_id) or (address and s.address == address)
        ]
        if not found:
            what = f"id {server_id!r}" if server_id else f"address {address!r}"
            raise RPCError(f"{what} was not found in the Raft configuration")
        if raft.is_leader():
            await raft.remove_server(found[0])
            log.info("agent: removed Raft peer %s", found[0])
            return
        leader = raft.leader_address()
        if leader is None:
            raise RPCError(NO_LEADER)
        payload = operator_payload(token, found[0])
        await self.handle.client.call(leader, RAFT_REMOVE_METHOD, payload, REMOVE_TIMEOUT_S)

    def _operator_call(self, payload: bytes, method: str, access: Access) -> OperatorRequest:
        request = decode_operator_request(payload, method)
        self.authorize_operator(request.token, access)
        return request

    async def _raft_config(self, payload: bytes, peer: PeerInfo) -> bytes:
        self._operator_call(payload, RAFT_CONFIG_METHOD, "read")
        return msgspec.msgpack.encode(self.raft_configuration())

    async def _raft_remove(self, payload: bytes, peer: PeerInfo) -> bytes:
        request = self._operator_call(payload, RAFT_REMOVE_METHOD, "write")
        await self.remove_peer(request.id, request.address, request.token)
        return msgspec.msgpack.encode(True)

    # ----- autopilot ----------------------------------------------------------

    async def autopilot_health(self, token: str = "") -> dict[str, Any]:
        """The body of `/v1/operator/autopilot/health`: the leader's view (forwarded
        with `token`)."""
        return await self._leader_view(AUTOPILOT_HEALTH_METHOD, health_json, token)

    async def autopilot_state(self, token: str = "") -> dict[str, Any]:
        """The body of `/v1/operator/autopilot/state`: the leader's view (forwarded
        with `token`)."""
        return await self._leader_view(AUTOPILOT_STATE_METHOD, state_json, token)

    async def _leader_view(
        self, method: str, render: Callable[[ClusterHealth], dict[str, Any]], token: str
    ) -> dict[str, Any]:
        handle = self.handle
        if handle.raft.is_leader() and handle.autopilot is not None:
            return render(handle.autopilot.current_health())
        leader = handle.raft.leader_address()
        if leader is None or leader == handle.address:
            raise RPCError(NO_LEADER)
        payload = await handle.client.call(
            leader, method, operator_payload(token), FORWARD_TIMEOUT_S
        )
        found: dict[str, Any] = msgspec.msgpack.decode(payload)
        return found

    def autopilot_configuration(self) -> dict[str, Any]:
        return config_json(self.handle.autopilot_config)

    async def _autopilot_health(self, payload: bytes, peer: PeerInfo) -> bytes:
        request = self._operator_call(payload, AUTOPILOT_HEALTH_METHOD, "read")
        return msgspec.msgpack.encode(await self.autopilot_health(request.token))

    async def _autopilot_config(self, payload: bytes, peer: PeerInfo) -> bytes:
        self._operator_call(payload, AUTOPILOT_CONFIG_METHOD, "read")
        return msgspec.msgpack.encode(self.autopilot_configuration())

    async def _autopilot_state(self, payload: bytes, peer: PeerInfo) -> bytes:
        request = self._operator_call(payload, AUTOPILOT_STATE_METHOD, "read")
        return msgspec.msgpack.encode(await self.autopilot_state(request.token))


def dev_raft_configuration(agent: Agent) -> dict[str, Any]:
    """A -dev agent's "configuration": itself, the leader of one."""
    return {
        "Servers": [
            {
                "ID": agent.node_id,
                "Node": agent.node_name,
                "Address": f"{agent.advertise_addr}:{agent.config.ports.server}",
                "Leader": True,
                "ProtocolVersion": "3",
                "Voter": True,
            }
        ],
        "Index": 0,
    }


def dev_cluster_health(agent: Agent) -> ClusterHealth:
    """A -dev agent's autopilot health: itself, a healthy leader of one."""
    alive_since = time.monotonic() - (time.time() - agent.started_at_s)
    me = ServerHealth(
        id=agent.node_id,
        name=agent.node_name,
        address=f"{agent.advertise_addr}:{agent.config.ports.server}",
        serf_status=SerfStatus.ALIVE,
        version=BUILD.split(":", 1)[0],
        leader=True,
        voter=True,
        healthy=True,
        last_contact_s=0.0,
        last_term=1,
        last_index=agent.store.last_index if agent.store is not None else 0,
        stable_since_s=alive_since,
        status_since_s=alive_since,
    )
    return ClusterHealth(healthy=True, failure_tolerance=0, servers=(me,))


async def autopilot_health(agent: Agent, token: str = "") -> dict[str, Any]:
    """`/v1/operator/autopilot/health` on any agent: servers ask the leader, clients a
    server; `token` (the caller's) goes along for the server's operator:read check."""
    if agent.server is not None:
        return await agent.server.operator.autopilot_health(token)
    if agent.client_rpc is not None:
        found: dict[str, Any] = await agent.client_rpc.call(
            AUTOPILOT_HEALTH_METHOD, operator_payload(token)
        )
        return found
    return health_json(dev_cluster_health(agent))


async def autopilot_state(agent: Agent, token: str = "") -> dict[str, Any]:
    """`/v1/operator/autopilot/state` on any agent, routed as autopilot_health."""
    if agent.server is not None:
        return await agent.server.operator.autopilot_state(token)
    if agent.client_rpc is not None:
        found: dict[str, Any] = await agent.client_rpc.call(
            AUTOPILOT_STATE_METHOD, operator_payload(token)
        )
        return found
    return state_json(dev_cluster_health(agent))


async def autopilot_configuration(agent: Agent, token: str = "") -> dict[str, Any]:
    """`/v1/operator/autopilot/configuration` on any agent."""
    if agent.server is not None:
        return agent.server.operator.autopilot_configuration()
    if agent.client_rpc is not None:
        found: dict[str, Any] = await agent.client_rpc.call(
            AUTOPILOT_CONFIG_METHOD, operator_payload(token)
        )
        return found
    return config_json(autopilot_config(agent.config.autopilot))
