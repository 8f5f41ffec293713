"""Where the xDS server gets proxy snapshots: the `SnapshotSource` protocol and the hub.

How it fits: DESIGN.md, "xDS".

Job: `SnapshotSource` is what the server needs: `watch(proxy_id)`, an async
iterator of that proxy's snapshots. `SnapshotHub` is the source the agent
owns: its producer (the proxy view, proxycfg) `publish`es a snapshot
whenever a proxy's inputs change and `forget`s a proxy that is gone; each
stream watching that proxy sees the latest one.

Rules:
- A watcher gets the current snapshot at once, then each newer one.
  Snapshots in between may be skipped (latest wins): a slow Envoy never
  holds up the producer, and no queue grows.
- A proxy nobody published within `unknown_wait_s` of the watch starting is
  `UnknownProxy` (registering a proxy and starting its Envoy race; a
  little patience covers that). A forgotten proxy ends its watches.
- Asyncio, single loop: publish and forget are plain calls from the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from proconsul.xds.snapshot import ProxySnapshot

DEFAULT_UNKNOWN_WAIT_S = 10.0


class UnknownProxy(LookupError):
    def __init__(self, proxy_id: str) -> None:
        super().__init__(f'no connect proxy with ID "{proxy_id}" is registered with this agent')
        self.proxy_id = proxy_id


class SnapshotSource(Protocol):
    def watch(self, proxy_id: str) -> AsyncIterator[ProxySnapshot]:
        """The proxy's snapshots, newest each time; ends when the proxy goes away.
        Raises UnknownProxy (on the first step) for a proxy it does not know."""
        ...


@dataclass
class _Slot:
    snapshot: ProxySnapshot | None = None
    generation: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        self.generation += 1
        self.changed.set()
        self.changed = asyncio.Event()


class SnapshotHub:
    def __init__(self, *, unknown_wait_s: float = DEFAULT_UNKNOWN_WAIT_S) -> None:
        self.unknown_wait_s = unknown_wait_s
        self._slots: dict[str, _Slot] = {}

    def publish(self, snapshot: ProxySnapshot) -> None:
        slot = self._slots.setdefault(snapshot.proxy_id, _Slot())
        slot.snapshot = snapshot
        slot.wake()

    def forget(self, proxy_id: str) -> None:
        slot = self._slots.pop(proxy_id, None)
        if slot is not None:
            slot.snapshot = None
            slot.wake()

    def current(self, proxy_id: str) -> ProxySnapshot | None:
        slot = self._slots.get(proxy_id)
        return slot.snapshot if slot is not None else None

    def proxies(self) -> list[str]:
        return sorted(pid for pid, slot in self._slots.items() if slot.snapshot is not None)

    async def watch(self, proxy_id: str) -> AsyncIterator[ProxySnapshot]:
        slot = self._slots.setdefault(proxy_id, _Slot())
        if slot.snapshot is None:
            try:
                await asyncio.wait_for(slot.changed.wait(), self.unknown_wait_s)
            except TimeoutError:
                if self._slots.get(proxy_id) is slot and slot.snapshot is None:
                    del self._slots[proxy_id]  # the empty slot this watch made
                raise UnknownProxy(proxy_id) from None
        seen = -1
        while True:
            current = self._slots.get(proxy_id)
            if current is not slot or slot.snapshot is None:
                return  # forgotten: the proxy was deregistered
            if slot.generation != seen:
                seen = slot.generation
                yield slot.snapshot
                continue
            await slot.changed.wait()
