"""Central service config on the agent: proxy-defaults and service-defaults
merged into this agent's connect proxies (Consul's `enable_central_service_config`).

Job: for every local `connect-proxy` registration (expanded sidecars and
proxies registered directly), keep the user's own registration, watch the
central config resolved for it, and hand the agent the merged registration
to hold in local state. That merged row is what anti-entropy syncs to the
catalog and what `/v1/agent/service/:id` shows (so its ContentHash moves
when central config does). DESIGN.md, "Sidecar registration and connect discovery".

Rules (Consul 1.16's service manager, where it has one):
- Only connect proxies are resolved; other services are registered as
  written (Consul resolves only proxies and gateways, and this agent has no
  gateways).
- One watch per proxy: a blocking read of "ConfigEntry.ResolveServiceConfig"
  (`name` the proxy's destination service, `upstreams` the destination names
  of its `service` upstreams, `mesh_gateway_mode` the registration's), with
  the proxy's token, else the agent's default one. Each new answer is merged
  again from the user's registration, never from an earlier merged copy
  (connect/service_config.py, `merge_service_config`; precedence upstream >
  proxy registration > service-defaults > proxy-defaults). A registration
  whose request changes restarts its watch; deregistration and `close()`
  cancel it.
- Never blocking the agent: services from config files (start and reload)
  are held at once with the last answer for that destination, else as
  written, and merged when the first answer comes. An HTTP registration
  first waits up to FIRST_ANSWER_WAIT_S for one answer (`prime`), so its
  reply already shows the merged proxy when the servers answer. Consul
  blocks that registration until it has the answer and fails it with a 500
  ("could not retrieve initial service_defaults config for service ...")
  when it cannot get one; here the proxy is registered as written instead
  and merged once the servers answer, so a registration never hangs or
  fails on the servers' account. Consul also keeps the last answers on disk
  for a restart; this agent asks again.
- A failed read is logged once per failure streak and retried after a
  growing delay (RETRY_MIN_S doubling to RETRY_MAX_S, with jitter).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import msgspec

from proconsul.connect.service_config import merge_service_config
from proconsul.server.config_endpoints import RESOLVE_METHOD
from proconsul.structs.catalog import CONNECT_PROXY_KIND, NodeService
from proconsul.structs.requests import QueryOptions, ReadRequest, ReadResponse
from proconsul.structs.service_config import ServiceConfigResponse

log = logging.getLogger("proconsul.agent")

FIRST_ANSWER_WAIT_S = 2.0
WATCH_WAIT_S = 300.0  # each blocking read; the server adds its jitter
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0

Read = Callable[[str, ReadRequest], Awaitable[ReadResponse]]
# (service ID, the merged registration): the agent puts it into local state.
OnMerged = Callable[[str, NodeService], None]


class RequestKey(msgspec.Struct, frozen=True):
    """What a proxy's resolution depends on: a change restarts its watch."""

    destination: str
    upstreams: tuple[str, ...]
    mesh_gateway_mode: str
    token: str

    def __repr__(self) -> str:  # the token is a secret
        return f"RequestKey({self.destination!r}, {self.upstreams!r}, {self.mesh_gateway_mode!r})"

    def read_request(self, min_index: int = 0, wait_s: float = 0.0) -> ReadRequest:
        options = QueryOptions(token=self.token, min_index=min_index, max_query_time_s=wait_s)
        return ReadRequest(
            name=self.destination,
            upstreams=list(self.upstreams),
            mesh_gateway_mode=self.mesh_gateway_mode,
            options=options,
        )


def is_resolved(service: NodeService) -> bool:
    """Whether central config applies to `service` (connect proxies only)."""
    return service.kind == CONNECT_PROXY_KIND


def request_key(service: NodeService, token: str) -> RequestKey:
    """The resolution a proxy asks for; prepared-query upstreams get none."""
    proxy = service.proxy
    names = (u.destination_name for u in proxy.upstreams if u.destination_type in ("", "service"))
    return RequestKey(
        destination=proxy.destination_service_name,
        upstreams=tuple(dict.fromkeys(names)),
        mesh_gateway_mode=proxy.mesh_gateway.mode,
        token=token,
    )


def merged_service(user: NodeService, resolved: ServiceConfigResponse | None) -> NodeService:
    """The user's registration with the resolved central config under it."""
    if resolved is None:
        return user
    return msgspec.structs.replace(user, proxy=merge_service_config(resolved, user.proxy))


@dataclass(eq=False)
class _Watch:
    service_id: str
    user: NodeService  # the user's own registration, never a merged copy
    key: RequestKey
    resolved: ServiceConfigResponse | None = None
    index: int = 0
    task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"_Watch({self.service_id!r}, index={self.index})"


