"""The agent's configuration as typed structs, with Consul's keys and defaults.

`ConfigFile` lists every key a config file (HCL or JSON), a `-hcl` fragment or
a flag may set; field names are Consul's snake_case keys exactly, unknown keys
are errors, and each default is Consul 1.16's. `RuntimeConfig` is what the
loader hands the agent: the same fields after merging every source, with
templates resolved to addresses, plus what the loader worked out (`dev_mode`).

Rules kept here:
- Blocks (`ports { }`, `acl { }`) are `Block` structs; plain maps (`node_meta`,
  `ca_config`) are dicts. The merge treats the two differently, as Consul does.
- Durations are `Duration` (float seconds) and are written as Go strings.
- Deprecated keys that still work (`ui`, the top-level TLS keys) are fields so
  they are type-checked where written; the loader copies them into their new
  homes (`ui_config`, `tls`), so readers use only the new ones.
- TLS settings are optional (None = unset) so `tls.defaults` can fill the
  protocol blocks; `tls_settings()` gives the effective values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from proconsul.structs.definitions import CheckDefinition, ServiceDefinition
from proconsul.structs.duration import Duration


class Block(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A config block: strict about keys; merged key by key across sources."""


def _block(cls: type[Block]) -> Any:
    return msgspec.field(default_factory=cls)


class UIConfig(Block):
    enabled: bool = False
    dir: str = ""
    content_path: str = "/ui/"
    metrics_provider: str = ""
    metrics_provider_files: list[str] = []
    metrics_provider_options_json: str = ""
    metrics_proxy: dict[str, Any] = {}
    dashboard_url_templates: dict[str, str] = {}


class Addresses(Block):
    """Per-listener bind addresses; empty means `client_addr`."""

    dns: str = ""
    http: str = ""
    https: str = ""
    grpc: str = ""
    grpc_tls: str = ""


class UnixSockets(Block):
    """`unix_sockets { }`: owner and mode of the HTTP API's unix socket files
    (`addresses.http = "unix:///path"`). `user` is a uid or a user name, `group`
    a gid, `mode` octal digits (`"0660"`); empty keeps the agent's own uid/gid
    and mode 0660."""

    user: str = ""
    group: str = ""
    mode: str = ""


class Ports(Block):
    """Listener ports; -1 turns a listener off."""

    dns: int = 8600
    http: int = 8500
    https: int = -1
    grpc: int = -1
    grpc_tls: int = -1
    serf_lan: int = 8301
    serf_wan: int = 8302
    server: int = 8300
    sidecar_min_port: int = 21000
    sidecar_max_port: int = 21255
    expose_min_port: int = 21500
    expose_max_port: int = 21755


class TLSCommon(Block):
    ca_file: str | None = None
    ca_path: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify_incoming: bool | None = None
    tls_min_version: str | None = None
    tls_cipher_suites: str | None = None


class TLSDefaults(TLSCommon):
    verify_outgoing: bool | None = None


class TLSInternalRPC(TLSDefaults):
    verify_server_hostname: bool | None = None


class TLSHTTPS(TLSDefaults):
    pass


class TLSGRPC(TLSCommon):
    use_auto_cert: bool | None = None


class TLS(Block):
    defaults: TLSDefaults = _block(TLSDefaults)
    internal_rpc: TLSInternalRPC = _block(TLSInternalRPC)
    https: TLSHTTPS = _block(TLSHTTPS)
    grpc: TLSGRPC = _block(TLSGRPC)


@dataclass(frozen=True)
class TLSSettings:
    """Effective TLS settings for one protocol after `tls.defaults` are applied."""

    ca_file: str
    ca_path: str
    cert_file: str
    key_file: str
    verify_incoming: bool
    verify_outgoing: bool
    verify_server_hostname: bool
    tls_min_version: str
    tls_cipher_suites: str
    use_auto_cert: bool


class AutoEncrypt(Block):
    allow_tls: bool = False
    tls: bool = False
    dns_san: list[str] = []
    ip_san: list[str] = []


class ACLTokens(Block):
    initial_management: str = ""
    agent: str = ""
    default: str = ""
    agent_recovery: str = ""
    replication: str = ""
    config_file_service_registration: str = ""


class ACL(Block):
    enabled: bool = False
    default_policy: str = "allow"
    down_policy: str = "extend-cache"
    enable_token_persistence: bool = False
    enable_key_list_policy: bool = False
    enable_token_replication: bool = False
    token_ttl: Duration = Duration(30.0)
    policy_ttl: Duration = Duration(30.0)
    role_ttl: Duration = Duration(30.0)
    tokens: ACLTokens = _block(ACLTokens)


class Connect(Block):
    # Consul 1.14 turned Connect on by default (the older docs still say false).
    enabled: bool = True
    ca_provider: str = ""
    ca_config: dict[str, Any] = {}
    enable_mesh_gateway_wan_federation: bool = False


