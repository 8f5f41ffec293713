"""Config keys that tune Raft and RPC reach the objects the agent builds.

The objects are built with the factories the agent itself uses
(agent/server_setup.py, agent/client_rpc.py) from a config loaded the way
`proconsul agent` loads it: Consul's defaults when nothing is set, the
configured values otherwise.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import pytest
from tests.agent_process import wait_for_async

from proconsul.agent.client_rpc import DEFAULT_CLIENT_TIMEOUT_S, ClientRPC, client_timeout_s
from proconsul.config.agent_args import parse_agent_args
from proconsul.config.loader import load_config
from proconsul.config.schema import RuntimeConfig
from proconsul.raft.params import (
    DEFAULT_SNAPSHOT_INTERVAL,
    DEFAULT_SNAPSHOT_THRESHOLD,
    DEFAULT_TRAILING_LOGS,
    params_from_multiplier,
)
from proconsul.rpc.tls import RPCTLS
from proconsul.server.rpc_config import hold_timeout_s, raft_params, rpc_server

if TYPE_CHECKING:
    pass

TUNED = """
raft_snapshot_threshold = 100
raft_trailing_logs = 7
raft_snapshot_interval = "2s"
performance {
  raft_multiplier = 2
  rpc_hold_timeout = "3s"
}
limits {
  rpc_max_conns_per_client = 9
  rpc_handshake_timeout = "1500ms"
  rpc_client_timeout = "25s"
}
"""


def config(*hcl: str) -> RuntimeConfig:
    argv = ["-dev"]
    for fragment in hcl:
        argv += ["-hcl", fragment]
    return load_config(parse_agent_args(argv), hostname=lambda: "box").config


PLAINTEXT = RPCTLS(
    server_context=None,
    accept_plaintext=True,
    client_context=None,
    server_hostname="",
)


def test_defaults_are_consuls() -> None:
    defaults = config()
    params = raft_params(defaults)
    assert params.snapshot_threshold == DEFAULT_SNAPSHOT_THRESHOLD == 16384
    assert params.trailing_logs == DEFAULT_TRAILING_LOGS == 10240
    assert params.snapshot_interval == DEFAULT_SNAPSHOT_INTERVAL == 30.0
    # -dev runs at raft_multiplier 1, as Consul's dev mode does.
    assert params.election_timeout == params_from_multiplier(1).election_timeout
    assert hold_timeout_s(defaults) == 7.0
    server = rpc_server(defaults, {}, PLAINTEXT)
    assert server.max_conns_per_client == 100
    assert server.handshake_timeout_s == 5.0
    assert client_timeout_s(defaults) == DEFAULT_CLIENT_TIMEOUT_S == 60.0


def test_configured_values_reach_raft_and_rpc() -> None:
    tuned = config(TUNED)
    params = raft_params(tuned)
    assert params.snapshot_threshold == 100
    assert params.trailing_logs == 7
    assert params.snapshot_interval == 2.0
    assert params.election_timeout == params_from_multiplier(2).election_timeout
    assert hold_timeout_s(tuned) == 3.0
    server = rpc_server(tuned, {}, PLAINTEXT, anonymous_methods=("AutoEncrypt.Sign",))
    assert server.max_conns_per_client == 9
    assert server.handshake_timeout_s == 1.5
    assert server.anonymous_methods == {"AutoEncrypt.Sign"}
    assert client_timeout_s(tuned) == 25.0


def test_client_rpc_takes_its_timeout_from_the_config() -> None:
    # ClientRPC as the client delegate builds it; without TLS it reads nothing but the config.
    client = ClientRPC(config(TUNED), random.Random(1))
    assert client.timeout_s == 25.0


def test_zero_client_timeout_falls_back_to_consuls_default() -> None:
    assert client_timeout_s(config('limits { rpc_client_timeout = "0s" }')) == 60.0


async def test_zero_rpc_limits_disable_them() -> None:
    server = rpc_server(
        config('limits {\n rpc_max_conns_per_client = 0\n rpc_handshake_timeout = "0s"\n}'),
        {},
        PLAINTEXT,
    )
    assert server.max_conns_per_client == 0
    assert server.handshake_timeout_s == 0.0
    host, port = await server.start("127.0.0.1", 0)
    conns = []
    try:
        # With a limit of 0 taken literally every connection would be refused.
        conns = [await asyncio.open_connection(host, port) for _ in range(3)]
        await wait_for_async(lambda: server.stats()["connections_accepted"] >= 3, 5.0)
        stats = server.stats()
        assert stats["connections_over_limit"] == 0 and stats["connections_open"] == 3
    finally:
        for _, writer in conns:
            writer.close()
        await server.close()


def test_negative_snapshot_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="snapshot_interval"):
        params_from_multiplier(1, snapshot_interval=-1.0)
