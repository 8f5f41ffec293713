"""The options every server read takes: blocking (`?index=&wait=`) and `?filter=`.

Job: `blocking_query` runs a read against the local state store now, or again
each time one of its watch keys changes, until its index passes the caller's
`?index=` or the wait ends (Consul's: default 5 min, at most 10 min, plus up
to wait/16 of jitter, `wait_with_jitter_s`); `apply_query_filter` keeps the
rows of a read's answer that pass `?filter=` (go-bexpr syntax, checked
against the read's row type in `FILTER_SHAPES`).

Rules: a bad filter, or a filter on a read that takes none, is
`RPCError(..., BAD_QUERY)` (HTTP 400). Reads in `FILTERED_IN_READ` apply the
filter themselves, before they aggregate their rows.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.server.intention_endpoints import LIST_METHOD as INTENTION_LIST
from proconsul.server.intention_endpoints import filter_view
from proconsul.state.store import StateStore
from proconsul.structs.catalog import CheckServiceNode, HealthCheck, Node, ServiceNode
from proconsul.structs.config_entries import Intention
from proconsul.structs.filter import Filter, cached_filter
from proconsul.structs.filter_syntax import FilterError
from proconsul.structs.requests import DEFAULT_WAIT_S, MAX_WAIT_S, QueryOptions

# The row type each filterable read returns: `?filter` is checked against it.
FILTER_SHAPES: dict[str, type] = {
    "Catalog.ListNodes": Node,
    "Catalog.ServiceNodes": ServiceNode,
    "Catalog.ConnectServiceNodes": ServiceNode,
    "Health.ServiceNodes": CheckServiceNode,
    "Health.ConnectServiceNodes": CheckServiceNode,
    "Health.NodeChecks": HealthCheck,
    "Health.ServiceChecks": HealthCheck,
    "Health.ChecksInState": HealthCheck,
    # Consul filters the instances (ServiceNode rows) and then lists names and
    # tags: done inside the read (`_catalog_services`), not on its answer.
    "Catalog.ListServices": ServiceNode,
    INTENTION_LIST: Intention,
}
FILTERED_IN_READ = frozenset({"Catalog.ListServices"})


def query_filter(method: str, text: str) -> Filter:
    """`?filter=text` compiled for `method`'s rows; a bad filter, or one on a
    read that takes none, is `RPCError(..., BAD_QUERY)` (HTTP 400)."""
    shape = FILTER_SHAPES.get(method)
    if shape is None:
        raise RPCError(f"filtering is not supported by {method}", ErrorCode.BAD_QUERY)
    try:
        return cached_filter(text, shape)
    except FilterError as exc:
        raise RPCError(str(exc), ErrorCode.BAD_QUERY) from None


def apply_query_filter(method: str, text: str, rows: Any) -> Any:
    """The rows of `method`'s answer that pass `?filter=text` (see `query_filter`)."""
    if method == INTENTION_LIST:
        views: Any = [filter_view(row) for row in rows]
    else:
        views = msgspec.to_builtins(rows)
    return query_filter(method, text).select(rows, views)


def wait_with_jitter_s(requested_s: float, rng: random.Random) -> float:
    """Consul's blocking wait: default 5m, capped at 10m, plus up to wait/16 of jitter."""
    wait = requested_s if requested_s > 0 else DEFAULT_WAIT_S
    wait = min(wait, MAX_WAIT_S)
    return wait + rng.uniform(0, wait / 16)


async def blocking_query(
    store: StateStore,
    options: QueryOptions,
    watch_keys: Sequence[str],
    run: Callable[[], tuple[int, Any]],
    rng: random.Random,
) -> tuple[int, Any]:
    """Run `run` now, or when its index passes `options.min_index`, or when the wait ends."""
    index, value = run()
    if options.min_index <= 0 or index > options.min_index:
        return index, value
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_with_jitter_s(options.max_query_time_s, rng)
    while index <= options.min_index:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        changed: asyncio.Future[None] = loop.create_future()

        def wake(fut: asyncio.Future[None] = changed) -> None:
            if not fut.done():
                fut.set_result(None)

        handle = store.watches.subscribe(watch_keys, wake)
        try:
            await asyncio.wait_for(changed, remaining)
        except TimeoutError:
            pass
        finally:
            store.watches.unsubscribe(handle)
        index, value = run()
    return index, value
