"""The go-sockaddr template functions, over a table of interface addresses.

Each entry of `LIBRARY` is `name -> (argument count, function)`; every
function takes the interface table first (only the `Get*` sources use it),
then its template arguments, the piped value last, as Go templates pass it.
Semantics follow go-sockaddr: filters take a selector and a `|`-separated
parameter, `sort` a comma-separated list of `[+-]criterion`, `attr` reads the
first entry and `join` all of them. Errors are TemplateError.

One deliberate widening: `GetInterfaceIP` prefers forwardable addresses as
go-sockaddr does, but falls back to the interface's other addresses instead of
returning nothing, so `{{ GetInterfaceIP "lo" }}` gives 127.0.0.1 (loopback
addresses are never forwardable, and our multi-node labs bind to them).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from typing import Union

from proconsul.config.interfaces import (
    KNOWN_RFCS,
    IfAddr,
    attribute,
    in_networks,
    in_rfc,
    is_forwardable,
    sockaddr_string,
)


class TemplateError(ValueError):
    """A template that does not parse or cannot be evaluated."""


Value = Union[str, int, list[IfAddr], IfAddr]  # noqa: UP007 - mypy wants one spelling


def _as_list(name: str, value: Value) -> list[IfAddr]:
    if isinstance(value, IfAddr):
        return [value]
    if not isinstance(value, list):
        raise TemplateError(f"{name}: expected a list of interfaces, got {value!r}")
    return value


def _as_text(name: str, value: Value) -> str:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise TemplateError(f"{name}: expected a string argument")


def _private_interfaces(interfaces: list[IfAddr]) -> list[IfAddr]:
    chosen = [
        i for i in interfaces if "up" in i.flags and is_forwardable(i.ip) and in_rfc(6890, i.ip)
    ]
    return _sort("default,type,size", chosen)


def _public_interfaces(interfaces: list[IfAddr]) -> list[IfAddr]:
    chosen = [
        i for i in interfaces if "up" in i.flags and is_forwardable(i.ip) and not in_rfc(6890, i.ip)
    ]
    return _sort("default,type,size", chosen)


def _by_type_size(interfaces: list[IfAddr]) -> list[IfAddr]:
    return _sort("type,size", interfaces)


def _first_address(interfaces: list[IfAddr]) -> str:
    return str(interfaces[0].ip) if interfaces else ""


def _join_addresses(interfaces: list[IfAddr]) -> str:
    return " ".join(str(i.ip) for i in interfaces)


def _named(interfaces: list[IfAddr], pattern: Value) -> list[IfAddr]:
    regex = _regex(_as_text("name", pattern))
    return _by_type_size([i for i in interfaces if regex.search(i.name)])


def _interface_ip(interfaces: list[IfAddr], pattern: Value) -> str:
    named = _named(interfaces, pattern)
    forwardable = [i for i in named if is_forwardable(i.ip)]
    return _first_address(forwardable or named)


def _interface_ips(interfaces: list[IfAddr], pattern: Value) -> str:
    return _join_addresses(_named(interfaces, pattern))


def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise TemplateError(f"bad regular expression {pattern!r}: {exc}") from None


_SortKey = Callable[[IfAddr, IfAddr], int]


def _cmp(a: int, b: int) -> int:
    return (a > b) - (a < b)


def _same_type(key: Callable[[IfAddr], int]) -> _SortKey:
    """Compare by key only within one address family; mixed pairs tie, as in go-sockaddr."""
    return lambda a, b: _cmp(key(a), key(b)) if a.version == b.version else 0


_SORTS: dict[str, _SortKey] = {
    "address": _same_type(lambda i: int(i.ip)),
    "default": lambda a, b: _cmp(not a.default_route, not b.default_route),
    "name": lambda a, b: (a.name > b.name) - (a.name < b.name),
    "port": lambda a, b: 0,
    "private": lambda a, b: _cmp(not in_rfc(6890, a.ip), not in_rfc(6890, b.ip)),
    "size": _same_type(lambda i: i.address.network.prefixlen),
    "type": lambda a, b: _cmp(a.version, b.version),
}


def _reversed(compare: _SortKey) -> _SortKey:
    return lambda a, b: compare(b, a)


def _sort(criteria: Value, items: Value) -> list[IfAddr]:
    text = _as_text("sort", criteria)
    interfaces = _as_list("sort", items)
    clauses: list[_SortKey] = []
    for raw in text.split(","):
        clause = raw.strip().lower()
        descending = clause.startswith("-")
        name = clause.lstrip("+-")
        if name not in _SORTS:
            raise TemplateError(f"unknown sort type: {raw!r}")
        clauses.append(_reversed(_SORTS[name]) if descending else _SORTS[name])

    def combined(a: IfAddr, b: IfAddr) -> int:
        for clause_cmp in clauses:
            result = clause_cmp(a, b)
            if result:
                return result
        return 0

    return sorted(interfaces, key=functools.cmp_to_key(combined))


def _filter(selector: Value, param: Value, items: Value, *, keep: bool) -> list[IfAddr]:
    which = "include" if keep else "exclude"
    name = _as_text(which, selector).lower()
    text = _as_text(which, param)
    interfaces = _as_list(which, items)
    matchers: dict[str, Callable[[str], Callable[[IfAddr], bool]]] = {
        "address": _match_address,
        "flag": _match_flags,
        "flags": _match_flags,
        "name": _match_name,
        "network": _match_network,
        "port": lambda p: lambda i: p == "0",
        "rfc": _match_rfcs,
        "rfcs": _match_rfcs,
        "size": _match_size,
        "type": _match_type,
    }
    if name not in matchers:
        raise TemplateError(f"invalid {which} selector {name!r}")
    matches = matchers[name](text)
    return [i for i in interfaces if matches(i) == keep]


def _match_name(pattern: str) -> Callable[[IfAddr], bool]:
    regex = _regex(pattern)
    return lambda i: bool(regex.search(i.name))


def _match_address(pattern: str) -> Callable[[IfAddr], bool]:
    regex = _regex(pattern)
    return lambda i: bool(regex.search(sockaddr_string(i)))


def _match_flags(text: str) -> Callable[[IfAddr], bool]:
    flags: set[str] = set()
    attrs: list[Callable[[IfAddr], bool]] = []
    for raw in text.lower().split("|"):
        if raw in ("up", "broadcast", "loopback", "multicast"):
            flags.add(raw)
        elif raw == "point-to-point":
            flags.add("pointtopoint")
        elif raw == "down":
            attrs.append(lambda i: "up" not in i.flags)
        elif raw == "forwardable":
            attrs.append(lambda i: is_forwardable(i.ip))
        elif raw == "global unicast":
            attrs.append(lambda i: i.ip.is_global)
        elif raw == "link-local unicast":
            attrs.append(lambda i: i.ip.is_link_local)
        elif raw == "unspecified":
            attrs.append(lambda i: i.ip.is_unspecified)
        elif raw == "link-local multicast":
            attrs.append(lambda i: in_networks(i.ip, _LINK_LOCAL_MULTICAST))
        elif raw == "interface-local multicast":
            attrs.append(lambda i: in_networks(i.ip, _INTERFACE_LOCAL_MULTICAST))
        else:
            raise TemplateError(f"Unknown interface flag: {raw!r}")
        if raw == "loopback":
            attrs.append(lambda i: i.ip.is_loopback)
        if raw == "multicast":
            attrs.append(lambda i: i.ip.is_multicast)
    return lambda i: bool(flags and flags <= i.flags) or any(check(i) for check in attrs)


_LINK_LOCAL_MULTICAST = (
    ipaddress.ip_network("224.0.0.0/24"),
    ipaddress.ip_network("ff02::/16"),
)
_INTERFACE_LOCAL_MULTICAST = (ipaddress.ip_network("ff01::/16"),)


def _match_network(text: str) -> Callable[[IfAddr], bool]:
    nets = []
    for cidr in text.split("|"):
        try:
            nets.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise TemplateError(f"unable to create an IP address from {cidr!r}") from None
    return lambda i: in_networks(i.ip, tuple(nets))


def _match_rfcs(text: str) -> Callable[[IfAddr], bool]:
    numbers = []
    for raw in text.split("|"):
        if not raw.isdigit() or int(raw) not in KNOWN_RFCS:
            raise TemplateError(f"unsupported RFC {raw!r}")
        numbers.append(int(raw))
    return lambda i: any(in_rfc(number, i.ip) for number in numbers)


def _match_size(text: str) -> Callable[[IfAddr], bool]:
    if not text.isdigit():
        raise TemplateError(f"invalid mask size {text!r}")
    return lambda i: i.address.network.prefixlen == int(text)


def _match_type(text: str) -> Callable[[IfAddr], bool]:
    versions: set[int] = set()
    for raw in text.lower().split("|"):
        if raw == "ip":
            versions |= {4, 6}
        elif raw in ("ipv4", "ipv6"):
            versions.add(int(raw[-1]))
        elif raw != "unix":
            raise TemplateError(f"invalid type {raw!r}")
    return lambda i: i.version in versions


def _unique(selector: Value, items: Value) -> list[IfAddr]:
    name = _as_text("unique", selector).lower()
    keys: dict[str, Callable[[IfAddr], str]] = {
        "address": sockaddr_string,
        "name": lambda i: i.name,
    }
    if name not in keys:
        raise TemplateError(f"unsupported unique constraint {name!r}")
    out: list[IfAddr] = []
    for entry in _as_list("unique", items):
        if not out or keys[name](out[-1]) != keys[name](entry):
            out.append(entry)
    return out


def _count(name: str, value: Value) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    raise TemplateError(f"{name}: expected an integer, got {value!r}")


def _limit(count: Value, items: Value) -> list[IfAddr]:
    number = _count("limit", count)
    if number < 0:
        raise TemplateError("limit: expected a non-negative integer")
    return _as_list("limit", items)[:number]


def _offset(count: Value, items: Value) -> list[IfAddr]:
    number = _count("offset", count)
    interfaces = _as_list("offset", items)
    if abs(number) > len(interfaces):
        raise TemplateError(
            f"unable to seek past the end of the interface array: offset ({abs(number)}) "
            f"exceeds the number of interfaces ({len(interfaces)})"
        )
    return interfaces[len(interfaces) + number :] if number < 0 else interfaces[number:]


def _attr_of_list(name: Value, items: Value) -> str:
    interfaces = _as_list("attr", items)
    return _attribute(interfaces[0], _as_text("attr", name)) if interfaces else ""


def _attr_of_one(name: Value, item: Value) -> str:
    if not isinstance(item, IfAddr):
        raise TemplateError("Attr: expected one interface")
    return _attribute(item, _as_text("Attr", name))


def _join(name: Value, separator: Value, items: Value) -> str:
    attr = _as_text("join", name)
    sep = _as_text("join", separator)
    return sep.join(_attribute(entry, attr) for entry in _as_list("join", items))


def _attribute(entry: IfAddr, name: str) -> str:
    try:
        return attribute(entry, name)
    except ValueError as exc:
        raise TemplateError(str(exc)) from None


def _all(interfaces: list[IfAddr]) -> list[IfAddr]:
    return list(interfaces)


def _default(interfaces: list[IfAddr]) -> list[IfAddr]:
    return [i for i in interfaces if i.default_route]


def _private_ips(interfaces: list[IfAddr]) -> str:
    chosen = [i for i in _by_type_size(interfaces) if in_rfc(6890, i.ip) and is_forwardable(i.ip)]
    return _join_addresses(chosen)


def _public_ips(interfaces: list[IfAddr]) -> str:
    return _join_addresses([i for i in _by_type_size(interfaces) if not in_rfc(6890, i.ip)])


def _step(function: Callable[..., Value]) -> Callable[..., Value]:
    """Adapt a step that ignores the interface table to the library's calling convention."""
    return lambda _interfaces, *args: function(*args)


LIBRARY: dict[str, tuple[int, Callable[..., Value]]] = {
    "GetAllInterfaces": (0, _all),
    "GetDefaultInterfaces": (0, _default),
    "GetPrivateInterfaces": (0, _private_interfaces),
    "GetPublicInterfaces": (0, _public_interfaces),
    "GetPrivateIP": (0, lambda interfaces: _first_address(_private_interfaces(interfaces))),
    "GetPublicIP": (0, lambda interfaces: _first_address(_public_interfaces(interfaces))),
    "GetPrivateIPs": (0, _private_ips),
    "GetPublicIPs": (0, _public_ips),
    "GetInterfaceIP": (1, _interface_ip),
    "GetInterfaceIPs": (1, _interface_ips),
    "sort": (2, _step(_sort)),
    "include": (3, _step(lambda sel, param, items: _filter(sel, param, items, keep=True))),
    "exclude": (3, _step(lambda sel, param, items: _filter(sel, param, items, keep=False))),
    "unique": (2, _step(_unique)),
    "limit": (2, _step(_limit)),
    "offset": (2, _step(_offset)),
    "attr": (2, _step(_attr_of_list)),
    "Attr": (2, _step(_attr_of_one)),
    "join": (3, _step(_join)),
}
