"""Config entries on the servers: their reads, the check of a write, and their ACL rules.

Job: the reads `ServerEndpoints` serves for config entries ("ConfigEntry.Get":
one entry by kind and name; "ConfigEntry.List": one kind's entries;
"DiscoveryChain.Get": the compiled chain of a service;
"ConfigEntry.ResolveServiceConfig": the central config of a proxy's
destination service and its upstreams, connect/service_config.py), the check a
`ConfigEntryRequest` passes before it enters the log
(`check_config_request`: a known kind, an entry normalized and validated
with connect/config_entries.py; `check_graph`: every discovery chain still
compiles with the change, as Consul's state store checks), and Consul's ACL
rules for them.

ACL rules (Consul 1.16, as its `consul config write` docs table them):
- proxy-defaults: anyone may read it; writing needs operator:write.
- service-defaults, service-router, service-splitter, service-resolver:
  service:read on the entry's name to read, service:write to write. Like
  Consul, a router, splitter or resolver that sends traffic to other services
  also needs service:read on each of them.
- service-intentions: `intentions = "read"` on the destination (the entry's
  name) to read, `intentions = "write"` to write; a service rule without an
  `intentions` field grants read of them when it grants service read
  (acl/authorizer.py). `*` is checked as the name `*`.
- A Get of an entry the token may not read is a 403; a List leaves such
  entries out and says it filtered. A discovery chain, and a resolved
  service config, need service:read on the service.

Errors: an unknown kind, an entry that is not valid, or one that would break a
discovery chain (a router for a tcp service, a split to a subset no resolver
defines), or leave an intention with L7 permissions on a service that does
not speak HTTP, is an `RPCError` with code BAD_QUERY (HTTP 400) and Consul's text.
The graph check runs on the server that takes the write, against its store:
unlike Consul's check inside the FSM, two racing writes on different servers
can each pass it. A stored chain that does not compile fails its read (500),
as in Consul.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from proconsul.acl.authorizer import Authorizer
from proconsul.acl.resolved import ResolvedToken
from proconsul.connect.config_entries import (
    HTTP_PROTOCOLS,
    check_subset_filter,
    normalize,
    service_protocol,
    validate,
)
from proconsul.connect.discovery_chain import ChainEntries, ChainError, compile_chain
from proconsul.connect.intention_writes import strip_legacy_ids
from proconsul.connect.service_config import resolve_service_config
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.state.ca_tables import ROOTS_KEY as CA_ROOTS_KEY
from proconsul.state.config_entry_tables import ENTRIES_KEY, kind_key
from proconsul.state.store import StateStore
from proconsul.structs.commands import ConfigEntryRequest
from proconsul.structs.config_entries import (
    KINDS,
    PROXY_DEFAULTS,
    SERVICE_DEFAULTS,
    SERVICE_INTENTIONS,
    SERVICE_RESOLVER,
    SERVICE_ROUTER,
    SERVICE_SPLITTER,
    ConfigEntry,
    ConfigEntryError,
    MeshGatewayConfig,
    ProxyDefaults,
    ServiceDefaults,
    ServiceIntentions,
    ServiceResolver,
    ServiceRouter,
    ServiceSplitter,
)
from proconsul.structs.requests import ReadRequest
from proconsul.structs.service_config import ServiceConfigResponse

GET_METHOD = "ConfigEntry.Get"
LIST_METHOD = "ConfigEntry.List"
CHAIN_METHOD = "DiscoveryChain.Get"
RESOLVE_METHOD = "ConfigEntry.ResolveServiceConfig"
# The kinds a discovery chain is compiled from.
CHAIN_KINDS = frozenset(
    {PROXY_DEFAULTS, SERVICE_DEFAULTS, SERVICE_ROUTER, SERVICE_SPLITTER, SERVICE_RESOLVER}
)

ReadFn = Callable[[ReadRequest], tuple[Sequence[str], Callable[[], Any]]]


def check_kind(kind: str) -> None:
    """A kind this server stores, or Consul's refusal of it (HTTP 400)."""
    if kind not in KINDS:
        raise RPCError(f"invalid config entry kind: {kind}", ErrorCode.BAD_QUERY)


