"""Value rules for configuration, beyond what the types already enforce.

Two kinds of rule, run at different times:
- `source_problems`: rules about single values (a port in range, a policy
  name, a gossip key, an address or template that parses). These run on each
  source alone, so the error names the file that holds the bad value.
- `merged_problems`: rules that relate keys to each other (bootstrap needs
  server, `data_dir` is required) and run once on the merged result.
- `listener_problems`: the sockets the agent will bind, once addresses are
  resolved: no two may share a port on overlapping addresses, nor two unix
  listeners one socket path (the agent could not start).
Each yields `(key path, what is wrong)`; the loader turns the first into a
ConfigError. Nothing here looks at the machine: templates are only parsed
(the loader's own checks read the file system: `data_dir`, socket paths).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from proconsul.config import sockaddr
from proconsul.config.schema import ConfigFile, ListenerKind, RuntimeConfig
from proconsul.connect.config_entries import (
    ConfigEntryError,
    check_subset_filter,
    parse_config_entry,
)
from proconsul.structs.config_entries import KINDS as STORED_KINDS
from proconsul.structs.definitions import CheckDefinition, ServiceDefinition
from proconsul.structs.hostport import split_host_port

Problem = tuple[str, str]

_DATACENTER = re.compile(r"^[a-z0-9_-]+$")
_META_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_LOG_LEVELS = {"trace", "debug", "info", "warn", "warning", "err", "error"}
_TLS_VERSIONS = {"TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"}
_OLD_TLS_VERSIONS = {"tls10", "tls11", "tls12", "tls13"}
_CA_PROVIDERS = {"", "consul", "vault", "aws-pca"}
_CHECK_STATUSES = {"", "passing", "warning", "critical"}
_CONFIG_ENTRY_KINDS = {
    "service-defaults",
    "proxy-defaults",
    "service-router",
    "service-splitter",
    "service-resolver",
    "ingress-gateway",
    "terminating-gateway",
    "service-intentions",
    "mesh",
    "exported-services",
    "sameness-group",
    "api-gateway",
    "bound-api-gateway",
    "http-route",
    "tcp-route",
    "inline-certificate",
    "jwt-provider",
    "control-plane-request-limit",
}
UNIX_PREFIX = "unix://"
DEFAULT_RECURSOR_PORT = 53
# Ports that -1 may turn off; the others must always be real ports.
_DISABLEABLE_PORTS = {"dns", "http", "https", "grpc", "grpc_tls", "serf_wan"}


def source_problems(config: ConfigFile) -> Iterator[Problem]:
    """Single-value rules for one source (keys it did not set hold valid defaults)."""
    yield from _identity(config)
    yield from _addresses(config)
    yield from _ports(config)
    yield from _unix_sockets(config)
    yield from _gossip(config)
    yield from _tls(config)
    yield from _acl_and_mesh(config)
    yield from _dns_and_limits(config)


def _identity(config: ConfigFile) -> Iterator[Problem]:
    for key in ("datacenter", "primary_datacenter"):
        value: str = getattr(config, key).lower()
        if value and not _DATACENTER.match(value):
            yield key, "can only contain lowercase alphanumeric, - or _ characters"
    if not config.domain:
        yield "domain", "cannot be empty"
    if config.node_id:
        try:
            uuid.UUID(config.node_id)
        except ValueError:
            yield "node_id", f"{config.node_id!r} is not a valid UUID"
    yield from _node_meta(config.node_meta)
    if config.log_level.lower() not in _LOG_LEVELS:
        yield "log_level", f"invalid log level {config.log_level!r}"
    if config.bootstrap_expect < 0:
        yield "bootstrap_expect", "cannot be negative"
    if config.raft_protocol != 3:
        yield "raft_protocol", "only version 3 is supported"
    if "\x00" in config.data_dir:
        # No file system takes one: the agent could not create or open anything there.
        yield "data_dir", "cannot contain a NUL byte"


def _node_meta(meta: dict[str, str]) -> Iterator[Problem]:
    if len(meta) > 64:
        yield "node_meta", "cannot have more than 64 key/value pairs"
    for key, value in meta.items():
        path = f"node_meta.{key}"
        if not _META_KEY.match(key) or len(key) > 128:
            yield path, "keys may only contain letters, digits, - and _ (at most 128)"
        elif key.startswith("consul-"):
            yield path, "the consul- prefix is reserved"
        elif len(value) > 512:
            yield path, "value is longer than 512 characters"


def _addresses(config: ConfigFile) -> Iterator[Problem]:
    for key in ("bind_addr", "advertise_addr", "advertise_addr_wan", "serf_lan", "serf_wan"):
        yield from _address_field(key, getattr(config, key), allow_unix=False)
    yield from _address_field("client_addr", config.client_addr, allow_unix=False)
    for key in ("dns", "http", "https", "grpc", "grpc_tls"):
        value = getattr(config.addresses, key)
        yield from _address_field(f"addresses.{key}", value, allow_unix=True)
    for key in ("retry_join", "start_join", "retry_join_wan", "start_join_wan", "recursors"):
        for index, entry in enumerate(getattr(config, key)):
            path = f"{key}[{index}]"
            if not entry.strip():
                yield path, "cannot be empty"
            elif sockaddr.is_template(entry):
                yield from _template_syntax(path, entry)
            elif key == "recursors":
                try:
                    parse_recursor(entry)
                except ValueError as exc:
                    yield path, str(exc)


def _address_field(path: str, value: str, *, allow_unix: bool) -> Iterator[Problem]:
    if not value:
        return
    if sockaddr.is_template(value):
        yield from _template_syntax(path, value)
        return
    for part in value.split():
        if part.startswith(UNIX_PREFIX):
            if not allow_unix:
                # Consul's rule: only the per-listener `addresses.*` take unix sockets.
                yield (
                    path,
                    (
                        f"{part!r}: a unix socket is allowed only in addresses.http "
                        "(or another addresses.* key), not here; use IP addresses"
                    ),
                )
                return
            if not part[len(UNIX_PREFIX) :]:
                yield path, f"{part!r} names no socket path (write unix:///path/to/socket)"
                return
            if "\x00" in part:
                yield path, f"{part!r}: a socket path cannot contain a NUL byte"
                return
            continue
        if not is_ip(part):
            yield path, f"{part!r} is not a valid IP address"
            return


def _template_syntax(path: str, text: str) -> Iterator[Problem]:
    try:
        sockaddr.parse(text)
    except sockaddr.TemplateError as exc:
        yield path, f"bad address template {text}: {exc}"


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _ports(config: ConfigFile) -> Iterator[Problem]:
    for name in config.ports.__struct_fields__:
        value: int = getattr(config.ports, name)
        if name in _DISABLEABLE_PORTS:
            if value != -1 and not 1 <= value <= 65535:
                yield f"ports.{name}", "must be between 1 and 65535, or -1 to disable"
        elif not 1 <= value <= 65535:
            yield f"ports.{name}", "must be between 1 and 65535"


def _unix_sockets(config: ConfigFile) -> Iterator[Problem]:
    # Consul's rules (setFilePermissions): a numeric group, an octal mode; the
    # user may be a name, which only the machine can check (the loader does).
    sockets = config.unix_sockets
    if sockets.group and not is_numeric_id(sockets.group):
        yield "unix_sockets.group", f"invalid group {sockets.group!r}: give a numeric group ID"
    if sockets.mode and not (
        re.fullmatch(r"[0-7]{1,4}", sockets.mode) and int(sockets.mode, 8) <= 0o777
    ):
        yield "unix_sockets.mode", f"invalid mode {sockets.mode!r}: give octal digits such as 0660"


def is_numeric_id(text: str) -> bool:
    """A uid or gid as Go's strconv.Atoi reads one (ASCII digits only)."""
    return re.fullmatch(r"[0-9]+", text) is not None


