"""The `config-entries` leader duty: write `config_entries.bootstrap` where absent.

Job: on each gain of leadership, write every entry of the agent's
`config_entries.bootstrap` that the state does not hold yet
(`write_bootstrap_entries`), as Consul's leader does.

Rules:
- Entries are parsed once, when the delegate is built (`bootstrap_entries`),
  with the rules of `/v1/config`; the config loader already refused a bad one
  naming its file and key, so a failure here is a bug, and raises.
- Each write is a check-and-set on index 0 ("only if absent"): an entry a user
  changed or a racing leader wrote is never overwritten, even when this
  leader's store has not applied it yet when it looks.
- An entry already present is not written again: a new term adds nothing to
  the log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from proconsul.connect.config_entries import check_subset_filter, parse_config_entry
from proconsul.state.store import StateStore
from proconsul.structs.commands import ApplyError, ApplyResult, Command, ConfigEntryRequest
from proconsul.structs.config_entries import ConfigEntry

log = logging.getLogger("proconsul.server")

LeaderWrite = Callable[[Command], Awaitable[tuple[int, ApplyResult]]]


def bootstrap_entries(raw: Iterable[dict[str, Any]]) -> list[ConfigEntry]:
    """The config's bootstrap entries, parsed and validated (ConfigEntryError)."""
    return [parse_config_entry(entry, check_filter=check_subset_filter) for entry in raw]


async def write_bootstrap_entries(
    entries: Iterable[ConfigEntry], store: StateStore, write: LeaderWrite
) -> int:
    """Write each entry the state lacks; returns how many were written."""
    written = 0
    for entry in entries:
        if store.config.get(entry.kind, entry.name) is not None:
            continue
        request = ConfigEntryRequest(op="upsert-cas", entry=entry, cas_index=0)
        _, result = await write(request)
        if isinstance(result, ApplyError):
            where = f"{entry.kind}/{entry.name}"
            raise RuntimeError(f"bootstrap config entry {where}: {result.message}")
        if result:
            written += 1
            log.info("agent: wrote bootstrap config entry %s/%s", entry.kind, entry.name)
    return written
