"""Atomic file writes: modes, exclusivity, no torn files, no leftovers."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from proconsul import fileio


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[None]:
    # A wide-open umask must not make a secret readable by others, and a
    # strict one must not change the mode we asked for.
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_private_file_is_0600(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        fileio.write_private_file(tmp_path / "secret", b"s3cret")
    finally:
        os.umask(old)
    assert (tmp_path / "secret").read_bytes() == b"s3cret"
    assert mode(tmp_path / "secret") == 0o600


def test_mode_is_exact(tmp_path: Path, umask: None) -> None:
    fileio.write_file_atomic(tmp_path / "pub", b"x", 0o644)
    assert mode(tmp_path / "pub") == 0o644


def test_replaces_and_fixes_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    target.chmod(0o666)
    fileio.write_private_file(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_exclusive_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "f"
    fileio.write_file_atomic(target, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        fileio.write_file_atomic(target, b"second", exclusive=True)
    with pytest.raises(FileExistsError):
        fileio.write_private_file(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_relative_path_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fileio.write_private_file("here.pem", b"k", exclusive=True)
    assert (tmp_path / "here.pem").read_bytes() == b"k"


def test_failure_leaves_target_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="I/O error"):
        fileio.write_file_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fileio.write_private_file(tmp_path / "nope" / "f", b"x")


def test_exclusive_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Some filesystems cannot hard-link; exclusivity must still hold.
    def no_link(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    target = tmp_path / "f"
    fileio.write_private_file(target, b"first", exclusive=True)
    assert target.read_bytes() == b"first" and mode(target) == 0o600
    with pytest.raises(FileExistsError):
        fileio.write_private_file(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
