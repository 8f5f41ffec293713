"""Loading and merging: source order, Consul's merge rules, flags, -hcl, -dev,
deprecated keys and address resolution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proconsul.config.agent_args import parse_agent_args
from proconsul.config.errors import ConfigError
from proconsul.config.interfaces import IfAddr, make_ifaddr
from proconsul.config.loader import LoadedConfig, load_config, load_paths

TABLE: list[IfAddr] = [
    make_ifaddr("lo", "127.0.0.1/8", "up|loopback"),
    make_ifaddr("eth0", "10.0.1.11/24", "up|broadcast", default_route=True),
    make_ifaddr("eth0", "fe80::1/64", "up|broadcast", default_route=True),
]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(name: str, text: str) -> str:
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    Path(name).write_text(text)
    return name


def load(*paths: str, table: list[IfAddr] = TABLE) -> LoadedConfig:
    return load_paths(list(paths), interfaces=lambda: table, hostname=lambda: "host-1")


def agent(*argv: str, table: list[IfAddr] = TABLE) -> LoadedConfig:
    return load_config(
        parse_agent_args(list(argv)), interfaces=lambda: table, hostname=lambda: "host-1"
    )


def error(*argv: str) -> str:
    with pytest.raises(ConfigError) as info:
        agent(*argv)
    return str(info.value)


def test_defaults_are_consuls() -> None:
    config = load(write("a.hcl", 'data_dir = "data"\n')).config
    assert (config.datacenter, config.domain, config.node_name) == ("dc1", "consul", "host-1")
    assert (config.bind_addr, config.client_addr, config.advertise_addr) == (
        "0.0.0.0",
        "127.0.0.1",
        "10.0.1.11",
    )
    ports = config.ports
    assert (ports.http, ports.https, ports.dns, ports.grpc, ports.grpc_tls) == (
        8500,
        -1,
        8600,
        -1,
        -1,
    )
    assert (ports.serf_lan, ports.serf_wan, ports.server) == (8301, 8302, 8300)
    assert (ports.sidecar_min_port, ports.sidecar_max_port) == (21000, 21255)
    assert (ports.expose_min_port, ports.expose_max_port) == (21500, 21755)
    assert config.retry_interval == 30.0 and config.retry_max == 0
    assert config.encrypt_verify_incoming and config.encrypt_verify_outgoing
    assert (config.acl.default_policy, config.acl.down_policy) == ("allow", "extend-cache")
    assert config.acl.token_ttl == config.acl.policy_ttl == config.acl.role_ttl == 30.0
    assert config.connect.enabled and config.enable_central_service_config
    assert config.dns_config.allow_stale and config.dns_config.max_stale == 87600 * 3600
    assert (config.dns_config.udp_answer_limit, config.dns_config.recursor_timeout) == (3, 2.0)
    assert config.log_level == "INFO" and not config.log_json and not config.enable_script_checks
    assert config.performance.raft_multiplier == 5
    assert config.limits.kv_max_value_size == 512 * 1024
    assert not config.ui_config.enabled and not config.dev_mode
    assert (
        config.listen_addresses("http") == ["127.0.0.1"] and config.listen_addresses("grpc") == []
    )


def test_directory_is_read_in_lexical_order_mixing_hcl_and_json() -> None:
    write("conf.d/10-base.hcl", 'data_dir = "data"\ndatacenter = "dc-a"\nlog_level = "INFO"\n')
    write("conf.d/20-override.json", '{"datacenter": "dc-b", "log_level": "DEBUG"}')
    write("conf.d/30-last.hcl", 'log_level = "WARN"\n')
    write("conf.d/notes.txt", "not config")
    write("conf.d/sub/99-ignored.hcl", 'datacenter = "ignored"\n')
    loaded = load("conf.d")
    assert (loaded.config.datacenter, loaded.config.log_level) == ("dc-b", "WARN")
    assert loaded.sources == ["conf.d/10-base.hcl", "conf.d/20-override.json", "conf.d/30-last.hcl"]
    assert any("skipping file conf.d/notes.txt" in warning for warning in loaded.warnings)


def test_config_file_and_dir_flags_apply_in_the_order_given() -> None:
    write("d/a.hcl", 'data_dir = "data"\nnode_name = "from-dir"\n')
    write("x.hcl", 'node_name = "from-file"\n')
    assert agent("-config-dir", "d", "-config-file", "x.hcl").config.node_name == "from-file"
    assert agent("-config-file=x.hcl", "-config-dir=d").config.node_name == "from-dir"


def test_lists_append_blocks_merge_and_maps_replace() -> None:
    write(
        "a.hcl",
        'data_dir = "data"\nretry_join = ["a"]\nports { http = 1000 }\n'
        'acl { tokens { agent = "t1" } }\nnode_meta { rack = "r1", zone = "z1" }\n',
    )
    write(
        "b.json",
        '{"retry_join": ["b"], "ports": {"dns": 2000},'
        ' "acl": {"enabled": true, "tokens": {"default": "t2"}}, "node_meta": {"rack": "r2"}}',
    )
    config = load("a.hcl", "b.json").config
    assert config.retry_join == ["a", "b"]
    assert (config.ports.http, config.ports.dns) == (1000, 2000)
    assert config.acl.enabled and (config.acl.tokens.agent, config.acl.tokens.default) == (
        "t1",
        "t2",
    )
    assert config.node_meta == {"rack": "r2"}


def test_services_and_checks_accumulate_across_files_and_forms() -> None:
    write(
        "a.hcl", 'data_dir = "data"\nservice { name = "one" }\ncheck { name = "c1", ttl = "30s" }\n'
    )
    write(
        "b.hcl",
        'services = [{ name = "two" }]\nservice { name = "three" }\nservice { name = "four" }\n'
        'checks = [{ name = "c2", ttl = "1m" }]\ncheck { name = "c3", ttl = "1h" }\n',
    )
    write("c.json", '{"service": {"name": "five"}, "checks": [{"name": "c4", "ttl": "5s"}]}')
    config = load("a.hcl", "b.hcl", "c.json").config
    assert [s.name for s in config.services] == ["one", "two", "three", "four", "five"]
    assert [c.name for c in config.checks] == ["c1", "c2", "c3", "c4"]
    assert config.checks[1].ttl == 60.0


def test_flags_override_files_and_hcl_fragments_override_flags() -> None:
    write(
        "a.hcl",
        'data_dir = "data"\nports { http = 9000 }\nnode_name = "file-node"\n'
        'datacenter = "file-dc"\nretry_join = ["from-file"]\n',
    )
    loaded = agent(
        "-config-file",
        "a.hcl",
        "-http-port",
        "9100",
        "-node=flag-node",
        "-datacenter",
        "flag-dc",
        "-retry-join",
        "from-flag",
    )
    config = loaded.config
    assert (config.ports.http, config.node_name, config.datacenter) == (
        9100,
        "flag-node",
        "flag-dc",
    )
    # Consul merges list-valued flags before the files, so their entries come first.
    assert config.retry_join == ["from-flag", "from-file"]
    fragment = agent(
        "-config-file",
        "a.hcl",
        "-http-port",
        "9100",
        "-hcl",
        "ports { http = 9200 }",
        "-hcl",
        'node_name = "hcl-node"',
    )
    assert (fragment.config.ports.http, fragment.config.node_name) == (9200, "hcl-node")
    assert fragment.sources == ["a.hcl", "flag -http-port", "flag -hcl", "flag -hcl"]


def test_every_setting_flag_reaches_its_key() -> None:
    config = agent(
        "-data-dir",
        "data",
        "-server",
        "-bootstrap-expect",
        "3",
        "-bind",
        "10.0.1.11",
        "-advertise",
        "10.0.1.11",
        "-client",
        "0.0.0.0",
        "-ui",
        "-dns-port",
        "8601",
        "-server-port",
        "8310",
        "-serf-lan-port",
        "8311",
        "-grpc-port",
        "8502",
        "-log-level",
        "debug",
        "-log-json",
        "-retry-join",
        "a",
        "-retry-join",
        "b",
        "-encrypt",
        "Xo4DihfBGcAcrXrazJ+OlRXy4GGRZHuRIEny2NtG+lM=",
        "-node-meta",
        "rack:r1",
        "-domain",
        "test",
    ).config
    assert config.server and config.bootstrap_expect == 3 and config.ui_config.enabled
    assert (config.bind_addr, config.advertise_addr, config.client_addr) == (
        "10.0.1.11",
        "10.0.1.11",
        "0.0.0.0",
    )
    assert (config.ports.dns, config.ports.server, config.ports.serf_lan, config.ports.grpc) == (
        8601,
        8310,
        8311,
        8502,
    )
    assert (config.log_level, config.log_json, config.retry_join) == ("debug", True, ["a", "b"])
    assert config.node_meta == {"rack": "r1"} and config.domain == "test" and config.encrypt


def test_flag_errors_name_the_flag() -> None:
    assert error("-data-dir", "d", "-http-port", "70000") == (
        "flag -http-port: ports.http: must be between 1 and 65535, or -1 to disable"
    )
    assert (
        error("-data-dir", "d", "-bind", "nope")
        == "flag -bind: bind_addr: 'nope' is not a valid IP address"
    )
    assert error("-data-dir", "d", "-hcl", "bogus = 1") == "flag -hcl: bogus: unknown key"
    assert error("-data-dir", "d", "-hcl", "ports {") == (
        "flag -hcl: invalid HCL: Unexpected end of file; expected RIGHTBRACE, IDENTIFIER, "
        "STRING, COMMENT, MULTICOMMENT, MINUS, NUMBER, FLOAT (line 1)"
    )
    assert error("-data-dir", "d", "-retry-interval", "soon") == (
        'flag -retry-interval: retry_interval: time: invalid duration "soon"'
    )
    assert error("-data-dir", "d", "-bootstrap-expect", "3") == (
        "flag -bootstrap-expect: bootstrap_expect: "
        "'bootstrap_expect > 0' not allowed in client mode"
    )


def test_dev_mode_defaults() -> None:
    loaded = agent("-dev")
    config = loaded.config
    assert config.dev_mode and config.server and config.bootstrap and config.bootstrap_expect == 0
    assert (config.bind_addr, config.client_addr, config.advertise_addr) == ("127.0.0.1",) * 3
    assert config.ui_config.enabled and config.ports.grpc == 8502 and config.connect.enabled
    assert config.data_dir == "" and config.node_name == "host-1"
    assert loaded.sources == ["flag -dev"]


def test_flags_and_files_override_dev_mode() -> None:
    write("a.hcl", "ports { grpc = 9502 }\nui_config { enabled = false }\n")
    config = agent(
        "-dev", "-config-file", "a.hcl", "-client", "0.0.0.0", "-node", "dev-node"
    ).config
    assert (config.client_addr, config.node_name, config.ports.grpc) == (
        "0.0.0.0",
        "dev-node",
        9502,
    )
    assert not config.ui_config.enabled and config.dev_mode


def test_dev_mode_refuses_bootstrap_expect() -> None:
    assert error("-dev", "-bootstrap-expect", "1") == (
        "flag -bootstrap-expect: bootstrap_expect: 'bootstrap_expect > 0' not allowed in dev mode"
    )


def test_bootstrap_expect_one_means_bootstrap() -> None:
    loaded = load(write("a.hcl", 'data_dir = "d"\nserver = true\nbootstrap_expect = 1\n'))
    assert loaded.config.bootstrap and loaded.config.bootstrap_expect == 0
    assert "BootstrapExpect is set to 1; this is the same as Bootstrap mode." in loaded.warnings


def test_wildcard_bind_advertises_the_one_private_ipv4() -> None:
    write("a.hcl", 'data_dir = "d"\nbind_addr = "0.0.0.0"\n')
    assert load("a.hcl").config.advertise_addr == "10.0.1.11"
    two = [*TABLE, make_ifaddr("eth1", "192.168.7.2/24", "up")]
    with pytest.raises(ConfigError) as info:
        load("a.hcl", table=two)
    assert str(info.value) == (
        "a.hcl: bind_addr: Multiple private IPv4 addresses found (10.0.1.11 192.168.7.2). "
        "Please configure one with 'bind' and/or 'advertise'."
    )
    with pytest.raises(ConfigError) as info:
        load("a.hcl", table=TABLE[:1])
    assert (
        str(info.value)
        == "a.hcl: bind_addr: No private IPv4 address found; set bind_addr or advertise_addr"
    )


def test_templates_resolve_in_every_address_field() -> None:
    eth0 = '{{ GetInterfaceIP \\"eth0\\" }}'
    write(
        "a.hcl",
        f'data_dir = "d"\nbind_addr = "{eth0}"\nclient_addr = "127.0.0.1 {eth0}"\n'
        f'addresses {{ http = "unix://http.sock {eth0}" }}\n'
        'retry_join = ["{{ GetAllInterfaces | include \\"type\\" \\"ipv4\\" '
        '| join \\"address\\" \\" \\" }}", '
        '"consul.example.com", "provider=aws tag_key=k tag_value=v"]\n'
        f'recursors = ["{eth0}", "8.8.8.8:53"]\n',
    )
    config = load("a.hcl").config
    assert (config.bind_addr, config.advertise_addr, config.serf_lan) == ("10.0.1.11",) * 3
    assert config.client_addrs() == ["127.0.0.1", "10.0.1.11"]
    assert config.listen_addresses("http") == ["unix://http.sock", "10.0.1.11"]
    assert config.listen_addresses("dns") == ["127.0.0.1", "10.0.1.11"]
    assert config.recursors == ["10.0.1.11", "8.8.8.8:53"]
    assert config.retry_join == [
        "127.0.0.1",
        "10.0.1.11",
        "consul.example.com",
        "provider=aws tag_key=k tag_value=v",
    ]


def test_interfaces_are_read_only_when_needed() -> None:
    def no_table() -> list[IfAddr]:
        raise AssertionError("the interface table should not be read")

    write("a.hcl", 'data_dir = "d"\nbind_addr = "10.0.0.5"\n')
    config = load_paths(["a.hcl"], interfaces=no_table).config
    assert config.advertise_addr == "10.0.0.5"


def test_deprecated_keys_move_to_their_new_homes_with_warnings() -> None:
    write(
        "a.hcl",
        'data_dir = "d"\nui = true\nverify_incoming = true\nverify_outgoing = true\n'
        'verify_server_hostname = true\nca_file = "ca.pem"\ntls_min_version = "tls13"\n'
        "tls { https { verify_incoming = false } grpc { use_auto_cert = true } }\n",
    )
    loaded = load("a.hcl")
    config = loaded.config
    assert config.ui_config.enabled
    rpc = config.tls_settings("internal_rpc")
    assert (rpc.verify_incoming, rpc.verify_outgoing, rpc.verify_server_hostname) == (
        True,
        True,
        True,
    )
    assert (rpc.ca_file, rpc.tls_min_version) == ("ca.pem", "TLSv1_3")
    https = config.tls_settings("https")
    assert (https.verify_incoming, https.verify_outgoing, https.ca_file) == (False, True, "ca.pem")
    grpc = config.tls_settings("grpc")
    assert grpc.use_auto_cert and not grpc.verify_outgoing
    assert (
        "The 'ui' field is deprecated. Use the 'ui_config.enabled' field instead."
        in loaded.warnings
    )
    assert (
        "The 'verify_server_hostname' field is deprecated. "
        "Use the 'tls.internal_rpc.verify_server_hostname' field instead."
    ) in loaded.warnings


def test_hcl_shapes_are_fixed() -> None:
    write(
        "a.hcl",
        'data_dir = "d"\nports { http = 1 }\nports { http = 2 }\n'
        'config_entries { bootstrap { kind = "proxy-defaults", name = "global" } }\n'
        'acl = { enabled = true }\nacl { default_policy = "deny" }\n'
        'service { name = "web", proxy {\n'
        '  upstreams { destination_name = "db", local_bind_port = 9 }\n} }\n',
    )
    config = load("a.hcl").config
    assert config.ports.http == 2
    assert config.config_entries.bootstrap == [{"kind": "proxy-defaults", "name": "global"}]
    assert config.acl.enabled and config.acl.default_policy == "deny"
    proxy = config.services[0].proxy
    assert proxy is not None and proxy.upstreams[0].destination_name == "db"


def test_json_null_means_unset() -> None:
    write("a.json", '{"data_dir": "d", "datacenter": null, "ports": {"http": null}}')
    config = load("a.json").config
    assert (config.datacenter, config.ports.http) == ("dc1", 8500)


def test_datacenter_is_lower_cased_and_ui_path_normalised() -> None:
    write("a.hcl", 'data_dir = "d"\ndatacenter = "DC-West"\nui_config { content_path = "dash" }\n')
    config = load("a.hcl").config
    assert (config.datacenter, config.ui_config.content_path) == ("dc-west", "/dash/")


def test_loading_is_pure_and_reload_rereads_the_same_sources(in_tmp: Path) -> None:
    write("a.hcl", 'data_dir = "d"\nlog_level = "INFO"\n')
    args = parse_agent_args(["-config-file", "a.hcl", "-node", "n1"])
    before = sorted(os.listdir(in_tmp))
    first = load_config(args, interfaces=lambda: TABLE)
    assert sorted(os.listdir(in_tmp)) == before
    write("a.hcl", 'data_dir = "d"\nlog_level = "WARN"\n')
    second = load_config(args, interfaces=lambda: TABLE)
    assert (first.config.log_level, second.config.log_level) == ("INFO", "WARN")
    assert second.config.node_name == "n1"


def test_node_name_warning_for_names_dns_cannot_carry() -> None:
    loaded = load(write("a.hcl", 'data_dir = "d"\nnode_name = "web_1"\n'))
    assert any("will not be discoverable via DNS" in warning for warning in loaded.warnings)
