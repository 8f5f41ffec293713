"""Writes of the intentions API as changes to one service-intentions entry.

Job: the pure half of `/v1/connect/intentions` writes. Since Consul 1.9 an
intention is one source of the `service-intentions` config entry of its
destination, so every write (create, update, upsert, delete) is a function
from the stored entry (or None) to the entry to store (or None: delete it).
The caller reads the entry, applies one of these and writes the result with
check-and-set on the ModifyIndex it read (http/intention_routes.py), so two
writers to one destination never lose each other's change.

Rules (Consul 1.16):
- The legacy create (`POST /v1/connect/intentions`) appends a source with a
  new legacy ID, `LegacyMeta` and times; a second intention for the same
  source fails the entry's validation (`Sources[1] defines "web" more than
  once`). Its body is first checked as Consul's legacy `Intention.Validate`
  does, every problem listed in Go's multierror form.
- An upsert by name (`PUT .../exact`) replaces the source of that name
  whole (a legacy ID it had is gone) or appends it. Meta may not be set
  there: it belongs to the entry.
- An update by ID replaces that source; its destination cannot change. A
  delete by ID or by name removes the source; the last one takes the entry.
- A config write of an entry (`consul config write`) drops its sources'
  LegacyID and times and refuses a LegacyMeta (`strip_legacy_ids`), as
  Consul's normalize and validation do: only this API sets them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from proconsul.connect.intentions import ALLOW, DENY, WILDCARD
from proconsul.structs.config_entries import (
    Intention,
    ServiceIntentions,
    SourceIntention,
)

META_MAX_PAIRS = 64
META_KEY_MAX = 128
META_VALUE_MAX = 512
NOT_FOUND = "Intention not found"


class IntentionWriteError(Exception):
    """A refused intentions write; `status` is the HTTP status Consul answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Unchanged:
    """The write changes nothing (deleting an intention that is not there)."""


UNCHANGED = Unchanged()
Change = ServiceIntentions | None | Unchanged


def multierror_text(problems: list[str]) -> str:
    """Go's multierror rendering, which Consul's legacy validation returns."""
    noun = "error" if len(problems) == 1 else "errors"
    items = "".join(f"\t* {problem}\n" for problem in problems)
    return f"{len(problems)} {noun} occurred:\n{items}\n"


def _wildcard_problems(field: str, value: str) -> list[str]:
    if value != WILDCARD and WILDCARD in value:
        return [f"{field}: wildcard character '*' cannot be used with partial values"]
    return []


def legacy_problems(ixn: Intention) -> list[str]:
    """What Consul's legacy `Intention.Validate` finds wrong with a body of
    `POST /v1/connect/intentions` or `PUT /v1/connect/intentions/:id`."""
    problems: list[str] = []
    if not ixn.source_name:
        problems.append("SourceName must be set")
    if not ixn.destination_name:
        problems.append("DestinationName must be set")
    problems += _wildcard_problems("SourceName", ixn.source_name)
    problems += _wildcard_problems("DestinationName", ixn.destination_name)
    if len(ixn.description) > META_VALUE_MAX:
        problems.append(f"Description exceeds maximum length {META_VALUE_MAX}")
    if len(ixn.meta) > META_MAX_PAIRS:
        problems.append(f"Meta exceeds maximum element count {META_MAX_PAIRS}")
    for key, value in sorted(ixn.meta.items()):
        if len(key) > META_KEY_MAX:
            problems.append(f'Meta key "{key}" exceeds maximum length {META_KEY_MAX}')
        if len(value) > META_VALUE_MAX:
            problems.append(f'Meta value for key "{key}" exceeds maximum length {META_VALUE_MAX}')
    if ixn.action not in (ALLOW, DENY):
        problems.append("Action must be set to 'allow' or 'deny'")
    if (ixn.source_type or "consul") != "consul":
        problems.append("SourceType must be set to 'consul'")
    return problems


def check_legacy(ixn: Intention) -> None:
    problems = legacy_problems(ixn)
    if problems:
        raise IntentionWriteError(multierror_text(problems))


