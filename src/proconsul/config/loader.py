"""Loading agent configuration: sources in, one validated RuntimeConfig out.

Order of sources, later winning (Consul's): `-dev` defaults, list-valued
flags (Consul merges these before files, so their entries come first),
config files and directories in the order given, the other flags, then `-hcl`
fragments. Each source is checked on its own first, so an error names the
file (or `flag -name`) holding the bad value; then the sources are merged,
deprecated keys are moved to their new homes, addresses and go-sockaddr
templates are resolved, and the cross-key rules run on the result.

The loader is pure apart from reading: it reads the files, the host name,
(only when a template or advertise detection needs it) the interface table,
and what the agent would trip over at start: whether `data_dir` is a
directory, what sits at a unix socket path, whether a socket's user exists.
It starts nothing and writes nothing, so a failed load leaves no trace. The
agent and `proconsul validate` both load through here, so whatever one
refuses the other refuses too, with the same words.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import socket
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from proconsul.config import sockaddr
from proconsul.config.agent_args import SETTING_FLAGS, AgentArgs
from proconsul.config.errors import MERGED_SOURCE, ConfigError, from_validation, join_path
from proconsul.config.interfaces import (
    IfAddr,
    private_ipv4_addresses,
    public_ipv6_addresses,
    read_interfaces,
)
from proconsul.config.merge import (
    DEPRECATED_KEYS,
    apply_deprecated,
    config_file_type,
    merge_into,
    origin_of,
    refuse_legacy,
    schema_type,
    shape,
)
from proconsul.config.schema import ConfigFile, RuntimeConfig
from proconsul.config.sources import Source, parse_text, read_paths
from proconsul.config.validation import (
    UNIX_PREFIX,
    check_problems,
    is_ip,
    is_numeric_id,
    listener_problems,
    merged_problems,
    merged_warnings,
    service_problems,
    source_problems,
)
from proconsul.structs.definitions import CheckDefinition, ServiceDefinition
from proconsul.structs.duration import Duration
from proconsul.structs.duration import dec_hook as duration_dec_hook
from proconsul.structs.naming import conform_keys

InterfaceReader = Callable[[], Sequence[IfAddr]]

DEV_SOURCE = Source(
    "flag -dev",
    {
        "server": True,
        "bootstrap": True,
        "bind_addr": "127.0.0.1",
        "client_addr": "127.0.0.1",
        "ui_config": {"enabled": True},
        "ports": {"grpc": 8502},
        "connect": {"enabled": True},
        "log_level": "DEBUG",
        "disable_keyring_file": True,
        "disable_anonymous_signature": True,
        "enable_debug": True,
        "performance": {"raft_multiplier": 1},
    },
)


@dataclass
class LoadedConfig:
    config: RuntimeConfig
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # source names, in merge order


def load_config(
    args: AgentArgs,
    *,
    interfaces: InterfaceReader | None = None,
    hostname: Callable[[], str] = socket.gethostname,
) -> LoadedConfig:
    """Load the agent's configuration from everything its command line names."""
    files, warnings = read_paths(list(args.config_paths), args.config_format)
    list_flags, value_flags = flag_sources(args.settings)
    fragments = [parse_text("flag -hcl", text, "hcl") for text in args.hcl]
    head = [DEV_SOURCE] if args.dev else []
    sources = [*head, *list_flags, *files, *value_flags, *fragments]
    return _load(
        sources, warnings, dev=args.dev, require_data_dir=True, reader=interfaces, hostname=hostname
    )


def load_paths(
    paths: list[str],
    config_format: str | None = None,
    *,
    require_data_dir: bool = True,
    interfaces: InterfaceReader | None = None,
    hostname: Callable[[], str] = socket.gethostname,
) -> LoadedConfig:
    """Load configuration from files and directories only (`proconsul validate`)."""
    files, warnings = read_paths(paths, config_format)
    return _load(
        files,
        warnings,
        dev=False,
        require_data_dir=require_data_dir,
        reader=interfaces,
        hostname=hostname,
    )


def flag_sources(settings: dict[str, Any]) -> tuple[list[Source], list[Source]]:
    """One source per given flag: (list-valued flags, all the others)."""
    lists: list[Source] = []
    values: list[Source] = []
    for name, value in settings.items():
        kind, key, _help = SETTING_FLAGS[name]
        data: dict[str, Any] = {}
        target = data
        *parents, last = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
        (lists if kind == "list" else values).append(Source(f"flag -{name}", data))
    return lists, values


def config_dec_hook(kind: type, obj: Any) -> Any:
    """Durations in config are Go duration strings; bare numbers are refused."""
    if kind is Duration and not isinstance(obj, str):
        raise ValueError(f'expected a duration such as "10s", got {type(obj).__name__}')
    return duration_dec_hook(kind, obj)


# ----------------------------------------------------------- one source


