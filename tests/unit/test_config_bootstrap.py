"""The `config-entries` leader duty over a real StateStore and LocalLog: each
bootstrap entry is written only where absent, a user's change survives the
next term, and a term with nothing to do adds nothing to the log."""

from __future__ import annotations

import asyncio

import pytest
from tests.local_log import LocalLog

from proconsul.connect.config_entries import ConfigEntryError, parse_config_entry
from proconsul.server.config_bootstrap import bootstrap_entries, write_bootstrap_entries
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.commands import ConfigEntryRequest
from proconsul.structs.config_entries import ProxyDefaults, ServiceDefaults

BOOTSTRAP = [
    {"kind": "proxy-defaults", "name": "global", "config": {"protocol": "http"}},
    {"Kind": "service-defaults", "Name": "web", "Protocol": "http"},
]


def test_entries_are_written_once_and_a_user_change_survives_a_new_term() -> None:
    async def body() -> None:
        store = StateStore()
        log = LocalLog(FSM(store))
        entries = bootstrap_entries(BOOTSTRAP)
        assert await write_bootstrap_entries(entries, store, log.apply) == 2
        proxy = store.config.get("proxy-defaults", "global")
        assert isinstance(proxy, ProxyDefaults) and proxy.config == {"protocol": "http"}
        # A user changes one; the next leader's duty leaves it alone and logs nothing.
        changed = parse_config_entry(
            {"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"}
        )
        await log.apply(ConfigEntryRequest(op="upsert", entry=changed))
        before = log.last_index
        assert await write_bootstrap_entries(entries, store, log.apply) == 0
        assert log.last_index == before
        web = store.config.get("service-defaults", "web")
        assert isinstance(web, ServiceDefaults) and web.protocol == "grpc"
        # Deleted by a user: the next term writes it again, as Consul does.
        await log.apply(ConfigEntryRequest(op="delete", entry=changed))
        assert await write_bootstrap_entries(entries, store, log.apply) == 1
        web = store.config.get("service-defaults", "web")
        assert isinstance(web, ServiceDefaults) and web.protocol == "http"

    asyncio.run(body())


def test_a_write_that_lost_the_race_does_not_overwrite() -> None:
    async def body() -> None:
        store = StateStore()
        log = LocalLog(FSM(store))
        entries = bootstrap_entries(BOOTSTRAP[1:])
        ours = parse_config_entry({"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"})

        async def late_write(command: object) -> object:
            # Another leader's entry commits first, between the look and the write.
            await log.apply(ConfigEntryRequest(op="upsert", entry=ours))
            return await log.apply(command)  # type: ignore[arg-type]

        assert await write_bootstrap_entries(entries, store, late_write) == 0  # type: ignore[arg-type]
        web = store.config.get("service-defaults", "web")
        assert isinstance(web, ServiceDefaults) and web.protocol == "tcp"

    asyncio.run(body())


def test_a_bad_entry_is_refused_when_parsed() -> None:
    with pytest.raises(ConfigEntryError, match="invalid config entry kind: nope"):
        bootstrap_entries([{"kind": "nope", "name": "x"}])
