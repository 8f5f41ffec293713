"""The walkthrough's secured cluster: 1 server + 2 clients, TLS, auto_encrypt, ACLs, gossip keys.

`Mesh` configures and starts it (the walkthrough's Server and Client
Configs, gossip encryption, `default_policy = "deny"`, a gRPC port per agent
and the `proxy-defaults` bootstrap entry with `protocol = "http"`) and
drives it through the `proconsul` CLI as the walkthrough drives `consul`.
`api_file` and `web_file` render the walkthrough's service definitions; the
defaults give the text as printed, the keywords let a test that runs the
sidecars on one machine move ports, addresses and check intervals.
`running_mesh` is the module fixture's body: start, yield, stop clients
first, and no traceback in any agent's log.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.agent_process import free_port, proconsul_cmd, wait_for
from tests.gossip_agents import GossipPool, Member
from tests.integration.test_auto_encrypt_builtin_ca import make_certs, walkthrough_configs

MGMT = "0aa0c000-0000-4000-8000-0000000000a7"
DEADLINE_S = 30.0
SERVER, CLIENT_1, CLIENT_2 = "consul-server-1", "consul-client-1", "consul-client-2"
ACL = 'acl {{\n  enabled = true\n  default_policy = "deny"\n  tokens {{\n{tokens}  }}\n}}\n'
PROXY_DEFAULTS = """config_entries {
  bootstrap = [
    {
      kind = "proxy-defaults"
      name = "global"
      config {
        protocol = "http"
      }
    }
  ]
}
"""
SERVICE_FILE = """service {{
  name = "{name}"{id_line}
  port = {port}
  tags = ["fake-service-{name}"]
  token = "{token}"{meta}
  connect {{
    sidecar_service{{
      port = {sidecar_port}{sidecar_address}{sidecar_check}{proxy}
    }}
  }}
  checks = [
    {{
      id = "{id}_check"
      name = "Check {label} health {port}"
      service_id = "{id}"
      http = "http://localhost:{port}/health"
      method = "GET"
      interval = "{interval}"
      timeout = "1s"
      success_before_passing = {successes}
      failures_before_critical = {failures}
    }}
  ]
}}
"""
SIDECAR_CHECK = """
      check {{
        name = "API Connect Envoy Sidecar"
        tcp = "{address}:{port}"
        interval = "{interval}"
        timeout = "1s"
      }}"""
WEB_UPSTREAMS = """
      proxy {
        upstreams = [
          {
            destination_name = "api"
            local_bind_port = 8081
          }
        ]
      }"""


def service_file(
    name: str,
    token: str,
    *,
    service_id: str = "",
    port: int = 8080,
    sidecar_port: int = 20000,
    sidecar_address: str = "",
    interval: str = "10s",
    successes: int = 3,
    failures: int = 3,
    meta: dict[str, str] | None = None,
    sidecar_check: bool = True,
) -> str:
    """The walkthrough's `api` (or `web`, with its upstream api on 8081) service file.

    With the defaults it is the text as printed (`id` equal to the name).
    `sidecar_address` binds the sidecar's public listener to that address
    (and points its check there). Without `sidecar_check` the sidecar gets
    the default checks, among them the alias of its service's health."""
    meta_text = ""
    if meta:
        pairs = "".join(f'\n    {key} = "{value}"' for key, value in meta.items())
        meta_text = f"\n  meta {{{pairs}\n  }}"
    return SERVICE_FILE.format(
        name=name,
        id=service_id or name,
        id_line=f'\n  id = "{service_id}"' if service_id else "",
        label="WEB" if name == "web" else name.upper(),
        token=token,
        meta=meta_text,
        port=port,
        sidecar_port=sidecar_port,
        sidecar_address=f'\n      address = "{sidecar_address}"' if sidecar_address else "",
        sidecar_check=SIDECAR_CHECK.format(
            address=sidecar_address or "127.0.0.1", port=sidecar_port, interval=interval
        )
        if sidecar_check
        else "",
        interval=interval,
        successes=successes,
        failures=failures,
        proxy=WEB_UPSTREAMS if name == "web" else "",
    )