def check_source(source: Source) -> dict[str, Any]:
    """Validate one source on its own; return its raw tree, normalised for merging."""
    raw = source.data
    refuse_legacy(raw, source.name)
    # Consul's order within a source: the list form first, then the single block.
    services = _definitions(source.name, raw, "services", ServiceDefinition)
    services += _definitions(source.name, raw, "service", ServiceDefinition)
    checks = _definitions(source.name, raw, "checks", CheckDefinition)
    checks += _definitions(source.name, raw, "check", CheckDefinition)
    rest = {k: v for k, v in raw.items() if k not in ("service", "services", "check", "checks")}
    shaped: dict[str, Any] = shape(rest, config_file_type())
    try:
        decoded = msgspec.convert(shaped, ConfigFile, dec_hook=config_dec_hook)
    except msgspec.ValidationError as exc:
        raise from_validation(source.name, "", exc) from None
    for path, problem in source_problems(decoded):
        raise ConfigError(source.name, path, problem)
    if services:
        shaped["services"] = services
    if checks:
        shaped["checks"] = checks
    return shaped


def _definitions(
    name: str, raw: dict[str, Any], key: str, cls: type[ServiceDefinition] | type[CheckDefinition]
) -> list[dict[str, Any]]:
    value = raw.get(key)
    if value is None:
        return []
    if isinstance(value, dict):
        items = [(key, value)]
    elif isinstance(value, list):
        items = [(f"{key}[{index}]", item) for index, item in enumerate(value)]
    else:
        raise ConfigError(name, key, "expected an object or a list of objects")
    out = []
    for path, item in items:
        # Consul matches definition keys in any case (`Name`, `name`, `ServiceID`).
        shaped = shape(conform_keys(item, cls, keep_unknown=True), schema_type(cls))
        try:
            decoded = msgspec.convert(shaped, cls, dec_hook=config_dec_hook)
        except msgspec.ValidationError as exc:
            raise from_validation(name, path, exc) from None
        if isinstance(decoded, ServiceDefinition):
            problems = service_problems(decoded)
        else:
            problems = check_problems(decoded, in_service=False)
        for subpath, problem in problems:
            raise ConfigError(name, join_path(path, subpath), problem)
        out.append(shaped)
    return out


# ------------------------------------------------------------ the merge


def _load(
    sources: list[Source],
    warnings: list[str],
    *,
    dev: bool,
    require_data_dir: bool,
    reader: InterfaceReader | None,
    hostname: Callable[[], str],
) -> LoadedConfig:
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    kind = config_file_type()
    for source in sources:
        merged = merge_into(merged, check_source(source), kind, origins, source.name)
    warnings = [*warnings, *apply_deprecated(merged)]
    for old_key, new_key in DEPRECATED_KEYS.items():
        if old_key in origins:
            origins.setdefault(new_key, origins[old_key])
    merged["dev_mode"] = dev

    def fail(path: str, problem: str) -> ConfigError:
        return ConfigError(origin_of(origins, path, MERGED_SOURCE), path, problem)

    try:
        config = msgspec.convert(merged, RuntimeConfig, dec_hook=config_dec_hook)
    except msgspec.ValidationError as exc:
        error = from_validation(MERGED_SOURCE, "", exc)
        raise fail(error.path, error.problem) from None
    warnings += _derive(config, hostname)
    for path, problem in merged_problems(config, require_data_dir=require_data_dir):
        raise fail(path, problem)
    _Addresses(reader, fail).resolve(config)
    for path, problem in listener_problems(config, explicit=lambda key: key in origins):
        raise fail(path, problem)
    for path, problem in machine_problems(config):
        raise fail(path, problem)
    warnings += merged_warnings(config)
    return LoadedConfig(config, warnings, [source.name for source in sources])


def unix_socket_paths(config: RuntimeConfig) -> list[str]:
    """The unix socket files the HTTP API listens on (`addresses.http = "unix:///..."`)."""
    return [
        host[len(UNIX_PREFIX) :]
        for host in config.listen_addresses("http")
        if host.startswith(UNIX_PREFIX)
    ]


def machine_problems(config: RuntimeConfig) -> Iterator[tuple[str, str]]:
    """What the agent would refuse at start because of this machine (read-only looks)."""
    if config.data_dir and not config.dev_mode:
        data_dir = config.data_dir
        # Consul's check: a data_dir that exists must be a directory.
        if os.path.exists(data_dir) and not os.path.isdir(data_dir):
            yield "data_dir", f"{data_dir!r} is not a directory"
    paths = unix_socket_paths(config)
    for path in paths:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            yield "addresses.http", f"cannot use {path!r}: {exc.strerror or exc}"
            continue
        if not stat.S_ISSOCK(mode):
            # A stale socket is replaced at start; anything else is someone's file.
            yield "addresses.http", f"{path!r} exists and is not a unix socket"
    user = config.unix_sockets.user
    if paths and user and not is_numeric_id(user):
        try:
            pwd.getpwnam(user)
        except (KeyError, ValueError):  # ValueError: a NUL byte in the name
            yield "unix_sockets.user", f"no such user {user!r}"