def source_of(ixn: Intention, *, legacy_id: str = "", now: str = "") -> SourceIntention:
    """The source an intention body becomes; with `legacy_id` it is a legacy
    intention, carrying its ID, Meta and times (`now`, RFC 3339)."""
    source = SourceIntention(
        name=ixn.source_name,
        action=ixn.action,
        permissions=copy.deepcopy(ixn.permissions),
        type=ixn.source_type or "consul",
        description=ixn.description,
    )
    if legacy_id:
        source.legacy_id = legacy_id
        source.legacy_meta = dict(ixn.meta)
        source.legacy_create_time = now
        source.legacy_update_time = now
    return source


def _copy(entry: ServiceIntentions | None, destination: str) -> ServiceIntentions:
    if entry is None:
        return ServiceIntentions(name=destination)
    return copy.deepcopy(entry)


def _position(entry: ServiceIntentions, name: str) -> int | None:
    for i, source in enumerate(entry.sources):
        if not source.peer and source.name == name:
            return i
    return None


def _position_of_id(entry: ServiceIntentions, legacy_id: str) -> int | None:
    for i, source in enumerate(entry.sources):
        if source.legacy_id == legacy_id:
            return i
    return None


def create_legacy(
    entry: ServiceIntentions | None, destination: str, source: SourceIntention
) -> ServiceIntentions:
    """The legacy create: the source appended (a duplicate name is left for the
    entry's validation to refuse, with Consul's text)."""
    changed = _copy(entry, destination)
    changed.sources.append(source)
    return changed


def check_upsert_meta(entry: ServiceIntentions | None, meta: dict[str, str]) -> None:
    """An upsert by name may not set Meta (it lives on the entry), unless it
    sends back exactly the entry's own Meta."""
    if not meta:
        return
    if entry is None:
        raise IntentionWriteError("Meta must not be specified")
    if meta != entry.meta:
        raise IntentionWriteError(
            "Meta must not be specified, or should be unchanged during an update."
        )


def upsert(
    entry: ServiceIntentions | None, destination: str, source: SourceIntention
) -> ServiceIntentions:
    """The upsert by name: the source of that name replaced, whole (a legacy
    intention it replaces loses its ID, as in Consul), or appended."""
    changed = _copy(entry, destination)
    at = _position(changed, source.name)
    if at is None:
        changed.sources.append(source)
    else:
        changed.sources[at] = source
    return changed


def update_by_id(
    entry: ServiceIntentions | None, legacy_id: str, destination: str, body: Intention, now: str
) -> ServiceIntentions:
    """The legacy update: the source with that ID replaced by `body`."""
    at = None if entry is None else _position_of_id(entry, legacy_id)
    if entry is None or at is None:
        raise IntentionWriteError(f"Cannot modify non-existent intention: '{legacy_id}'", 500)
    if body.destination_name != destination:
        raise IntentionWriteError(
            "Cannot modify Destination partition/namespace/name for an intention once it exists."
        )
    changed = copy.deepcopy(entry)
    old = changed.sources[at]
    source = source_of(body, legacy_id=legacy_id, now=now)
    source.legacy_create_time = old.legacy_create_time
    changed.sources[at] = source
    return changed


def _without(entry: ServiceIntentions, at: int) -> ServiceIntentions | None:
    changed = copy.deepcopy(entry)
    del changed.sources[at]
    return changed if changed.sources else None


def delete_by_name(entry: ServiceIntentions | None, source_name: str) -> Change:
    """The delete by name; deleting what is not there changes nothing (Consul's
    by-name deletes are idempotent)."""
    at = None if entry is None else _position(entry, source_name)
    if entry is None or at is None:
        return UNCHANGED
    return _without(entry, at)


def delete_by_id(entry: ServiceIntentions | None, legacy_id: str) -> Change:
    at = None if entry is None else _position_of_id(entry, legacy_id)
    if entry is None or at is None:
        raise IntentionWriteError(f"Cannot delete non-existent intention: '{legacy_id}'", 500)
    return _without(entry, at)


def strip_legacy_ids(entry: ServiceIntentions) -> ServiceIntentions:
    """A config write's entry as Consul normalizes it: LegacyID and the legacy
    times are dropped (so such a write ends a source's legacy ID); LegacyMeta
    is kept for the validation to refuse, rather than lose it silently."""
    if not any(s.legacy_id or s.legacy_create_time or s.legacy_update_time for s in entry.sources):
        return entry
    changed = copy.deepcopy(entry)
    for source in changed.sources:
        source.legacy_id = source.legacy_create_time = source.legacy_update_time = ""
    return changed
