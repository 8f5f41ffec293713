"""State store snapshot/restore: every query answers the same after a round trip,
the bytes are deterministic, corruption is refused, and watchers wake."""

from __future__ import annotations

import functools
from typing import Any

import msgspec
import pytest

from proconsul.state import store as store_mod
from proconsul.state.fsm import FSM, encode_command
from proconsul.state.snapshot import SnapshotError
from proconsul.state.store import StateStore
from proconsul.structs.catalog import HealthCheck, KVEntry, NodeService
from proconsul.structs.commands import Command, DeregisterRequest, KVSRequest, RegisterRequest


def populated() -> StateStore:
    store = StateStore()
    fsm = FSM(store)
    commands: list[Command] = []
    for n in range(4):
        node = f"node-{n}"
        commands.append(
            RegisterRequest(
                node=node,
                address=f"10.0.0.{n}",
                id=f"id-{n}",
                node_meta={"rack": f"r{n % 2}", "zone": "a"},
                tagged_addresses={"lan": f"10.0.0.{n}"},
                check=HealthCheck(check_id="serfHealth", name="Serf", status="passing"),
            )
        )
        for svc in ("web", "api"):
            commands.append(
                RegisterRequest(
                    node=node,
                    address=f"10.0.0.{n}",
                    service=NodeService(
                        id=f"{svc}-{n}", service=svc, tags=[f"v{n}", "x"], port=8000 + n
                    ),
                    checks=[
                        HealthCheck(
                            check_id=f"{svc}-{n}-alive",
                            name="alive",
                            status="critical" if n == 1 else "passing",
                            service_id=f"{svc}-{n}",
                        )
                    ],
                )
            )
    # A rename (the old instance row is dropped), a removed service, a removed node.
    commands.append(
        RegisterRequest(
            node="node-0", address="10.0.0.0", service=NodeService(id="web-0", service="www")
        )
    )
    commands.append(DeregisterRequest(node="node-2", service_id="api-2"))
    commands.append(DeregisterRequest(node="node-3"))
    for i in range(20):
        commands.append(
            KVSRequest(op="set", dir_ent=KVEntry(key=f"app/{i % 3}/k{i}", value=b"v%d" % i))
        )
    commands.append(KVSRequest(op="set", dir_ent=KVEntry(key="flagged", value=None, flags=7)))
    commands.append(KVSRequest(op="delete", dir_ent=KVEntry(key="app/0/k3")))
    commands.append(KVSRequest(op="delete-tree", dir_ent=KVEntry(key="app/1/")))
    commands.append(KVSRequest(op="cas", dir_ent=KVEntry(key="app/2/k2", value=b"c")))  # fails
    for index, command in enumerate(commands, start=1):
        fsm.apply_bytes(index, encode_command(command))
    return store


def every_query(store: StateStore) -> dict[str, Any]:
    """The answer to every read the store offers, for every name it knows and some it doesn't."""
    nodes = [*store.nodes, "node-3", "ghost"]
    services = [*store.instances, "api", "www", "ghost"]
    prefixes = ["", "app/", "app/0/", "app/1/", "app/2/", "fl", "none/"]
    out: dict[str, Any] = {
        "catalog_nodes": store.catalog_nodes(),
        "catalog_services": store.catalog_services(),
        "last_index": store.last_index,
    }
    for key in [*store.indexes, "nodes", "services", "checks", "kvs", "node:ghost"]:
        out[f"index {key}"] = store.index(key)
    for node in nodes:
        out[f"catalog_node {node}"] = store.catalog_node(node)
        out[f"node_checks {node}"] = store.node_checks(node)
    for name in services:
        out[f"catalog_service {name}"] = store.catalog_service(name)
        out[f"health_service {name}"] = store.health_service(name)
        out[f"service_checks {name}"] = store.service_checks(name)
    for state in ("any", "passing", "critical", "warning"):
        out[f"checks_in_state {state}"] = store.checks_in_state(state)
    for key in [*store.kvs, "app/0/k3", "app/1/k1", "missing"]:
        out[f"kv_get {key}"] = store.kv_get(key)
    for prefix in prefixes:
        out[f"kv_list {prefix}"] = store.kv_list(prefix)
        out[f"kv_keys {prefix}"] = store.kv_keys(prefix, "")
        out[f"kv_keys/ {prefix}"] = store.kv_keys(prefix, "/")
    # Structs compare by value; encode to compare nested rows field by field.
    return {k: msgspec.msgpack.encode(v) for k, v in out.items()}


