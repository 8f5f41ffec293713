"""The user's walkthrough configs (server, client, api and web services) load
as written, with every value where the agent will look for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from proconsul.config.interfaces import IfAddr, make_ifaddr
from proconsul.config.loader import LoadedConfig, load_paths

GOSSIP_KEY = "Xo4DihfBGcAcrXrazJ+OlRXy4GGRZHuRIEny2NtG+lM="

SERVER_HCL = f"""
datacenter = "us-west-1"
node_name = "consul-server-1"
data_dir = "/opt/consul"
server = true
bootstrap_expect = 2
bind_addr = "0.0.0.0"
advertise_addr = "{{{{ GetInterfaceIP \\"eth0\\" }}}}"
client_addr = "0.0.0.0"
retry_join = ["10.0.1.11", "10.0.1.12"]
ui_config {{
  enabled = true
}}

# Security - Gossip
encrypt = "{GOSSIP_KEY}"
encrypt_verify_incoming = true
encrypt_verify_outgoing = true

# Security - RPC
verify_incoming = true
verify_outgoing = true
verify_server_hostname = true
ca_file = "/opt/consul/certs/consul-agent-ca.pem"
cert_file = "/opt/consul/certs/us-west-1-server-consul-0.pem"
key_file = "/opt/consul/certs/us-west-1-server-consul-0-key.pem"
auto_encrypt {{
allow_tls = true
}}

acl {{
enabled = true
default_policy = "deny"
enable_token_persistence = true
enable_key_list_policy = true
tokens {{
agent = "9ed687c1-4ec6-0fd5-0cf2-fee83dbb2999"
}}
}}

# Set the ports
ports {{
grpc = 8502
}}

# Centralized config options
config_entries {{
bootstrap = [
{{
kind = "proxy-defaults"
name = "global"
config {{
protocol = "http"
}}
}}
]
}}
"""

CLIENT_HCL = f"""
datacenter = "us-west-1"
node_name = "consul-client-1"
data_dir = "/opt/consul"
bind_addr = "{{{{ GetInterfaceIP `eth0` }}}}"
retry_join = ["10.0.1.11", "10.0.1.12"]

encrypt = "{GOSSIP_KEY}"
encrypt_verify_incoming = true
encrypt_verify_outgoing = true

verify_incoming = false
verify_outgoing = true
verify_server_hostname = true
ca_file = "/opt/consul/certs/consul-agent-ca.pem"
auto_encrypt {{
tls = true
}}

acl = {{
enabled = true
default_policy = "deny"
enable_token_persistence = true
tokens {{
default = "2db6b675-82ca-9ac5-bbb2-8759292c2883"
agent = "2db6b675-82ca-9ac5-bbb2-8759292c2883"
}}
}}