def parse_recursor(text: str) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:5353`, `::1`, `[::1]:5353` or `host[:port]` -> (host, port).

    The DNS server uses this same parser, so what validates is what it can use."""
    try:
        host, port = split_host_port(text, DEFAULT_RECURSOR_PORT)
    except ValueError:
        host, port = "", 0
    if not host or port == 0:
        raise ValueError(f"Invalid recursor address: {text!r}")
    return host, port


def _gossip(config: ConfigFile) -> Iterator[Problem]:
    if config.encrypt:
        try:
            gossip_key = base64.b64decode(config.encrypt, validate=True)
        except (binascii.Error, ValueError):
            yield "encrypt", "invalid gossip key: not valid base64"
            return
        if len(gossip_key) not in (16, 24, 32):
            size = len(gossip_key)
            yield "encrypt", f"invalid gossip key: must be 16, 24 or 32 bytes, got {size}"
    for key in ("retry_max", "retry_max_wan"):
        if getattr(config, key) < 0:
            yield key, "cannot be negative"


def _tls(config: ConfigFile) -> Iterator[Problem]:
    for block in ("defaults", "internal_rpc", "https", "grpc"):
        version = getattr(config.tls, block).tls_min_version
        if version is not None and version not in _TLS_VERSIONS:
            yield f"tls.{block}.tls_min_version", _tls_version_problem(version)
    legacy = config.tls_min_version
    if legacy is not None and legacy not in _TLS_VERSIONS | _OLD_TLS_VERSIONS:
        yield "tls_min_version", _tls_version_problem(legacy)


def _tls_version_problem(version: str) -> str:
    return f"{version!r} is not a TLS version; use one of {', '.join(sorted(_TLS_VERSIONS))}"


def _acl_and_mesh(config: ConfigFile) -> Iterator[Problem]:
    if config.acl.default_policy not in ("allow", "deny"):
        yield "acl.default_policy", f"must be allow or deny, not {config.acl.default_policy!r}"
    down = config.acl.down_policy
    if down not in ("allow", "deny", "extend-cache", "async-cache"):
        yield "acl.down_policy", f"must be allow, deny, extend-cache or async-cache, not {down!r}"
    if config.connect.ca_provider not in _CA_PROVIDERS:
        provider = config.connect.ca_provider
        yield "connect.ca_provider", f"unknown CA provider {provider!r}; use consul or vault"
    for index, entry in enumerate(config.config_entries.bootstrap):
        yield from _config_entry(f"config_entries.bootstrap[{index}]", entry)


def _config_entry(path: str, entry: dict[str, Any]) -> Iterator[Problem]:
    kind = entry.get("kind", entry.get("Kind"))
    name = entry.get("name", entry.get("Name"))
    if not isinstance(kind, str) or not kind:
        yield f"{path}.kind", "each config entry needs a kind"
        return
    if kind not in _CONFIG_ENTRY_KINDS:
        yield f"{path}.kind", f"unknown config entry kind {kind!r}"
        return
    if not isinstance(name, str) or not name:
        yield f"{path}.name", "each config entry needs a name"
    elif kind == "proxy-defaults" and name != "global":
        yield f"{path}.name", f'invalid name {name!r}, only "global" is supported'
    elif kind == "mesh" and name != "mesh":
        yield f"{path}.name", f'invalid name {name!r}, only "mesh" is supported'
    elif kind not in STORED_KINDS:
        yield f"{path}.kind", f"config entry kind {kind!r} is not supported by this agent"
    else:
        # The leader writes it as it is: the same decoding and rules as /v1/config.
        try:
            parse_config_entry(entry, check_filter=check_subset_filter)
        except ConfigEntryError as err:
            yield (f"{path}.{err.field}" if err.field else path), str(err)


def _dns_and_limits(config: ConfigFile) -> Iterator[Problem]:
    dns = config.dns_config
    for key in ("udp_answer_limit", "a_record_limit"):
        if getattr(dns, key) < 0:
            yield f"dns_config.{key}", "cannot be negative"
    if dns.recursor_strategy not in ("sequential", "random"):
        yield "dns_config.recursor_strategy", "must be sequential or random"
    multiplier = config.performance.raft_multiplier
    if not 1 <= multiplier <= 10:
        yield "performance.raft_multiplier", f"cannot be {multiplier}; must be between 1 and 10"
    limits = config.limits
    for key in ("http_max_conns_per_client", "rpc_max_conns_per_client", "rpc_max_burst"):
        if getattr(limits, key) < 0:
            yield f"limits.{key}", "cannot be negative"
    for key in ("kv_max_value_size", "txn_max_req_len"):
        if getattr(limits, key) <= 0:
            yield f"limits.{key}", "must be greater than 0"


# ------------------------------------------------------- services and checks


def service_problems(service: ServiceDefinition) -> Iterator[Problem]:
    """Rules for one service definition; paths are relative to the service."""
    if not service.name:
        yield "name", "missing service name"
    if not 0 <= service.port <= 65535:
        yield "port", "must be between 0 and 65535"
    for index, check in enumerate(service.checks):
        yield from _prefixed(f"checks[{index}]", check_problems(check, in_service=True))
    if service.check is not None:
        yield from _prefixed("check", check_problems(service.check, in_service=True))
    proxy = service.proxy
    if proxy is not None:
        yield from _prefixed("proxy", _proxy_problems(proxy.upstreams))
    connect = service.connect
    if connect is not None and connect.sidecar_service is not None:
        sidecar = connect.sidecar_service
        if sidecar.connect is not None and sidecar.connect.sidecar_service is not None:
            yield "connect.sidecar_service.connect", "a sidecar cannot have its own sidecar"
        for path, problem in _sidecar_problems(sidecar):
            yield f"connect.sidecar_service.{path}", problem


def _sidecar_problems(sidecar: ServiceDefinition) -> Iterator[Problem]:
    # Name, port and the like default from the parent, so only the parts are checked.
    if not 0 <= sidecar.port <= 65535:
        yield "port", "must be between 0 and 65535"
    for index, check in enumerate(sidecar.checks):
        yield from _prefixed(f"checks[{index}]", check_problems(check, in_service=True))
    if sidecar.check is not None:
        yield from _prefixed("check", check_problems(sidecar.check, in_service=True))
    if sidecar.proxy is not None:
        yield from _prefixed("proxy", _proxy_problems(sidecar.proxy.upstreams))


def _proxy_problems(upstreams: list[Any]) -> Iterator[Problem]:
    for index, upstream in enumerate(upstreams):
        path = f"upstreams[{index}]"
        if not upstream.destination_name:
            yield f"{path}.destination_name", "upstreams need a destination_name"
        if not 1 <= upstream.local_bind_port <= 65535:
            yield f"{path}.local_bind_port", "upstreams need a local_bind_port between 1 and 65535"


# A check's type keys, in the order a clash is reported (alias_node goes with alias_service).
_CHECK_KIND_KEYS = (
    "script_args",
    "http",
    "tcp",
    "grpc",
    "h2ping",
    "ttl",
    "alias_service",
    "alias_node",
)
_INTERVAL_KINDS = ("script_args", "http", "tcp", "grpc", "h2ping")


def check_problems(check: CheckDefinition, *, in_service: bool) -> Iterator[Problem]:
    """Rules for one check definition; paths are relative to the check."""
    if not in_service and not check.name:
        yield "name", "missing check name"
    if check.status not in _CHECK_STATUSES:
        yield "status", "must be passing, warning or critical"
    kinds = [k for k in _CHECK_KIND_KEYS if getattr(check, k)]
    if kinds[-2:] == ["alias_service", "alias_node"]:
        kinds.pop()  # an alias check may name both the service and its node
    if not kinds:
        yield "", "a check needs one of args, http, tcp, grpc, h2ping, ttl or alias_service"
        return
    if len(kinds) > 1:
        yield kinds[1], f"a check can have only one type, but sets both {kinds[0]} and {kinds[1]}"
        return
    if kinds[0] in _INTERVAL_KINDS and not check.interval:
        yield "interval", f"{kinds[0]} checks need an interval greater than 0"
    for key in ("interval", "timeout", "ttl", "deregister_critical_service_after"):
        value = getattr(check, key)
        if value is not None and value < 0:
            yield key, "cannot be negative"


def _prefixed(prefix: str, problems: Iterator[Problem]) -> Iterator[Problem]:
    for path, problem in problems:
        yield (f"{prefix}.{path}" if path else prefix), problem


# ------------------------------------------------------------- merged rules


def merged_problems(config: RuntimeConfig, *, require_data_dir: bool) -> Iterator[Problem]:
    """Rules relating keys to each other, on the merged configuration."""
    if require_data_dir and not config.dev_mode and not config.data_dir:
        yield "data_dir", "cannot be empty (set data_dir or -data-dir)"
    if config.bootstrap_expect > 0:
        if config.dev_mode:
            yield "bootstrap_expect", "'bootstrap_expect > 0' not allowed in dev mode"
        elif not config.server:
            yield "bootstrap_expect", "'bootstrap_expect > 0' not allowed in client mode"
        elif config.bootstrap:
            yield (
                "bootstrap_expect",
                "'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive",
            )
    if config.bootstrap and not config.server:
        yield "bootstrap", "'bootstrap = true' not allowed in client mode"
    ports = config.ports
    if ports.sidecar_min_port > ports.sidecar_max_port:
        yield "ports.sidecar_min_port", "must not be greater than ports.sidecar_max_port"
    if ports.expose_min_port > ports.expose_max_port:
        yield "ports.expose_min_port", "must not be greater than ports.expose_max_port"
    if config.auto_encrypt.tls and config.server:
        yield "auto_encrypt.tls", "can only be used on client agents"
    if config.auto_encrypt.allow_tls and not config.connect.enabled:
        yield "auto_encrypt.allow_tls", "needs connect.enabled = true"
    if config.ui_config.enabled and config.ui_config.dir:
        yield (
            "ui_config.dir",
            "set either ui_config.enabled (built-in UI) or ui_config.dir, not both",
        )
    if config.read_replica and not config.server:
        yield "read_replica", "only servers can be read replicas"


# ------------------------------------------------------------ listeners


@dataclass(frozen=True)
class Listener:
    """One socket the agent binds: `host` is an IP or a `unix://` path."""

    what: str  # for people: "HTTP", "Serf LAN"
    port_key: str  # the key that sets its port, such as `ports.http`
    address_key: str  # the key that sets its address, such as `addresses.http`
    host: str
    port: int

    @property
    def unix_path(self) -> str | None:
        return self.host[len(UNIX_PREFIX) :] if self.host.startswith(UNIX_PREFIX) else None

    def __str__(self) -> str:
        path = self.unix_path
        if path is not None:
            return f"{self.what} on unix socket {path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.what} on {host}:{self.port}"


