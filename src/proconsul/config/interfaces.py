"""Network interface addresses: the record type, IP classification, and the
reader that asks the Linux kernel for the real table.

`IfAddr` is one address on one interface, the unit go-sockaddr templates work
on; `attribute()` reads one of its go-sockaddr attributes. Classification
(which RFC blocks an address is in, whether it is forwardable, whether Consul
would call it private) is pure and table-driven.
`read_interfaces()` is the only function here that touches the machine: it
lists addresses over rtnetlink (every address, including secondary ones such
as extra loopback addresses), falling back to ioctl plus /proc/net/if_inet6,
and reads interface flags and default routes from /sys and /proc. It only
reads; it never changes anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Linux interface flag bits, named the way Go's net.Flags prints them.
_FLAG_BITS = {
    "up": 0x1,
    "broadcast": 0x2,
    "loopback": 0x8,
    "pointtopoint": 0x10,
    "multicast": 0x1000,
}


@dataclass(frozen=True)
class IfAddr:
    """One IP address on one interface."""

    name: str
    address: IPInterface
    flags: frozenset[str] = field(default_factory=lambda: frozenset({"up"}))
    index: int = 0
    default_route: bool = False  # the interface carries a default route

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return self.address.ip

    @property
    def version(self) -> int:
        return self.address.version


def make_ifaddr(
    name: str, cidr: str, flags: str = "up", *, index: int = 0, default_route: bool = False
) -> IfAddr:
    """Build an IfAddr from text, for tests and fixtures: `make_ifaddr("eth0", "10.0.0.5/24")`."""
    return IfAddr(
        name=name,
        address=ipaddress.ip_interface(cidr),
        flags=frozenset(part for part in flags.split("|") if part),
        index=index,
        default_route=default_route,
    )


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# The RFC blocks go-sockaddr knows by number that templates commonly name.
KNOWN_RFCS: dict[int, tuple[IPNetwork, ...]] = {
    919: _nets("255.255.255.255/32"),
    1112: _nets("240.0.0.0/4"),
    1122: _nets("0.0.0.0/8", "127.0.0.0/8"),
    1918: _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
    2544: _nets("198.18.0.0/15"),
    3068: _nets("192.88.99.0/24", "2002::/16"),
    3849: _nets("2001:db8::/32"),
    3927: _nets("169.254.0.0/16"),
    4193: _nets("fc00::/7"),
    4291: _nets("::/128", "::1/128", "::ffff:0:0/96", "fe80::/10"),
    5737: _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"),
    6052: _nets("64:ff9b::/96"),
    6598: _nets("100.64.0.0/10"),
    6890: _nets(
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.0.0/29",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::1/128",
        "::/128",
        "64:ff9b::/96",
        "::ffff:0:0/96",
        "100::/64",
        "2001::/23",
        "2001::/32",
        "2001:2::/48",
        "2001:db8::/32",
        "2001:10::/28",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
    ),
    7335: _nets("192.0.0.0/29"),
}

# go-sockaddr's list of blocks that are never forwarded (taken from RFC 6890).
NON_FORWARDABLE = _nets(
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::1/128",
    "::/128",
    "::ffff:0:0/96",
    "2001:db8::/32",
    "2001:10::/28",
    "fe80::/10",
)

# What Consul counts as a private IPv4 when it picks an advertise address.
_CONSUL_PRIVATE_V4 = _nets("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16")
_NOT_PUBLIC_V6 = _nets("fc00::/7", "fe80::/10", "::1/128", "::/128", "::ffff:0:0/96")


def in_networks(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: tuple[IPNetwork, ...]
) -> bool:
    return any(ip.version == net.version and ip in net for net in nets)


def in_rfc(rfc: int, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return in_networks(ip, KNOWN_RFCS[rfc])


def is_forwardable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not in_networks(ip, NON_FORWARDABLE)


def private_ipv4_addresses(interfaces: list[IfAddr]) -> list[str]:
    """Private IPv4 addresses on interfaces that are up and not loopback (Consul's rule)."""
    return [
        str(entry.ip)
        for entry in interfaces
        if entry.version == 4
        and "up" in entry.flags
        and "loopback" not in entry.flags
        and in_networks(entry.ip, _CONSUL_PRIVATE_V4)
    ]


def public_ipv6_addresses(interfaces: list[IfAddr]) -> list[str]:
    """Global IPv6 addresses on interfaces that are up and not loopback (Consul's rule)."""
    return [
        str(entry.ip)
        for entry in interfaces
        if entry.version == 6
        and "up" in entry.flags
        and "loopback" not in entry.flags
        and not in_networks(entry.ip, _NOT_PUBLIC_V6)
    ]


def sockaddr_string(entry: IfAddr) -> str:
    """go-sockaddr's String(): the address, with /prefix unless it is a host route."""
    full = entry.address.network.prefixlen == entry.address.max_prefixlen
    return str(entry.ip) if full else f"{entry.ip}/{entry.address.network.prefixlen}"


_FLAG_ORDER = ("up", "broadcast", "loopback", "pointtopoint", "multicast")


def attribute(entry: IfAddr, name: str) -> str:
    """One go-sockaddr attribute of an interface address, as text."""
    ip = entry.ip
    net = entry.address.network
    bits = entry.address.max_prefixlen
    hosts = list(_usable(net))
    values: dict[str, Callable[[], str]] = {
        "address": lambda: str(ip),
        "host": lambda: str(ip),
        "string": lambda: sockaddr_string(entry),
        "type": lambda: f"IPv{entry.version}",
        "port": lambda: "0",
        "name": lambda: entry.name,
        "flags": lambda: "|".join(f for f in _FLAG_ORDER if f in entry.flags),
        "netmask": lambda: str(net.netmask),
        "network": lambda: str(net),
        "mask_bits": lambda: str(net.prefixlen),
        "size": lambda: str(net.num_addresses),
        "first_usable": lambda: str(hosts[0]),
        "last_usable": lambda: str(hosts[-1]),
        "hex": lambda: f"{int(ip):0{bits // 4}x}",
        "binary": lambda: f"{int(ip):0{bits}b}",
        "octets": lambda: " ".join(str(octet) for octet in ip.packed),
    }
    if entry.version == 4:
        values["broadcast"] = lambda: str(net.broadcast_address)
        values["uint32"] = lambda: str(int(ip))
    else:
        values["uint128"] = lambda: str(int(ip))
    if name not in values:
        raise ValueError(f"unsupported attribute name {name!r}")
    return values[name]()


def _usable(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    first, last = net.network_address, net.broadcast_address
    if net.version == 4 and net.prefixlen < 31:
        return (first + 1, last - 1)
    return (first, last)


# ---------------------------------------------------------------- the real table

_NETLINK_ROUTE_GETADDR = 22
_NETLINK_NEWADDR = 20
_NETLINK_DONE = 3
_NETLINK_ERROR = 2
_NLM_F_REQUEST_DUMP = 0x301
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B


def read_interfaces() -> list[IfAddr]:
    """Every address on every interface of this machine, in kernel order."""
    names = dict(socket.if_nameindex())
    try:
        raw = list(_netlink_addresses())
    except OSError:
        raw = list(_ioctl_ipv4_addresses(names)) + list(_proc_ipv6_addresses())
    defaults = _default_route_interfaces()
    flags_by_name: dict[str, frozenset[str]] = {}
    result = []
    for index, address in raw:
        name = names.get(index, str(index))
        if name not in flags_by_name:
            flags_by_name[name] = _interface_flags(name)
        result.append(
            IfAddr(
                name=name,
                address=address,
                flags=flags_by_name[name],
                index=index,
                default_route=name in defaults,
            )
        )
    return result


def _netlink_addresses() -> Iterator[tuple[int, IPInterface]]:
    """Dump all addresses with RTM_GETADDR; yields (interface index, address)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(2.0)
        sock.bind((0, 0))
        header = struct.pack("=IHHII", 24, _NETLINK_ROUTE_GETADDR, _NLM_F_REQUEST_DUMP, 1, 0)
        sock.send(header + struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0))
        while True:
            data = sock.recv(1 << 16)
            if not data:
                return
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if length < 16 or kind == _NETLINK_DONE:
                    return
                if kind == _NETLINK_ERROR:
                    raise OSError("netlink address dump failed")
                if kind == _NETLINK_NEWADDR:
                    entry = _parse_newaddr(data[offset + 16 : offset + length])
                    if entry is not None:
                        yield entry
                offset += (length + 3) & ~3


def _parse_newaddr(body: bytes) -> tuple[int, IPInterface] | None:
    family, prefix, _flags, _scope, index = struct.unpack_from("=BBBBI", body, 0)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs: dict[int, bytes] = {}
    pos = 8
    while pos + 4 <= len(body):
        attr_len, attr_type = struct.unpack_from("=HH", body, pos)
        if attr_len < 4:
            break
        attrs[attr_type] = body[pos + 4 : pos + attr_len]
        pos += (attr_len + 3) & ~3
    # On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    packed = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
    if packed is None:
        return None
    text = socket.inet_ntop(family, packed)
    return index, ipaddress.ip_interface(f"{text}/{prefix}")


def _ioctl_ipv4_addresses(names: dict[int, str]) -> Iterator[tuple[int, IPInterface]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for index, name in names.items():
            request = struct.pack("256s", name.encode()[:15])
            try:
                addr = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)[20:24]
                mask = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, request)[20:24]
            except OSError:
                continue
            text = f"{socket.inet_ntoa(addr)}/{socket.inet_ntoa(mask)}"
            yield index, ipaddress.IPv4Interface(text)


def _proc_ipv6_addresses() -> Iterator[tuple[int, IPInterface]]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            parts = line.split()
            if len(parts) < 6:
                continue
            packed = bytes.fromhex(parts[0])
            text = socket.inet_ntop(socket.AF_INET6, packed)
            yield int(parts[1], 16), ipaddress.IPv6Interface(f"{text}/{int(parts[2], 16)}")


def _interface_flags(name: str) -> frozenset[str]:
    value: int | None = None
    with contextlib.suppress(OSError, ValueError):
        value = int(Path(f"/sys/class/net/{name}/flags").read_text().strip(), 16)
    if value is None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                reply = fcntl.ioctl(
                    sock.fileno(), _SIOCGIFFLAGS, struct.pack("256s", name.encode()[:15])
                )
            value = struct.unpack_from("H", reply, 16)[0]
        except OSError:
            return frozenset({"up"})
    return frozenset(flag for flag, bit in _FLAG_BITS.items() if value & bit)


def _default_route_interfaces() -> set[str]:
    names: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and parts[1] == "00000000" and parts[7] == "00000000":
                names.add(parts[0])
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/ipv6_route").read_text().splitlines():
            parts = line.split()
            reject = len(parts) >= 10 and int(parts[8], 16) & 0x200
            default = len(parts) >= 10 and set(parts[0]) == {"0"} and parts[1] == "00"
            if default and not reject and parts[9] != "lo":
                names.add(parts[9])
    return names
