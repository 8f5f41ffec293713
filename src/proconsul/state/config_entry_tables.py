"""Config entry tables of the state store: every entry, keyed by (kind, name).

Job: hold the replicated config entries (structs/config_entries.py) and apply
`ConfigEntryRequest` to them, stamping raft indexes and bumping the index keys
"config-entries" (any change) and "config-entries:<kind>" (that kind's).

Rules:
- Only `fsm.apply` calls `apply`; it is deterministic. Entries arrive
  normalized and validated (the server endpoint parsed them before the log):
  the store does not judge their content.
- The store sets `CreateIndex`/`ModifyIndex`: a new entry gets both from the
  applying index, a replaced one keeps its `CreateIndex`. Rows are copies, so
  the command (kept in the log) never sees the stamped indexes.
- Check-and-set as Consul's state store does it: `upsert-cas` with index 0
  writes only when no entry exists, with N only when the entry's ModifyIndex
  is N; `delete-cas` deletes only when the entry exists at ModifyIndex N.
  Each answers whether it happened; `upsert` and `delete` answer true.
- An upsert that changes nothing but indexes bumps nothing (no watcher wakes),
  and neither does deleting an entry that is not there.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from proconsul.structs.commands import ConfigEntryRequest
from proconsul.structs.config_entries import ConfigEntry

ENTRIES_KEY = "config-entries"


def kind_key(kind: str) -> str:
    """The index key of one kind's entries: `config-entries:<kind>`."""
    return f"{ENTRIES_KEY}:{kind}"


class ConfigEntryStateError(Exception):
    """A refused config entry write; the FSM turns it into an ApplyError."""


class ConfigEntrySnapshot(msgspec.Struct, array_like=True):
    """Every entry in the order it was first written. APPEND-ONLY fields."""

    entries: list[ConfigEntry]


def _same(a: ConfigEntry, b: ConfigEntry) -> bool:
    return msgspec.structs.replace(a, create_index=0, modify_index=0) == msgspec.structs.replace(
        b, create_index=0, modify_index=0
    )


class ConfigEntryTables:
    def __init__(self, bump: Callable[[int, str], None]) -> None:
        self._bump = bump
        self.entries: dict[tuple[str, str], ConfigEntry] = {}

    def __repr__(self) -> str:
        return f"ConfigEntryTables(entries={len(self.entries)})"

    # ----- snapshot ----------------------------------------------------------------

    def snapshot(self) -> ConfigEntrySnapshot:
        return ConfigEntrySnapshot(entries=list(self.entries.values()))

    def restore(self, snap: ConfigEntrySnapshot | None) -> None:
        """`None`: a snapshot from before config entries existed, which restores empty."""
        self.entries = {}
        if snap is not None:
            self.entries = {(entry.kind, entry.name): entry for entry in snap.entries}

    # ----- reads -------------------------------------------------------------------

    def get(self, kind: str, name: str) -> ConfigEntry | None:
        return self.entries.get((kind, name))

    def of_kind(self, kind: str) -> list[ConfigEntry]:
        """One kind's entries, sorted by name (Consul's order)."""
        return sorted(
            (entry for (k, _), entry in self.entries.items() if k == kind),
            key=lambda entry: entry.name,
        )

    def all(self) -> list[ConfigEntry]:
        """Every entry, sorted by kind then name."""
        return [self.entries[key] for key in sorted(self.entries)]

    # ----- writes ------------------------------------------------------------------

    def apply(self, index: int, request: ConfigEntryRequest) -> bool:
        entry = request.entry
        if not entry.name:
            raise ConfigEntryStateError("Config entry name is required")
        key = (entry.kind, entry.name)
        existing = self.entries.get(key)
        op = request.op
        if op in ("delete", "delete-cas"):
            if existing is None:
                return op == "delete"
            if op == "delete-cas" and existing.modify_index != request.cas_index:
                return False
            del self.entries[key]
            self._bump(index, ENTRIES_KEY)
            self._bump(index, kind_key(entry.kind))
            return True
        if op == "upsert-cas":
            if request.cas_index == 0:
                if existing is not None:
                    return False
            elif existing is None or existing.modify_index != request.cas_index:
                return False
        elif op != "upsert":
            raise ConfigEntryStateError(f"Invalid config entry operation {op!r}")
        if existing is not None and _same(existing, entry):
            return True
        row = msgspec.structs.replace(
            entry,
            create_index=existing.create_index if existing is not None else index,
            modify_index=index,
        )
        self.entries[key] = row
        self._bump(index, ENTRIES_KEY)
        self._bump(index, kind_key(entry.kind))
        return True
