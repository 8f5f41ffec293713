"""An agent's RPC and Raft settings, made from its config in one place.

Job: the factories every agent (server and client) and the tests use to turn
`RuntimeConfig` into Raft parameters, the RPC hold timeout, the RPC TLS
contexts and the server's RPC port, so each config key is read once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proconsul.raft import RaftParams, params_from_multiplier
from proconsul.rpc import Handler, RPCServer
from proconsul.rpc.tls import RPCTLS, rpc_tls

if TYPE_CHECKING:
    from proconsul.config.schema import RuntimeConfig


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


def agent_rpc_tls(config: RuntimeConfig, *, is_server: bool) -> RPCTLS:
    """The TLS contexts of an agent's RPC (server and client alike) from its
    config; every call makes new contexts (a client's auto_encrypt request
    goes on a second, certificate-less one)."""
    settings = config.tls_settings("internal_rpc")
    return rpc_tls(
        settings,
        datacenter=config.datacenter,
        domain=config.domain,
        is_server=is_server,
        auto_encrypt_tls=not is_server and config.auto_encrypt.tls,
        auto_encrypt_allow_tls=is_server and config.auto_encrypt.allow_tls,
    )


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
