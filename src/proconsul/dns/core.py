"""Consul's DNS answers as a pure function: question + catalog rows -> records.

Job: `classify` reads a question name (already lower-cased) and says what it asks
for: a service, a node, the zone's nameservers, a reverse lookup, a name outside
the domain (recursion), or something answered from the name alone (an `.addr`
name, NXDOMAIN for a malformed name). The `answer_*` functions then turn the
catalog rows the adapter fetched into an `Answer`: records grouped per instance,
so trimming and shuffling keep an SRV record together with its A record.

Rules:
- No sockets, clocks or randomness here; the SOA serial comes in as a number,
  shuffling and trimming happen at render time (`render.py`).
- Health: an instance with any critical (or maintenance) check is dropped;
  with `only_passing` any non-passing check drops it.
- An empty result is NXDOMAIN with the zone's SOA in AUTHORITY; a name that
  exists but has no record of the asked type is NOERROR with the SOA (NODATA).
- TTLs: `node_ttl` for node and `.addr` records; `service_ttl` by exact name,
  else the longest `prefix*` entry (`*` alone matches all), else 0.
- Record names are `None` when they are the question name, so the renderer can
  echo the client's own spelling (case included) and compress against it.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from proconsul.structs.catalog import CheckServiceNode, HealthCheck, Node
from proconsul.structs.duration import parse_duration

# Record types and response codes (RFC 1035, 3596, 2782, 6891).
A, NS, CNAME, SOA, PTR, TXT, AAAA, SRV = 1, 2, 5, 6, 12, 16, 28, 33
IXFR, AXFR, ANY = 251, 252, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
RCODE_NAMES = {
    NOERROR: "noerror",
    FORMERR: "formerr",
    SERVFAIL: "servfail",
    NXDOMAIN: "nxdomain",
    NOTIMP: "notimp",
    REFUSED: "refused",
}

_QUERY_KINDS = frozenset({"service", "connect", "virtual", "ingress", "node", "query", "addr"})
_MAX_NAMESERVERS = 3
_DOWN_STATUSES = frozenset({"critical", "maintenance"})


@dataclass(frozen=True)
class DnsSettings:
    """What the answers depend on, taken from the agent config (`dns_setup`)."""

    domain: str = "consul."  # lower case, trailing dot
    alt_domain: str = ""
    datacenter: str = "dc1"
    node_ttl: int = 0
    service_ttl: dict[str, int] = field(default_factory=dict)
    only_passing: bool = False
    enable_truncate: bool = False
    udp_answer_limit: int = 3
    a_record_limit: int = 0
    node_meta_txt: bool = True
    allow_stale: bool = True
    soa_refresh: int = 3600
    soa_retry: int = 600
    soa_expire: int = 86400
    soa_min_ttl: int = 0
    recursors: tuple[tuple[str, int], ...] = ()
    recursor_timeout_s: float = 2.0
    token: str = ""  # acl.tokens.default: DNS reads run with it

    def service_ttl_for(self, service: str) -> int:
        exact = self.service_ttl.get(service)
        if exact is not None:
            return exact
        best_len, best = -1, 0
        for key, ttl in self.service_ttl.items():
            if key.endswith("*") and service.startswith(key[:-1]) and len(key) > best_len:
                best_len, best = len(key), ttl
        return best


# ----- records and answers ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class Soa:
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


RData = str | Srv | Soa  # A/AAAA: address text; CNAME/NS/PTR: a name; TXT: text


@dataclass(frozen=True, slots=True)
class Record:
    name: str | None  # None: the question name, as the client spelled it
    rtype: int
    ttl: int
    data: RData


@dataclass(frozen=True, slots=True)
class Group:
    """One instance's records: kept or trimmed together."""

    answers: tuple[Record, ...]
    extras: tuple[Record, ...] = ()