class ConfigEntries(Block):
    """Entries written by the leader at startup if absent; each is free-form but
    must name its `kind` and `name` (either spelling: `kind`/`Kind`)."""

    bootstrap: list[dict[str, Any]] = []


class DNSSOA(Block):
    refresh: int = 3600
    retry: int = 600
    expire: int = 86400
    min: int = 0


class DNSConfig(Block):
    allow_stale: bool = True
    max_stale: Duration = Duration(87600 * 3600.0)
    node_ttl: Duration = Duration(0.0)
    service_ttl: dict[str, Duration] = {}
    only_passing: bool = False
    enable_truncate: bool = False
    udp_answer_limit: int = 3
    a_record_limit: int = 0
    recursor_timeout: Duration = Duration(2.0)
    recursor_strategy: str = "sequential"
    disable_compression: bool = False
    enable_additional_node_meta_txt: bool = True
    soa: DNSSOA = _block(DNSSOA)
    use_cache: bool = False
    cache_max_age: Duration = Duration(0.0)


class Telemetry(Block):
    prometheus_retention_time: Duration = Duration(0.0)
    disable_hostname: bool = False
    metrics_prefix: str = "consul"
    statsd_address: str = ""
    statsite_address: str = ""
    dogstatsd_addr: str = ""
    dogstatsd_tags: list[str] = []
    filter_default: bool = True
    prefix_filter: list[str] = []
    retry_failed_connection: bool = True


class Performance(Block):
    raft_multiplier: int = 5
    leave_drain_time: Duration = Duration(5.0)
    rpc_hold_timeout: Duration = Duration(7.0)


class Limits(Block):
    http_max_conns_per_client: int = 200
    rpc_max_conns_per_client: int = 100
    https_handshake_timeout: Duration = Duration(5.0)
    rpc_handshake_timeout: Duration = Duration(5.0)
    rpc_client_timeout: Duration = Duration(60.0)
    rpc_rate: float | None = None  # None: unlimited
    rpc_max_burst: int = 1000
    kv_max_value_size: int = 512 * 1024
    txn_max_req_len: int = 512 * 1024


class Autopilot(Block):
    cleanup_dead_servers: bool = True
    last_contact_threshold: Duration = Duration(0.2)
    max_trailing_logs: int = 250
    min_quorum: int = 0
    server_stabilization_time: Duration = Duration(10.0)


class HTTPConfig(Block):
    response_headers: dict[str, str] = {}
    allow_write_http_from: list[str] = []
    block_endpoints: list[str] = []
    use_cache: bool = True


class GossipLAN(Block):
    """`gossip_lan { }`: tunes the LAN gossip pool; an unset key keeps the profile's value.

    `profile` is a Proconsul extension: "lan" (Consul's defaults) or "local", a
    fast profile for pools on one machine (tests, labs).
    """

    profile: Literal["lan", "local"] = "lan"
    gossip_nodes: int | None = None
    gossip_interval: Duration | None = None
    probe_interval: Duration | None = None
    probe_timeout: Duration | None = None
    retransmit_mult: int | None = None
    suspicion_mult: int | None = None