def _derive(config: RuntimeConfig, hostname: Callable[[], str]) -> list[str]:
    """Fill in derived values (in place): names, single-server bootstrap, UI path."""
    warnings = []
    config.datacenter = config.datacenter.lower()
    config.primary_datacenter = config.primary_datacenter.lower()
    if not config.node_name:
        config.node_name = hostname()
    if (
        config.server
        and config.bootstrap_expect == 1
        and not config.bootstrap
        and not config.dev_mode
    ):
        warnings.append("BootstrapExpect is set to 1; this is the same as Bootstrap mode.")
        config.bootstrap, config.bootstrap_expect = True, 0
    path = config.ui_config.content_path.strip("/")
    config.ui_config.content_path = f"/{path}/" if path else "/"
    return warnings


class _Addresses:
    """Resolves address fields, reading the interface table at most once, and only if needed."""

    def __init__(
        self, reader: InterfaceReader | None, fail: Callable[[str, str], ConfigError]
    ) -> None:
        self._reader = reader or read_interfaces
        self._table: list[IfAddr] | None = None
        self._fail = fail

    def _interfaces(self) -> list[IfAddr]:
        if self._table is None:
            self._table = list(self._reader())
        return self._table

    def _expand(self, path: str, text: str) -> list[str]:
        if not sockaddr.is_template(text):
            return text.split()
        try:
            found = sockaddr.resolve(text, self._interfaces())
        except sockaddr.TemplateError as exc:
            raise self._fail(path, f"bad address template {text}: {exc}") from None
        if not found:
            raise self._fail(path, f"no address found in {text}")
        return found

    def _ips(self, path: str, text: str, *, allow_unix: bool = False) -> list[str]:
        found = self._expand(path, text)
        for entry in found:
            if not (is_ip(entry) or (allow_unix and entry.startswith("unix://"))):
                raise self._fail(path, f"{entry!r} (from {text}) is not a valid IP address")
        return found

    def _one_ip(self, path: str, text: str) -> str:
        found = self._ips(path, text)
        if not found:
            raise self._fail(path, "cannot be empty")
        if len(found) > 1:
            raise self._fail(
                path, f"multiple addresses found in {text} ({' '.join(found)}); one is required"
            )
        return found[0]

    def resolve(self, config: RuntimeConfig) -> None:
        config.bind_addr = self._one_ip("bind_addr", config.bind_addr)
        if config.advertise_addr:
            config.advertise_addr = self._one_ip("advertise_addr", config.advertise_addr)
        else:
            config.advertise_addr = self._detect_advertise(config.bind_addr)
        if ipaddress.ip_address(config.advertise_addr.strip("[]")).is_unspecified:
            raise self._fail("advertise_addr", "Advertise address cannot be 0.0.0.0, :: or [::]")
        wan = config.advertise_addr_wan
        config.advertise_addr_wan = (
            self._one_ip("advertise_addr_wan", wan) if wan else config.advertise_addr
        )
        for key in ("serf_lan", "serf_wan"):
            value = getattr(config, key)
            setattr(config, key, self._one_ip(key, value) if value else config.bind_addr)
        config.client_addr = " ".join(self._ips("client_addr", config.client_addr))
        for key in ("dns", "http", "https", "grpc", "grpc_tls"):
            value = getattr(config.addresses, key)
            if value:
                resolved = self._ips(f"addresses.{key}", value, allow_unix=True)
                setattr(config.addresses, key, " ".join(resolved))
        for key in ("retry_join", "start_join", "retry_join_wan", "start_join_wan", "recursors"):
            entries: list[str] = []
            for index, entry in enumerate(getattr(config, key)):
                entries += (
                    self._expand(f"{key}[{index}]", entry)
                    if sockaddr.is_template(entry)
                    else [entry]
                )
            setattr(config, key, entries)

    def _detect_advertise(self, bind_addr: str) -> str:
        """Consul's rule: advertise the bind address, or with a wildcard bind, the one
        private IPv4 (public IPv6 for `::`) this machine has."""
        bind = ipaddress.ip_address(bind_addr.strip("[]"))
        if not bind.is_unspecified:
            return bind_addr
        if bind.version == 4:
            found, what = private_ipv4_addresses(self._interfaces()), "private IPv4"
        else:
            found, what = public_ipv6_addresses(self._interfaces()), "public IPv6"
        if not found:
            raise self._fail(
                "bind_addr", f"No {what} address found; set bind_addr or advertise_addr"
            )
        if len(found) > 1:
            raise self._fail(
                "bind_addr",
                f"Multiple {what} addresses found ({' '.join(found)}). "
                "Please configure one with 'bind' and/or 'advertise'.",
            )
        return found[0]
