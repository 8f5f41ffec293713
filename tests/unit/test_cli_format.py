"""Pure parts of the HTTP-API verbs: addresses, config precedence, hints, tables."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from proconsul.cli import agent_verbs, catalog, kv, services
from proconsul.cli.api_client import (
    CliError,
    Endpoint,
    add_api_flags,
    columnize,
    load_config,
    parse_address,
    parse_args,
    stray_argument_hint,
)
from proconsul.config.flags import FlagSet

# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "tls", "expected"),
    [
        ("127.0.0.1:8500", False, Endpoint("http", "127.0.0.1", 8500)),
        ("127.0.0.1:8501", True, Endpoint("https", "127.0.0.1", 8501)),
        ("http://10.0.0.1:8500", True, Endpoint("http", "10.0.0.1", 8500)),
        ("https://consul.example:8501", False, Endpoint("https", "consul.example", 8501)),
        ("https://consul.example", False, Endpoint("https", "consul.example", 443)),
        ("[::1]:8500", False, Endpoint("http", "::1", 8500)),
        ("http://[::1]:8500/", False, Endpoint("http", "::1", 8500)),
        ("unix:///run/consul.sock", False, Endpoint("unix", "/run/consul.sock", 0)),
    ],
)
def test_parse_address(text: str, tls: bool, expected: Endpoint) -> None:
    assert parse_address(text, use_tls=tls) == expected


@pytest.mark.parametrize("text", ["ftp://h:1", "h:notaport", "h:70000", "unix://", "http://"])
def test_parse_address_rejects_bad_input(text: str) -> None:
    with pytest.raises(CliError):
        parse_address(text)


def test_endpoint_display_and_url() -> None:
    ep = Endpoint("http", "::1", 8500)
    assert ep.display == "[::1]:8500"
    assert ep.url("/v1/kv/a") == "http://[::1]:8500/v1/kv/a"


# --------------------------------------------------------------------------- config


def _values(**given: Any) -> dict[str, Any]:
    flags = FlagSet("test")
    add_api_flags(flags)
    values, _ = flags.parse([])
    values.update({k.replace("_", "-"): v for k, v in given.items()})
    return values


def test_defaults_without_env() -> None:
    config = load_config(_values(), env={})
    assert config.endpoint == Endpoint("http", "127.0.0.1", 8500)
    assert config.token is None
    assert config.verify is True


def test_env_is_used_and_flags_win() -> None:
    env = {
        "CONSUL_HTTP_ADDR": "10.1.1.1:9500",
        "CONSUL_HTTP_TOKEN": "env-token",
        "CONSUL_CACERT": "env-ca.pem",
        "CONSUL_TLS_SERVER_NAME": "server.dc1.consul",
    }
    config = load_config(_values(), env=env)
    assert config.endpoint == Endpoint("http", "10.1.1.1", 9500)
    assert config.token == "env-token"
    assert config.ca_file == "env-ca.pem"
    assert config.tls_server_name == "server.dc1.consul"
    config = load_config(_values(http_addr="127.0.0.2:1", token="flag-token"), env=env)
    assert config.endpoint == Endpoint("http", "127.0.0.2", 1)
    assert config.token == "flag-token"


def test_ssl_env_switches_scheme_and_verify() -> None:
    env = {"CONSUL_HTTP_ADDR": "127.0.0.1:8501", "CONSUL_HTTP_SSL": "true"}
    env["CONSUL_HTTP_SSL_VERIFY"] = "false"
    config = load_config(_values(), env=env)
    assert config.endpoint.scheme == "https"
    assert config.verify is False


def test_token_file_precedence(tmp_path: Path) -> None:
    flag_file = tmp_path / "flag-token"
    flag_file.write_text("from-flag-file\n")
    env_file = tmp_path / "env-token"
    env_file.write_text("  from-env-file  ")
    env = {"CONSUL_HTTP_TOKEN_FILE": str(env_file), "CONSUL_HTTP_TOKEN": "env"}
    assert load_config(_values(), env=env).token == "from-env-file"
    assert load_config(_values(token="flag"), env=env).token == "flag"
    both = _values(token="flag", token_file=str(flag_file))
    assert load_config(both, env=env).token == "from-flag-file"
    with pytest.raises(CliError, match="Error loading token file"):
        load_config(_values(token_file=str(tmp_path / "missing")), env={})


def test_stale_and_datacenter_go_in_the_query() -> None:
    from proconsul.cli.api_client import ApiClient

    client = ApiClient(load_config(_values(datacenter="dc2", stale=True), env={}))
    assert client.path_with_query("GET", "/v1/kv/a") == "/v1/kv/a?dc=dc2&stale="
    assert client.path_with_query("PUT", "/v1/kv/a", [("cas", "3")]) == "/v1/kv/a?cas=3&dc=dc2"


# --------------------------------------------------------------------------- arguments


def _flags() -> FlagSet:
    flags = FlagSet("connect envoy")
    add_api_flags(flags)
    flags.string("sidecar-for")
    flags.boolean("bootstrap")
    return flags


def test_hint_for_flag_without_dash_hides_token() -> None:
    hint = stray_argument_hint(_flags(), "token=800818ce-ccb5-11ba-4cbc-b20dca15dac8")
    assert hint is not None
    assert "Did you mean -token=...?" in hint
    assert "800818ce" not in hint


def test_hint_for_other_flag_shows_value() -> None:
    assert "Did you mean -sidecar-for=web?" in str(stray_argument_hint(_flags(), "sidecar-for=web"))


def test_hint_for_flag_after_argument() -> None:
    hint = stray_argument_hint(_flags(), "-bootstrap")
    assert hint is not None and "-bootstrap" in hint and "before" in hint


def test_no_hint_for_plain_words() -> None:
    assert stray_argument_hint(_flags(), "hello") is None
    assert stray_argument_hint(_flags(), "color=blue") is None


def test_parse_args_names_the_stray_argument() -> None:
    with pytest.raises(CliError) as caught:
        parse_args(_flags(), ["-sidecar-for=api", "token=secret-value", "-bootstrap"], max_args=0)
    message = caught.value.message
    assert 'unexpected argument "token=..."' in message
    assert "Did you mean -token=...?" in message
    assert "secret-value" not in message


def test_parse_args_unknown_flag() -> None:
    with pytest.raises(CliError) as caught:
        parse_args(_flags(), ["-nope"], max_args=0)
    assert caught.value.message.startswith("flag provided but not defined: -nope")


# --------------------------------------------------------------------------- tables


def test_columnize_pads_all_but_last_column() -> None:
    out = columnize([["Node", "Address", "Status"], ["a-long-name", "1.2.3.4:8301", "alive"]])
    assert out.splitlines() == [
        "Node         Address       Status",
        "a-long-name  1.2.3.4:8301  alive",
    ]


def test_columnize_trims_trailing_empty_cells() -> None:
    assert columnize([["a", "b", ""], ["cc", "d", ""]]) == "a   b\ncc  d"


def _member(name: str, role: str, status: int = 1, **extra: str) -> dict[str, Any]:
    tags = {"role": role, "dc": "dc1", "vsn": "2", "build": "1.16.0:abcdef12", **extra}
    return {"Name": name, "Addr": "127.0.0.1", "Port": 8301, "Tags": tags, "Status": status}


def test_members_rows_servers_first_then_name() -> None:
    found = [_member("zeta", "consul"), _member("beta", "node", 4), _member("alpha", "consul")]
    table = columnize(agent_verbs.members_rows(found, detailed=False))
    assert table.splitlines() == [
        "Node   Address         Status  Type    Build   Protocol  DC   Partition  Segment",
        "alpha  127.0.0.1:8301  alive   server  1.16.0  2         dc1  default    <all>",
        "zeta   127.0.0.1:8301  alive   server  1.16.0  2         dc1  default    <all>",
        "beta   127.0.0.1:8301  failed  client  1.16.0  2         dc1  default    <default>",
    ]


def test_members_rows_detailed_sorts_tags() -> None:
    rows = agent_verbs.members_rows([_member("a", "node", 3)], detailed=True)
    assert rows[0] == ["Node", "Address", "Status", "Tags"]
    assert rows[1] == [
        "a",
        "127.0.0.1:8301",
        "left",
        "build=1.16.0:abcdef12,dc=dc1,role=node,vsn=2",
    ]


def test_member_address_ipv6() -> None:
    assert agent_verbs.member_address({"Addr": "::1", "Port": 8301}) == "[::1]:8301"


NODE = {
    "ID": "1b662d97-8b5c-3cc2-0ac0-96f55ad423b5",
    "Node": "worker-01",
    "Address": "10.4.5.31",
    "Datacenter": "dc1",
    "TaggedAddresses": {"wan": "10.4.5.31", "lan": "10.4.5.31"},
    "Meta": {},
}


def test_nodes_rows_short_and_detailed() -> None:
    assert columnize(catalog.nodes_rows([NODE], detailed=False)).splitlines() == [
        "Node       ID        Address    DC",
        "worker-01  1b662d97  10.4.5.31  dc1",
    ]
    detailed = columnize(catalog.nodes_rows([NODE], detailed=True)).splitlines()
    assert detailed[0].split() == ["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"]
    assert detailed[1] == (
        "worker-01  1b662d97-8b5c-3cc2-0ac0-96f55ad423b5  10.4.5.31  dc1  "
        "lan=10.4.5.31, wan=10.4.5.31"
    )


def test_service_nodes_dedupes_by_node() -> None:
    entry: dict[str, Any] = {"ID": "x", "Node": "n1", "Address": "1.1.1.1", "Datacenter": "dc1"}
    entry |= {"NodeMeta": {"k": "v"}, "ServiceID": "web-1"}
    second = dict(entry, ServiceID="web-2")
    nodes = catalog.service_nodes([entry, second])
    assert len(nodes) == 1
    assert nodes[0]["Meta"] == {"k": "v"}


def test_services_rows_sorted_with_tags() -> None:
    found = {"redis": ["v1", "primary"], "consul": [], "postgresql": ["leader"]}
    assert columnize(catalog.services_rows(found, tags=True)).splitlines() == [
        "consul",
        "postgresql  leader",
        "redis       primary,v1",
    ]
    assert catalog.services_rows(found, tags=False) == [["consul"], ["postgresql"], ["redis"]]


def test_node_services_accepts_list_and_map() -> None:
    listed = {"Node": {}, "Services": [{"Service": "web", "Tags": ["a"]}]}
    mapped = {"Node": {}, "Services": {"web-1": {"Service": "web", "Tags": ["a", "b"]}}}
    assert catalog.node_services(listed) == {"web": ["a"]}
    assert catalog.node_services(mapped) == {"web": ["a", "b"]}
    assert catalog.node_services(None) == {}


# --------------------------------------------------------------------------- kv


def _entry(key: str, value: bytes | None, **extra: Any) -> dict[str, Any]:
    encoded = base64.b64encode(value).decode() if value is not None else None
    base = {"Key": key, "Value": encoded, "Flags": 0, "CreateIndex": 336}
    return {**base, "ModifyIndex": 336, "LockIndex": 0, **extra}


def test_detailed_block_matches_consul_layout() -> None:
    block = kv.detailed_block(_entry("redis/config/connections", b"5"), b64=False)
    assert block.decode().splitlines() == [
        "CreateIndex      336",
        "Flags            0",
        "Key              redis/config/connections",
        "LockIndex        0",
        "ModifyIndex      336",
        "Session          -",
        "Value            5",
    ]


def test_detailed_block_base64_and_session() -> None:
    block = kv.detailed_block(_entry("k", b"hi", Session="abc"), b64=True).decode()
    assert "Session          abc\n" in block
    assert block.endswith("Value            aGk=\n")


def test_recurse_output_lines_and_blocks() -> None:
    entries = [_entry("a/1", b"x"), _entry("a/2", None)]
    assert kv.recurse_output(entries, detailed=False, b64=False) == b"a/1:x\na/2:\n"
    blocks = kv.recurse_output(entries, detailed=True, b64=False).decode()
    assert blocks.count("CreateIndex") == 2
    assert "Value            x\n\nCreateIndex" in blocks


def test_binary_values_pass_through() -> None:
    raw = bytes(range(256))
    assert kv.shown_value(_entry("b", raw), b64=False) == raw


# --------------------------------------------------------------------------- services


HCL_SERVICE = """
service {
  name = "web"
  id   = "web-1"
  port = 8080
  tags = ["v1"]
  meta { Version = "1" }
  check {
    http     = "http://localhost:8080/health"
    interval = "10s"
    tls_skip_verify = true
  }
  connect { sidecar_service {} }
}
"""


def test_hcl_service_file_to_api_body() -> None:
    (found,) = services.parse_service_definitions(HCL_SERVICE, "web.hcl")
    body = services.pascal_keys(found)
    assert body["Name"] == "web"
    assert body["ID"] == "web-1"
    assert body["Port"] == 8080
    assert body["Meta"] == {"Version": "1"}  # user data keeps its keys
    assert body["Check"] == {
        "HTTP": "http://localhost:8080/health",
        "Interval": "10s",
        "TLSSkipVerify": True,
    }
    assert body["Connect"] == {"SidecarService": {}}


def test_json_service_file_pascal_keys() -> None:
    text = '{"Service": {"Name": "web", "ID": "w", "Meta": {"owner": "x"}}}'
    (found,) = services.parse_service_definitions(text, "web.json")
    assert found == {"name": "web", "id": "w", "meta": {"owner": "x"}}
    assert services.service_id(found) == "w"


def test_services_list_and_repeated_blocks() -> None:
    text = 'services = [ { name = "a" }, { name = "b", id = "b-1" } ]'
    found = services.parse_service_definitions(text, "s.hcl")
    assert [services.service_id(s) for s in found] == ["a", "b-1"]
    text = 'service { name = "a" }\nservice { name = "b" }'
    assert len(services.parse_service_definitions(text, "s.hcl")) == 2


@pytest.mark.parametrize(
    "text", ["not valid {", 'datacenter = "dc1"', "service { port = 1 }", "service = 3"]
)
def test_bad_service_files_are_clear_errors(text: str) -> None:
    with pytest.raises(CliError) as caught:
        services.parse_service_definitions(text, "bad.hcl")
    assert "bad.hcl" in caught.value.message