class ConfigFile(Block):
    """Every key a config source may set, with Consul's defaults."""

    # identity and layout
    datacenter: str = "dc1"
    primary_datacenter: str = ""
    node_name: str = ""  # the loader fills in the hostname
    node_id: str = ""
    node_meta: dict[str, str] = {}
    data_dir: str = ""
    domain: str = "consul"
    alt_domain: str = ""
    server: bool = False
    bootstrap: bool = False
    bootstrap_expect: int = 0
    read_replica: bool = False
    server_name: str = ""
    ui_config: UIConfig = _block(UIConfig)
    ui: bool | None = None  # deprecated: ui_config.enabled
    ui_dir: str | None = None  # deprecated: ui_config.dir
    ui_content_path: str | None = None  # deprecated: ui_config.content_path
    pid_file: str = ""
    enable_central_service_config: bool = True
    auto_reload_config: bool = False

    # logging and agent behaviour
    log_level: str = "INFO"
    log_json: bool = False
    log_file: str = ""
    log_rotate_duration: Duration | None = None
    log_rotate_bytes: int = 0
    log_rotate_max_files: int = 0
    enable_syslog: bool = False
    syslog_facility: str = "LOCAL0"
    enable_debug: bool = False
    disable_update_check: bool = False
    disable_anonymous_signature: bool = False
    disable_host_node_id: bool = True
    disable_keyring_file: bool = False
    disable_remote_exec: bool = True
    enable_script_checks: bool = False
    enable_local_script_checks: bool = False
    leave_on_terminate: bool | None = None  # default: false on servers, true on clients
    skip_leave_on_interrupt: bool | None = None  # default: true on servers, false on clients
    rejoin_after_leave: bool = False
    check_update_interval: Duration = Duration(300.0)
    session_ttl_min: Duration = Duration(10.0)
    reconnect_timeout: Duration = Duration(72 * 3600.0)
    reconnect_timeout_wan: Duration = Duration(72 * 3600.0)
    raft_protocol: int = 3
    raft_snapshot_threshold: int = 16384
    raft_snapshot_interval: Duration = Duration(30.0)
    raft_trailing_logs: int = 10240

    # addresses and ports
    bind_addr: str = "0.0.0.0"
    advertise_addr: str = ""
    advertise_addr_wan: str = ""
    serf_lan: str = ""
    serf_wan: str = ""
    client_addr: str = "127.0.0.1"
    addresses: Addresses = _block(Addresses)
    ports: Ports = _block(Ports)
    unix_sockets: UnixSockets = _block(UnixSockets)
    translate_wan_addrs: bool = False

    # joining and gossip
    retry_join: list[str] = []
    retry_interval: Duration = Duration(30.0)
    retry_max: int = 0
    start_join: list[str] = []
    retry_join_wan: list[str] = []
    retry_interval_wan: Duration = Duration(30.0)
    retry_max_wan: int = 0
    start_join_wan: list[str] = []
    encrypt: str = ""
    encrypt_verify_incoming: bool = True
    encrypt_verify_outgoing: bool = True
    gossip_lan: GossipLAN = _block(GossipLAN)

    # TLS: the `tls` block, plus the deprecated top-level keys it replaced
    tls: TLS = _block(TLS)
    auto_encrypt: AutoEncrypt = _block(AutoEncrypt)
    verify_incoming: bool | None = None
    verify_incoming_rpc: bool | None = None
    verify_incoming_https: bool | None = None
    verify_outgoing: bool | None = None
    verify_server_hostname: bool | None = None
    ca_file: str | None = None
    ca_path: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_min_version: str | None = None
    tls_cipher_suites: str | None = None
    tls_prefer_server_cipher_suites: bool | None = None

    # ACLs and the mesh
    acl: ACL = _block(ACL)
    connect: Connect = _block(Connect)
    config_entries: ConfigEntries = _block(ConfigEntries)

    # DNS
    dns_config: DNSConfig = _block(DNSConfig)
    recursors: list[str] = []

    # services and checks (`service`/`check` singles are folded into these)
    services: list[ServiceDefinition] = []
    checks: list[CheckDefinition] = []
    watches: list[dict[str, Any]] = []

    # everything else
    telemetry: Telemetry = _block(Telemetry)
    performance: Performance = _block(Performance)
    limits: Limits = _block(Limits)
    autopilot: Autopilot = _block(Autopilot)
    http_config: HTTPConfig = _block(HTTPConfig)


ListenerKind = Literal["dns", "http", "https", "grpc", "grpc_tls"]
TLSProtocol = Literal["internal_rpc", "https", "grpc"]


class RuntimeConfig(ConfigFile):
    """The merged, resolved configuration the agent runs with.

    After loading, `bind_addr`, `advertise_addr` (always set), `client_addr`,
    `addresses.*`, `serf_lan`/`serf_wan`, the join lists and `recursors` hold
    addresses, not templates; `node_name` is never empty; `datacenter` is lower case.
    """

    dev_mode: bool = False

    def client_addrs(self) -> list[str]:
        return self.client_addr.split()

    def listen_addresses(self, kind: ListenerKind) -> list[str]:
        """Hosts (IPs, or `unix://` paths) a listener binds; empty when its port is -1."""
        if getattr(self.ports, kind) < 0:
            return []
        override: str = getattr(self.addresses, kind)
        return override.split() if override else self.client_addrs()

    def tls_settings(self, protocol: TLSProtocol) -> TLSSettings:
        """Effective TLS for `protocol`: its block, else `tls.defaults`, else built-ins."""
        block: TLSCommon = getattr(self.tls, protocol)
        defaults = self.tls.defaults

        def pick(name: str, fallback: Any) -> Any:
            own = getattr(block, name, None)
            if own is not None:
                return own
            inherited = getattr(defaults, name, None)
            return fallback if inherited is None else inherited

        return TLSSettings(
            ca_file=pick("ca_file", ""),
            ca_path=pick("ca_path", ""),
            cert_file=pick("cert_file", ""),
            key_file=pick("key_file", ""),
            verify_incoming=pick("verify_incoming", False),
            verify_outgoing=protocol != "grpc" and pick("verify_outgoing", False),
            verify_server_hostname=bool(getattr(block, "verify_server_hostname", None)),
            tls_min_version=pick("tls_min_version", "TLSv1_2"),
            tls_cipher_suites=pick("tls_cipher_suites", ""),
            use_auto_cert=bool(getattr(block, "use_auto_cert", None)),
        )
