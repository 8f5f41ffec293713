"""Broken configs: each is refused with one exact message naming the source,
the key path and what is wrong (plus the line, where the parser gave one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proconsul.config.errors import ConfigError
from proconsul.config.interfaces import IfAddr, make_ifaddr
from proconsul.config.loader import load_paths
from proconsul.config.sources import parse_text

TABLE: list[IfAddr] = [
    make_ifaddr("lo", "127.0.0.1/8", "up|loopback"),
    make_ifaddr("eth0", "10.0.1.11/24", "up|broadcast", default_route=True),
]
BASE = 'data_dir = "data"\n'

CASES = [
    ("bad.hcl", "bogus = 1\n", "bad.hcl: bogus: unknown key"),
    ("bad.hcl", "ports {\n  htp = 1\n}\n", "bad.hcl: ports.htp: unknown key"),
    ("bad.json", '{"acl": {"tokens": {"agnet": "x"}}}', "bad.json: acl.tokens.agnet: unknown key"),
    ("bad.hcl", 'ports { http = "8500" }\n', "bad.hcl: ports.http: expected int, got str"),
    ("bad.hcl", 'server = "yes"\n', "bad.hcl: server: expected bool, got str"),
    ("bad.json", '{"retry_join": "10.0.0.1"}', "bad.json: retry_join: expected array, got str"),
    ("bad.hcl", "acl = 1\n", "bad.hcl: acl: expected object, got int"),
    (
        "bad.hcl",
        'retry_interval = "10x"\n',
        'bad.hcl: retry_interval: time: invalid duration "10x"',
    ),
    (
        "bad.hcl",
        "retry_interval = 30\n",
        'bad.hcl: retry_interval: expected a duration such as "10s", got int',
    ),
    (
        "bad.hcl",
        'dns_config { service_ttl { "*" = "5q" } }\n',
        'bad.hcl: dns_config.service_ttl: time: invalid duration "5q"',
    ),
    (
        "bad.hcl",
        'service {\n  name = "web"\n  checks = [{ http = "http://x/", interval = "1q" }]\n}\n',
        'bad.hcl: service.checks[0].interval: time: invalid duration "1q"',
    ),
    (
        "bad.hcl",
        'service = [{ name = "a" }, { name = "b", port = "x" }]\n',
        "bad.hcl: service[1].port: expected int, got str",
    ),
    (
        "bad.json",
        '{"services": [{"name": "a", "checks": [{"tcp": "x:1"}]}]}',
        "bad.json: services[0].checks[0].interval: tcp checks need an interval greater than 0",
    ),
    ("bad.hcl", "service { port = 80 }\n", "bad.hcl: service.name: missing service name"),
    ("bad.hcl", 'service = "web"\n', "bad.hcl: service: expected an object or a list of objects"),
    (
        "bad.hcl",
        'service {\n  name = "web"\n  connect { sidecar_service {\n'
        '    proxy { upstreams = [{ destination_name = "api" }] }\n  } }\n}\n',
        "bad.hcl: service.connect.sidecar_service.proxy.upstreams[0].local_bind_port: "
        "upstreams need a local_bind_port between 1 and 65535",
    ),
    (
        "bad.hcl",
        'check { name = "c" }\n',
        "bad.hcl: check: a check needs one of args, http, tcp, grpc, h2ping, ttl or alias_service",
    ),
    (
        "bad.hcl",
        'check { http = "http://x/", interval = "5s" }\n',
        "bad.hcl: check.name: missing check name",
    ),
    (
        "bad.hcl",
        'bind_addr = "not-an-ip"\n',
        "bad.hcl: bind_addr: 'not-an-ip' is not a valid IP address",
    ),
    (
        "bad.hcl",
        'client_addr = "127.0.0.1 localhost"\n',
        "bad.hcl: client_addr: 'localhost' is not a valid IP address",
    ),
    (
        "bad.hcl",
        'bind_addr = "{{ GetInterfaceIP \\"eth0\\" "\n',
        'bad.hcl: bind_addr: bad address template {{ GetInterfaceIP "eth0" : '
        "unclosed action: missing }}",
    ),
    (
        "bad.hcl",
        'advertise_addr = "{{ GetIP }}"\n',
        'bad.hcl: advertise_addr: bad address template {{ GetIP }}: function "GetIP" not defined',
    ),
    (
        "bad.hcl",
        'retry_join = ["{{ GetPrivateIP"]\n',
        "bad.hcl: retry_join[0]: bad address template {{ GetPrivateIP: unclosed action: missing }}",
    ),
    (
        "bad.hcl",
        'bind_addr = "{{ GetInterfaceIP \\"eth9\\" }}"\n',
        'bad.hcl: bind_addr: no address found in {{ GetInterfaceIP "eth9" }}',
    ),
    (
        "bad.hcl",
        'bind_addr = "{{ GetAllInterfaces | join \\"address\\" \\" \\" }}"\n',
        "bad.hcl: bind_addr: multiple addresses found in "
        '{{ GetAllInterfaces | join "address" " " }} (127.0.0.1 10.0.1.11); one is required',
    ),
    (
        "bad.hcl",
        'advertise_addr = "{{ GetAllInterfaces | attr \\"name\\" }}"\n',
        "bad.hcl: advertise_addr: 'lo' (from {{ GetAllInterfaces | attr \"name\" }}) "
        "is not a valid IP address",
    ),
    (
        "bad.hcl",
        'advertise_addr = "0.0.0.0"\n',
        "bad.hcl: advertise_addr: Advertise address cannot be 0.0.0.0, :: or [::]",
    ),
    (
        "bad.hcl",
        'datacenter = "dc1"\nports {\n  http = = 1\n}\n',
        "bad.hcl: invalid HCL: unexpected EQUAL; expected BOOL, STRING, IDENTIFIER, LEFTBRACE, "
        "LEFTBRACKET, LEFTPAREN, MINUS, NUMBER, FLOAT (line 3)",
    ),
    (
        "bad.hcl",
        'datacenter = "dc1"\n}}}\n',
        "bad.hcl: invalid HCL: unexpected RIGHTBRACE; expected $end, COMMA, IDENTIFIER, STRING, "
        "COMMENT, MULTICOMMENT, MINUS, NUMBER, FLOAT (line 2)",
    ),
    (
        "bad.hcl",
        "acl {\n  enabled = true\n",
        "bad.hcl: invalid HCL: Unexpected end of file; expected RIGHTBRACE, COMMA, IDENTIFIER, "
        "STRING, COMMENT, MULTICOMMENT, MINUS, NUMBER, FLOAT (line 2)",
    ),
    (
        "bad.json",
        '{"datacenter": "dc1",\n "ports": }\n',
        "bad.json: invalid JSON: Expecting value (line 2)",
    ),
    ("bad.json", '{"datacenter": "dc1"} xyz\n', "bad.json: invalid JSON: Extra data (line 1)"),
    ("bad.json", "[1, 2]", "bad.json: the top level must be an object"),
    (
        "bad.hcl",
        'acl_master_token = "secret"\n',
        "bad.hcl: acl_master_token: no longer supported; use acl.tokens.initial_management instead",
    ),
    (
        "bad.hcl",
        'acl_datacenter = "dc1"\n',
        "bad.hcl: acl_datacenter: no longer supported; use primary_datacenter instead",
    ),
    (
        "bad.hcl",
        'acl { tokens { agent_master = "x" } }\n',
        "bad.hcl: acl.tokens.agent_master: no longer supported; "
        "use acl.tokens.agent_recovery instead",
    ),
    (
        "bad.hcl",
        'encrypt = "c2hvcnQ="\n',
        "bad.hcl: encrypt: invalid gossip key: must be 16, 24 or 32 bytes, got 5",
    ),
    (
        "bad.hcl",
        'encrypt = "not base64!"\n',
        "bad.hcl: encrypt: invalid gossip key: not valid base64",
    ),
    (
        "bad.hcl",
        'acl { default_policy = "maybe" }\n',
        "bad.hcl: acl.default_policy: must be allow or deny, not 'maybe'",
    ),
    (
        "bad.hcl",
        'acl { down_policy = "panic" }\n',
        "bad.hcl: acl.down_policy: must be allow, deny, extend-cache or async-cache, not 'panic'",
    ),
    (
        "bad.hcl",
        "ports { http = 70000 }\n",
        "bad.hcl: ports.http: must be between 1 and 65535, or -1 to disable",
    ),
    ("bad.hcl", "ports { server = -1 }\n", "bad.hcl: ports.server: must be between 1 and 65535"),
    (
        "bad.hcl",
        "performance { raft_multiplier = 11 }\n",
        "bad.hcl: performance.raft_multiplier: cannot be 11; must be between 1 and 10",
    ),
    (
        "bad.hcl",
        'tls { defaults { tls_min_version = "TLSv9" } }\n',
        "bad.hcl: tls.defaults.tls_min_version: 'TLSv9' is not a TLS version; "
        "use one of TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3",
    ),
    (
        "bad.hcl",
        'datacenter = "us west"\n',
        "bad.hcl: datacenter: can only contain lowercase alphanumeric, - or _ characters",
    ),
    ("bad.hcl", 'node_id = "abc"\n', "bad.hcl: node_id: 'abc' is not a valid UUID"),
    ("bad.hcl", 'log_level = "loud"\n', "bad.hcl: log_level: invalid log level 'loud'"),
    (
        "bad.hcl",
        'config_entries { bootstrap = [{ kind = "proxy-defaults" }] }\n',
        "bad.hcl: config_entries.bootstrap[0].name: each config entry needs a name",
    ),
    (
        "bad.hcl",
        'config_entries { bootstrap { name = "x" } }\n',
        "bad.hcl: config_entries.bootstrap[0].kind: each config entry needs a kind",
    ),
    (
        "bad.hcl",
        'config_entries { bootstrap = [{ kind = "proxy-defaults", name = "web" }] }\n',
        "bad.hcl: config_entries.bootstrap[0].name: "
        "invalid name 'web', only \"global\" is supported",
    ),
    (
        "bad.hcl",
        'config_entries { bootstrap = [{ kind = "service-splitter", name = "web",\n'
        "  splits = [{ weight = 90 }] }] }\n",
        "bad.hcl: config_entries.bootstrap[0].Splits: "
        "the sum of all split weights must be 100, not 90.000000",
    ),
    (
        "bad.hcl",
        'config_entries { bootstrap = [{ kind = "service-defaults", name = "web",\n'
        '  protocol = "http", colour = "red" }] }\n',
        'bad.hcl: config_entries.bootstrap[0].colour: invalid config key "colour"',
    ),
    (
        "bad.hcl",
        'config_entries { bootstrap = [{ kind = "service-resolver", name = "api",\n'
        '  subsets = { v1 = { filter = "Service.Nope == 1" } } }] }\n',
        "bad.hcl: config_entries.bootstrap[0].Subsets[v1].Filter: "
        'Filter for subset "v1" is not a valid expression: '
        'Failed to create boolean expression evaluator: Selector "Service.Nope" is not valid',
    ),
    (
        "bad.hcl",
        'config_entries { bootstrap = [{ kind = "mesh", name = "mesh" }] }\n',
        "bad.hcl: config_entries.bootstrap[0].kind: "
        "config entry kind 'mesh' is not supported by this agent",
    ),
    (
        "bad.hcl",
        "bootstrap_expect = 3\n",
        "bad.hcl: bootstrap_expect: 'bootstrap_expect > 0' not allowed in client mode",
    ),
    (
        "bad.hcl",
        "server = true\nbootstrap = true\nbootstrap_expect = 3\n",
        "bad.hcl: bootstrap_expect: "
        "'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive",
    ),
    (
        "bad.hcl",
        "auto_encrypt { tls = true }\nserver = true\n",
        "bad.hcl: auto_encrypt.tls: can only be used on client agents",
    ),
    (
        "bad.hcl",
        "ports {\n  sidecar_min_port = 30000\n}\n",
        "bad.hcl: ports.sidecar_min_port: must not be greater than ports.sidecar_max_port",
    ),
    (
        "bad.conf",
        'datacenter = "dc1"\n',
        "bad.conf: unknown file extension; name it .hcl or .json, or set -config-format",
    ),
]


@pytest.mark.parametrize(("name", "text", "message"), CASES)
def test_broken_config_is_refused_with_an_exact_message(
    name: str, text: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("base.hcl").write_text(BASE)
    Path(name).write_text(text)
    with pytest.raises(ConfigError) as info:
        load_paths(["base.hcl", name], interfaces=lambda: TABLE, hostname=lambda: "node1")
    assert str(info.value) == message


def test_missing_data_dir_is_an_error_of_the_merged_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("a.hcl").write_text('datacenter = "dc1"\n')
    with pytest.raises(ConfigError) as info:
        load_paths(["a.hcl"], interfaces=lambda: TABLE)
    assert str(info.value) == "config: data_dir: cannot be empty (set data_dir or -data-dir)"


def test_missing_path_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_paths(["nope.hcl"])
    assert str(info.value) == "nope.hcl: no such file or directory"


def test_first_bad_file_in_a_directory_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("conf.d").mkdir()
    Path("conf.d/10-ok.hcl").write_text(BASE)
    Path("conf.d/20-bad.json").write_text('{"ports": {"dns": "53"}}')
    with pytest.raises(ConfigError) as info:
        load_paths(["conf.d"])
    assert str(info.value) == "conf.d/20-bad.json: ports.dns: expected int, got str"


def test_error_attributes_are_available() -> None:
    error = ConfigError("a.hcl", "ports.http", "too big", 3)
    assert (error.source, error.path, error.problem, error.line) == (
        "a.hcl",
        "ports.http",
        "too big",
        3,
    )
    assert str(error) == "a.hcl: ports.http: too big (line 3)"


DOCUMENT = (
    'datacenter = "dc1"\nports { grpc = 8502 }\n'
    'acl {\n  enabled = true\n}\nretry_join = ["a", "b"]\n'
)
JSON_DOCUMENT = '{"datacenter": "dc1", "ports": {"grpc": 8502}, "retry_join": ["a", "b"]}'


@pytest.mark.parametrize(("text", "fmt"), [(DOCUMENT, "hcl"), (JSON_DOCUMENT, "json")])
def test_parser_fed_prefixes_parses_or_raises_config_error(text: str, fmt: str) -> None:
    # Every few bytes keeps pyhcl's slow parser inside the unit-test budget.
    for end in range(0, len(text) + 1, 4):
        try:
            parse_text("doc", text[:end], fmt)
        except ConfigError as exc:
            assert str(exc).startswith("doc: ")


@pytest.mark.parametrize(("text", "fmt"), [(DOCUMENT, "hcl"), (JSON_DOCUMENT, "json")])
@pytest.mark.parametrize("garbage", ["}", "]]", "= 1", '"x"', "{", "\x00"])
def test_parser_fed_trailing_garbage_raises(text: str, fmt: str, garbage: str) -> None:
    with pytest.raises(ConfigError):
        parse_text("doc", text + garbage, fmt)
