"""The fault suite's clients: concurrent KV traffic over HTTP to every agent, recorded.

Job: run, until told to stop,
- writers, one per agent: `PUT /v1/kv/chaos/w/<writer>-<n>`, each key once;
- a prober: open-loop writes of new keys (`chaos/w/p-<n>`), one every 100 ms
  to each agent in turn, not waiting for the ones in flight;
- register clients, a few per register key: a consistent read
  (`GET ?consistent`, the value recorded), a plain write of a unique value, or
  a CAS: a consistent read for the ModifyIndex (itself recorded as a read) and
  `PUT ?cas=<ModifyIndex>` of a unique value;
- a leader monitor that samples who leads, for the hang check;
and record every operation as a `history.Event` with invoke and complete times.

Register keys rotate every `epoch_s` (`chaos/r/<register>.<epoch>`), which keeps
each key's history short enough for the checker in a long run.

Rules:
- HTTP is spoken by `http_call` on a fresh connection per request and never
  retried: a client library that resends a PUT after a dropped connection
  would make a second write the history does not know about.
- Every request has a deadline (`request_timeout_s`, longer than the hang bound
  so that a hang is measured, not cut short); past it the outcome is unknown.
- Targets come from a seeded `random.Random` per client; times from one
  monotonic clock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.chaos.cluster import ChaosCluster, Host
from tests.chaos.history import (
    FAIL,
    OK,
    UNKNOWN_OUTCOME,
    Event,
    LeaderSample,
    definite_refusal,
)

MONITOR_INTERVAL_S = 0.25


@dataclass(frozen=True)
class WorkloadConfig:
    registers: int = 2
    clients_per_register: int = 3
    pause_s: float = 0.05  # between one client's operations
    request_timeout_s: float = 20.0
    epoch_s: float = 15.0
    probe_interval_s: float = 0.1  # one new probe write this often, whatever is in flight
    max_probes_in_flight: int = 200


class HTTPError(Exception):
    """The agent answered something that is not HTTP."""


class NotSent(ConnectionError):
    """The connection was refused: the request never left this process."""


async def http_call(
    host: str, port: int, method: str, path: str, body: bytes | None, timeout_s: float
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on its own connection; (status, body). Raises OSError,
    TimeoutError or HTTPError when no complete answer came; NotSent when the
    connection was refused (nothing was sent)."""
    async with asyncio.timeout(timeout_s):
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except ConnectionRefusedError as exc:
            raise NotSent(str(exc)) from None
        try:
            data = body or b""
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + data)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
    header, sep, payload = raw.partition(b"\r\n\r\n")
    lines = header.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if not sep or len(parts) < 2 or not parts[1].isdigit():
        raise HTTPError(f"no complete HTTP answer ({len(raw)} bytes)")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and len(payload) < int(value):
            raise HTTPError("connection closed inside the body")
    return int(parts[1]), payload