def check_config_request(request: ConfigEntryRequest) -> ConfigEntryRequest:
    """The request with its entry normalized and validated, or an RPCError
    (BAD_QUERY) with the validation text."""
    entry = request.entry
    check_kind(entry.kind)
    if request.op in ("delete", "delete-cas"):
        if not entry.name:
            raise RPCError("Config entry name is required", ErrorCode.BAD_QUERY)
        return request
    if isinstance(entry, ServiceIntentions) and not request.intentions_api:
        entry = strip_legacy_ids(entry)
    try:
        checked = validate(
            normalize(entry),
            check_filter=check_subset_filter,
            intentions_api=request.intentions_api,
        )
    except ConfigEntryError as exc:
        raise RPCError(str(exc), ErrorCode.BAD_QUERY) from None
    return msgspec.structs.replace(request, entry=checked)


def check_graph(store: StateStore, request: ConfigEntryRequest, datacenter: str) -> None:
    """Every discovery chain the change could touch must still compile
    (Consul's validateProposedConfigEntryInGraph), and every intention with
    L7 permissions must keep an HTTP destination; or RPCError (BAD_QUERY)."""
    changed = request.entry
    deleting = request.op in ("delete", "delete-cas")
    if isinstance(changed, ServiceIntentions) and not deleting:
        check_l7_protocols(store.config.all(), [changed])
    if changed.kind not in CHAIN_KINDS:
        return
    key = (changed.kind, changed.name)
    entries = {(e.kind, e.name): e for e in store.config.all() if e.kind in CHAIN_KINDS}
    if deleting:
        entries.pop(key, None)
    else:
        entries[key] = changed
    if changed.kind in (SERVICE_DEFAULTS, PROXY_DEFAULTS):
        stored = store.config.of_kind(SERVICE_INTENTIONS)
        intentions = [e for e in stored if isinstance(e, ServiceIntentions)]
        check_l7_protocols(entries.values(), intentions)
    chain_entries = ChainEntries.of(entries.values())
    services = {name for kind, name in entries if kind != PROXY_DEFAULTS}
    if changed.kind != PROXY_DEFAULTS:
        services.add(changed.name)
    for service in sorted(services):
        try:
            compile_chain(service, chain_entries, datacenter=datacenter, trust_domain="")
        except ChainError as exc:
            raise RPCError(str(exc), ErrorCode.BAD_QUERY) from None


def check_l7_protocols(
    entries: Iterable[ConfigEntry], intentions: Iterable[ServiceIntentions]
) -> None:
    """Intentions with L7 Permissions need a destination that speaks an HTTP
    protocol, as `entries` (service-defaults, proxy-defaults) set it: Consul's
    check when either side is written. RPCError (BAD_QUERY) otherwise."""
    entries = list(entries)
    defaults = {e.name: e for e in entries if isinstance(e, ServiceDefaults)}
    proxy = next((e for e in entries if isinstance(e, ProxyDefaults)), None)
    for entry in intentions:
        if entry.name == "*" or not any(source.permissions for source in entry.sources):
            continue
        protocol = service_protocol(defaults.get(entry.name), proxy)
        if protocol not in HTTP_PROTOCOLS:
            raise RPCError(
                f'service "{entry.name}" has protocol "{protocol}", '
                "which is incompatible with L7 intentions permissions",
                ErrorCode.BAD_QUERY,
            )


# ----- reads --------------------------------------------------------------------


def chain_of(store: StateStore, service: str, datacenter: str) -> tuple[int, Any]:
    """The compiled discovery chain of `service` from the stored entries."""
    index, entries = store.config_entries_all()
    try:
        chain = compile_chain(
            service,
            ChainEntries.of(entries),
            datacenter=datacenter,
            trust_domain=store.ca.trust_domain(),
        )
    except ChainError as exc:
        raise RPCError(str(exc)) from None
    return index, chain