ports {{
grpc = 8502
}}
"""

API_HCL = """
service {
name = "api"
port = 8080
tags = ["fake-service-api"]
token = "800818ce-ccb5-11ba-4cbc-b20dca15dac8"
connect {
sidecar_service{
port = 20000
check {
name = "API Connect Envoy Sidecar"
tcp = "127.0.0.1:20000"
interval = "10s"
timeout = "1s"
}
}
}
checks = [
{
id = "api_check"
name = "Check API health 8080"
service_id = "api"
http = "http://localhost:8080/health"
method = "GET"
interval = "10s"
timeout = "1s"
success_before_passing = 3
failures_before_critical = 3
}
]
}
"""

WEB_HCL = """
service {
name = "web"
port = 8080
tags = ["fake-service-web"]
token = "48b954b1-0ac7-8f93-e22d-cbb0f3686bc2"
connect {
sidecar_service{
port = 20000
check {
name = "API Connect Envoy Sidecar"
tcp = "127.0.0.1:20000"
interval = "10s"
timeout = "1s"
}
proxy {
upstreams = [
{
destination_name = "api"
local_bind_port = 8081
}
]
}
}
}
checks = [
{
id = "web_check"
name = "Check WEB health 8080"
service_id = "web"
http = "http://localhost:8080/health"
method = "GET"
interval = "10s"
timeout = "1s"
success_before_passing = 3
failures_before_critical = 3
}
]
}
"""

SERVER_TABLE: list[IfAddr] = [
    make_ifaddr("lo", "127.0.0.1/8", "up|loopback"),
    make_ifaddr("eth0", "10.0.1.11/24", "up|broadcast|multicast", default_route=True),
]
CLIENT_TABLE: list[IfAddr] = [
    make_ifaddr("lo", "127.0.0.1/8", "up|loopback"),
    make_ifaddr("eth0", "10.0.1.21/24", "up|broadcast|multicast", default_route=True),
]


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    (tmp_path / "virtual_machines").mkdir()
    (tmp_path / "services").mkdir()
    (tmp_path / "virtual_machines" / "consul-server-1.hcl").write_text(SERVER_HCL)
    (tmp_path / "virtual_machines" / "consul-client-1.hcl").write_text(CLIENT_HCL)
    (tmp_path / "services" / "api.hcl").write_text(API_HCL)
    (tmp_path / "services" / "web.hcl").write_text(WEB_HCL)
    return tmp_path


def load(paths: list[Path], table: list[IfAddr]) -> LoadedConfig:
    return load_paths([str(p) for p in paths], interfaces=lambda: table)


def test_server_config(machine: Path) -> None:
    loaded = load([machine / "virtual_machines" / "consul-server-1.hcl"], SERVER_TABLE)
    config = loaded.config
    assert (config.datacenter, config.node_name, config.data_dir) == (
        "us-west-1",
        "consul-server-1",
        "/opt/consul",
    )
    assert config.server and config.bootstrap_expect == 2 and not config.bootstrap
    assert (config.bind_addr, config.advertise_addr, config.client_addr) == (
        "0.0.0.0",
        "10.0.1.11",
        "0.0.0.0",
    )
    assert config.retry_join == ["10.0.1.11", "10.0.1.12"]
    assert config.encrypt == GOSSIP_KEY
    assert config.encrypt_verify_incoming and config.encrypt_verify_outgoing
    rpc = config.tls_settings("internal_rpc")
    assert rpc.verify_incoming and rpc.verify_outgoing and rpc.verify_server_hostname
    assert rpc.ca_file == "/opt/consul/certs/consul-agent-ca.pem"
    assert rpc.cert_file == "/opt/consul/certs/us-west-1-server-consul-0.pem"
    assert rpc.key_file == "/opt/consul/certs/us-west-1-server-consul-0-key.pem"
    assert config.auto_encrypt.allow_tls and not config.auto_encrypt.tls
    acl = config.acl
    assert acl.enabled and acl.default_policy == "deny"
    assert acl.enable_token_persistence and acl.enable_key_list_policy
    assert acl.tokens.agent == "9ed687c1-4ec6-0fd5-0cf2-fee83dbb2999"
    assert config.ports.grpc == 8502 and config.ui_config.enabled
    assert config.config_entries.bootstrap == [
        {"kind": "proxy-defaults", "name": "global", "config": {"protocol": "http"}}
    ]
    assert (
        "bootstrap_expect = 2: A cluster with 2 servers will provide no failure tolerance."
        in loaded.warnings
    )


def test_client_config_with_both_service_files(machine: Path) -> None:
    loaded = load(
        [machine / "virtual_machines" / "consul-client-1.hcl", machine / "services"], CLIENT_TABLE
    )
    config = loaded.config
    assert not config.server and config.node_name == "consul-client-1"
    assert (config.bind_addr, config.advertise_addr) == ("10.0.1.21", "10.0.1.21")
    rpc = config.tls_settings("internal_rpc")
    assert not rpc.verify_incoming and rpc.verify_outgoing and rpc.verify_server_hostname
    assert rpc.cert_file == "" and config.auto_encrypt.tls
    assert (
        config.acl.tokens.default
        == config.acl.tokens.agent
        == "2db6b675-82ca-9ac5-bbb2-8759292c2883"
    )
    assert config.acl.default_policy == "deny" and not config.acl.enable_key_list_policy
    assert config.ports.grpc == 8502

    api, web = config.services
    assert (api.name, api.port, api.tags) == ("api", 8080, ["fake-service-api"])
    assert api.token == "800818ce-ccb5-11ba-4cbc-b20dca15dac8"
    (check,) = api.checks
    assert (check.id, check.name, check.service_id) == ("api_check", "Check API health 8080", "api")
    assert (check.http, check.method, check.interval, check.timeout) == (
        "http://localhost:8080/health",
        "GET",
        10.0,
        1.0,
    )
    assert (check.success_before_passing, check.failures_before_critical) == (3, 3)
    assert api.connect is not None and api.connect.sidecar_service is not None
    sidecar = api.connect.sidecar_service
    assert sidecar.port == 20000 and sidecar.check is not None
    assert (sidecar.check.tcp, sidecar.check.interval, sidecar.check.timeout) == (
        "127.0.0.1:20000",
        10.0,
        1.0,
    )

    assert web.name == "web" and web.checks[0].id == "web_check"
    assert web.connect is not None and web.connect.sidecar_service is not None
    proxy = web.connect.sidecar_service.proxy
    assert proxy is not None
    (upstream,) = proxy.upstreams
    assert (upstream.destination_name, upstream.local_bind_port) == ("api", 8081)


def test_service_file_in_json_merges_with_hcl(machine: Path) -> None:
    (machine / "services" / "db.json").write_text(
        '{"service": {"name": "db", "port": 5432, "check": '
        '{"id": "db_tcp", "name": "db tcp", "tcp": "localhost:5432", "interval": "5s"}}}'
    )
    config = load(
        [machine / "virtual_machines" / "consul-client-1.hcl", machine / "services"], CLIENT_TABLE
    ).config
    assert [s.name for s in config.services] == ["api", "db", "web"]
    db = config.services[1]
    assert db.check is not None and db.check.tcp == "localhost:5432"