_CLIENT_LISTENERS: tuple[tuple[ListenerKind, str], ...] = (
    ("dns", "DNS"),
    ("http", "HTTP"),
    ("https", "HTTPS"),
    ("grpc", "gRPC"),
    ("grpc_tls", "gRPC TLS"),
)


def listeners(config: RuntimeConfig) -> list[Listener]:
    """Every socket the agent binds with `config` (addresses resolved), in a fixed order.

    DNS never binds a unix socket (the agent skips one with a warning). The
    server RPC port is bound by servers outside `-dev`; the Serf WAN port is
    reserved on servers, as in Consul, whose servers always join the WAN pool.
    """
    found: list[Listener] = []
    for kind, what in _CLIENT_LISTENERS:
        port = getattr(config.ports, kind)
        for host in config.listen_addresses(kind):
            if kind == "dns" and host.startswith(UNIX_PREFIX):
                continue
            key = f"addresses.{kind}" if getattr(config.addresses, kind) else "client_addr"
            found.append(Listener(what, f"ports.{kind}", key, host, port))
    if config.server and not config.dev_mode:
        found.append(
            Listener(
                "server RPC", "ports.server", "bind_addr", config.bind_addr, config.ports.server
            )
        )
    serf_lan = config.serf_lan or config.bind_addr
    lan_key = "serf_lan" if config.serf_lan else "bind_addr"
    found.append(Listener("Serf LAN", "ports.serf_lan", lan_key, serf_lan, config.ports.serf_lan))
    if config.server and config.ports.serf_wan >= 0:
        serf_wan = config.serf_wan or config.bind_addr
        wan_key = "serf_wan" if config.serf_wan else "bind_addr"
        found.append(
            Listener("Serf WAN", "ports.serf_wan", wan_key, serf_wan, config.ports.serf_wan)
        )
    return found


