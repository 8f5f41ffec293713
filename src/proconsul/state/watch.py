"""Watch channels for blocking queries, without asyncio.

Readers subscribe a callback to index keys ("nodes", "service:web", "kvs", …);
the store calls `notify` with the keys a write touched, once per applied
command. The HTTP layer turns callbacks into futures; this module stays pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

Callback = Callable[[], None]


class WatchHub:
    def __init__(self) -> None:
        self._by_key: dict[str, set[int]] = {}
        self._subscriptions: dict[int, tuple[tuple[str, ...], Callback]] = {}
        self._next_id = 0
        self.notifications = 0

    def subscribe(self, keys: Iterable[str], callback: Callback) -> int:
        """Call `callback` (once per notify) when any of `keys` changes; returns a handle."""
        self._next_id += 1
        handle = self._next_id
        key_tuple = tuple(keys)
        self._subscriptions[handle] = (key_tuple, callback)
        for key in key_tuple:
            self._by_key.setdefault(key, set()).add(handle)
        return handle

    def unsubscribe(self, handle: int) -> None:
        entry = self._subscriptions.pop(handle, None)
        if entry is None:
            return
        for key in entry[0]:
            handles = self._by_key.get(key)
            if handles is not None:
                handles.discard(handle)
                if not handles:
                    del self._by_key[key]

    def notify(self, keys: Iterable[str]) -> None:
        fired: set[int] = set()
        for key in keys:
            fired.update(self._by_key.get(key, ()))
        for handle in fired:
            entry = self._subscriptions.get(handle)
            if entry is not None:
                self.notifications += 1
                entry[1]()

    def notify_all(self) -> None:
        """Wake every watcher (after a snapshot restore replaced the whole state)."""
        for handle in list(self._subscriptions):
            entry = self._subscriptions.get(handle)
            if entry is not None:
                self.notifications += 1
                entry[1]()

    def __len__(self) -> int:
        return len(self._subscriptions)
