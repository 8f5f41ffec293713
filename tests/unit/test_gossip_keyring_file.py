"""The keyring file: seeding from `encrypt`, the file winning afterwards, 0600, atomic."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from proconsul.gossip.crypto import Keyring, KeyringError
from proconsul.gossip.keyring_file import (
    KeyringFileError,
    KeyringStore,
    lan_keyring_path,
    load_lan_keyring,
)

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 16).decode()
K3 = base64.b64encode(b"3" * 24).decode()


def test_encrypt_seeds_an_empty_keyring_file_0600(tmp_path: Path) -> None:
    loaded = load_lan_keyring(K1, str(tmp_path), in_memory=False)
    path = Path(lan_keyring_path(str(tmp_path)))
    assert path == tmp_path / "serf" / "local.keyring"
    assert json.loads(path.read_text()) == [K1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert loaded.keyring is not None and loaded.keyring.to_list() == [K1]
    assert loaded.warning is None


def test_existing_file_wins_and_a_different_encrypt_warns_without_the_key(
    tmp_path: Path,
) -> None:
    store = KeyringStore(lan_keyring_path(str(tmp_path)))
    store.save(Keyring.from_list([K2, K1]))
    warnings: list[str] = []
    loaded = load_lan_keyring(K3, str(tmp_path), in_memory=False, warn=warnings.append)
    assert loaded.keyring is not None and loaded.keyring.to_list() == [K2, K1]
    assert len(warnings) == 1 and "not in the keyring file" in warnings[0]
    assert K3 not in warnings[0] and K2 not in warnings[0]
    # In the ring but not primary: still the file's order, still a warning.
    loaded = load_lan_keyring(K1, str(tmp_path), in_memory=False, warn=warnings.append)
    assert loaded.keyring is not None and loaded.keyring.primary == base64.b64decode(K2)
    assert "not the primary key" in (loaded.warning or "")
    # The primary itself: silence.
    assert load_lan_keyring(K2, str(tmp_path), in_memory=False).warning is None


def test_file_without_encrypt_still_encrypts(tmp_path: Path) -> None:
    KeyringStore(lan_keyring_path(str(tmp_path))).save(Keyring.from_list([K1]))
    loaded = load_lan_keyring("", str(tmp_path), in_memory=False)
    assert loaded.keyring is not None and loaded.keyring.to_list() == [K1]


def test_in_memory_writes_nothing(tmp_path: Path) -> None:
    loaded = load_lan_keyring(K1, str(tmp_path), in_memory=True)
    assert loaded.keyring is not None and not loaded.store.persistent
    loaded.store.save(loaded.keyring)
    assert not (tmp_path / "serf").exists()
    assert load_lan_keyring("", str(tmp_path), in_memory=False).keyring is None
    assert load_lan_keyring(K1, "", in_memory=False).store.path is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not json", "not valid JSON"),
        (b'{"a": 1}', "JSON list"),
        (b"[]", "no keys present"),
        (b'["%%%"]', "not valid base64"),
        (json.dumps([base64.b64encode(b"x" * 10).decode()]).encode(), "key size"),
    ],
)
def test_bad_files_are_refused_naming_the_file(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = Path(lan_keyring_path(str(tmp_path)))
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(KeyringFileError) as info:
        load_lan_keyring(K1, str(tmp_path), in_memory=False)
    assert problem in str(info.value) and str(path) in str(info.value)


def test_bad_encrypt_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyringError):
        load_lan_keyring("short", str(tmp_path), in_memory=False)


def test_save_is_atomic_and_keeps_the_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = KeyringStore(lan_keyring_path(str(tmp_path)))
    ring = Keyring.from_list([K1])
    store.save(ring)
    ring.install(base64.b64decode(K2))
    ring.use(base64.b64decode(K2))
    store.save(ring)
    assert json.loads(Path(store.path or "").read_text()) == [K2, K1]
    assert os.listdir(tmp_path / "serf") == ["local.keyring"]  # no temp files left
    assert stat.S_IMODE(os.stat(store.path or "").st_mode) == 0o600
    assert K1 not in caplog.text and K2 not in caplog.text
