"""Crash-safe file writes, shared by every part that persists something.

Job: put bytes at a path so that a reader (or a restart after a crash) sees
either the old file or the whole new one, never a torn or half-written file.

Rules:
- Data goes to a temp file in the same directory (so the final rename stays
  on one filesystem and is atomic), is fsynced, then renamed into place; the
  directory is fsynced too so the rename itself survives a power cut.
- The temp file is created 0600 and only then given its final mode, so a
  secret is never readable by others, not even for a moment.
- The mode is applied exactly (the umask does not widen or narrow it).
- `exclusive=True` fails with FileExistsError if the path exists, atomically:
  the file is linked into place, which never replaces an existing name.
- On any failure the temp file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile

PRIVATE_MODE = 0o600

# Filesystems that cannot hard-link report one of these; we then fall back
# to a check-then-rename, which has a small race window but still never
# leaves a torn file.
_NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV})


def write_file_atomic(
    path: str | os.PathLike[str], data: bytes, mode: int = 0o644, *, exclusive: bool = False
) -> None:
    """Write `data` to `path` atomically with permission bits `mode`.

    Replaces an existing file unless `exclusive`, in which case an existing
    path raises FileExistsError and nothing is written.
    """
    target = os.fspath(path)
    directory = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            _link_exclusive(tmp, target)
        else:
            os.replace(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_directory(directory)


def write_private_file(
    path: str | os.PathLike[str], data: bytes, *, exclusive: bool = False
) -> None:
    """Write a secret (key, token, keyring) atomically, readable only by its owner."""
    write_file_atomic(path, data, PRIVATE_MODE, exclusive=exclusive)


def _link_exclusive(tmp: str, target: str) -> None:
    """Move `tmp` to `target`, failing with FileExistsError if `target` exists."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target) from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_directory(directory: str) -> None:
    # Without this the rename may be lost on power failure even though the
    # file's own bytes were synced.
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data is synced
    finally:
        os.close(fd)
