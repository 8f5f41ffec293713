"""Errors a caller of the server's Raft log can see.

Each is an `RPCError`, so when one escapes an RPC handler (a write forwarded
to a server that just lost leadership, say) the caller gets it as an expected
refusal with its message, not as a handler crash.
"""

from __future__ import annotations

from proconsul.rpc.errors import NO_LEADER, RPCError


class NotLeaderError(RPCError):
    """This server does not lead. `leader_address` (RPC "host:port") is where to
    forward, when a leader is known."""

    def __init__(self, leader_id: str | None, leader_address: str | None) -> None:
        if leader_address is None:
            message = NO_LEADER  # Consul's words, which API clients match on
        else:
            message = f"rpc: not the cluster leader; the leader is {leader_id} at {leader_address}"
        super().__init__(message)
        self.leader_id = leader_id
        self.leader_address = leader_address


class LeadershipLostError(RPCError):
    """The entry was not committed as proposed (leadership changed); it did not
    take effect, or its outcome cannot be known. hashicorp/raft's wording."""

    def __init__(self) -> None:
        super().__init__("leadership lost while committing log")


class RaftRejectedError(RPCError):
    """The leader refused the request for now (busy, transfer or change in progress)."""


class RaftStoppedError(RPCError):
    """Raft is not running on this server (not started, closed, or stopped by a fatal error)."""

    def __init__(self, message: str = "raft is not running on this server") -> None:
        super().__init__(message)