@dataclass(frozen=True)
class _Primed:
    key: RequestKey
    index: int
    resolved: ServiceConfigResponse


class CentralConfig:
    """See the module docstring. `token_for(token)` is the token a read goes
    with (the proxy's own, else the agent's default)."""

    def __init__(
        self,
        *,
        enabled: bool,
        read: Read,
        on_merged: OnMerged,
        token_for: Callable[[str], str],
        rng: random.Random,
    ) -> None:
        self.enabled = enabled
        self._read = read
        self._on_merged = on_merged
        self._token_for = token_for
        self._rng = rng
        self._watches: dict[str, _Watch] = {}
        self._primed: dict[str, _Primed] = {}
        self._running = False

    def user_registration(self, service_id: str) -> NodeService | None:
        """The registration as the user wrote it (None: not a resolved proxy)."""
        watch = self._watches.get(service_id)
        return None if watch is None else watch.user

    def track(self, service: NodeService, token: str) -> NodeService:
        """What local state should hold for `service` now; remembers the
        user's registration and (re)starts its watch when its request changed."""
        if not self.enabled or not is_resolved(service):
            self.forget(service.id)
            return service
        key = request_key(service, self._token_for(token))
        watch = self._watches.get(service.id)
        if watch is None:
            watch = self._watches[service.id] = _Watch(service.id, service, key)
        elif watch.key != key:
            self._cancel(watch)
            if watch.key.destination != key.destination:
                watch.resolved = None  # another service's defaults do not apply
            watch.key, watch.index = key, 0
        watch.user = service
        primed = self._primed.pop(service.id, None)
        if primed is not None and primed.key == key and primed.index >= watch.index:
            watch.resolved, watch.index = primed.resolved, primed.index
        if self._running and watch.task is None:
            watch.task = asyncio.create_task(self._watch(watch), name=f"central-config {key!r}")
        return merged_service(service, watch.resolved)

    def forget(self, service_id: str) -> None:
        """The service is gone: stop watching for it."""
        self._primed.pop(service_id, None)
        watch = self._watches.pop(service_id, None)
        if watch is not None:
            self._cancel(watch)

    async def prime(self, services: Iterable[tuple[NodeService, str]]) -> None:
        """One answer for each proxy about to be registered over HTTP, waiting
        at most FIRST_ANSWER_WAIT_S; the next `track` of it uses the answer."""
        if not self.enabled or not self._running:
            return
        asks = [
            (service.id, request_key(service, self._token_for(token)))
            for service, token in services
            if is_resolved(service)
        ]
        if asks:
            await asyncio.gather(*(self._prime_one(sid, key) for sid, key in asks))

    async def _prime_one(self, service_id: str, key: RequestKey) -> None:
        try:
            async with asyncio.timeout(FIRST_ANSWER_WAIT_S):
                response = await self._read(RESOLVE_METHOD, key.read_request())
        except TimeoutError:
            log.warning(
                "agent: no central service config for %s yet; registering it as "
                "written, merged when the servers answer",
                service_id,
            )
            return
        except Exception as exc:
            log.warning(
                "agent: could not resolve central service config for %s: %s; "
                "registering it as written",
                service_id,
                exc,
            )
            return
        self._primed[service_id] = _Primed(key, response.meta.index, response.value)

    def start(self) -> None:
        """Start watching (once the delegate answers reads)."""
        self._running = True
        for watch in self._watches.values():
            if watch.task is None:
                watch.task = asyncio.create_task(self._watch(watch), name="central-config")

    async def close(self) -> None:
        self._running = False
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        for watch in self._watches.values():
            self._cancel(watch)
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _cancel(watch: _Watch) -> None:
        if watch.task is not None:
            watch.task.cancel()
            watch.task = None

    async def _watch(self, watch: _Watch) -> None:
        key = watch.key
        delay_s = RETRY_MIN_S
        failing = False
        while True:
            request = key.read_request(watch.index, WATCH_WAIT_S)
            try:
                response = await self._read(RESOLVE_METHOD, request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning(
                        "agent: watching central service config for %s failed: %s",
                        watch.service_id,
                        exc,
                    )
                failing = True
                await asyncio.sleep(delay_s * (1 + self._rng.random()))
                delay_s = min(delay_s * 2, RETRY_MAX_S)
                continue
            if failing:
                log.info("agent: central service config for %s resolved again", watch.service_id)
            failing, delay_s = False, RETRY_MIN_S
            index = response.meta.index
            # An index that went back (a restored snapshot, another server)
            # starts over; 0 (no entry ever written) still blocks at 1.
            watch.index = max(index, 1) if index >= watch.index else 0
            if watch.resolved is None or response.value != watch.resolved:
                watch.resolved = response.value
                self._on_merged(watch.service_id, merged_service(watch.user, watch.resolved))
