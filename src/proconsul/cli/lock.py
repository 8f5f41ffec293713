"""`proconsul lock [options] prefix child...`: run a command while holding a lock.

Job: take a mutex (`<prefix>/.lock`) or, with `-n N`, a slot of an N-holder
semaphore under `prefix` (cli/lock_kv.py), run the child while the lock is
held, and end it if the lock is lost; then release the lock and clean up.

Rules (Consul's `consul lock`):
- Flags: `-n` (1), `-name` (default `Consul lock for '<child>' at
  '<prefix>'`), `-timeout` (0: wait for ever), `-monitor-retry` (3),
  `-child-exit-code`, `-pass-stdin`, `-shell` (true), `-verbose`, plus the
  API flags. The child runs under `sh -c` unless `-shell=false`, in its own
  process group.
- Lost lock (the key no longer ours, our session expired, or the agent
  unreachable past the retries): `Lock lost, killing child` on stderr, the
  child's group gets SIGTERM, and SIGKILL after 5s; exit 1.
- SIGINT/SIGTERM: `Shutdown triggered, killing child` likewise; during
  acquisition, or when `-timeout` passes: `Shutdown triggered or timeout
  during lock acquisition`, exit 1.
- The child's failure: `Error running handler: exit status N`; the exit code
  is 0 unless `-child-exit-code`, then 2 (Consul's rule).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from types import FrameType

from proconsul.cli.api_client import (
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    command,
    parse_args,
)
from proconsul.cli.lock_kv import LockError, LockSession, Mutex, Semaphore
from proconsul.config.flags import FlagSet
from proconsul.structs.duration import parse_duration

KILL_GRACE_S = 5.0
_POLL_S = 0.1


def _duration_flag(text: str) -> float:
    return float(parse_duration(text))


def _info(verbose: bool, text: str) -> None:
    if verbose:
        print(text, flush=True)


def _error(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _kill_child(child: subprocess.Popen[bytes], verbose: bool) -> None:
    """SIGTERM to the child's process group, SIGKILL after the grace period."""
    _info(verbose, f"Terminating child pid {child.pid}")
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        child.wait(KILL_GRACE_S)
        _info(verbose, "Child terminated")
        return
    except subprocess.TimeoutExpired:
        _info(verbose, f"Child did not exit after grace period of {KILL_GRACE_S:g}s")
    _info(verbose, f"Killing child pid {child.pid}")
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    child.wait()


@command
def lock(argv: list[str]) -> int:
    flags = FlagSet("lock")
    add_api_flags(flags)
    flags.integer("n", 1, "Number of holders of the lock (a semaphore when above 1).")
    flags.string("name", "", "Name of the session (a default names the child and prefix).")
    flags.custom("timeout", _duration_flag, 0.0, "Longest wait for the lock (0: for ever).")
    flags.custom("try", _duration_flag, 0.0, "Deprecated: the same as -timeout.")
    flags.integer("monitor-retry", 3, "Failed reads of the lock tolerated while holding it.")
    flags.boolean("child-exit-code", False, "Exit 2 when the child exits with an error.")
    flags.boolean("pass-stdin", False, "Pass our stdin to the child.")
    flags.boolean("shell", True, "Run the child under a shell.")
    flags.boolean("verbose", False, "Say what happens.")
    values, args = parse_args(flags, argv, max_args=10_000)
    if len(args) < 2:
        raise CliError("Key prefix and child command must be specified")
    prefix = args[0].removeprefix("/")
    child_args = args[1:]
    script = " ".join(child_args)
    limit = int(values["n"])
    if limit < 1:
        raise CliError("Number of lock holders must be positive")
    timeout_s = float(values["timeout"] or values["try"] or 0.0)
    name = values["name"] or f"Consul lock for '{script}' at '{prefix}'"
    client = client_from(values)

    shutdown = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        shutdown.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        session = LockSession(client, name)
    except (ApiError, KeyError, TypeError) as exc:
        raise CliError(f"Lock acquisition failed: failed to create session: {exc}") from None
    try:
        return _hold(prefix, limit, session, values, child_args, shutdown, timeout_s)
    finally:
        session.close()


def _hold(
    prefix: str,
    limit: int,
    session: LockSession,
    values: dict[str, object],
    child_args: list[str],
    shutdown: threading.Event,
    timeout_s: float,
) -> int:
    verbose = bool(values["verbose"])
    api = session.client
    held: Mutex | Semaphore
    if limit == 1:
        held = Mutex(api, prefix, session)
        _info(verbose, f"Setting up lock at path: {held.key}")
    else:
        held = Semaphore(api, prefix, limit, session)
        _info(verbose, f"Setting up semaphore (limit {limit}) at prefix: {prefix}")
    stop_acquire = threading.Event()

    def forward_shutdown() -> None:
        shutdown.wait()
        stop_acquire.set()

    threading.Thread(target=forward_shutdown, daemon=True, name="shutdown").start()
    timer = threading.Timer(timeout_s, stop_acquire.set) if timeout_s > 0 else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    _info(verbose, "Attempting lock acquisition")
    try:
        acquired = held.acquire(stop_acquire)
    except (LockError, ApiError) as exc:
        raise CliError(f"Lock acquisition failed: {exc}") from None
    finally:
        if timer is not None:
            timer.cancel()
    if not acquired:
        raise CliError("Shutdown triggered or timeout during lock acquisition")

    lost = threading.Event()
    stop_monitor = threading.Event()

    def watch() -> None:
        with contextlib.suppress(LockError, ApiError):
            held.monitor(stop_monitor, int(str(values["monitor-retry"])))
        if not stop_monitor.is_set():
            lost.set()

    threading.Thread(target=watch, daemon=True, name="lock-monitor").start()
    _info(verbose, "Starting handler")
    argv = ["/bin/sh", "-c", " ".join(child_args)] if values["shell"] else child_args
    try:
        child = subprocess.Popen(
            argv,
            stdin=None if values["pass-stdin"] else subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        _error(f"Error running handler: {exc}")
        _release(held, verbose)
        return 1
    code = 0
    while True:
        returncode = child.poll()
        if returncode is not None:
            if returncode != 0:
                status = (
                    f"signal: {signal.Signals(-returncode).name}"
                    if returncode < 0
                    else f"exit status {returncode}"
                )
                _error(f"Error running handler: {status}")
                code = 2 if values["child-exit-code"] else 0
            break
        if lost.is_set() or session.expired.is_set():
            _error("Lock lost, killing child")
            _kill_child(child, verbose)
            code = 1
            break
        if shutdown.is_set():
            _error("Shutdown triggered, killing child")
            _kill_child(child, verbose)
            code = 1
            break
        shutdown.wait(_POLL_S)
    stop_monitor.set()
    _release(held, verbose)
    return code


def _release(held: Mutex | Semaphore, verbose: bool) -> None:
    try:
        held.release()
    except (ApiError, LockError) as exc:
        _error(f"Lock release failed: {exc}")
        return
    try:
        held.cleanup()
        _info(verbose, "Cleanup succeeded")
    except (ApiError, LockError) as exc:
        _error(f"Lock cleanup failed: {exc}")