@dataclass(frozen=True)
class Answer:
    rcode: int
    groups: tuple[Group, ...] = ()
    authority: tuple[Record, ...] = ()
    extras: tuple[Record, ...] = ()  # glue that is never trimmed (NS lookups)
    authoritative: bool = True
    shuffle: bool = False
    answer_limit: int = 0  # a_record_limit: at most this many groups (0: no limit)


# ----- what a name asks for ------------------------------------------------------


@dataclass(frozen=True)
class ServiceLookup:
    service: str
    tag: str  # "" for no tag filter
    domain: str  # the domain the question used (primary or alt), for SRV targets
    # `<service>.connect.<domain>`: the service's connect-capable instances
    # (its proxies, with their addresses and ports) instead of the service's own.
    connect: bool = False


@dataclass(frozen=True)
class NodeLookup:
    node: str
    domain: str


@dataclass(frozen=True)
class NameserverLookup:
    domain: str
    qtype: int  # SOA or NS


@dataclass(frozen=True)
class PtrLookup:
    address: str


@dataclass(frozen=True)
class Recurse:
    """Outside our domain: recursors answer, or REFUSED without them."""


@dataclass(frozen=True)
class Fixed:
    answer: Answer


@dataclass(frozen=True)
class QueryLookup:
    """`<query>.query.<domain>`: the answer of a prepared query (by ID or name)."""

    query: str
    domain: str


Lookup = ServiceLookup | NodeLookup | NameserverLookup | PtrLookup | Recurse | Fixed | QueryLookup


def soa_record(settings: DnsSettings, domain: str, serial: int) -> Record:
    return Record(
        name=domain,
        rtype=SOA,
        ttl=settings.soa_min_ttl,
        data=Soa(
            mname="ns." + domain,
            rname="hostmaster." + domain,
            serial=serial & 0xFFFFFFFF,
            refresh=settings.soa_refresh,
            retry=settings.soa_retry,
            expire=settings.soa_expire,
            minimum=settings.soa_min_ttl,
        ),
    )


def not_found(settings: DnsSettings, domain: str, serial: int, rcode: int = NXDOMAIN) -> Answer:
    """NXDOMAIN (or NODATA with rcode NOERROR), with the SOA for negative caching."""
    return Answer(rcode=rcode, authority=(soa_record(settings, domain, serial),))


