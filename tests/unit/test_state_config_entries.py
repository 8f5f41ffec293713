"""Config entries in the state store: `ConfigEntryRequest` through the FSM
(indexes set by the store, CAS as Consul's state store does it, per-kind
index keys and watches), the log encoding with durations, and snapshots."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest

from proconsul.connect.config_entries import parse_config_entry
from proconsul.state import snapshot as snapshot_mod
from proconsul.state.config_entry_tables import ENTRIES_KEY, kind_key
from proconsul.state.fsm import FSM, decode_command, encode_command
from proconsul.state.store import StateStore
from proconsul.structs.commands import ApplyError, ConfigEntryOp, ConfigEntryRequest
from proconsul.structs.config_entries import (
    ServiceDefaults,
    ServiceResolver,
    encode_config_entry,
)


def entry(raw: dict[str, Any]) -> Any:
    return parse_config_entry(raw)


WEB_HTTP = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}
RESOLVER = {
    "Kind": "service-resolver",
    "Name": "api",
    "DefaultSubset": "v1",
    "ConnectTimeout": "15s",
    "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}},
}


def req(op: ConfigEntryOp, raw: dict[str, Any], cas: int = 0) -> ConfigEntryRequest:
    return ConfigEntryRequest(op=op, entry=entry(raw), cas_index=cas)


def test_upsert_stamps_indexes_and_keeps_create_index() -> None:
    store = StateStore()
    fsm = FSM(store)
    assert fsm.apply(5, req("upsert", WEB_HTTP)) is True
    row = store.config.get("service-defaults", "web")
    assert isinstance(row, ServiceDefaults)
    assert (row.create_index, row.modify_index) == (5, 5)
    assert fsm.apply(8, req("upsert", {**WEB_HTTP, "Protocol": "grpc"})) is True
    row = store.config.get("service-defaults", "web")
    assert isinstance(row, ServiceDefaults)
    assert (row.protocol, row.create_index, row.modify_index) == ("grpc", 5, 8)
    assert store.config_entry("service-defaults", "web")[0] == 8
    assert store.index(ENTRIES_KEY) == 8


def test_the_command_in_the_log_is_not_stamped() -> None:
    store = StateStore()
    command = req("upsert", WEB_HTTP)
    FSM(store).apply(5, command)
    assert command.entry.modify_index == 0


def test_identical_upsert_bumps_nothing_and_wakes_no_one() -> None:
    store = StateStore()
    fsm = FSM(store)
    fsm.apply(5, req("upsert", WEB_HTTP))
    woke: list[int] = []
    store.watches.subscribe([kind_key("service-defaults")], lambda: woke.append(1))
    assert fsm.apply(6, req("upsert", WEB_HTTP)) is True
    assert woke == [] and store.index(ENTRIES_KEY) == 5
    fsm.apply(7, req("upsert", RESOLVER))  # another kind: its own key only
    assert woke == []
    fsm.apply(9, req("delete", WEB_HTTP))
    assert woke == [1]


@pytest.mark.parametrize(
    ("existing", "cas", "expected"),
    [
        (False, 0, True),  # set-if-absent
        (True, 0, False),
        (False, 5, False),  # an index for an entry that is not there
        (True, 4, False),
        (True, 5, True),
    ],
)
def test_upsert_cas(existing: bool, cas: int, expected: bool) -> None:
    store = StateStore()
    fsm = FSM(store)
    if existing:
        fsm.apply(5, req("upsert", WEB_HTTP))
    result = fsm.apply(10, req("upsert-cas", {**WEB_HTTP, "Protocol": "grpc"}, cas))
    assert result is expected
    row = store.config.get("service-defaults", "web")
    if expected:
        assert isinstance(row, ServiceDefaults) and row.protocol == "grpc"
        assert row.modify_index == 10
    elif existing:
        assert isinstance(row, ServiceDefaults) and row.protocol == "http"
    else:
        assert row is None


@pytest.mark.parametrize(
    ("existing", "cas", "expected"),
    [(False, 0, False), (True, 4, False), (True, 0, False), (True, 5, True)],
)
def test_delete_cas(existing: bool, cas: int, expected: bool) -> None:
    store = StateStore()
    fsm = FSM(store)
    if existing:
        fsm.apply(5, req("upsert", WEB_HTTP))
    assert fsm.apply(10, req("delete-cas", WEB_HTTP, cas)) is expected
    gone = store.config.get("service-defaults", "web") is None
    assert gone == (expected or not existing)


def test_delete_answers_true_even_when_absent() -> None:
    store = StateStore()
    assert FSM(store).apply(3, req("delete", WEB_HTTP)) is True
    assert store.index(ENTRIES_KEY) == 0


def test_lists_are_per_kind_and_sorted() -> None:
    store = StateStore()
    fsm = FSM(store)
    for i, name in enumerate(("web", "api", "db"), start=1):
        fsm.apply(i, req("upsert", {**WEB_HTTP, "Name": name}))
    fsm.apply(4, req("upsert", RESOLVER))
    index, rows = store.config_entries_of_kind("service-defaults")
    assert index == 3 and [r.name for r in rows] == ["api", "db", "web"]
    index, rows = store.config_entries_of_kind("service-resolver")
    assert index == 4 and [r.name for r in rows] == ["api"]
    assert store.config_entries_of_kind("service-router") == (0, [])


def test_a_nameless_entry_is_refused_alike_everywhere() -> None:
    store = StateStore()
    bad = ConfigEntryRequest(op="upsert", entry=ServiceDefaults(name=""))
    result = FSM(store).apply(3, bad)
    assert isinstance(result, ApplyError) and "name" in result.message


def test_command_with_durations_travels_through_the_log_encoding() -> None:
    command = req("upsert", RESOLVER)
    decoded = decode_command(encode_command(command))
    assert isinstance(decoded, ConfigEntryRequest)
    assert decoded.entry == command.entry
    assert isinstance(decoded.entry, ServiceResolver)
    assert decoded.entry.connect_timeout == 15.0
    store = StateStore()
    assert FSM(store).apply_bytes(4, encode_command(command)) is True


def test_snapshot_round_trip_keeps_entries_and_indexes() -> None:
    store = StateStore()
    fsm = FSM(store)
    fsm.apply(5, req("upsert", WEB_HTTP))
    fsm.apply(6, req("upsert", RESOLVER))
    data = store.snapshot()
    other = StateStore()
    woke: list[int] = []
    other.watches.subscribe([kind_key("service-resolver")], lambda: woke.append(1))
    other.restore(data)
    assert woke == [1]
    assert [encode_config_entry(e) for e in other.config.all()] == [
        encode_config_entry(e) for e in store.config.all()
    ]
    assert other.config_entry("service-resolver", "api")[0] == 6
    assert other.snapshot() == data


def test_snapshot_bytes_from_before_config_entries_restore_empty() -> None:
    store = StateStore()
    FSM(store).apply(5, req("upsert", WEB_HTTP))
    body = snapshot_mod.decode_snapshot(store.snapshot())
    cut = snapshot_mod.SnapshotBody.__struct_fields__.index("config_entries")
    raw = msgspec.msgpack.encode(list(msgspec.structs.astuple(body)[:cut]))
    data = msgspec.msgpack.encode(
        [snapshot_mod.MAGIC, snapshot_mod.VERSION, raw, hashlib.sha256(raw).digest()]
    )
    assert snapshot_mod.decode_snapshot(data).config_entries is None
    store.restore(data)
    assert store.config.all() == []


def test_stored_rows_show_their_indexes_last_as_consul_does() -> None:
    store = StateStore()
    FSM(store).apply(5, req("upsert", {**WEB_HTTP, "Meta": {"team": "a"}}))
    row = store.config.get("service-defaults", "web")
    assert row is not None
    shown = list(encode_config_entry(row))
    assert shown[:2] == ["Kind", "Name"]
    assert shown[-3:] == ["Meta", "CreateIndex", "ModifyIndex"]
