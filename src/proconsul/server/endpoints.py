"""Server endpoints: the reads and writes that Consul serves over RPC.

Reads run against the local state store and block (`?index=&wait=`) on its
watch channels; writes go through the log (`LocalLog` on a dev agent, Raft on
servers). Filtering by tag, node meta and health lives here, once, for HTTP,
DNS and (later) RPC callers. Filtered results are cached per index, because
the same blocking queries arrive over and over while the data stays put.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from proconsul.server.acl_resolver import ServerACLResolver
from proconsul.state.fsm import ApplyResult
from proconsul.state.store import StateStore
from proconsul.structs.catalog import CheckServiceNode, HealthCheck, Node
from proconsul.structs.commands import Command
from proconsul.structs.requests import QueryMeta, QueryOptions, ReadRequest, ReadResponse

DEFAULT_WAIT_S = 300.0
MAX_WAIT_S = 600.0


class Log(Protocol):
    async def apply(self, command: Command) -> tuple[int, ApplyResult]: ...


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


def _has_tags(tags: Sequence[str], wanted: Sequence[str]) -> bool:
    if not wanted:
        return True
    lowered = {t.lower() for t in tags}
    return all(w.lower() in lowered for w in wanted)


def _node_meta_matches(node: Node, wanted: dict[str, str]) -> bool:
    return all(node.meta.get(k) == v for k, v in wanted.items())


def _all_passing(checks: Sequence[HealthCheck]) -> bool:
    return all(check.status == "passing" for check in checks)


class ServerEndpoints:
    def __init__(
        self, store: StateStore, log: Log, datacenter: str, rng: random.Random | None = None
    ) -> None:
        self.store = store
        self.log = log
        self.datacenter = datacenter
        self.rng = rng or random.Random()
        # Set by the agent when ACLs are enabled; None means every call is allowed.
        self.acl: ServerACLResolver | None = None
        self._health_cache: dict[tuple[str, tuple[str, ...], bool], tuple[int, list[Any]]] = {}
        self.reads: dict[str, Callable[[ReadRequest], tuple[Sequence[str], Callable[[], Any]]]] = {
            "Catalog.ListNodes": self._catalog_nodes,
            "Catalog.NodeServices": self._catalog_node,
            "Catalog.ListServices": self._catalog_services,
            "Catalog.ServiceNodes": self._catalog_service,
            "Health.ServiceNodes": self._health_service,
            "Health.NodeChecks": self._health_node,
            "Health.ServiceChecks": self._health_checks,
            "Health.ChecksInState": self._health_state,
            "KVS.Get": self._kv_get,
            "KVS.List": self._kv_list,
            "KVS.ListKeys": self._kv_keys,
        }

    async def read(self, method: str, request: ReadRequest) -> ReadResponse:
        watch_keys, run = self.reads[method](request)
        index, value = await blocking_query(self.store, request.options, watch_keys, run, self.rng)
        # Consul never reports index 0: clients treat it as "don't block".
        return ReadResponse(meta=QueryMeta(index=max(index, 1)), value=value)

    async def write(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        """Apply `command` for the caller holding `token` (the secret; "" = anonymous)."""
        return await self.log.apply(command)

    # ----- reads -------------------------------------------------------------
    # Each returns the watch keys and a function that yields (index, value).

    def _catalog_nodes(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[Node]]:
            index, nodes = self.store.catalog_nodes()
            if req.node_meta:
                nodes = [n for n in nodes if _node_meta_matches(n, req.node_meta)]
            return index, nodes

        return ("nodes",), run

    def _catalog_node(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, Any]:
            index, node, services = self.store.catalog_node(req.name)
            return index, (node, services)

        return (f"node:{req.name}", "nodes"), run

    def _catalog_services(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, dict[str, list[str]]]:
            if not req.node_meta:
                return self.store.catalog_services()
            index = self.store.index("services")
            result: dict[str, set[str]] = {}
            for name, rows in self.store.instances.items():
                for (node_name, _), service in rows.items():
                    if _node_meta_matches(self.store.nodes[node_name], req.node_meta):
                        result.setdefault(name, set()).update(service.tags)
            return index, {name: sorted(tags) for name, tags in sorted(result.items())}

        return ("services", "nodes"), run

    def _catalog_service(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[Any]]:
            index, rows = self.store.catalog_service(req.name)
            rows = [
                r
                for r in rows
                if _has_tags(r.service_tags, req.tags)
                and all(r.node_meta.get(k) == v for k, v in req.node_meta.items())
            ]
            return index, rows

        return (f"service:{req.name}", "services"), run

    def _health_service(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        cache_key = (req.name, tuple(req.tags), req.passing_only)

        def run() -> tuple[int, list[CheckServiceNode]]:
            current = self.store.index(f"service:{req.name}") or self.store.index("services")
            cached = self._health_cache.get(cache_key)
            if cached is not None and cached[0] == current and not req.node_meta:
                return cached
            index, rows = self.store.health_service(req.name)
            rows = [
                r
                for r in rows
                if _has_tags(r.service.tags, req.tags)
                and _node_meta_matches(r.node, req.node_meta)
                and (not req.passing_only or _all_passing(r.checks))
            ]
            if not req.node_meta:
                if len(self._health_cache) > 4096:
                    self._health_cache.clear()
                self._health_cache[cache_key] = (index, rows)
            return index, rows

        return (f"service:{req.name}", "services"), run

    def _health_node(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return (f"node:{req.name}", "checks"), lambda: self.store.node_checks(req.name)

    def _health_checks(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[HealthCheck]]:
            index, checks = self.store.service_checks(req.name)
            if req.node_meta:
                checks = [
                    c for c in checks if _node_meta_matches(self.store.nodes[c.node], req.node_meta)
                ]
            return index, checks

        return (f"service:{req.name}", "checks"), run

    def _health_state(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        def run() -> tuple[int, list[HealthCheck]]:
            index, checks = self.store.checks_in_state(req.state)
            if req.node_meta:
                checks = [
                    c for c in checks if _node_meta_matches(self.store.nodes[c.node], req.node_meta)
                ]
            return index, checks

        return ("checks",), run

    def _kv_get(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return ("kvs",), lambda: self.store.kv_get(req.name)

    def _kv_list(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return ("kvs",), lambda: self.store.kv_list(req.name)

    def _kv_keys(self, req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        return ("kvs",), lambda: self.store.kv_keys(req.name, req.separator)
