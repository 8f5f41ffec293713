"""`proconsul tls ca create` and `proconsul tls cert create`: offline TLS files.

Job: parse Consul's flags, read and write files in the current directory and
print Consul's lines; the certificate work itself is `proconsul.tls`.

Rules (as Consul does it):
- The CA goes to `<domain>-agent-ca.pem` / `<domain>-agent-ca-key.pem`.
- Certificates go to `<dc>-<role>-<domain>-<n>.pem` / `...-<n>-key.pem`, with
  `<n>` the first number for which neither file exists.
- An existing file is never overwritten; private keys are written 0600; every
  file is written atomically. Either both files of a pair are written or none.
- Progress lines go to stdout, errors to stderr; any error exits 1.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from proconsul import tls
from proconsul.cli.offline import OfflineError, run_offline
from proconsul.config.flags import FlagSet
from proconsul.fileio import write_file_atomic, write_private_file

CERT_MODE = 0o644
# Consul gives up after this many numbered files of one kind exist.
MAX_INDEX = 10000

SERVER_WARNING = """\
==> WARNING: Server Certificates grants authority to become a
    server and access all state in the cluster including root keys
    and all ACL tokens. Do not distribute them to production hosts
    that are not server nodes. Store them as securely as CA keys."""


def ca_create(argv: list[str]) -> int:
    flags = FlagSet("tls ca create")
    flags.integer("days", 1825, "Number of days the CA is valid for. Defaults to 1825 days.")
    flags.string("domain", "consul", "The DNS domain of the Consul cluster. Defaults to consul.")
    flags.boolean(
        "name-constraint",
        False,
        "Enables X.509 name constraints for the CA: it may then only sign certificates "
        "for localhost, -domain and -additional-name-constraint names.",
    )
    flags.repeated(
        "additional-name-constraint",
        "Another domain the CA may sign for. Repeatable. Only used with -name-constraint.",
    )
    flags.string("common-name", "", "Common Name of the CA. Defaults to Consul Agent CA <serial>.")
    flags.string(
        "cluster-id", "", "ID of the Consul cluster; adds the SPIFFE signing ID as the CA's URI."
    )
    return run_offline(flags, argv, _ca_create, (tls.TLSError,))


def cert_create(argv: list[str]) -> int:
    flags = FlagSet("tls cert create")
    flags.string(
        "ca", "#DOMAIN#-agent-ca.pem", "Path to the CA. Defaults to #DOMAIN#-agent-ca.pem."
    )
    flags.string(
        "key",
        "#DOMAIN#-agent-ca-key.pem",
        "Path to the CA key. Defaults to #DOMAIN#-agent-ca-key.pem.",
    )
    flags.boolean("server", False, "Generate a server certificate.")
    flags.boolean("client", False, "Generate a client certificate.")
    flags.boolean("cli", False, "Generate a cli certificate.")
    flags.string(
        "node",
        "",
        "With -server, also include the DNS name <node>.server.<datacenter>.<domain>.",
    )
    flags.integer("days", 365, "Number of days the certificate is valid for. Defaults to 1 year.")
    flags.string("dc", "dc1", "The datacenter. Defaults to dc1.")
    flags.string("domain", "consul", "The DNS domain. Defaults to consul.")
    flags.repeated(
        "additional-dnsname",
        "Another DNS name for Subject Alternative Names (localhost is always included). "
        "Repeatable.",
    )
    flags.repeated(
        "additional-ipaddress",
        "Another IP address for Subject Alternative Names (127.0.0.1 is always included "
        "for servers and clients). Repeatable.",
    )
    return run_offline(flags, argv, _cert_create, (tls.TLSError,))


def _ca_create(values: dict[str, Any]) -> None:
    domain: str = values["domain"]
    days = _positive_days(values["days"])
    cert_file, key_file = f"{domain}-agent-ca.pem", f"{domain}-agent-ca-key.pem"
    for name in (cert_file, key_file):
        if os.path.lexists(name):
            raise OfflineError(f"{name} already exists.")
    constraints: list[str] = []
    if values["name-constraint"]:
        constraints = [*values["additional-name-constraint"], domain, "localhost"]
    uris = [f"spiffe://{values['cluster-id']}.{domain}"] if values["cluster-id"] else []
    pair = tls.generate_ca(
        now=datetime.now(UTC),
        valid_for=timedelta(days=days),
        common_name=values["common-name"] or None,
        permitted_dns_domains=constraints,
        uris=uris,
    )
    _save_pair(pair, cert_file, key_file)


def _cert_create(values: dict[str, Any]) -> None:
    if not values["ca"]:
        raise OfflineError("Please provide the ca")
    if not values["key"]:
        raise OfflineError("Please provide the key")
    roles: list[tls.Role] = [r for r in tls.ROLES if values[r]]
    if len(roles) != 1:
        raise OfflineError("Please provide either -server, -client, or -cli")
    role = roles[0]
    if values["node"] and role != "server":
        raise OfflineError("-node requires -server")
    dc: str = values["dc"]
    domain: str = values["domain"]
    spec = tls.agent_cert_spec(
        role,
        datacenter=dc,
        domain=domain,
        valid_for=timedelta(days=_positive_days(values["days"])),
        node=values["node"] or None,
        extra_dns_names=[d.strip() for d in values["additional-dnsname"] if d.strip()],
        extra_ip_addresses=_parse_ips(values["additional-ipaddress"]),
    )
    cert_file, key_file = _free_pair(f"{dc}-{role}-{domain}")

    ca_file = values["ca"].replace("#DOMAIN#", domain, 1)
    ca_key_file = values["key"].replace("#DOMAIN#", domain, 1)
    ca_pem = _read("Error reading CA", ca_file)
    ca_key_pem = _read("Error reading CA key", ca_key_file)
    if role == "server":
        print(SERVER_WARNING)
    print(f"==> Using {ca_file} and {ca_key_file}")

    ca = tls.load_ca(ca_pem, ca_key_pem)
    now = datetime.now(UTC)
    pair = tls.issue_leaf(ca, spec, now=now)
    # Like Consul, refuse to save a certificate that would not verify,
    # e.g. a name outside the CA's name constraints.
    tls.verify_leaf(
        ca.cert, tls.load_certificate(pair.cert_pem), now=now, dns_name=spec.common_name
    )
    _save_pair(pair, cert_file, key_file)


def _positive_days(days: int) -> int:
    if days < 1:
        raise OfflineError(f"-days must be at least 1, got {days}")
    return days


def _parse_ips(texts: list[str]) -> list[tls.IPAddress]:
    ips: list[tls.IPAddress] = []
    for text in texts:
        if not text.strip():
            continue
        try:
            ips.append(ipaddress.ip_address(text.strip()))
        except ValueError:
            raise OfflineError(f"Invalid IP address for -additional-ipaddress: {text}") from None
    return ips


def _free_pair(prefix: str) -> tuple[str, str]:
    for i in range(MAX_INDEX + 1):
        cert_file, key_file = f"{prefix}-{i}.pem", f"{prefix}-{i}-key.pem"
        if not os.path.lexists(cert_file) and not os.path.lexists(key_file):
            return cert_file, key_file
    raise OfflineError("Could not find a filename that doesn't already exist")


def _read(what: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise OfflineError(f"{what}: {_go_os_error('open', path, exc)}") from None


def _save_pair(pair: tls.CertKeyPair, cert_file: str, key_file: str) -> None:
    """Write both files exclusively, then report them; on failure leave neither."""
    try:
        write_file_atomic(cert_file, pair.cert_pem.encode(), CERT_MODE, exclusive=True)
    except FileExistsError:
        raise OfflineError(f"{cert_file} already exists.") from None
    except OSError as exc:
        raise OfflineError(_go_os_error("write", cert_file, exc)) from None
    try:
        write_private_file(key_file, pair.key_pem.encode(), exclusive=True)
    except OSError as exc:
        os.unlink(cert_file)  # ours: it was created exclusively just above
        if isinstance(exc, FileExistsError):
            raise OfflineError(f"{key_file} already exists.") from None
        raise OfflineError(_go_os_error("write", key_file, exc)) from None
    print(f"==> Saved {cert_file}")
    print(f"==> Saved {key_file}")


def _go_os_error(op: str, path: str, exc: OSError) -> str:
    """Format like Go's *PathError ("open x.pem: no such file or directory"),
    which is what Consul users and scripts see."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"{op} {path}: {reason[:1].lower()}{reason[1:]}"
