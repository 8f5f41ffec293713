"""The walkthrough's "Access Control Lists" section, end to end, on a real cluster.

Two servers (bootstrap_expect = 2) and two clients in `us-west-1`, named as in
the walkthrough, with its gossip encryption, its TLS (server certificates,
`auto_encrypt` for clients) and its ACL block (default deny). The steps run in
order, each through the `proconsul` CLI as the walkthrough runs `consul`:

1. `acl bootstrap`; `acl token list` shows exactly the bootstrap and anonymous tokens
   (on a server: as in Consul, under default deny a client gets its auto_encrypt
   certificate only once it has an agent token, in step 4).
2. The old-way agent policies and tokens made from them.
3. The node-identity agent tokens.
4. Those tokens written into the configs; after a restart every node is in
   the catalog with its `serfHealth`, and no agent logged an ACL refusal.
5. Service-identity tokens; `api` and `web` register with them.
6. `api.service.consul` answers through the client's default token, and
   reveals nothing once the default token is gone.

As in Consul, a node identity reads every service but only its own node, so
DNS is asked on the client that runs `api` (reading another node's instances
needs `node_prefix "" { policy = "read" }` in the default token's rules).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dnslib
import pytest
from tests.agent_process import free_port, proconsul_cmd, wait_for
from tests.gossip_agents import GossipPool, Member

DC = "us-west-1"
SERVERS = ["consul-server-1", "consul-server-2"]
CLIENTS = ["consul-client-1", "consul-client-2"]
DEADLINE_S = 30.0
ACL_REFUSALS = ("Permission denied", "ACL not found")
AGENT_RULES = (
    'node "{name}" {{\n  policy = "write"\n}}\nservice_prefix "" {{\n  policy = "read"\n}}\n'
)
SERVICE_FILE = """service {{
  name = "{name}"
  port = {port}
  tags = ["fake-service-{name}"]
  token = "{token}"
  checks = [
    {{
      id = "{name}_check"
      name = "Check {upper} health {port}"
      service_id = "{name}"
      http = "http://{ip}:{port}/health"
      method = "GET"
      interval = "1s"
      timeout = "1s"
    }}
  ]
}}
"""


class Walkthrough:
    """The cluster plus what the steps produce (tokens by name)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.certs = tmp / "certs"
        self.pool = GossipPool(tmp / "agents", 4, base=151)
        self.secrets: dict[str, str] = {}
        self.dns_ports: dict[str, int] = {}
        self.demos: list[subprocess.Popen[bytes]] = []
        for member, name in zip(self.pool.members, SERVERS + CLIENTS, strict=True):
            member.args[member.args.index(member.name)] = name
            member.name = name

    @property
    def management(self) -> str:
        return self.secrets["bootstrap"]

    def cli(self, *args: str, agent: str = SERVERS[0], stdin: str = "") -> str:
        env = {
            **os.environ,
            "CONSUL_HTTP_ADDR": self.pool[agent].running.http_addr,
            "CONSUL_HTTP_TOKEN": self.secrets.get("bootstrap", ""),
        }
        done = subprocess.run(
            proconsul_cmd(*args), capture_output=True, text=True, env=env, input=stdin, timeout=30
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def get(self, member: str, path: str, token: str = "") -> tuple[int, object]:
        headers = {"X-Consul-Token": token} if token else {}
        status, _, body = self.pool[member].running.request("GET", path, headers=headers)
        return status, json.loads(body) if status == 200 else body

    def configure(self) -> None:
        self.certs.mkdir(parents=True)
        for args in (
            ["ca", "create"],
            ["cert", "create", "-server", "-dc", DC],
        ):
            subprocess.run(
                proconsul_cmd("tls", *args), cwd=self.certs, check=True, capture_output=True
            )
        key = subprocess.run(
            proconsul_cmd("keygen"), check=True, capture_output=True, text=True
        ).stdout.strip()
        ca = self.certs / "consul-agent-ca.pem"
        acl = (
            'acl {\n  enabled = true\n  default_policy = "deny"\n'
            "  enable_token_persistence = true\n{extra}}\n"
        )
        for member in self.pool.members:
            is_server = member.name in SERVERS
            self.dns_ports[member.name] = free_port()
            hcl = [
                f'datacenter = "{DC}"',
                f'encrypt = "{key}"',
                "encrypt_verify_incoming = true\nencrypt_verify_outgoing = true",
                f'ca_file = "{ca}"\nverify_outgoing = true\nverify_server_hostname = true',
            ]
            if is_server:
                hcl += [
                    "verify_incoming = true\n"
                    f'cert_file = "{self.certs / f"{DC}-server-consul-0.pem"}"\n'
                    f'key_file = "{self.certs / f"{DC}-server-consul-0-key.pem"}"\n'
                    # As printed: no connect block, so the built-in Connect CA
                    # signs the clients' auto_encrypt certificates.
                    "auto_encrypt {\n  allow_tls = true\n}",
                    acl.replace("{extra}", "  enable_key_list_policy = true\n"),
                ]
                member.args += [
                    "-server",
                    "-bootstrap-expect",
                    "2",
                    "-server-port",
                    str(free_port(member.ip)),
                    "-hcl",
                    "performance { raft_multiplier = 1 }",
                ]
            else:
                hcl += [
                    "verify_incoming = false\nauto_encrypt { tls = true }",
                    acl.replace("{extra}", ""),
                ]
            member.args += ["-dns-port", str(self.dns_ports[member.name])]
            config_dir = self.config_dir(member)
            config_dir.mkdir(parents=True)
            (config_dir / "agent.hcl").write_text("\n".join(hcl) + "\n")
            member.args += ["-config-dir", str(config_dir)]

    def config_dir(self, member: Member) -> Path:
        return self.tmp / "config" / member.name

    def start_all(self) -> None:
        self.pool.start_all()
        wait_for(lambda: self.pool[SERVERS[1]].running.get_json("/v1/status/leader"), DEADLINE_S)

    def restart(self, member: Member) -> None:
        self.pool.stop(member)
        self.pool.start(member)

    def dns(self, member: str, name: str) -> dnslib.DNSRecord:
        query = dnslib.DNSRecord.question(name, "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5.0)
            sock.sendto(query.pack(), ("127.0.0.1", self.dns_ports[member]))
            return dnslib.DNSRecord.parse(sock.recv(4096))

    def stop(self) -> None:
        for demo in self.demos:
            demo.terminate()
            demo.wait(timeout=10)
        self.pool.stop_all()


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walkthrough]:
    cluster = Walkthrough(tmp_path_factory.mktemp("walkthrough-acl"))
    cluster.configure()
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop()


def field(output: str, name: str) -> str:
    match = re.search(rf"^{name}:\s+(.+)$", output, re.MULTILINE)
    assert match, (name, output)
    return match.group(1)


def test_1_bootstrap_and_token_list(walkthrough: Walkthrough) -> None:
    out = walkthrough.cli("acl", "bootstrap")
    assert field(out, "Description").startswith("Bootstrap")
    assert "00000000-0000-0000-0000-000000000001 - global-management" in out
    walkthrough.secrets["bootstrap"] = field(out, "SecretID")
    # Asked on a server: a client has no RPC certificate yet. Under default deny
    # auto_encrypt needs a token with node:write, which step 4 gives it.
    listed = walkthrough.cli("acl", "token", "list", agent=SERVERS[1])
    accessors = re.findall(r"^AccessorID:\s+(\S+)$", listed, re.MULTILINE)
    assert accessors == [field(out, "AccessorID"), "00000000-0000-0000-0000-000000000002"]
    assert len(re.findall(r"^Legacy:\s+false$", listed, re.MULTILINE)) == 2


def test_2_agent_policies_and_tokens_the_old_way(walkthrough: Walkthrough) -> None:
    for name in SERVERS + CLIENTS:
        rules = AGENT_RULES.format(name=name)
        out = walkthrough.cli("acl", "policy", "create", "-name", name, "-rules", "-", stdin=rules)
        assert field(out, "Name") == name
        assert f'node "{name}" {{' in out
        token = walkthrough.cli(
            "acl", "token", "create", "-description", f"{name} agent token", "-policy-name", name
        )
        assert re.search(rf"^   \S+ - {name}$", token, re.MULTILINE), token


def test_3_node_identity_tokens(walkthrough: Walkthrough) -> None:
    for name in SERVERS + CLIENTS:
        out = walkthrough.cli(
            "acl",
            "token",
            "create",
            "-description",
            f"{name} agent token",
            "-node-identity",
            f"{name}:{DC}",
        )
        assert "Node Identities:" in out
        assert f"   {name} (Datacenter: {DC})" in out
        walkthrough.secrets[name] = field(out, "SecretID")


def test_4_agent_tokens_in_configs_and_clean_registration(walkthrough: Walkthrough) -> None:
    pool = walkthrough.pool
    for member in pool.members:
        secret = walkthrough.secrets[member.name]
        tokens = f'agent = "{secret}"'
        if member.name in CLIENTS:
            tokens = f'default = "{secret}"\n    agent = "{secret}"'
        (walkthrough.config_dir(member) / "tokens.hcl").write_text(
            f"acl {{\n  tokens {{\n    {tokens}\n  }}\n}}\n"
        )
    for member in pool.members:
        walkthrough.restart(member)
    wait_for(lambda: pool[SERVERS[0]].running.get_json("/v1/status/leader"), DEADLINE_S)

    def every_node_healthy() -> bool:
        status, rows = walkthrough.get(CLIENTS[1], "/v1/health/state/any", walkthrough.management)
        assert status == 200, rows
        assert isinstance(rows, list)
        healthy = {
            r["Node"] for r in rows if r["CheckID"] == "serfHealth" and r["Status"] == "passing"
        }
        return healthy == set(SERVERS + CLIENTS)

    wait_for(every_node_healthy, DEADLINE_S)
    # Each agent's own registration (node, tagged addresses) went through with its token.
    status, nodes = walkthrough.get(CLIENTS[0], "/v1/catalog/nodes", walkthrough.management)
    assert status == 200 and isinstance(nodes, list)
    assert {n["Node"] for n in nodes} == set(SERVERS + CLIENTS)
    # With their agent tokens the clients got certificates: the ACL API works
    # through them too (forwarded to a server over RPC).
    listed = walkthrough.cli("acl", "token", "list", agent=CLIENTS[0])
    assert "Description:      consul-client-1 agent token" in listed
    # Each restarted agent's log holds only its new run.
    for path in {member.running.log_path for member in pool.members}:
        text = path.read_text(errors="replace")
        for refusal in ACL_REFUSALS:
            assert refusal not in text, (path.name, refusal, text[-3000:])


def test_5_service_identity_tokens_register_api_and_web(walkthrough: Walkthrough) -> None:
    pool = walkthrough.pool
    for service, description, host in (
        ("api", "Token for API", CLIENTS[1]),
        ("web", "Token for WEB", CLIENTS[0]),
    ):
        out = walkthrough.cli(
            "acl", "token", "create", "-description", description, "-service-identity", service
        )
        assert "Service Identities:" in out and f"   {service} (Datacenters: all)" in out
        secret = field(out, "SecretID")
        walkthrough.secrets[service] = secret
        member = pool[host]
        port = free_port(member.ip)
        walkthrough.demos.append(
            subprocess.Popen(
                proconsul_cmd(
                    "demo", "service", "-name", service, "-listen", f"{member.ip}:{port}"
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        (walkthrough.config_dir(member) / f"{service}.hcl").write_text(
            SERVICE_FILE.format(
                name=service, upper=service.upper(), port=port, token=secret, ip=member.ip
            )
        )
        walkthrough.cli("reload", agent=host)

    def passing(service: str, node: str) -> bool:
        status, rows = walkthrough.get(
            CLIENTS[0], f"/v1/health/service/{service}?passing", walkthrough.management
        )
        return (
            status == 200 and isinstance(rows, list) and [r["Node"]["Node"] for r in rows] == [node]
        )

    wait_for(lambda: passing("api", CLIENTS[1]), DEADLINE_S)
    wait_for(lambda: passing("web", CLIENTS[0]), DEADLINE_S)
    for host in CLIENTS:
        text = pool[host].running.log_text()
        for refusal in ACL_REFUSALS:
            assert refusal not in text, (host, refusal)


def test_6_dns_through_the_default_token(walkthrough: Walkthrough) -> None:
    answer = walkthrough.dns(CLIENTS[1], "api.service.consul")
    addresses = [str(rr.rdata) for rr in answer.rr if rr.rtype == dnslib.QTYPE.A]
    assert addresses == [walkthrough.pool[CLIENTS[1]].ip]
    # Without a default token the anonymous token (no rights under deny) sees nothing.
    member = walkthrough.pool[CLIENTS[1]].running
    status, _, body = member.request(
        "PUT",
        "/v1/agent/token/default",
        {"Token": ""},
        headers={"X-Consul-Token": walkthrough.management},
    )
    assert status == 200, body
    hidden = walkthrough.dns(CLIENTS[1], "api.service.consul")
    assert [rr for rr in hidden.rr if rr.rtype == dnslib.QTYPE.A] == []
    assert hidden.header.rcode == dnslib.RCODE.NXDOMAIN


def test_7_no_secret_in_any_log(walkthrough: Walkthrough) -> None:
    """Every token secret the walkthrough made stays out of every agent's log."""
    secrets = set(walkthrough.secrets.values())
    assert len(secrets) == len(SERVERS + CLIENTS) + 3  # agents, bootstrap, api, web
    logs = sorted(walkthrough.pool.tmp_path.glob("agent-*.log"))
    assert len(logs) >= 8  # each agent's first run and its restart
    for path in logs:
        text = path.read_text(errors="replace")
        leaked = [secret[:8] for secret in secrets if secret in text]
        assert not leaked, (path.name, leaked)
