"""`proconsul agent` command-line flags, parsed the way Consul's agent parses them.

`parse_agent_args` only parses: it reads no files. The result, `AgentArgs`,
keeps the config paths in the order given (files and directories
interleaved), the `-hcl` fragments, and the value of every setting flag that
was given, so a reload can read exactly the same sources again. Each setting
flag maps to one config key (`-http-port` -> `ports.http`); the loader turns
them into sources that override files. Stray positional arguments are an
error, since the agent takes none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proconsul.config.flags import FlagError, FlagSet

# flag name -> (kind, config key, help). Kinds: str, int, bool, list, meta.
SETTING_FLAGS: dict[str, tuple[str, str, str]] = {
    "node": ("str", "node_name", "Name of this node. Must be unique in the cluster."),
    "node-id": ("str", "node_id", "A unique ID (UUID) for this node."),
    "node-meta": ("meta", "node_meta", "An arbitrary metadata key:value pair. Repeatable."),
    "datacenter": ("str", "datacenter", "Datacenter of the agent."),
    "primary-datacenter": ("str", "primary_datacenter", "The primary datacenter."),
    "data-dir": ("str", "data_dir", "Path to a data directory to store agent state."),
    "domain": ("str", "domain", "Domain to use for DNS interface."),
    "alt-domain": ("str", "alt_domain", "Alternate domain to use for DNS interface."),
    "bind": ("str", "bind_addr", "Address to bind cluster communication to."),
    "advertise": ("str", "advertise_addr", "Address to advertise to other nodes."),
    "advertise-wan": ("str", "advertise_addr_wan", "Address to advertise on the WAN."),
    "serf-lan-bind": ("str", "serf_lan", "Address to bind Serf LAN listeners to."),
    "serf-wan-bind": ("str", "serf_wan", "Address to bind Serf WAN listeners to."),
    "client": ("str", "client_addr", "Address(es) to bind client interfaces (HTTP, DNS) to."),
    "server": ("bool", "server", "Switches the agent to server mode."),
    "bootstrap": ("bool", "bootstrap", "Sets server to bootstrap mode."),
    "bootstrap-expect": ("int", "bootstrap_expect", "Number of servers to wait for."),
    "join": ("list", "start_join", "Address of an agent to join at start time. Repeatable."),
    "retry-join": ("list", "retry_join", "Address of an agent to join, retried. Repeatable."),
    "retry-interval": ("str", "retry_interval", "Time to wait between join attempts."),
    "retry-max": ("int", "retry_max", "Maximum number of join attempts (0: forever)."),
    "retry-join-wan": ("list", "retry_join_wan", "Address of a WAN server to join. Repeatable."),
    "encrypt": ("str", "encrypt", "Gossip encryption key (base64)."),
    "ui": ("bool", "ui_config.enabled", "Enables the built-in web UI."),
    "ui-dir": ("str", "ui_config.dir", "Path to a directory of web UI resources."),
    "ui-content-path": ("str", "ui_config.content_path", "URL path the UI is served at."),
    "http-port": ("int", "ports.http", "Sets the HTTP API port to listen on."),
    "https-port": ("int", "ports.https", "Sets the HTTPS API port to listen on."),
    "dns-port": ("int", "ports.dns", "DNS port to use."),
    "grpc-port": ("int", "ports.grpc", "Sets the gRPC API port to listen on."),
    "grpc-tls-port": ("int", "ports.grpc_tls", "Sets the gRPC-TLS API port to listen on."),
    "server-port": ("int", "ports.server", "Sets the server port to listen on."),
    "serf-lan-port": ("int", "ports.serf_lan", "Sets the Serf LAN port to listen on."),
    "serf-wan-port": ("int", "ports.serf_wan", "Sets the Serf WAN port to listen on."),
    "log-level": ("str", "log_level", "Log level of the agent."),
    "log-json": ("bool", "log_json", "Output logs in JSON format."),
    "log-file": ("str", "log_file", "Path to a file to write logs to."),
    "syslog": ("bool", "enable_syslog", "Enables logging to syslog."),
    "pid-file": ("str", "pid_file", "Path to file to store agent PID."),
    "recursor": ("list", "recursors", "Address of an upstream DNS server. Repeatable."),
    "rejoin": ("bool", "rejoin_after_leave", "Ignores a previous leave and attempts to rejoin."),
    "raft-protocol": ("int", "raft_protocol", "Sets the Raft protocol version."),
    "enable-script-checks": ("bool", "enable_script_checks", "Enables health check scripts."),
    "enable-local-script-checks": (
        "bool",
        "enable_local_script_checks",
        "Enables health check scripts from local config files only.",
    ),
    "disable-keyring-file": ("bool", "disable_keyring_file", "Keeps the keyring in memory."),
    "auto-reload-config": ("bool", "auto_reload_config", "Reloads when config files change."),
}


@dataclass(frozen=True)
class AgentArgs:
    """The agent's parsed command line: where config comes from, and flag overrides."""

    config_paths: tuple[str, ...] = ()  # -config-file and -config-dir, in the order given
    config_format: str | None = None
    dev: bool = False
    hcl: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)  # flag name -> value, given flags only
    argv: tuple[str, ...] = ()


def agent_flagset(paths: list[str] | None = None) -> FlagSet:
    """The agent's flags; `paths` collects -config-file/-config-dir values in order."""
    collected = paths if paths is not None else []

    def add_path(text: str) -> str:
        collected.append(text)
        return text

    flags = FlagSet("agent")
    flags.custom("config-file", add_path, help="Path to a config file (HCL or JSON). Repeatable.")
    flags.custom("config-dir", add_path, help="Path to a directory of config files. Repeatable.")
    flags.string("config-format", help="Config files are in this format: hcl or json.")
    flags.boolean("dev", help="Starts the agent in development mode (in memory, one server).")
    flags.repeated("hcl", help="An HCL configuration fragment, applied after files. Repeatable.")
    for name, (kind, key, text) in SETTING_FLAGS.items():
        help_text = f"{text} (config: {key})"
        if kind == "str":
            flags.string(name, help=help_text)
        elif kind == "int":
            flags.integer(name, help=help_text)
        elif kind == "bool":
            flags.boolean(name, help=help_text)
        else:
            flags.repeated(name, help=help_text)
    return flags


def parse_agent_args(argv: list[str]) -> AgentArgs:
    """Parse `proconsul agent` arguments; raise FlagError on any usage error."""
    paths: list[str] = []
    values, rest = agent_flagset(paths).parse(argv)
    if rest:
        raise FlagError(f"Unexpected extra arguments: {' '.join(rest)}")
    config_format = values["config-format"]
    if config_format is not None and config_format not in ("hcl", "json"):
        raise FlagError(f'invalid value "{config_format}" for flag -config-format: use hcl or json')
    given: set[str] = values["set"]
    settings: dict[str, Any] = {}
    for name, (kind, _key, _help) in SETTING_FLAGS.items():
        if name not in given and not (kind in ("list", "meta") and values[name]):
            continue
        settings[name] = _node_meta(values[name]) if kind == "meta" else values[name]
    return AgentArgs(
        config_paths=tuple(paths),
        config_format=config_format,
        dev=bool(values["dev"]),
        hcl=tuple(values["hcl"]),
        settings=settings,
        argv=tuple(argv),
    )


def _node_meta(pairs: list[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise FlagError(f'invalid value "{pair}" for flag -node-meta: expected key:value')
        meta[key] = value
    return meta
