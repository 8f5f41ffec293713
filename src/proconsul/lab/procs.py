"""The lab's processes: agents and demo services started detached, stopped by PID.

Rules:
- A process is started in its own session (it outlives `lab up`), its output
  appended to its log under `logs/`, and its PID recorded in `lab.json`.
- A recorded PID is only signalled while it still runs a `proconsul` command
  line (`/proc/<pid>/cmdline`), so a reused PID is never touched.
- Stopping is SIGTERM, then SIGKILL after a grace period; a stopped
  (SIGSTOP) process is continued first so it can exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

STOP_GRACE_S = 10.0


def proconsul_argv(*args: str) -> list[str]:
    """The command line that runs `proconsul` with this very interpreter."""
    return [sys.executable, "-m", "proconsul", *args]


def write_shim(path: Path) -> None:
    """`bin/proconsul`: lets the lab's scripts call `proconsul` whatever the install."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m proconsul "$@"\n')
    os.chmod(path, 0o755)


def start(argv: list[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return proc.pid


def is_ours(pid: int) -> bool:
    """True while `pid` runs a proconsul command (and is not a zombie)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return b"proconsul" in cmdline and state not in ("Z", "X")


def is_stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "T"


def signal_pid(pid: int, signum: int) -> bool:
    if not is_ours(pid):
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGCONT + SIGTERM, wait, then SIGKILL; returns once the process is gone."""
    stop_all([pid], grace_s)


def stop_all(pids: list[int], grace_s: float = STOP_GRACE_S) -> None:
    """`stop` for several at once: all are signalled first, so their shutdowns overlap."""
    live = [pid for pid in pids if is_ours(pid)]
    for pid in live:
        signal_pid(pid, signal.SIGCONT)
        signal_pid(pid, signal.SIGTERM)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if sig == signal.SIGKILL:
            for pid in live:
                signal_pid(pid, signal.SIGKILL)
        deadline = time.monotonic() + wait_s
        while live and time.monotonic() < deadline:
            for pid in live:
                _reap(pid)
            live = [pid for pid in live if is_ours(pid)]
            if live:
                time.sleep(0.05)


def listening(address: str, port: int, timeout_s: float = 0.3) -> bool:
    """Whether something accepts TCP connections there."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except OSError:
        return False
