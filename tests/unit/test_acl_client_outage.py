"""Client-side ACL resolution through a server outage, and the agent recovery token.

- `ClientACLResolver` logs an outage once (a warning at the first failed
  lookup), stays quiet while it lasts, and logs at info when a lookup
  succeeds again; a second outage warns again. Secrets never reach the log.
- The agent recovery token's authorizer grants `agent` write on this node and
  node read, and nothing else (deny-all default).

The server side is the real one (make_world/in_process from
test_endpoints_acl); only the socket is skipped.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from tests.unit.test_endpoints_acl import MGMT, READ_API, in_process, make_world

from proconsul.agent.acl_client import ClientACLResolver
from proconsul.agent.acl_setup import agent_recovery_authorizer


def test_outage_is_logged_once_and_its_end_at_info(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        world = await make_world()
        reader = await world.token(READ_API, "read-api")
        up = in_process(world)
        servers_up = [True]

        async def call_raw(method: str, payload: bytes, timeout_s: float) -> bytes:
            if not servers_up[0]:
                raise ConnectionError("No known Consul servers")
            return await up(method, payload, timeout_s)

        client = ClientACLResolver(call_raw, "dc1", ttl_s=0.0)
        await client.resolve(reader)
        servers_up[0] = False
        for _ in range(20):
            await client.resolve(reader)
            await client.resolve(MGMT)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "down_policy extend-cache" in warnings[0].getMessage()
        assert client.stats()["down"] == 40
        servers_up[0] = True
        await client.resolve(reader)
        await client.resolve(reader)
        again = [r for r in caplog.records if "servers reachable again" in r.getMessage()]
        assert [r.levelno for r in again] == [logging.INFO]
        servers_up[0] = False
        await client.resolve(reader)
        await client.resolve(reader)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2  # a new outage is news again
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert reader not in text and MGMT not in text

    with caplog.at_level(logging.INFO, logger="proconsul.acl"):
        asyncio.run(body())


def test_agent_recovery_authorizer_grants_agent_endpoints_only() -> None:
    auth = agent_recovery_authorizer("node-1")
    assert auth.agent_write("node-1") and auth.agent_read("node-1")
    assert not auth.agent_read("node-2")
    assert auth.node_read("node-2") and not auth.node_write("node-1")
    assert not auth.key_read("x") and not auth.service_read("web")
    assert not auth.operator_read() and not auth.acl_read() and not auth.keyring_read()


def test_agent_recovery_rules_quote_odd_node_names() -> None:
    auth = agent_recovery_authorizer('we"ird\\node')
    assert auth.agent_write('we"ird\\node')
    assert not auth.agent_write("we")