def _split_domain(settings: DnsSettings, labels: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """(matched domain, labels before it); domain "" when the name is outside ours."""
    best = ""
    rest: tuple[str, ...] = labels
    for domain in (settings.domain, settings.alt_domain):
        if not domain:
            continue
        dlabels = tuple(domain.rstrip(".").split("."))
        n = len(dlabels)
        if len(labels) >= n and labels[len(labels) - n :] == dlabels and len(domain) > len(best):
            best, rest = domain, labels[: len(labels) - n]
    return best, rest


def _reverse_address(labels: tuple[str, ...]) -> str | None:
    try:
        if labels[-2:] == ("in-addr", "arpa") and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        if labels[-2:] == ("ip6", "arpa") and len(labels) == 34:
            nibbles = "".join(reversed(labels[:32]))
            return str(ipaddress.IPv6Address(int(nibbles, 16)))
    except ValueError:
        return None
    return None


def _addr_answer(settings: DnsSettings, hexip: str, qtype: int, domain: str, serial: int) -> Answer:
    try:
        raw = bytes.fromhex(hexip)
    except ValueError:
        return not_found(settings, domain, serial)
    if len(raw) == 4:
        ip, rtype = str(ipaddress.IPv4Address(raw)), A
    elif len(raw) == 16:
        ip, rtype = str(ipaddress.IPv6Address(raw)), AAAA
    else:
        return not_found(settings, domain, serial)
    if qtype not in (rtype, ANY):
        return not_found(settings, domain, serial, NOERROR)
    return Answer(NOERROR, groups=(Group((Record(None, rtype, settings.node_ttl, ip),)),))


def classify(settings: DnsSettings, labels: tuple[str, ...], qtype: int, serial: int) -> Lookup:
    """What a (lower-cased) question name asks for."""
    domain, parts = _split_domain(settings, labels)
    if not domain:
        address = _reverse_address(labels) if qtype in (PTR, ANY) else None
        return PtrLookup(address) if address else Recurse()
    if qtype in (SOA, NS):
        return NameserverLookup(domain, qtype)
    if qtype in (AXFR, IXFR):
        return Fixed(Answer(NOTIMP))
    # The rightmost kind label splits the name: parts before it, datacenter after.
    kind, before = "", parts
    after: tuple[str, ...] = ()
    for i in range(len(parts) - 1, -1, -1):
        label = parts[i]
        if label in _QUERY_KINDS:
            kind, before, after = label, parts[:i], parts[i + 1 :]
            break
        if qtype == SRV and label.startswith("_"):
            # RFC 2782 names may leave out ".service".
            kind, before, after = "service", parts[: i + 1], parts[i + 1 :]
            break
    if not kind or not before or len(after) > 1:
        return Fixed(not_found(settings, domain, serial))
    if after and after[0] != settings.datacenter:
        # One datacenter only: any other is "no path to datacenter", which
        # Consul answers as NXDOMAIN.
        return Fixed(not_found(settings, domain, serial))
    if kind == "service":
        if len(before) == 2 and before[0].startswith("_") and before[1].startswith("_"):
            tag = before[1][1:]
            return ServiceLookup(before[0][1:], "" if tag == "tcp" else tag, domain)
        return ServiceLookup(before[-1], ".".join(before[:-1]), domain)
    if kind == "connect" and len(before) == 1:
        return ServiceLookup(before[0], "", domain, connect=True)
    if kind == "node":
        return NodeLookup(".".join(before), domain)
    if kind == "addr" and len(before) == 1:
        return Fixed(_addr_answer(settings, before[0], qtype, domain, serial))
    if kind == "query":
        return QueryLookup(".".join(before), domain)
    # .ingress and .virtual are not served yet.
    return Fixed(not_found(settings, domain, serial))


def watch_key(lookup: Lookup) -> str | None:
    """The state-store index key an answer to `lookup` depends on (None: nothing)."""
    if isinstance(lookup, ServiceLookup):
        return f"{'connect' if lookup.connect else 'service'}:{lookup.service}"
    if isinstance(lookup, NodeLookup):
        return f"node:{lookup.node}"
    if isinstance(lookup, NameserverLookup):
        return "service:consul"
    if isinstance(lookup, PtrLookup):
        return "nodes"
    return None


# ----- building answers ------------------------------------------------------------


def is_healthy(checks: Iterable[HealthCheck], only_passing: bool) -> bool:
    if only_passing:
        return all(check.status == "passing" for check in checks)
    return not any(check.status in _DOWN_STATUSES for check in checks)


def _weight(row: CheckServiceNode) -> int:
    weights = row.service.weights
    if any(check.status == "warning" for check in row.checks):
        return weights.warning if weights else 1
    return weights.passing if weights else 1


def _valid_name(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return len(name) <= 253 and all(0 < len(label) <= 63 for label in labels)


def _ip_kind(address: str) -> int:
    """A or AAAA for an IP literal, CNAME for anything else."""
    try:
        return A if ipaddress.ip_address(address).version == 4 else AAAA
    except ValueError:
        return CNAME


def address_records(name: str | None, address: str, qtype: int, ttl: int) -> tuple[Record, ...]:
    kind = _ip_kind(address)
    if kind == CNAME:
        if not address or not _valid_name(address):
            return ()
        if qtype in (A, AAAA, ANY, CNAME, TXT):
            return (Record(name, CNAME, ttl, address.rstrip(".") + "."),)
        return ()
    if qtype in (kind, ANY):
        return (Record(name, kind, ttl, address),)
    return ()


def _rfc1464(key: str, value: str) -> str:
    """Node meta as TXT: `key=value`, with ` = and edge spaces in the key escaped."""
    if key.lower().startswith("rfc1035-"):
        return value
    key = key.replace("`", "``").replace("=", "`=")
    stripped = key.lstrip(" ")
    lead = len(key) - len(stripped)
    core = stripped.rstrip(" ")
    trail = len(stripped) - len(core)
    return "` " * lead + core + "` " * trail + "=" + value.replace("`", "``")


def meta_records(name: str | None, node: Node, ttl: int) -> tuple[Record, ...]:
    return tuple(Record(name, TXT, ttl, _rfc1464(k, v)) for k, v in sorted(node.meta.items()))


def _node_fqdn(node: str, settings: DnsSettings, domain: str) -> str:
    return f"{node}.node.{settings.datacenter}.{domain}".lower()


def _srv_groups(
    settings: DnsSettings, rows: Sequence[CheckServiceNode], domain: str, ttl: int
) -> list[Group]:
    groups: list[Group] = []
    seen: set[tuple[str, str, int]] = set()
    for row in rows:
        node, service = row.node, row.service
        key = (node.node, service.address, service.port)
        if key in seen:
            continue
        seen.add(key)
        target = _node_fqdn(node.node, settings, domain)
        address = service.address or node.address
        kind = _ip_kind(address)
        if service.address and service.address != node.address:
            if kind == CNAME:
                target = address.rstrip(".").lower() + "."
            else:
                # An IP cannot be an SRV target, so it is spelled as an .addr name.
                packed = ipaddress.ip_address(address).packed.hex()
                target = f"{packed}.addr.{settings.datacenter}.{domain}"
        if not _valid_name(target):
            continue
        extras = address_records(target, address, ANY, ttl) if kind != CNAME else ()
        if settings.node_meta_txt and target.startswith(node.node.lower() + ".node."):
            extras += meta_records(target, node, ttl)
        srv = Record(None, SRV, ttl, Srv(1, _weight(row), service.port, target))
        groups.append(Group((srv,), extras))
    return groups


def _address_groups(
    settings: DnsSettings, rows: Sequence[CheckServiceNode], qtype: int, ttl: int
) -> list[Group]:
    groups: list[Group] = []
    cname_group: Group | None = None
    seen: set[str] = set()
    meta_in_answer = qtype in (ANY, TXT)
    for row in rows:
        address = row.service.address or row.node.address
        if address in seen:
            continue
        seen.add(address)
        records = address_records(None, address, qtype, ttl)
        meta = meta_records(None, row.node, ttl)
        if records and records[0].rtype == CNAME:
            # A hostname is used only when no instance has an IP of the asked type.
            if cname_group is None:
                cname_group = Group(records)
            continue
        if meta_in_answer:
            records += meta
        if records:
            extras = meta if settings.node_meta_txt and not meta_in_answer else ()
            groups.append(Group(records, extras))
    if not groups and cname_group is not None:
        groups.append(cname_group)
    return groups


def answer_service(
    settings: DnsSettings,
    lookup: ServiceLookup,
    qtype: int,
    rows: Sequence[CheckServiceNode],
    serial: int,
) -> Answer:
    tag = lookup.tag
    healthy = [
        row
        for row in rows
        if is_healthy(row.checks, settings.only_passing)
        and (not tag or tag in (t.lower() for t in row.service.tags))
    ]
    if not healthy:
        return not_found(settings, lookup.domain, serial)
    ttl = settings.service_ttl_for(lookup.service)
    return _instances_answer(settings, lookup.domain, qtype, healthy, ttl, serial, shuffle=True)


def _instances_answer(
    settings: DnsSettings,
    domain: str,
    qtype: int,
    rows: Sequence[CheckServiceNode],
    ttl: int,
    serial: int,
    shuffle: bool,
) -> Answer:
    """Records for instances already chosen: SRV groups, or address groups
    cut to `a_record_limit`; NODATA when none has a record of the type."""
    if qtype == SRV:
        groups = _srv_groups(settings, rows, domain, ttl)
        limit = 0
    else:
        groups = _address_groups(settings, rows, qtype, ttl)
        limit = settings.a_record_limit if qtype in (A, AAAA, ANY) else 0
    if not groups:
        return not_found(settings, domain, serial, NOERROR)
    return Answer(NOERROR, groups=tuple(groups), shuffle=shuffle, answer_limit=limit)


def answer_query(
    settings: DnsSettings,
    lookup: QueryLookup,
    qtype: int,
    executed: tuple[str, str, Sequence[CheckServiceNode]] | None,
    serial: int,
) -> Answer:
    """A prepared query's answer. `executed` is (service, the query's DNS TTL
    text, its instances in the query's order: already filtered, shuffled and
    sorted by it), None for no such query. The TTL is the query's own when it
    has one, else the service's."""
    if executed is None or not executed[2]:
        return not_found(settings, lookup.domain, serial)
    service, ttl_text, rows = executed
    ttl = settings.service_ttl_for(service)
    if ttl_text:
        # A bad TTL is refused when the query is written; keep the default if one slipped by.
        with contextlib.suppress(ValueError):
            ttl = int(parse_duration(ttl_text))
    # In the query's order (it shuffled, or sorted by distance): not shuffled again.
    return _instances_answer(settings, lookup.domain, qtype, rows, ttl, serial, shuffle=False)


def answer_node(
    settings: DnsSettings, lookup: NodeLookup, qtype: int, node: Node | None, serial: int
) -> Answer:
    if node is None:
        return not_found(settings, lookup.domain, serial)
    ttl = settings.node_ttl
    records: tuple[Record, ...] = ()
    if qtype != TXT:
        records = address_records(None, node.address, qtype, ttl)
    meta = meta_records(None, node, ttl)
    extras: tuple[Record, ...] = ()
    if qtype in (ANY, TXT):
        records += meta
    elif settings.node_meta_txt and records:
        extras = meta
    if not records:
        return not_found(settings, lookup.domain, serial, NOERROR)
    return Answer(NOERROR, groups=(Group(records, extras),))


def answer_nameservers(
    settings: DnsSettings,
    lookup: NameserverLookup,
    servers: Sequence[CheckServiceNode],
    serial: int,
) -> Answer:
    """SOA or NS for any name in the domain: up to three healthy servers as NS."""
    ns: list[Record] = []
    glue: list[Record] = []
    for row in servers:
        if len(ns) >= _MAX_NAMESERVERS:
            break
        if not is_healthy(row.checks, settings.only_passing):
            continue
        fqdn = _node_fqdn(row.node.node, settings, lookup.domain)
        if not _valid_name(fqdn):
            continue
        ns.append(Record(lookup.domain, NS, settings.node_ttl, fqdn))
        glue.extend(address_records(fqdn, row.node.address, ANY, settings.node_ttl))
    if lookup.qtype == SOA:
        soa = soa_record(settings, lookup.domain, serial)
        return Answer(NOERROR, groups=(Group((soa,)),), authority=tuple(ns), extras=tuple(glue))
    return Answer(NOERROR, groups=(Group(tuple(ns)),), extras=tuple(glue))


def answer_ptr(settings: DnsSettings, lookup: PtrLookup, nodes: Sequence[Node]) -> Answer | None:
    """PTR to the node with that address; None when no node has it (then recurse)."""
    for node in nodes:
        try:
            same = ipaddress.ip_address(node.address) == ipaddress.ip_address(lookup.address)
        except ValueError:
            continue
        if same:
            target = _node_fqdn(node.node, settings, settings.domain)
            if _valid_name(target):
                return Answer(NOERROR, groups=(Group((Record(None, PTR, 0, target),)),))
    return None
