"""Choosing the instances a prepared query answers with (Consul's execute).

Job: `select_instances` takes a service's health rows and the query's service
block and keeps, in Consul's order of steps:
1. instances whose checks allow it: none critical (or in maintenance), and
   with `OnlyPassing` every one passing; checks named in `IgnoreCheckIDs`
   do not count;
2. node meta and service meta: every pair equal;
3. tags, case-insensitively: each plain tag must be present, each `!tag`
   absent;
then shuffles them (the caller's seeded `random.Random`), sorts them by
distance from the `near` node when one is given (rows whose distance is
unknown keep their shuffled order after those with one), and cuts to `limit`.

`distance(node)` is the estimated round trip in seconds to a node, None when
unknown; without network coordinates the near node itself is at 0.

Rules: pure; the input rows are never changed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from proconsul.structs.catalog import CheckServiceNode
from proconsul.structs.prepared_query import ServiceQuery

_DOWN = frozenset({"critical", "maintenance"})

Distance = Callable[[str], float | None]


def _healthy(row: CheckServiceNode, query: ServiceQuery) -> bool:
    ignored = query.ignore_check_ids
    for check in row.checks:
        if ignored and check.check_id in ignored:
            continue
        if check.status in _DOWN or (query.only_passing and check.status != "passing"):
            return False
    return True


def _tags_match(tags: Sequence[str], wanted: Sequence[str]) -> bool:
    have = {tag.lower() for tag in tags}
    for tag in wanted:
        tag = tag.lower()
        if tag.startswith("!"):
            if tag[1:] in have:
                return False
        elif tag not in have:
            return False
    return True


def matches(row: CheckServiceNode, query: ServiceQuery) -> bool:
    """Does one instance pass the query's health, meta and tag filters?"""
    return (
        _healthy(row, query)
        and all(row.node.meta.get(k) == v for k, v in query.node_meta.items())
        and all(row.service.meta.get(k) == v for k, v in query.service_meta.items())
        and _tags_match(row.service.tags, query.tags)
    )


def sort_by_distance(rows: list[CheckServiceNode], distance: Distance) -> list[CheckServiceNode]:
    """Nearest first; rows with no known distance after, in their given order."""
    known: list[tuple[float, int, CheckServiceNode]] = []
    unknown: list[CheckServiceNode] = []
    for position, row in enumerate(rows):
        d = distance(row.node.node)
        if d is None:
            unknown.append(row)
        else:
            known.append((d, position, row))
    known.sort(key=lambda item: (item[0], item[1]))
    return [row for _, _, row in known] + unknown


def select_instances(
    rows: Sequence[CheckServiceNode],
    query: ServiceQuery,
    rng: random.Random,
    near: str = "",
    distance: Distance | None = None,
    limit: int = 0,
) -> list[CheckServiceNode]:
    kept = [row for row in rows if matches(row, query)]
    rng.shuffle(kept)
    if near:
        kept = sort_by_distance(kept, distance or (lambda node: 0.0 if node == near else None))
    if limit > 0:
        kept = kept[:limit]
    return kept
