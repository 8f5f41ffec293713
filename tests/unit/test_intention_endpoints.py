"""The "Intention.*" reads over a real StateStore and LocalLog: rows from the
stored service-intentions entries, matches in evaluation order, exact and
by-ID gets, the check with its default, ACL filtering row by row (read on
either end), and the L7-needs-HTTP refusal of a write."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.local_log import LocalLog

from proconsul.acl.errors import ACLDenied
from proconsul.connect.config_entries import parse_config_entry
from proconsul.connect.intention_writes import create_legacy, source_of
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.server.acl_endpoints import ACLEndpoints
from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.server.endpoints import ServerEndpoints
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.acl import ACLLink, ACLPolicy, ACLToken
from proconsul.structs.commands import ConfigEntryRequest
from proconsul.structs.config_entries import Intention
from proconsul.structs.intentions import IntentionQuery
from proconsul.structs.requests import QueryOptions, ReadRequest

MGMT = "22222222-2222-4222-8222-222222222222"


def entry(destination: str, *sources: dict[str, Any]) -> ConfigEntryRequest:
    raw = {"Kind": "service-intentions", "Name": destination, "Sources": list(sources)}
    return ConfigEntryRequest(op="upsert", entry=parse_config_entry(raw))


def query(token: str = "", filter_text: str = "", **fields: Any) -> ReadRequest:
    return ReadRequest(
        intention=IntentionQuery(**fields),
        options=QueryOptions(token=token, filter=filter_text),
    )


async def seeded(acl: bool = False) -> tuple[ServerEndpoints, ACLEndpoints | None]:
    store = StateStore()
    endpoints = ServerEndpoints(store, LocalLog(FSM(store)), "dc1")
    acl_endpoints = None
    if acl:
        resolver = ServerACLResolver(store, "dc1", default_policy="deny")
        endpoints.acl = resolver
        acl_endpoints = ACLEndpoints(store, endpoints.log, "dc1", resolver=resolver)
        await acl_endpoints.establish(MGMT)
    writes = [
        entry("api", {"Name": "web", "Action": "allow"}, {"Name": "*", "Action": "deny"}),
        entry("*", {"Name": "web", "Action": "deny"}),
        entry("db", {"Name": "api", "Action": "allow"}),
    ]
    for command in writes:
        assert (await endpoints.write(command, MGMT))[1] is True
    return endpoints, acl_endpoints


def pairs(rows: list[Intention]) -> list[tuple[str, str, str, int]]:
    return [(r.source_name, r.destination_name, r.action, r.precedence) for r in rows]


def test_list_and_match_in_evaluation_order() -> None:
    async def body() -> None:
        endpoints, _ = await seeded()
        listed = await endpoints.read("Intention.List", query())
        assert pairs(listed.value) == [
            ("api", "db", "allow", 9),
            ("web", "api", "allow", 9),
            ("*", "api", "deny", 8),
            ("web", "*", "deny", 6),
        ]
        assert listed.meta.index == 3
        # Computed once per change: the same rows object until a write.
        again = await endpoints.read("Intention.List", query())
        assert again.value is listed.value
        by_destination = await endpoints.read(
            "Intention.Match", query(match_by="destination", names=["api", "db"])
        )
        assert pairs(by_destination.value["api"]) == [
            ("web", "api", "allow", 9),
            ("*", "api", "deny", 8),
            ("web", "*", "deny", 6),  # a wildcard destination matches every name
        ]
        assert [r.source_name for r in by_destination.value["db"]] == ["api", "web"]
        by_source = await endpoints.read("Intention.Match", query(match_by="source", names=["web"]))
        assert pairs(by_source.value["web"]) == [
            ("web", "api", "allow", 9),
            ("*", "api", "deny", 8),
            ("web", "*", "deny", 6),
        ]
        filtered = await endpoints.read("Intention.List", query(filter_text='Action == "deny"'))
        assert [r.source_name for r in filtered.value] == ["*", "web"]
        # Fields the JSON leaves out when empty are still there for a filter.
        unnamed = await endpoints.read("Intention.List", query(filter_text='Description == ""'))
        assert len(unnamed.value) == 4

    asyncio.run(body())


def test_get_exact_by_id_and_check() -> None:
    async def body() -> None:
        endpoints, _ = await seeded()
        found = await endpoints.read("Intention.Get", query(source="web", destination="api"))
        assert found.value is not None and found.value.action == "allow"
        missing = await endpoints.read("Intention.Get", query(source="db", destination="api"))
        assert missing.value is None
        legacy = create_legacy(
            None, "billing", source_of(Intention("web", "billing", "allow"), legacy_id="id-7")
        )
        command = ConfigEntryRequest(op="upsert", entry=legacy, intentions_api=True)
        assert (await endpoints.write(command))[1] is True
        by_id = await endpoints.read("Intention.Get", query(id="id-7"))
        assert (by_id.value.source_name, by_id.value.destination_name) == ("web", "billing")
        # The same entry through a config write: as in Consul, the legacy ID is dropped.
        assert (await endpoints.write(ConfigEntryRequest(op="upsert", entry=legacy)))[1] is True
        gone = await endpoints.read("Intention.Get", query(id="id-7"))
        assert gone.value is None
        by_name = await endpoints.read("Intention.Get", query(source="web", destination="billing"))
        assert by_name.value is not None and by_name.value.id == ""

        async def allowed(source: str, destination: str) -> bool:
            q = query(source=source, destination=destination)
            result: bool = (await endpoints.read("Intention.Check", q)).value.allowed
            return result

        assert await allowed("web", "api") is True  # exact allow beats the * deny
        assert await allowed("db", "api") is False  # * -> api deny
        assert await allowed("web", "cache") is False  # web -> * deny
        assert await allowed("db", "cache") is True  # no match, ACLs off: allow

    asyncio.run(body())


def test_acl_filtering_and_refusals() -> None:
    async def body() -> None:
        endpoints, acl = await seeded(acl=True)
        assert acl is not None
        rules = 'service "web" { policy = "read" intentions = "read" }'
        await acl.policy_set(ACLPolicy(name="web-ixn", rules=rules), caller=MGMT)
        made = await acl.token_create(ACLToken(policies=[ACLLink(name="web-ixn")]), caller=MGMT)
        secret = made.secret_id
        listed = await endpoints.read("Intention.List", query(secret))
        # Readable through either end: web is the source of two, the other two are dropped.
        assert pairs(listed.value) == [("web", "api", "allow", 9), ("web", "*", "deny", 6)]
        assert listed.meta.results_filtered_by_acls is True
        full = await endpoints.read("Intention.List", query(MGMT))
        assert len(full.value) == 4 and full.meta.results_filtered_by_acls is False
        found = await endpoints.read(
            "Intention.Get", query(secret, source="web", destination="api")
        )
        assert found.value is not None
        with pytest.raises(ACLDenied) as err:
            await endpoints.read("Intention.Get", query(secret, source="api", destination="db"))
        assert made.accessor_id in err.value.message
        with pytest.raises(ACLDenied):
            await endpoints.read(
                "Intention.Match", query(secret, match_by="destination", names=["api"])
            )
        mine = await endpoints.read(
            "Intention.Match", query(secret, match_by="source", names=["web"])
        )
        assert len(mine.value["web"]) == 3
        # A check needs service:read on the destination, and says only yes or no.
        with pytest.raises(ACLDenied):
            await endpoints.read("Intention.Check", query(secret, source="web", destination="api"))
        checked = await endpoints.read(
            "Intention.Check", query(secret, source="cache", destination="web")
        )
        assert checked.value.allowed is False  # no match: default deny
        # Writing needs intentions write on the destination.
        with pytest.raises(ACLDenied) as err:
            await endpoints.write(entry("web", {"Name": "api", "Action": "allow"}), secret)
        assert "lacks permission 'intention:write' on \"web\"" in err.value.message

    asyncio.run(body())


def test_l7_permissions_need_an_http_destination() -> None:
    async def body() -> None:
        endpoints, _ = await seeded()
        l7 = entry(
            "api",
            {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/v1"}}]},
        )
        with pytest.raises(RPCError) as err:
            await endpoints.write(l7)
        assert (err.value.code, err.value.message) == (
            ErrorCode.BAD_QUERY,
            'service "api" has protocol "tcp", which is incompatible with L7 intentions '
            "permissions",
        )
        defaults = parse_config_entry(
            {"Kind": "service-defaults", "Name": "api", "Protocol": "http"}
        )
        await endpoints.write(ConfigEntryRequest(op="upsert", entry=defaults))
        assert (await endpoints.write(l7))[1] is True
        matched = await endpoints.read(
            "Intention.Match", query(match_by="destination", names=["api"])
        )
        assert matched.value["api"][0].permissions[0].http.path_prefix == "/v1"
        # Nor may the destination stop speaking http under it.
        tcp = parse_config_entry({"Kind": "service-defaults", "Name": "api", "Protocol": "tcp"})
        for command in (
            ConfigEntryRequest(op="upsert", entry=tcp),
            ConfigEntryRequest(op="delete", entry=tcp),
        ):
            with pytest.raises(RPCError) as err:
                await endpoints.write(command)
            assert err.value.message.startswith('service "api" has protocol "tcp"')

    asyncio.run(body())
