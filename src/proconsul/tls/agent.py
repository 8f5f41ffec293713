"""What Consul puts in agent TLS certificates, by role.

Job: the names and usages of server, client and CLI certificates, in one
place, so `tls cert create`, auto_encrypt and the `verify_server_hostname`
check agree. Pure: no IO, no keys; it only builds `LeafSpec` values.

Facts (Consul's `tls cert create`):
- server: CN and SAN `server.<dc>.<domain>`, optional `<node>.server.<dc>.<domain>`,
  `localhost`, IP 127.0.0.1; EKU serverAuth + clientAuth.
- client: CN and SAN `client.<dc>.<domain>`, `localhost`, IP 127.0.0.1;
  EKU serverAuth + clientAuth (client agents also serve HTTPS).
- cli: CN and SAN `cli.<dc>.<domain>`, `localhost`; no EKU extension.
- Extra DNS names and IPs are added for every role.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

from proconsul.tls.certs import CLIENT_AUTH, SERVER_AUTH, IPAddress, LeafSpec, TLSError

Role = Literal["server", "client", "cli"]
ROLES: tuple[Role, ...] = ("server", "client", "cli")

LOCALHOST_IP = ipaddress.IPv4Address("127.0.0.1")


def server_name(datacenter: str, domain: str) -> str:
    """The name every server certificate carries and `verify_server_hostname` checks."""
    return f"server.{datacenter}.{domain}"


def role_name(role: Role, datacenter: str, domain: str) -> str:
    return f"{role}.{datacenter}.{domain}"


def agent_cert_spec(
    role: Role,
    *,
    datacenter: str,
    domain: str,
    valid_for: timedelta,
    node: str | None = None,
    extra_dns_names: Sequence[str] = (),
    extra_ip_addresses: Sequence[IPAddress] = (),
) -> LeafSpec:
    """The certificate Consul would issue to an agent of `role`."""
    if role not in ROLES:
        raise TLSError(f"unknown certificate role {role!r}")
    if node and role != "server":
        raise TLSError("-node requires -server")
    name = role_name(role, datacenter, domain)
    dns = [name]
    if node:
        dns.append(f"{node}.{name}")
    dns.append("localhost")
    ips: list[IPAddress] = [] if role == "cli" else [LOCALHOST_IP]
    usages = () if role == "cli" else (SERVER_AUTH, CLIENT_AUTH)
    return LeafSpec(
        common_name=name,
        valid_for=valid_for,
        dns_names=(*dns, *extra_dns_names),
        ip_addresses=(*ips, *extra_ip_addresses),
        ext_key_usages=usages,
    )
