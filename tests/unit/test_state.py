"""State store and FSM: rows, indexes, watch keys, KV CAS — no I/O."""

from __future__ import annotations

import msgspec
import pytest

from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.catalog import HealthCheck, KVEntry, NodeService
from proconsul.structs.commands import ApplyError, DeregisterRequest, KVSRequest, RegisterRequest


class Harness:
    def __init__(self) -> None:
        self.store = StateStore()
        self.fsm = FSM(self.store)
        self.index = 0

    def apply(self, command: object) -> object:
        self.index += 1
        # Round-trip as the log does, so the store never shares the test's objects.
        data = msgspec.msgpack.encode(command)
        decoded = msgspec.msgpack.decode(data, type=type(command))
        return self.fsm.apply(self.index, decoded)

    def register(self, node: str, service: str, sid: str = "", **check: str) -> object:
        checks = []
        if check:
            checks.append(
                HealthCheck(
                    check_id=check.get("check_id", f"{sid or service}-check"),
                    name="c",
                    status=check.get("status", "passing"),
                    service_id=sid or service,
                )
            )
        return self.apply(
            RegisterRequest(
                node=node,
                address="10.0.0.1",
                service=NodeService(id=sid or service, service=service, tags=["v1"]),
                checks=checks,
            )
        )


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_register_sets_indexes_and_rows(h: Harness) -> None:
    assert h.register("n1", "web", status="passing") is None
    index, rows = h.store.health_service("web")
    assert index == 1
    assert len(rows) == 1
    assert rows[0].service.create_index == 1
    assert rows[0].checks[0].service_name == "web"
    assert rows[0].checks[0].service_tags == ["v1"]


def test_identical_reregistration_changes_nothing(h: Harness) -> None:
    h.register("n1", "web", status="passing")
    fired: list[int] = []
    h.store.watches.subscribe(["service:web"], lambda: fired.append(1))
    h.register("n1", "web", status="passing")
    assert h.store.index("service:web") == 1
    assert fired == []


def test_check_status_change_bumps_service_index_and_wakes(h: Harness) -> None:
    h.register("n1", "web", status="passing")
    fired: list[int] = []
    h.store.watches.subscribe(["service:web"], lambda: fired.append(1))
    h.register("n1", "web", status="critical")
    assert h.store.index("service:web") == 2
    assert fired == [1]
    _, rows = h.store.health_service("web")
    assert rows[0].checks[0].status == "critical"
    assert rows[0].checks[0].create_index == 1
    assert rows[0].checks[0].modify_index == 2


def test_other_service_change_does_not_touch_index(h: Harness) -> None:
    h.register("n1", "web", status="passing")
    h.register("n1", "api", status="passing")
    assert h.store.index("service:web") == 1
    assert h.store.index("service:api") == 2


def test_node_check_affects_every_service_on_node(h: Harness) -> None:
    h.register("n1", "web")
    h.register("n1", "api")
    h.apply(
        RegisterRequest(
            node="n1",
            address="10.0.0.1",
            check=HealthCheck(check_id="serfHealth", name="Serf", status="critical"),
        )
    )
    assert h.store.index("service:web") == 3
    assert h.store.index("service:api") == 3
    _, rows = h.store.health_service("api")
    assert [c.check_id for c in rows[0].checks] == ["serfHealth"]


def test_check_for_unknown_service_is_refused(h: Harness) -> None:
    result = h.apply(
        RegisterRequest(
            node="n1",
            address="10.0.0.1",
            check=HealthCheck(check_id="x", name="x", service_id="nope"),
        )
    )
    assert isinstance(result, ApplyError)
    assert "Unknown service ID 'nope'" in result.message


def test_missing_address_is_refused(h: Harness) -> None:
    assert h.apply(RegisterRequest(node="n1")) == ApplyError("Must provide address")


def test_deregister_service_removes_its_checks(h: Harness) -> None:
    h.register("n1", "web", status="passing")
    h.apply(DeregisterRequest(node="n1", service_id="web"))
    index, rows = h.store.health_service("web")
    assert rows == []
    assert index == 2
    assert h.store.checks["n1"] == {}
    assert "web" not in h.store.catalog_services()[1]


def test_deregister_node_removes_everything(h: Harness) -> None:
    h.register("n1", "web", status="passing")
    h.apply(DeregisterRequest(node="n1"))
    assert h.store.nodes == {}
    assert h.store.catalog_services()[1] == {}


def test_catalog_services_merges_tags(h: Harness) -> None:
    h.register("n1", "web", "web1")
    h.apply(
        RegisterRequest(
            node="n2",
            address="10.0.0.2",
            service=NodeService(id="web2", service="web", tags=["v2", "v1"]),
        )
    )
    assert h.store.catalog_services()[1] == {"web": ["v1", "v2"]}


def kv(h: Harness, op: str, key: str, value: bytes = b"", index: int = 0) -> object:
    return h.apply(
        KVSRequest(op=op, dir_ent=KVEntry(key=key, value=value, modify_index=index))  # type: ignore[arg-type]
    )


def test_kv_cas_semantics(h: Harness) -> None:
    assert kv(h, "cas", "a", b"1", 0) is True  # cas=0: only if absent
    assert kv(h, "cas", "a", b"2", 0) is False
    _, entry = h.store.kv_get("a")
    assert entry is not None and entry.value == b"1"
    assert kv(h, "cas", "a", b"3", 99) is False
    assert kv(h, "cas", "a", b"3", entry.modify_index) is True
    _, entry2 = h.store.kv_get("a")
    assert entry2 is not None
    assert entry2.value == b"3"
    assert entry2.create_index == entry.create_index
    assert kv(h, "delete-cas", "a", index=entry.modify_index) is False
    assert kv(h, "delete-cas", "a", index=entry2.modify_index) is True
    assert h.store.kv_get("a")[1] is None


def test_kv_prefix_keys_and_tombstone_index(h: Harness) -> None:
    for key in ("app/a", "app/b/c", "app/b/d", "other"):
        kv(h, "set", key, b"x")
    assert h.store.kv_keys("app/", "/")[1] == ["app/a", "app/b/"]
    assert h.store.kv_keys("app/", "")[1] == ["app/a", "app/b/c", "app/b/d"]
    before, _ = h.store.kv_list("app/")
    kv(h, "delete", "app/a")
    after, entries = h.store.kv_list("app/")
    assert after > before, "a deletion must move the prefix's index"
    assert [e.key for e in entries] == ["app/b/c", "app/b/d"]
    kv(h, "delete-tree", "app/b/")
    assert h.store.kv_list("app/")[1] == []
    assert [e.key for e in h.store.kv_list("")[1]] == ["other"]


def test_blocking_wait_default_cap_and_jitter() -> None:
    import random

    from proconsul.server.read_options import wait_with_jitter_s
    from proconsul.structs.requests import DEFAULT_WAIT_S, MAX_WAIT_S

    rng = random.Random(7)
    for requested, base in ((0.0, DEFAULT_WAIT_S), (30.0, 30.0), (3600.0, MAX_WAIT_S)):
        waits = [wait_with_jitter_s(requested, rng) for _ in range(200)]
        assert min(waits) >= base
        assert max(waits) <= base + base / 16
        assert max(waits) - min(waits) > base / 32  # jitter is really applied
