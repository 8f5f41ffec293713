"""The data dir's copy of API registrations (agent/persisted.py): one private
file per service and check, read back whole, corrupt files moved aside."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from proconsul.agent.persisted import CORRUPT_SUFFIX, PersistedRegistrations, file_name
from proconsul.structs.catalog import HealthCheck, NodeService
from proconsul.structs.definitions import CheckDefinition
from proconsul.structs.duration import Duration


def test_round_trip_private_files(tmp_path: Path) -> None:
    store = PersistedRegistrations(str(tmp_path))
    service = NodeService(id="web-1", service="web", port=80, tags=["v1"])
    store.save_service(service, "secret-token", sidecar_for="")
    row = HealthCheck(node="n1", check_id="web-ttl", name="t", status="passing", output="ok")
    store.save_check(row, CheckDefinition(ttl=Duration(30)), "check-token")
    loaded = store.load()
    assert [(s.service, s.token) for s in loaded.services] == [(service, "secret-token")]
    assert [(c.check, c.definition.ttl, c.token) for c in loaded.checks] == [
        (row, 30.0, "check-token")
    ]
    for directory in ("services", "checks"):
        assert stat.S_IMODE((tmp_path / directory).stat().st_mode) == 0o700
        for path in (tmp_path / directory).iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "secret-token" not in repr(loaded.services[0])
    assert "check-token" not in repr(loaded.checks[0])


def test_remove_and_missing_are_fine(tmp_path: Path) -> None:
    store = PersistedRegistrations(str(tmp_path))
    store.save_service(NodeService(id="a/b c", service="x"), "")
    assert os.listdir(tmp_path / "services") == [file_name("a/b c")]
    store.remove_service("a/b c")
    store.remove_service("a/b c")
    store.remove_check("never")
    assert store.load().services == []


def test_corrupt_file_is_moved_aside(tmp_path: Path) -> None:
    store = PersistedRegistrations(str(tmp_path))
    store.save_service(NodeService(id="good", service="g"), "")
    (tmp_path / "services" / "bad").write_bytes(b'{"Service": 42}')
    found = store.load()
    assert [s.service.id for s in found.services] == ["good"]
    assert (tmp_path / "services" / ("bad" + CORRUPT_SUFFIX)).exists()
    assert store.load().services == found.services  # the moved file is not read again


def test_without_data_dir_nothing_is_kept(tmp_path: Path) -> None:
    store = PersistedRegistrations("")
    store.save_service(NodeService(id="x", service="x"), "t")
    assert store.load().services == [] and list(tmp_path.iterdir()) == []
