"""Locks in the KV store, as Consul's API client builds them: a mutex and a semaphore.

Job: what `proconsul lock` holds, over the HTTP API (`ApiClient`):
- a session (`LockSession`): created on the agent's node (serfHealth, the
  default lock-delay) with a TTL of 15s, renewed every TTL/2 on a thread,
  destroyed when done;
- `Mutex`: the key `<prefix>/.lock` taken with `?acquire=` (flags
  LOCK_FLAG); a held key is waited on with blocking reads; a refused acquire
  on a free key is the lock-delay, retried after 5s;
- `Semaphore` (`-n N`): each contender takes its own key `<prefix>/<session>`
  with `?acquire=`, then adds itself to the holders in `<prefix>/.lock`
  (JSON `{"Limit": N, "Holders": {...}}`, flags SEMAPHORE_FLAG) with a
  check-and-set write; holders whose contender key no longer carries their
  session (invalidated) are pruned first;
- `monitor`: a blocking read of the lock that returns when the lock is lost
  (the key no longer names our session, or our session left the holders),
  tolerating `monitor_retries` failed reads one second apart.

Rules:
- Everything waits with a deadline or a stop event; blocking reads ask for
  15s at a time, so a stop is noticed within that.
- Texts are Consul's: `Existing key does not match lock use`, `Existing key
  does not match semaphore use`, `semaphore limit conflict (lock: X, local: Y)`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from proconsul.cli.api_client import ApiClient, ApiError, quote_path

LOCK_FLAG = 0x2DDCCBC058A50C18  # Consul's api.LockFlagValue
SEMAPHORE_FLAG = 0xE0F69A2BAA414DE0  # Consul's api.SemaphoreFlagValue
SESSION_TTL = "15s"
RENEW_EVERY_S = 7.5
WAIT = "15s"  # one blocking read
RETRY_S = 5.0  # after a refused acquire on a free key (the lock-delay)
MONITOR_RETRY_S = 1.0


class LockError(Exception):
    """Acquiring or holding the lock failed; the message is shown as is."""


def _kv(key: str) -> str:
    return f"/v1/kv/{quote_path(key)}"


def _index(headers: Mapping[str, str]) -> int:
    for name, value in headers.items():
        if name.lower() == "x-consul-index" and value.isdigit():
            return int(value)
    return 0


class LockSession:
    """A session for one lock holder, renewed on a thread until `close()`."""

    def __init__(self, client: ApiClient, name: str) -> None:
        self.client = client
        created = client.put(
            "/v1/session/create", body={"Name": name, "TTL": SESSION_TTL, "Behavior": "release"}
        )
        self.id: str = created["ID"]
        self._stop = threading.Event()
        self.expired = threading.Event()  # the server no longer knows it
        self._thread = threading.Thread(target=self._renew, name="session-renew", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            try:
                self.client.request("PUT", f"/v1/session/renew/{self.id}")
            except ApiError as exc:
                if exc.status == 404:
                    self.expired.set()
                    return
                # The agent may be back by the next renewal; the TTL grace allows it.

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(ApiError):  # else the session expires on its own
            self.client.request("PUT", f"/v1/session/destroy/{self.id}")


class Mutex:
    def __init__(self, client: ApiClient, prefix: str, session: LockSession) -> None:
        self.client = client
        self.key = f"{prefix.rstrip('/')}/.lock" if prefix else ".lock"
        self.session = session

    def _get(self, index: int) -> tuple[dict[str, Any] | None, int]:
        params = [("index", str(index)), ("wait", WAIT)] if index else []
        response = self.client.request("GET", _kv(self.key), params, allow_404=True)
        rows = response.json() if response.status == 200 else None
        return (rows[0] if rows else None), _index(response.headers)

    def acquire(self, stop: threading.Event) -> bool:
        """Block until held (True) or `stop` is set (False)."""
        index = 0
        while not stop.is_set():
            pair, index = self._get(index)
            if pair is not None and pair.get("Flags") != LOCK_FLAG:
                raise LockError("Existing key does not match lock use")
            holder = pair.get("Session") if pair is not None else ""
            if holder == self.session.id:
                return True
            if holder:
                continue  # held by another: wait for a change
            params = [("acquire", self.session.id), ("flags", str(LOCK_FLAG))]
            if self.client.request("PUT", _kv(self.key), params, b"").json() is True:
                return True
            pair, index = self._get(0)
            if pair is not None and pair.get("Session"):
                continue
            stop.wait(RETRY_S)  # a free key refused: its lock-delay runs
            index = 0
        return False

    def held(self, pair: dict[str, Any] | None) -> bool:
        return pair is not None and pair.get("Session") == self.session.id

    def monitor(self, stop: threading.Event, retries: int) -> None:
        """Return once the lock is lost (or `stop` is set)."""
        _monitor(self._get, self.held, stop, retries)

    def release(self) -> None:
        params = [("release", self.session.id), ("flags", str(LOCK_FLAG))]
        self.client.request("PUT", _kv(self.key), params, b"")

    def cleanup(self) -> None:
        """Delete the lock key if nobody holds it (check-and-set on its index)."""
        pair, _ = self._get(0)
        if pair is not None and not pair.get("Session"):
            params = [("cas", str(pair.get("ModifyIndex", 0)))]
            self.client.request("DELETE", _kv(self.key), params)


class Semaphore:
    def __init__(self, client: ApiClient, prefix: str, limit: int, session: LockSession) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.limit = limit
        self.session = session
        self.lock_key = f"{self.prefix}/.lock"
        self.contender_key = f"{self.prefix}/{session.id}"

    def _list(self, index: int) -> tuple[list[dict[str, Any]], int]:
        params = [("recurse", "")]
        if index:
            params += [("index", str(index)), ("wait", WAIT)]
        response = self.client.request("GET", _kv(self.prefix + "/"), params, allow_404=True)
        rows = response.json() if response.status == 200 else None
        return rows or [], _index(response.headers)

    def _lock_row(self, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
        """The decoded `.lock` value and its ModifyIndex (0: none yet)."""
        for row in rows:
            if row.get("Key") == self.lock_key:
                if row.get("Flags") != SEMAPHORE_FLAG:
                    raise LockError("Existing key does not match semaphore use")
                raw = row.get("Value")
                body = json.loads(base64.b64decode(raw)) if raw else {}
                limit = int(body.get("Limit", 0))
                if limit and limit != self.limit:
                    raise LockError(
                        f"semaphore limit conflict (lock: {limit}, local: {self.limit})"
                    )
                return body, int(row.get("ModifyIndex", 0))
        return {}, 0

    def acquire(self, stop: threading.Event) -> bool:
        params = [("acquire", self.session.id), ("flags", str(SEMAPHORE_FLAG))]
        if self.client.request("PUT", _kv(self.contender_key), params, b"").json() is not True:
            raise LockError("failed to make contender entry")
        index = 0
        while not stop.is_set():
            rows, index = self._list(index)
            body, modify_index = self._lock_row(rows)
            # A holder counts while its contender key still carries its session.
            live = {
                str(row.get("Session"))
                for row in rows
                if row.get("Session") and row.get("Key") == f"{self.prefix}/{row.get('Session')}"
            }
            holders = {sid: True for sid in body.get("Holders", {}) if sid in live}
            if self.session.id in holders:
                return True
            if len(holders) >= self.limit:
                continue  # full: wait for a change under the prefix
            holders[self.session.id] = True
            value = json.dumps({"Limit": self.limit, "Holders": holders}).encode()
            cas = [("cas", str(modify_index)), ("flags", str(SEMAPHORE_FLAG))]
            if self.client.request("PUT", _kv(self.lock_key), cas, value).json() is True:
                return True
            index = 0  # lost the race: look again at once
        return False

    def _get_lock(self, index: int) -> tuple[dict[str, Any] | None, int]:
        params = [("index", str(index)), ("wait", WAIT)] if index else []
        response = self.client.request("GET", _kv(self.lock_key), params, allow_404=True)
        rows = response.json() if response.status == 200 else None
        if not rows:
            return None, _index(response.headers)
        body, _ = self._lock_row(rows)
        return body, _index(response.headers)

    def held(self, body: dict[str, Any] | None) -> bool:
        return body is not None and self.session.id in body.get("Holders", {})

    def monitor(self, stop: threading.Event, retries: int) -> None:
        _monitor(self._get_lock, self.held, stop, retries)

    def release(self) -> None:
        """Leave the holders (check-and-set, retried on a race) and drop our key."""
        for _ in range(10):
            rows, _ = self._list(0)
            body, modify_index = self._lock_row(rows)
            holders = dict(body.get("Holders", {}))
            if self.session.id not in holders:
                break
            del holders[self.session.id]
            value = json.dumps({"Limit": self.limit, "Holders": holders}).encode()
            cas = [("cas", str(modify_index)), ("flags", str(SEMAPHORE_FLAG))]
            if self.client.request("PUT", _kv(self.lock_key), cas, value).json() is True:
                break
        self.client.request("DELETE", _kv(self.contender_key))

    def cleanup(self) -> None:
        """Delete the `.lock` key when no holder and no contender is left."""
        rows, _ = self._list(0)
        body, modify_index = self._lock_row(rows)
        others = [row for row in rows if row.get("Key") != self.lock_key]
        if modify_index and not others and not body.get("Holders"):
            self.client.request("DELETE", _kv(self.lock_key), [("cas", str(modify_index))])


def _monitor(
    get: Callable[[int], tuple[Any, int]],
    held: Callable[[Any], bool],
    stop: threading.Event,
    retries: int,
) -> None:
    """Blocking reads of the lock until `held` says it is no longer ours, or
    more than `retries` reads in a row failed."""
    index = 0
    failures = 0
    while not stop.is_set():
        try:
            value, index = get(index)
        except ApiError:
            failures += 1
            if failures > retries:
                return
            time.sleep(MONITOR_RETRY_S)
            index = 0
            continue
        failures = 0
        if not held(value):
            return