def _overlaps(a: Listener, b: Listener) -> bool:
    """Would binding both fail? Same unix path, or the same port on addresses that
    overlap (equal, or one is the wildcard of the same IP version)."""
    path_a, path_b = a.unix_path, b.unix_path
    if path_a is not None or path_b is not None:
        return path_a == path_b
    if a.port != b.port:
        return False
    try:
        ip_a = ipaddress.ip_address(a.host.strip("[]"))
        ip_b = ipaddress.ip_address(b.host.strip("[]"))
    except ValueError:
        return a.host == b.host
    if ip_a.version != ip_b.version:
        return False
    return ip_a == ip_b or ip_a.is_unspecified or ip_b.is_unspecified


def listener_problems(
    config: RuntimeConfig, explicit: Callable[[str], bool] = lambda key: False
) -> Iterator[Problem]:
    """Two listeners that cannot both bind. `explicit(key)` says whether a source
    set `key`: the problem is reported at a key someone wrote (`ports.http = 8301`
    collides with the default serf_lan port, so `ports.http` is the one to blame)."""
    found = listeners(config)
    for index, later in enumerate(found):
        for earlier in found[:index]:
            if not _overlaps(earlier, later):
                continue
            unix = later.unix_path is not None
            blame, other = later, earlier
            if not explicit(_key(later, unix)) and explicit(_key(earlier, unix)):
                blame, other = earlier, later
            if unix:
                problem = f"{blame} collides with {other} ({_key(other, unix)})"
            else:
                problem = (
                    f"port {blame.port} is already used by {_key(other, unix)}: "
                    f"{blame} collides with {other}"
                )
            yield _key(blame, unix), problem
            return


def _key(listener: Listener, unix: bool) -> str:
    return listener.address_key if unix else listener.port_key


def merged_warnings(config: RuntimeConfig) -> Iterator[str]:
    if config.server and config.bootstrap_expect == 2:
        yield "bootstrap_expect = 2: A cluster with 2 servers will provide no failure tolerance."
    elif config.server and config.bootstrap_expect > 2 and config.bootstrap_expect % 2 == 0:
        yield (
            f"bootstrap_expect = {config.bootstrap_expect}: A cluster with an even number "
            "of servers does not achieve optimum fault tolerance."
        )
    if config.auto_encrypt.allow_tls and not config.server:
        yield "auto_encrypt.allow_tls has no effect on client agents"
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", config.node_name):
        yield (
            f"Node name {config.node_name!r} will not be discoverable via DNS due to "
            "invalid characters. Valid characters include all alpha-numerics and dashes."
        )