class Workload:
    def __init__(
        self,
        cluster: ChaosCluster,
        rng: random.Random,
        config: WorkloadConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.clock = clock
        self.t0 = clock()
        self.events: list[Event] = []
        self.samples: list[LeaderSample] = []
        # One generator per client, all drawn from the run's seed.
        self._seeds = [rng.randrange(2**32) for _ in range(64)]
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        hosts = self.cluster.hosts
        tasks = [self._writer(i, h) for i, h in enumerate(hosts)]
        for r in range(self.config.registers):
            for c in range(self.config.clients_per_register):
                seed = self._seeds[len(tasks) % len(self._seeds)]
                tasks.append(self._register_client(r, c, random.Random(seed)))
        tasks.append(self._monitor())
        tasks.append(self._prober())
        await asyncio.gather(*tasks)

    # ----- requests ----------------------------------------------------------------------

    async def _call(
        self, event: Event, host: Host, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes] | None:
        """Send it; on no answer mark `event` unknown (complete = when we gave up)."""
        self.events.append(event)
        try:
            answer = await http_call(
                host.http_ip, host.http_port, method, path, body, self.config.request_timeout_s
            )
        except (OSError, TimeoutError, HTTPError) as exc:
            event.complete = self.clock()
            # A refused connection delivered nothing: the operation did not happen.
            event.outcome = FAIL if isinstance(exc, NotSent) else UNKNOWN_OUTCOME
            event.detail = f"{type(exc).__name__}: {exc}"
            return None
        event.complete = self.clock()
        return answer

    async def _write(self, event: Event, host: Host, path: str) -> None:
        assert event.value is not None
        answer = await self._call(event, host, "PUT", path, event.value.encode())
        if answer is None:
            return
        status, body = answer
        if status == 200 and body.strip() in (b"true", b"false"):
            event.outcome = OK
            event.result = body.strip() == b"true"
        else:
            refused = definite_refusal(status, body, host.server)
            event.outcome = FAIL if refused else UNKNOWN_OUTCOME
            event.detail = f"{status} {body[:200]!r}"

    async def _read(self, event: Event, host: Host) -> int | None:
        """A consistent read; the ModifyIndex, 0 when absent, None when it failed."""
        answer = await self._call(event, host, "GET", f"/v1/kv/{event.key}?consistent")
        if answer is None:
            return None
        status, body = answer
        if status == 404:
            event.outcome, event.value = OK, None
            return 0
        if status == 200:
            try:
                row = json.loads(body)[0]
                value = base64.b64decode(row["Value"] or "").decode()
                index = int(row["ModifyIndex"])
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                event.outcome, event.detail = UNKNOWN_OUTCOME, f"bad body: {exc}"
                return None
            event.outcome, event.value = OK, value
            return index
        event.outcome, event.detail = FAIL, f"{status} {body[:200]!r}"  # reads change nothing
        return None

    # ----- clients -----------------------------------------------------------------------

    async def _writer(self, i: int, host: Host) -> None:
        process = f"w{i}"
        n = 0
        while not self._stop.is_set():
            n += 1
            key = f"chaos/w/{process}-{n}"
            event = Event(process, "write", key, host.name, self.clock(), value=f"{process}:{n}")
            await self._write(event, host, f"/v1/kv/{key}")
            await self._pause()

    async def _prober(self) -> None:
        """Open-loop writes: a new one every `probe_interval_s` to the next agent in
        turn, not waiting for earlier ones. The closed-loop clients above all
        wait when their requests hang; these say whether a new write would
        have gone through (what unavailability is measured on)."""
        in_flight: set[asyncio.Task[None]] = set()
        hosts = self.cluster.hosts
        n = 0
        while not self._stop.is_set():
            if len(in_flight) < self.config.max_probes_in_flight:
                n += 1
                host = hosts[n % len(hosts)]
                key = f"chaos/w/p-{n}"
                event = Event("p", "write", key, host.name, self.clock(), value=f"p:{n}")
                task = asyncio.create_task(self._write(event, host, f"/v1/kv/{key}"))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            await self._pause_for(self.config.probe_interval_s)
        if in_flight:
            await asyncio.gather(*in_flight)

    async def _register_client(self, register: int, c: int, rng: random.Random) -> None:
        process = f"r{register}.{c}"
        seq = 0
        hosts: Sequence[Host] = self.cluster.hosts
        while not self._stop.is_set():
            seq += 1
            now = self.clock()
            key = f"chaos/r/{register}.{int((now - self.t0) // self.config.epoch_s)}"
            host = rng.choice(hosts)
            value = f"{process}:{seq}"
            roll = rng.random()
            if roll < 0.35:
                await self._read(Event(process, "read", key, host.name, now), host)
            elif roll < 0.55:
                event = Event(process, "put", key, host.name, now, value=value)
                await self._write(event, host, f"/v1/kv/{key}")
            else:
                read = Event(process, "read", key, host.name, now)
                index = await self._read(read, host)
                if index is not None and not self._stop.is_set():
                    event = Event(
                        process,
                        "cas",
                        key,
                        host.name,
                        self.clock(),
                        value=value,
                        expected=read.value,
                        index=index,
                    )
                    await self._write(event, host, f"/v1/kv/{key}?cas={index}")
            await self._pause()

    async def _pause(self) -> None:
        await self._pause_for(self.config.pause_s)

    async def _monitor(self) -> None:
        """Sample, every MONITOR_INTERVAL_S, the leader a majority of servers names."""
        servers = self.cluster.servers
        while not self._stop.is_set():
            views = await asyncio.gather(*(self._leader_view(h) for h in servers))
            named = [v for v in views if v]
            leader: str | None = None
            for address in set(named):
                host = self.cluster.by_raft_addr(address)
                usable = host is not None and host.running() and not host.frozen and not host.cut
                if usable and host is not None and 2 * named.count(address) > len(servers):
                    leader = host.name
            self.samples.append(LeaderSample(self.clock(), leader))
            await self._pause_for(MONITOR_INTERVAL_S)

    async def _leader_view(self, host: Host) -> str:
        if not host.running() or host.frozen:
            return ""
        try:
            status, body = await http_call(
                host.http_ip, host.http_port, "GET", "/v1/status/leader", None, 1.0
            )
            return str(json.loads(body)) if status == 200 else ""
        except (OSError, TimeoutError, HTTPError, ValueError):
            return ""

    async def _pause_for(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
