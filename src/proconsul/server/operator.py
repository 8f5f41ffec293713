"""Operator and autopilot surface of a server: Raft configuration, peer removal,
autopilot health/state/configuration.

Job: `ServerOperator` (the server delegate's `operator`) answers those calls
from one table, `serve(method, request)`: in process for the server's own
HTTP API, and as the `Operator.*` RPC handlers for client agents and
followers. A client agent's delegate sends the same `OperatorRequest` over
RPC, so every agent answers these calls the same way.

Rules:
- Operator RPCs (`Operator.RaftGetConfiguration`, `Operator.ServerHealth`,
  `Operator.AutopilotGetConfiguration`, `Operator.AutopilotState` need
  `operator:read`; `Operator.RaftRemovePeer` and `Operator.RaftTransferLeader`
  need `operator:write`; `Snapshot.*` a management token, acl:write) carry the
  caller's token in an `OperatorRequest` and are checked by this server's
  resolver when ACLs are on: an unknown secret is `ACLNotFound` ("ACL not
  found"), a missing right `ACLDenied` (Consul's Permission denied). The check
  runs once, on the server that answers: a follower forwards a leader-only
  call unchecked and the leader checks it. The in-process calls do not
  check: the agent's HTTP layer did (http/acl_rules.py).
- Peer removal, leadership transfer and autopilot health/state are the leader's: they go through
  the `LeaderRouter` (served on the leader, forwarded with the token from a
  follower). A dev agent is a lone voter: its own leader.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import msgspec

from proconsul.gossip import GossipCore
from proconsul.rpc import Handler, PeerInfo, RPCError
from proconsul.rpc.codec import decode_payload
from proconsul.rpc.errors import ErrorCode
from proconsul.server.autopilot import AutopilotConfig, ClusterHealth
from proconsul.server.autopilot_loop import (
    AutopilotLoop,
    config_json,
    file_settings,
    health_json,
    state_json,
)
from proconsul.server.endpoints import ServerEndpoints
from proconsul.server.leader_router import LeaderRouter
from proconsul.server.raft_log import RaftLog
from proconsul.server.snapshot_calls import RESTORE_METHOD as SNAPSHOT_RESTORE_METHOD
from proconsul.server.snapshot_calls import SAVE_METHOD as SNAPSHOT_SAVE_METHOD
from proconsul.server.snapshot_calls import SnapshotCalls, leader_answer
from proconsul.structs.autopilot import AutopilotSettings
from proconsul.structs.commands import AutopilotSetConfigRequest
from proconsul.structs.duration import format_duration, parse_duration
from proconsul.structs.rpc import OperatorRequest

# operator:read or operator:write; "management" is acl:write (Consul's
# SnapshotAllowed), what the snapshot calls need.
Access = Literal["read", "write", "management"]

log = logging.getLogger("proconsul.agent")

RAFT_CONFIG_METHOD = "Operator.RaftGetConfiguration"
RAFT_REMOVE_METHOD = "Operator.RaftRemovePeer"
RAFT_TRANSFER_METHOD = "Operator.RaftTransferLeader"
AUTOPILOT_HEALTH_METHOD = "Operator.ServerHealth"
AUTOPILOT_CONFIG_METHOD = "Operator.AutopilotGetConfiguration"
AUTOPILOT_SET_METHOD = "Operator.AutopilotSetConfiguration"
AUTOPILOT_STATE_METHOD = "Operator.AutopilotState"
# What each operator call needs of the caller's token.
OPERATOR_ACCESS: dict[str, Access] = {
    RAFT_CONFIG_METHOD: "read",
    RAFT_REMOVE_METHOD: "write",
    RAFT_TRANSFER_METHOD: "write",
    AUTOPILOT_HEALTH_METHOD: "read",
    AUTOPILOT_CONFIG_METHOD: "read",
    AUTOPILOT_SET_METHOD: "write",
    AUTOPILOT_STATE_METHOD: "read",
    SNAPSHOT_SAVE_METHOD: "management",
    SNAPSHOT_RESTORE_METHOD: "management",
}


# The caller's ACL check, run where the call is answered (see `ServerOperator.serve`).
Check = Callable[[], None]
Serve = Callable[[OperatorRequest, Check], Awaitable[Any]]

_operator_decoder = msgspec.msgpack.Decoder(OperatorRequest | None)


def operator_payload(token: str = "", server_id: str = "", address: str = "") -> bytes:
    """An `Operator.*` request as it goes on the wire."""
    return msgspec.msgpack.encode(OperatorRequest(token=token, id=server_id, address=address))


def decode_operator_request(payload: bytes, method: str) -> OperatorRequest:
    """A nil payload is a request without a token (the anonymous token)."""
    found = decode_payload(_operator_decoder, payload, method)
    return OperatorRequest() if found is None else found


def parse_settings(raw: dict[str, Any]) -> AutopilotSettings:
    """Autopilot settings from an API body: durations as Go strings or
    nanoseconds, each checked; anything else is BAD_QUERY (HTTP 400)."""
    body = dict(raw)
    try:
        for key in ("LastContactThreshold", "ServerStabilizationTime"):
            value = body.get(key, "0s")
            seconds = value / 1e9 if isinstance(value, int | float) else parse_duration(str(value))
            if seconds < 0:
                raise ValueError(f"{key} must not be negative")
            body[key] = format_duration(seconds)
        body.pop("CreateIndex", None)
        body.pop("ModifyIndex", None)
        settings = msgspec.convert(body, AutopilotSettings)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        raise RPCError(f"Request decode failed: {exc}", ErrorCode.BAD_QUERY) from None
    if settings.max_trailing_logs < 0 or settings.min_quorum < 0:
        raise RPCError("MaxTrailingLogs and MinQuorum must not be negative", ErrorCode.BAD_QUERY)
    return settings


class Pool(Protocol):
    @property
    def core(self) -> GossipCore | None: ...


class OperatorHost(Protocol):
    """What the operator calls read of their server (the ServerDelegate)."""

    @property
    def node_name(self) -> str: ...

    @property
    def raft(self) -> RaftLog: ...

    @property
    def router(self) -> LeaderRouter: ...

    @property
    def endpoints(self) -> ServerEndpoints: ...

    @property
    def autopilot_config(self) -> AutopilotConfig: ...

    @property
    def autopilot(self) -> AutopilotLoop | None: ...

    @property
    def gossip(self) -> Pool | None: ...


class ServerOperator:
    """One server's operator and autopilot calls; see the module docstring."""

    def __init__(self, server: OperatorHost) -> None:
        self.server = server
        snapshots = SnapshotCalls(server)
        self._table: dict[str, Serve] = {
            SNAPSHOT_SAVE_METHOD: snapshots.save,
            SNAPSHOT_RESTORE_METHOD: snapshots.restore,
            RAFT_CONFIG_METHOD: self._raft_configuration,
            RAFT_REMOVE_METHOD: self._remove_peer,
            RAFT_TRANSFER_METHOD: self._transfer_leader,
            AUTOPILOT_HEALTH_METHOD: lambda r, c: self._leader_view(
                AUTOPILOT_HEALTH_METHOD, health_json, r, c
            ),
            AUTOPILOT_CONFIG_METHOD: self._autopilot_configuration,
            AUTOPILOT_SET_METHOD: self._set_autopilot_configuration,
            AUTOPILOT_STATE_METHOD: lambda r, c: self._leader_view(
                AUTOPILOT_STATE_METHOD, state_json, r, c
            ),
        }

    def handlers(self) -> dict[str, Handler]:
        """The `Operator.*` RPC handlers, for the server's RPC port."""
        return {method: self._handler(method) for method in self._table}

    async def serve(
        self, method: str, request: OperatorRequest, check: Check = lambda: None
    ) -> Any:
        """The answer to one operator call. `check()` is the caller's ACL check:
        it runs on the server that answers (the leader, for leader-only calls),
        and only there. The agent's in-process calls pass none: its HTTP layer
        checked."""
        return await self._table[method](request, check)

    def _handler(self, method: str) -> Handler:
        access = OPERATOR_ACCESS[method]

        async def handle(payload: bytes, peer: PeerInfo) -> bytes:
            request = decode_operator_request(payload, method)
            check = lambda: self.authorize_operator(request.token, access)  # noqa: E731
            return msgspec.msgpack.encode(await self.serve(method, request, check))

        return handle

    def authorize_operator(self, token: str, access: Access) -> None:
        """Raise `ACLDenied` unless `token` has operator:`access`
        (nothing to check while ACLs are off)."""
        resolved = self.server.endpoints.resolve(token)
        if resolved is None:
            return
        authz = resolved.authorizer
        if access == "management":
            if not authz.acl_write():
                raise resolved.deny("acl", "write")
            return
        if not (authz.operator_write() if access == "write" else authz.operator_read()):
            raise resolved.deny("operator", access)

    # ----- operator raft ----------------------------------------------------

    async def _raft_configuration(self, request: OperatorRequest, check: Check) -> dict[str, Any]:
        """The body of `/v1/operator/raft/configuration`."""
        check()
        raft = self.server.raft
        index, configuration = raft.latest_configuration_entry()
        names: dict[str, str] = {raft.id: self.server.node_name}
        gossip = self.server.gossip
        core = gossip.core if gossip is not None else None
        if core is not None:
            for member in core.members():
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

    async def _remove_peer(self, request: OperatorRequest, check: Check) -> bool:
        """Remove a server from the Raft configuration by ID or address, on the
        leader (a follower forwards the request, token and all, unchecked)."""
        raft = self.server.raft

        async def here() -> bool:
            check()
            _, configuration = raft.configuration()
            found = [
                s.id
                for s in configuration.servers
                if (request.id and s.id == request.id)
                or (request.address and s.address == request.address)
            ]
            if not found:
                what = f"id {request.id!r}" if request.id else f"address {request.address!r}"
                raise RPCError(f"{what} was not found in the Raft configuration")
            await raft.remove_server(found[0])
            log.info("agent: removed Raft peer %s", found[0])
            return True

        payload = operator_payload(request.token, request.id, request.address)
        await self.server.router.call(RAFT_REMOVE_METHOD, payload, here)
        return True

    async def _transfer_leader(self, request: OperatorRequest, check: Check) -> dict[str, Any]:
        """Hand leadership to the voter `request.id` (default: the most caught-up
        one) with TimeoutNow, on the leader; answers once another server leads.
        Consul's reply: {"Success": true}."""
        raft = self.server.raft

        async def here() -> dict[str, Any]:
            check()
            new_leader = await raft.transfer_leadership(request.id or None)
            log.info("agent: transferred Raft leadership to %s", new_leader)
            return {"Success": True}

        payload = operator_payload(request.token, request.id)
        answer: dict[str, Any] = leader_answer(
            await self.server.router.call(RAFT_TRANSFER_METHOD, payload, here)
        )
        return answer

    # ----- autopilot ----------------------------------------------------------

    async def _leader_view(
        self,
        method: str,
        render: Callable[[ClusterHealth], dict[str, Any]],
        request: OperatorRequest,
        check: Check,
    ) -> dict[str, Any]:
        """Autopilot health and state are the leader's view."""

        async def here() -> dict[str, Any]:
            check()
            autopilot = self.server.autopilot
            if autopilot is None:
                raise RPCError("autopilot is not running on this server yet")
            return render(autopilot.current_health())

        found = await self.server.router.call(method, operator_payload(request.token), here)
        answer: dict[str, Any] = leader_answer(found)
        return answer

    async def _autopilot_configuration(
        self, request: OperatorRequest, check: Check
    ) -> dict[str, Any]:
        check()
        stored = self.server.endpoints.store.autopilot
        return config_json(stored or file_settings(self.server.autopilot_config))

    async def _set_autopilot_configuration(self, request: OperatorRequest, check: Check) -> bool:
        """Write the settings through Raft, on the leader; with `cas_index` only
        at that ModifyIndex. Answers whether they were written."""
        settings = parse_settings(request.config)

        async def here() -> bool:
            check()
            command = AutopilotSetConfigRequest(
                config=settings,
                cas=request.cas_index is not None,
                cas_index=request.cas_index or 0,
            )
            _, result = await self.server.raft.apply(command)
            return result is True

        found = await self.server.router.call(
            AUTOPILOT_SET_METHOD, msgspec.msgpack.encode(request), here
        )
        return bool(leader_answer(found))