class Mesh:
    def __init__(self, tmp: Path, base: int) -> None:
        self.tmp = tmp
        self.pool = GossipPool(tmp / "agents", 3, base=base)
        for member, name in zip(self.pool.members, (SERVER, CLIENT_1, CLIENT_2), strict=True):
            member.args[member.args.index(member.name)] = name
            member.name = name
        self.grpc_ports = {m.name: free_port() for m in self.pool.members}
        self.tokens: dict[str, str] = {}

    def configure(self) -> None:
        certs = self.tmp / "certs"
        make_certs(certs)
        server_hcl, client_hcl = walkthrough_configs(certs)
        key = subprocess.run(
            proconsul_cmd("keygen"), check=True, capture_output=True, text=True
        ).stdout.strip()
        for member in self.pool.members:
            hcl = [
                f'encrypt = "{key}"',
                "encrypt_verify_incoming = true\nencrypt_verify_outgoing = true",
                f"ports {{\n  grpc = {self.grpc_ports[member.name]}\n}}",
            ]
            if member.name == SERVER:
                hcl += [
                    server_hcl,
                    PROXY_DEFAULTS,
                    ACL.format(tokens=f'    initial_management = "{MGMT}"\n    agent = "{MGMT}"\n'),
                ]
                member.args += ["-server", "-bootstrap-expect", "1"]
                member.args += ["-server-port", str(free_port(member.ip))]
                member.args += ["-hcl", "performance { raft_multiplier = 1 }"]
            else:
                hcl += [client_hcl, ACL.format(tokens=f'    agent = "{MGMT}"\n')]
            config_dir = self.config_dir(member)
            config_dir.mkdir(parents=True)
            (config_dir / "agent.hcl").write_text("\n".join(hcl) + "\n")
            member.args += ["-grpc-port", str(self.grpc_ports[member.name])]
            member.args += ["-config-dir", str(config_dir)]

    def config_dir(self, member: Member) -> Path:
        return self.tmp / "config" / member.name

    def start(self) -> None:
        self.start_server()
        for name in (CLIENT_1, CLIENT_2):
            self.pool.start(self.pool[name])
        for name in (CLIENT_1, CLIENT_2):
            self.wait_auto_encrypt(name)

    def start_server(self) -> None:
        """Start the server and wait for its leadership (a hook: the UI test restarts it)."""
        self.pool.start(self.pool[SERVER])
        wait_for(lambda: self.pool[SERVER].running.get_json("/v1/status/leader"), DEADLINE_S)

    def wait_auto_encrypt(self, name: str) -> None:
        wait_for(
            lambda: "auto_encrypt: got a client certificate" in self.pool[name].running.log_text(),
            DEADLINE_S,
        )

    def env(self, agent: str, token: str = MGMT) -> dict[str, str]:
        """The environment of a CLI run against `agent` with `token`."""
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONNECT_"))},
            "CONSUL_HTTP_ADDR": self.pool[agent].running.http_addr,
            "CONSUL_HTTP_TOKEN": token,
        }

    def cli(self, *args: str, agent: str = SERVER, token: str = MGMT) -> str:
        done = subprocess.run(
            proconsul_cmd(*args),
            capture_output=True,
            text=True,
            env=self.env(agent, token),
            timeout=30,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def create_service_token(self, service: str) -> str:
        out = self.cli("acl", "token", "create", "-service-identity", service)
        self.tokens[service] = next(
            line.split()[-1] for line in out.splitlines() if line.startswith("SecretID:")
        )
        return self.tokens[service]

    def add_service_file(self, agent: str, file_name: str, text: str) -> None:
        """Write a service file into `agent`'s config dir and `reload` it."""
        path = self.config_dir(self.pool[agent]) / file_name
        path.write_text(text)
        path.chmod(0o600)  # it holds a token
        self.cli("reload", agent=agent)

    def request(
        self, method: str, path: str, body: Any = None, agent: str = SERVER
    ) -> tuple[int, bytes]:
        status, _, raw = self.pool[agent].running.request(
            method, path, body, headers={"X-Consul-Token": MGMT}
        )
        return status, raw

    def get(self, path: str, agent: str = SERVER) -> Any:
        status, body = self.request("GET", path, agent=agent)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def ip(self, name: str) -> str:
        return self.pool[name].ip


@contextmanager
def running_mesh(tmp: Path, base: int) -> Iterator[Mesh]:
    """A started cluster; on exit, clients stop first (their watches need the server)."""
    cluster = Mesh(tmp, base)
    cluster.configure()
    try:
        cluster.start()
        yield cluster
    finally:
        for name in (CLIENT_2, CLIENT_1, SERVER):
            if cluster.pool[name].agent is not None:
                cluster.pool.stop(cluster.pool[name])
    for member in cluster.pool.members:
        assert "Traceback" not in member.running.log_text()
