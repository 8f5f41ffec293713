"""py-consul, unchanged, against the gossip endpoints: members, join, events, keyring."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable

import consul
import pytest
from tests.agent_process import AgentProcess

KEY = base64.b64encode(b"\x05" * 32).decode()


def test_events_members_and_join(dev_agent: AgentProcess) -> None:
    client = consul.Consul(host="127.0.0.1", port=dev_agent.http_port)
    members = client.agent.members()
    assert [m["Status"] for m in members] == [1] and members[0]["Tags"]["role"] == "consul"
    fired = client.event.fire("deploy", "v7")
    assert fired["Name"] == "deploy" and fired["Version"] == 1
    index, events = client.event.list(name="deploy")
    assert [e["ID"] for e in events] == [fired["ID"]]
    assert events[0]["Payload"] == b"v7"  # py-consul decodes the base64
    found: dict[str, object] = {}

    def block() -> None:
        found["result"] = client.event.list(index=index, wait="20s")

    waiter = threading.Thread(target=block)
    start = time.monotonic()
    waiter.start()
    later = client.event.fire("later")
    waiter.join(20)
    assert time.monotonic() - start < 10
    new_index, listed = found["result"]  # type: ignore[misc]
    assert new_index != index and listed[-1]["ID"] == later["ID"]
    with pytest.raises(consul.ConsulException):
        client.agent.join("127.0.0.1:1")


def test_keyring_through_py_consul(agent_factory: Callable[..., AgentProcess]) -> None:
    agent = agent_factory("-encrypt", KEY)
    client = consul.Consul(host="127.0.0.1", port=agent.http_port)
    listed = client.operator.keyring_list()
    assert listed[0]["Keys"] == {KEY: 1} and listed[0]["NumNodes"] == 1
    other = base64.b64encode(b"\x06" * 16).decode()
    assert client.operator.keyring_install(other) is not False
    assert client.operator.keyring_use(other) is not False
    assert client.operator.keyring_remove(KEY) is not False
    assert client.operator.keyring_list()[0]["PrimaryKeys"] == {other: 1}
    with pytest.raises(consul.ConsulException):
        client.operator.keyring_remove(other)
