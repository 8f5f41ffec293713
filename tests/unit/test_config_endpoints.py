"""Config entries through the server endpoints over a real StateStore and
LocalLog: Get and List, a bad kind or entry refused with Consul's text (400),
blocking on the kind's index, and the ACL rules per kind (a table), tokens
made through `ACLEndpoints` as an operator would."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.local_log import LocalLog

from proconsul.acl.errors import ACLDenied
from proconsul.connect.config_entries import parse_config_entry
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.server.acl_endpoints import ACLEndpoints
from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.server.endpoints import ServerEndpoints
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.acl import ACLLink, ACLPolicy, ACLToken
from proconsul.structs.commands import ConfigEntryOp, ConfigEntryRequest
from proconsul.structs.config_entries import (
    ServiceDefaults,
    ServiceSplit,
    ServiceSplitter,
)
from proconsul.structs.requests import QueryOptions, ReadRequest

MGMT = "11111111-1111-4111-8111-111111111111"


def write(op: ConfigEntryOp, raw: dict[str, Any], cas: int = 0) -> ConfigEntryRequest:
    return ConfigEntryRequest(op=op, entry=parse_config_entry(raw), cas_index=cas)


def plain() -> ServerEndpoints:
    store = StateStore()
    return ServerEndpoints(store, LocalLog(FSM(store)), "dc1")


async def acl_world() -> tuple[ServerEndpoints, ACLEndpoints]:
    """Endpoints with ACLs on (default deny) and the management token MGMT."""
    store = StateStore()
    endpoints = ServerEndpoints(store, LocalLog(FSM(store)), "dc1")
    resolver = ServerACLResolver(store, "dc1")
    endpoints.acl = resolver
    acl = ACLEndpoints(store, endpoints.log, "dc1", resolver=resolver)
    await acl.establish(MGMT)
    return endpoints, acl


async def token_with(acl: ACLEndpoints, rules: str) -> ACLToken:
    await acl.policy_set(ACLPolicy(name="p", rules=rules), caller=MGMT)
    return await acl.token_create(ACLToken(policies=[ACLLink(name="p")]), caller=MGMT)


def get(kind: str, name: str = "", token: str = "", **options: Any) -> ReadRequest:
    return ReadRequest(kind=kind, name=name, options=QueryOptions(token=token, **options))


def test_get_and_list_read_what_was_written() -> None:
    async def body() -> None:
        endpoints = plain()
        for name in ("web", "api"):
            raw = {"Kind": "service-defaults", "Name": name, "Protocol": "HTTP"}
            assert (await endpoints.write(write("upsert", raw)))[1] is True
        response = await endpoints.read("ConfigEntry.Get", get("service-defaults", "web"))
        assert isinstance(response.value, ServiceDefaults)
        assert response.value.protocol == "http"  # normalized on the way in
        assert response.meta.index == 2  # the kind's index
        assert (response.value.create_index, response.value.modify_index) == (1, 1)
        missing = await endpoints.read("ConfigEntry.Get", get("service-defaults", "db"))
        assert missing.value is None and missing.meta.index == 2
        listed = await endpoints.read("ConfigEntry.List", get("service-defaults"))
        assert [e.name for e in listed.value] == ["api", "web"]

    asyncio.run(body())


def test_unknown_kind_and_invalid_entries_are_bad_requests() -> None:
    async def body() -> None:
        endpoints = plain()
        with pytest.raises(RPCError) as err:
            await endpoints.read("ConfigEntry.List", get("service-nope"))
        assert (err.value.code, err.value.message) == (
            ErrorCode.BAD_QUERY,
            "invalid config entry kind: service-nope",
        )
        # A command that skipped the HTTP layer's parse is validated here too.
        bad = ServiceSplitter(name="web", splits=[ServiceSplit(weight=90)])
        with pytest.raises(RPCError) as err:
            await endpoints.write(ConfigEntryRequest(op="upsert", entry=bad))
        assert err.value.code == ErrorCode.BAD_QUERY
        assert err.value.message == "the sum of all split weights must be 100, not 90.000000"
        assert endpoints.store.config.all() == []
        # A router for a tcp service breaks its chain: refused as Consul refuses it.
        router = {
            "Kind": "service-router",
            "Name": "web",
            "Routes": [{"Match": {"HTTP": {"PathPrefix": "/admin"}}}],
        }
        with pytest.raises(RPCError) as err:
            await endpoints.write(write("upsert", router))
        assert err.value.code == ErrorCode.BAD_QUERY
        assert err.value.message == (
            'discovery chain "web" uses a protocol "tcp" that does not permit '
            "advanced routing or splitting behavior"
        )
        http = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}
        await endpoints.write(write("upsert", http))
        assert (await endpoints.write(write("upsert", router)))[1] is True
        # ... and so does taking the protocol away again.
        with pytest.raises(RPCError, match="does not permit advanced routing"):
            await endpoints.write(write("delete", http))

    asyncio.run(body())


def test_a_blocking_get_wakes_on_a_write_of_its_kind() -> None:
    async def body() -> None:
        endpoints = plain()
        raw = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}
        index, _ = await endpoints.write(write("upsert", raw))
        waiting = asyncio.create_task(
            endpoints.read(
                "ConfigEntry.Get",
                get("service-defaults", "web", min_index=index, max_query_time_s=5),
            )
        )
        await asyncio.sleep(0)
        await endpoints.write(write("upsert", {**raw, "Protocol": "grpc"}))
        response = await asyncio.wait_for(waiting, 5)
        assert response.value.protocol == "grpc" and response.meta.index > index

    asyncio.run(body())


# ----- ACLs ----------------------------------------------------------------------

ENTRIES: dict[str, dict[str, Any]] = {
    "proxy": {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}},
    "defaults": {"Kind": "service-defaults", "Name": "web", "Protocol": "http"},
    "splitter": {
        "Kind": "service-splitter",
        "Name": "web",
        "Splits": [{"Weight": 50}, {"Weight": 50, "Service": "api"}],
    },
    "intentions": {
        "Kind": "service-intentions",
        "Name": "web",
        "Sources": [{"Name": "api", "Action": "allow"}],
    },
}

RULES = {
    "operator": 'operator = "write"',
    "web-write": 'service "web" { policy = "write" }',
    "web-write-api-read": 'service "web" { policy = "write" }\nservice "api" { policy = "read" }',
    "web-read": 'service "web" { policy = "read" }',
    "web-intentions-write": 'service "web" { policy = "read" intentions = "write" }',
    "web-intentions-read": 'service "web" { policy = "deny" intentions = "read" }',
    "none": 'node_prefix "" { policy = "read" }',
}

# (rules, entry) -> (may write, may read); "denied" texts name the permission.
WRITE_TABLE = [
    ("operator", "proxy", True, True),
    ("none", "proxy", False, True),  # proxy-defaults: readable by anyone
    ("web-write", "proxy", False, True),
    ("web-write", "defaults", True, True),
    ("web-read", "defaults", False, True),
    ("none", "defaults", False, False),
    ("web-write", "splitter", False, True),  # also needs read on api
    ("web-write-api-read", "splitter", True, True),
    ("web-write", "intentions", False, True),  # service write: intentions read only
    ("web-read", "intentions", False, True),
    ("web-intentions-write", "intentions", True, True),
    ("web-intentions-read", "intentions", False, True),
    ("none", "intentions", False, False),
    ("operator", "intentions", False, False),
]

DENIED = {
    "proxy": "lacks permission 'operator:write'",
    "defaults": "lacks permission 'service:write' on \"web\"",
    "splitter": "lacks permission 'service:",
    "intentions": "lacks permission 'intention:write' on \"web\"",
}


@pytest.mark.parametrize(("rules", "which", "may_write", "may_read"), WRITE_TABLE)
def test_acl_rules_per_kind(rules: str, which: str, may_write: bool, may_read: bool) -> None:
    async def body() -> None:
        endpoints, acl = await acl_world()
        # Splitters need an HTTP protocol for their chain to compile.
        await endpoints.write(write("upsert", ENTRIES["proxy"]), MGMT)
        made = await token_with(acl, RULES[rules])
        secret = made.secret_id
        raw = ENTRIES[which]
        if may_write:
            assert (await endpoints.write(write("upsert", raw), secret))[1] is True
        else:
            with pytest.raises(ACLDenied) as err:
                await endpoints.write(write("upsert", raw), secret)
            assert DENIED[which] in err.value.message
            assert made.accessor_id in err.value.message
            await endpoints.write(write("upsert", raw), MGMT)
        kind, name = raw["Kind"], raw["Name"]
        if may_read:
            found = await endpoints.read("ConfigEntry.Get", get(kind, name, secret))
            assert found.value is not None and found.value.name == name
        else:
            with pytest.raises(ACLDenied):
                await endpoints.read("ConfigEntry.Get", get(kind, name, secret))
        listed = await endpoints.read("ConfigEntry.List", get(kind, token=secret))
        assert [e.name for e in listed.value] == ([name] if may_read else [])
        assert listed.meta.results_filtered_by_acls is (not may_read)
        # Deleting needs the entry's own right; like Consul, not read on the
        # services a stored splitter points at.
        if may_write or (rules, which) == ("web-write", "splitter"):
            assert (await endpoints.write(write("delete", raw), secret))[1] is True
        else:
            with pytest.raises(ACLDenied):
                await endpoints.write(write("delete", raw), secret)

    asyncio.run(body())