def config_reads(store: StateStore, datacenter: str) -> dict[str, ReadFn]:
    """The config entry reads, by their Consul names, for `ServerEndpoints.reads`."""

    def get(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        check_kind(req.kind)
        return (kind_key(req.kind),), lambda: store.config_entry(req.kind, req.name)

    def list_kind(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        check_kind(req.kind)
        return (kind_key(req.kind),), lambda: store.config_entries_of_kind(req.kind)

    def chain(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        # The trust domain is in the targets' SNI: a new CA root moves it.
        return (ENTRIES_KEY, CA_ROOTS_KEY), lambda: chain_of(store, req.name, datacenter)

    def resolve(req: ReadRequest) -> tuple[Sequence[str], Callable[[], Any]]:
        keys = (kind_key(PROXY_DEFAULTS), kind_key(SERVICE_DEFAULTS))
        return keys, lambda: resolved_config_of(store, req)

    return {
        GET_METHOD: get,
        LIST_METHOD: list_kind,
        CHAIN_METHOD: chain,
        RESOLVE_METHOD: resolve,
    }


def resolved_config_of(store: StateStore, req: ReadRequest) -> tuple[int, ServiceConfigResponse]:
    """`req.name`'s central service config for its proxy (connect/service_config.py)."""
    index = max(store.index(kind_key(PROXY_DEFAULTS)), store.index(kind_key(SERVICE_DEFAULTS)))
    proxy = store.config.get(PROXY_DEFAULTS, "global")
    defaults: dict[str, ServiceDefaults] = {}
    for name in (req.name, *req.upstreams):
        found = store.config.get(SERVICE_DEFAULTS, name)
        if isinstance(found, ServiceDefaults):
            defaults[name] = found
    gateway = MeshGatewayConfig(mode=req.mesh_gateway_mode)
    reply = resolve_service_config(
        req.name,
        req.upstreams,
        proxy_defaults=proxy if isinstance(proxy, ProxyDefaults) else None,
        service_defaults=defaults,
        registration_mesh_gateway=gateway,
    )
    return index, reply


# ----- ACLs ---------------------------------------------------------------------


def can_read(authz: Authorizer, kind: str, name: str) -> bool:
    if kind == PROXY_DEFAULTS:
        return True
    if kind == SERVICE_INTENTIONS:
        return authz.intention_read(name)
    return authz.service_read(name)


def precheck_read(method: str, request: ReadRequest, resolved: ResolvedToken) -> None:
    """A Get of an entry the token may not read is refused up front (403), and so
    is the chain of a service it may not read (Consul: service:read)."""
    if method in (CHAIN_METHOD, RESOLVE_METHOD):
        if not resolved.authorizer.service_read(request.name):
            raise resolved.deny("service", "read", request.name)
        return
    if method != GET_METHOD:
        return
    if request.kind in KINDS and not can_read(resolved.authorizer, request.kind, request.name):
        resource = "intention" if request.kind == SERVICE_INTENTIONS else "service"
        raise resolved.deny(resource, "read", request.name)


def filter_entries(authz: Authorizer, entries: list[ConfigEntry]) -> tuple[list[ConfigEntry], bool]:
    kept = [entry for entry in entries if can_read(authz, entry.kind, entry.name)]
    if len(kept) == len(entries):
        return entries, False
    return kept, True


def related_services(entry: ConfigEntry) -> list[str]:
    """Other services a router, splitter or resolver sends traffic to."""
    names: list[str] = []
    if isinstance(entry, ServiceRouter):
        names = [r.destination.service for r in entry.routes if r.destination is not None]
    elif isinstance(entry, ServiceSplitter):
        names = [split.service for split in entry.splits]
    elif isinstance(entry, ServiceResolver):
        if entry.redirect is not None:
            names.append(entry.redirect.service)
        for failover in entry.failover.values():
            names.append(failover.service)
            names.extend(target.service for target in failover.targets)
    seen: list[str] = []
    for name in names:
        if name and name != entry.name and name not in seen:
            seen.append(name)
    return seen


def vet_config_write(resolved: ResolvedToken, request: ConfigEntryRequest) -> None:
    """Raise `ACLDenied` (Consul's Permission denied text) unless the token may
    write (or delete) the request's entry."""
    entry = request.entry
    authz = resolved.authorizer
    if entry.kind == PROXY_DEFAULTS:
        if not authz.operator_write():
            raise resolved.deny("operator", "write")
        return
    if entry.kind == SERVICE_INTENTIONS:
        if not authz.intention_write(entry.name):
            raise resolved.deny("intention", "write", entry.name)
        return
    if not authz.service_write(entry.name):
        raise resolved.deny("service", "write", entry.name)
    if request.op in ("delete", "delete-cas"):
        return
    for name in related_services(entry):
        if not authz.service_read(name):
            raise resolved.deny("service", "read", name)