def test_every_query_is_equal_after_restore() -> None:
    original = populated()
    restored = StateStore()
    restored.restore(original.snapshot())
    assert every_query(restored) == every_query(original)


def test_snapshot_bytes_are_deterministic() -> None:
    original = populated()
    data = original.snapshot()
    restored = StateStore()
    restored.restore(data)
    assert restored.snapshot() == data
    assert populated().snapshot() == data  # independent replica, same commands


def test_restored_store_keeps_applying_like_the_original() -> None:
    original, restored = populated(), StateStore()
    restored.restore(original.snapshot())
    more: list[Command] = [
        RegisterRequest(
            node="node-1",
            address="10.0.0.1",
            service=NodeService(id="api-1", service="api", tags=["new"]),
        ),
        KVSRequest(op="set", dir_ent=KVEntry(key="app/0/k0", value=b"again")),
        KVSRequest(op="cas", dir_ent=KVEntry(key="app/2/k2", value=b"c", modify_index=0)),
        DeregisterRequest(node="node-0", check_id="serfHealth"),
    ]
    start = original.last_index + 1
    for store in (original, restored):
        fsm = FSM(store)
        for offset, command in enumerate(more):
            fsm.apply_bytes(start + offset, encode_command(command))
    assert every_query(restored) == every_query(original)
    assert restored.snapshot() == original.snapshot()


def test_restore_replaces_everything() -> None:
    store = populated()
    store.restore(StateStore().snapshot())
    assert store.nodes == {} and store.kvs == {} and store.instances == {}
    assert store.last_index == 0
    assert store.kv_list("app/") == (0, [])


def test_tombstones_and_floor_survive(monkeypatch: pytest.MonkeyPatch) -> None:
    original = StateStore()
    fsm = FSM(original)
    limit = 5
    monkeypatch.setattr(store_mod, "_MAX_TOMBSTONES", limit)
    index = 0
    for i in range(limit + 3):
        index += 1
        fsm.apply_bytes(index, encode_command(KVSRequest(op="set", dir_ent=KVEntry(key=f"t{i}"))))
        index += 1
        delete = KVSRequest(op="delete", dir_ent=KVEntry(key=f"t{i}"))
        fsm.apply_bytes(index, encode_command(delete))
    restored = StateStore()
    restored.restore(original.snapshot())
    assert restored._tombstone_floor == original._tombstone_floor > 0
    assert restored.kv_list("t") == original.kv_list("t")
    assert restored.kv_get("t7") == original.kv_get("t7")


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0x01]) + b[len(b) // 2 + 1 :],
        lambda b: b"",
        lambda b: b"\x00" * len(b),
        lambda b: b + b"trailing",
        lambda b: b.replace(b"PCSS", b"PCSX", 1),
    ],
    ids=["truncated", "bit-flip", "empty", "zeros", "trailing", "magic"],
)
def test_corrupt_snapshot_is_refused_and_state_kept(damage: Any) -> None:
    data = populated().snapshot()
    store = populated()
    before = every_query(store)
    with pytest.raises(SnapshotError):
        store.restore(damage(data))
    assert every_query(store) == before


def test_every_byte_flip_is_detected() -> None:
    store = StateStore()
    FSM(store).apply_bytes(1, encode_command(KVSRequest(op="set", dir_ent=KVEntry(key="k"))))
    data = store.snapshot()
    for position in range(len(data)):
        damaged = data[:position] + bytes([data[position] ^ 0x40]) + data[position + 1 :]
        with pytest.raises(SnapshotError):
            StateStore().restore(damaged)


def test_unknown_version_is_refused() -> None:
    from proconsul.state import snapshot as snap

    body = msgspec.msgpack.decode(populated().snapshot())
    body[1] = snap.VERSION + 1
    with pytest.raises(SnapshotError, match="version"):
        StateStore().restore(msgspec.msgpack.encode(body))


def test_restore_wakes_every_watcher() -> None:
    store = populated()
    woken: list[str] = []
    keys = ["kvs", "nodes", "services", "checks", "service:web", "node:node-0"]
    for key in keys:
        store.watches.subscribe([key], functools.partial(woken.append, key))
    store.restore(StateStore().snapshot())
    assert sorted(woken) == sorted(keys)


def test_fsm_refuses_undecodable_command_without_touching_the_store() -> None:
    store = StateStore()
    fsm = FSM(store)
    result = fsm.apply_bytes(5, b"\xc1not msgpack")
    assert result is not None and "cannot decode" in str(result)
    assert store.last_index == 0
