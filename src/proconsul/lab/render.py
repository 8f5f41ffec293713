"""The text of every file the lab writes: agent configs, service files, scripts, units.

Rules:
- Pure: each function takes values and returns text; `Place` says where
  things are (the lab's own directory, or `/opt/consul` on real hosts for
  `lab export`), so both write the same set.
- Configs are the walkthrough's HCL, section by section with its comments, plus
  what a shared machine needs (each node's own `bind_addr`/`client_addr`).
- Scripts are POSIX sh calling `proconsul` as the walkthrough calls `consul`;
  each sources `env.sh` for the address, token file and certificate directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from proconsul.lab.layout import (
    ADMIN_PORT,
    DATACENTER,
    GRPC_PORT,
    SERVERS,
    SERVICE_HOSTS,
    SERVICE_PORT,
    SIDECAR_PORT,
    UPSTREAM_PORT,
    Node,
)

AGENT_RULES = (
    'node "{name}" {{\n  policy = "write"\n}}\nservice_prefix "" {{\n  policy = "read"\n}}\n'
)
SERVICE_TOKEN_DESCRIPTIONS = {"api": "Token for API", "web": "Token for WEB"}


@dataclass(frozen=True)
class Place:
    """Where a set of files lives: the lab directory or a real host's /opt/consul."""

    root: str  # holds certs/, data/ (per node in a lab), scripts/, secrets/
    proconsul: str  # the command systemd units run
    per_node_data: bool  # a lab keeps four data dirs under one root

    @property
    def certs(self) -> str:
        return f"{self.root}/certs"

    def data_dir(self, node: str) -> str:
        return f"{self.root}/data/{node}" if self.per_node_data else f"{self.root}/data"

    def config_dir(self, node: str) -> str:
        return f"{self.root}/configs/{node}" if self.per_node_data else f"{self.root}/config"


@dataclass(frozen=True)
class Security:
    """What the secure stage adds to a config; empty in the discovery stage."""

    gossip_key: str = ""
    tls: bool = False
    acl: bool = False
    agent_token: str = ""


def server_cert(index: int) -> tuple[str, str]:
    return (
        f"{DATACENTER}-server-consul-{index}.pem",
        f"{DATACENTER}-server-consul-{index}-key.pem",
    )


def _hcl_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def agent_config(
    node: Node,
    nodes: list[Node],
    place: Place,
    security: Security,
    *,
    mesh: bool = False,
    fast: bool = False,
    client_addr: str | None = None,
    retry_interval: str = "",
) -> str:
    """One node's agent config in the walkthrough's HCL."""
    servers = [n.address for n in nodes if n.server]
    lines = [
        f"# {node.name}: written by `proconsul lab`.",
        f'node_name = "{node.name}"',
        f'datacenter = "{DATACENTER}"',
        f'data_dir = "{place.data_dir(node.name)}"',
        f'bind_addr = "{node.address}"',
        f'client_addr = "{client_addr or node.address}"',
        f"retry_join = {_hcl_list(servers)}",
        *([f'retry_interval = "{retry_interval}"'] if retry_interval else []),
        'log_level = "INFO"',
        "ui_config {\n  enabled = true\n}",
        "performance {\n  raft_multiplier = 1\n}",
    ]
    if fast:
        lines.append(
            "# Faster failure detection for a lab on one machine.\n"
            'gossip_lan {\n  profile = "local"\n}'
        )
    if node.server:
        lines.append(f"server = true\nbootstrap_expect = {len(servers)}")
    else:
        lines.append("server = false")
    if security.gossip_key:
        lines.append(
            "\n# Security - Gossip\n"
            f'encrypt = "{security.gossip_key}"\n'
            "encrypt_verify_incoming = true\nencrypt_verify_outgoing = true"
        )
    if security.tls:
        ca = f"{place.certs}/consul-agent-ca.pem"
        if node.server:
            cert, key = server_cert(SERVERS.index(node.name))
            lines.append(
                "\n# Security - RPC\nverify_incoming = true\nverify_outgoing = true\n"
                f'verify_server_hostname = true\nca_file = "{ca}"\n'
                f'cert_file = "{place.certs}/{cert}"\nkey_file = "{place.certs}/{key}"\n'
                "auto_encrypt {\n  allow_tls = true\n}"
            )
        else:
            lines.append(
                "\n# Security - RPC\nverify_incoming = false\nverify_outgoing = true\n"
                f'verify_server_hostname = true\nca_file = "{ca}"\n'
                "auto_encrypt {\n  tls = true\n}"
            )
    if security.acl:
        acl = [
            "\n# Security - ACLs",
            "acl {",
            "  enabled = true",
            '  default_policy = "deny"',
            "  enable_token_persistence = true",
        ]
        if node.server:
            acl.append("  enable_key_list_policy = true")
        if fast:  # a revoked token is refused within seconds, not after the 30 s cache
            acl.append('  token_ttl = "2s"')
        if security.agent_token:
            acl.append("  tokens {")
            if not node.server:
                acl.append(f'    default = "{security.agent_token}"')
            acl.append(f'    agent = "{security.agent_token}"')
            acl.append("  }")
        acl.append("}")
        lines.append("\n".join(acl))
    lines.append(f"\n# Service mesh\nports {{\n  grpc = {GRPC_PORT}\n}}")
    if mesh and node.server:
        lines.append(
            "config_entries {\n  bootstrap = [\n    {\n"
            '      kind = "proxy-defaults"\n      name = "global"\n'
            '      config {\n        protocol = "http"\n      }\n    }\n  ]\n}'
        )
    return "\n".join(lines) + "\n"


def service_file(
    name: str,
    host: Node,
    interval: str,
    *,
    token: str = "",
    mesh: bool = False,
    check_host: str = "",
    sidecar_address: str = "",
) -> str:
    """The walkthrough's `api`/`web` service definition, with its check and sidecar.

    `sidecar_address` pins the sidecar to its node's address (public listener,
    local app, web's upstream): on one machine the two sidecars share port
    20000, and 127.0.0.1 is everyone's.
    """
    check_host = check_host or host.address
    pinned = f'      address = "{sidecar_address}"\n' if sidecar_address else ""
    lines = [
        "service {",
        f'  name = "{name}"',
        f"  port = {SERVICE_PORT}",
        f'  tags = ["fake-service-{name}"]',
    ]
    if token:
        lines.append(f'  token = "{token}"')
    if mesh:
        proxy = ""
        if sidecar_address:  # the app listens on its node's address, not 127.0.0.1
            proxy += (
                f'        local_service_address = "{sidecar_address}"\n'
                f"        local_service_port = {SERVICE_PORT}\n"
            )
        if name == "web":
            bind = (
                f'            local_bind_address = "{sidecar_address}"\n' if sidecar_address else ""
            )
            proxy += (
                "        upstreams = [\n          {\n"
                '            destination_name = "api"\n'
                f"{bind}"
                f"            local_bind_port = {UPSTREAM_PORT}\n"
                "          }\n        ]\n"
            )
        upstreams = f"      proxy {{\n{proxy}      }}\n" if proxy else ""
        lines.append(
            "  connect {\n    sidecar_service {\n"
            f"{pinned}"
            f"      port = {SIDECAR_PORT}\n"
            "      check {\n"
            f'        name = "{name.upper()} Connect Sidecar"\n'
            f'        tcp = "{check_host}:{SIDECAR_PORT}"\n'
            f'        interval = "{interval}"\n        timeout = "1s"\n      }}\n'
            f"{upstreams}    }}\n  }}"
        )
    lines += [
        "  checks = [",
        "    {",
        f'      id = "{name}_check"',
        f'      name = "Check {name.upper()} health {SERVICE_PORT}"',
        f'      service_id = "{name}"',
        f'      http = "http://{check_host}:{SERVICE_PORT}/health"',
        '      method = "GET"',
        f'      interval = "{interval}"',
        '      timeout = "1s"',
        "      success_before_passing = 3",
        "      failures_before_critical = 3",
        "    }",
        "  ]",
        "}",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- scripts

_HEADER = '#!/bin/sh\n# {what}\nset -eu\n. "$(dirname "$0")/env.sh"\n'


def env_script(place: Place, first_server: Node, *, lab_bin: bool) -> str:
    lines = [
        "# Settings the other scripts share. Source it in a shell: . scripts/env.sh",
        f'LAB_DIR="{place.root}"',
        f'CERTS_DIR="{place.certs}"',
        f'export CONSUL_HTTP_ADDR="{first_server.http_addr}"',
        'if [ -s "$LAB_DIR/secrets/bootstrap.token" ]; then',
        '  export CONSUL_HTTP_TOKEN_FILE="$LAB_DIR/secrets/bootstrap.token"',
        "fi",
    ]
    if lab_bin:
        lines.insert(3, 'export PATH="$LAB_DIR/bin:$PATH"')
    return "\n".join(lines) + "\n"


def scripts(nodes: list[Node]) -> dict[str, str]:
    """The walkthrough's scripts, by file name."""
    out: dict[str, str] = {}
    out["gossip_keygen.sh"] = _HEADER.format(what="Generates a new gossip encryption key.") + (
        "proconsul keygen\n"
    )
    tls = _HEADER.format(what="Generates the CA and one certificate per server in certs/.")
    tls += 'mkdir -p "$CERTS_DIR"\ncd "$CERTS_DIR"\n'
    tls += "[ -f consul-agent-ca.pem ] || proconsul tls ca create\n"
    for index in range(len(SERVERS)):
        cert, _ = server_cert(index)
        tls += f"[ -f {cert} ] || proconsul tls cert create -server -dc {DATACENTER}\n"
    out["tls_keygen.sh"] = tls
    out["acl_bootstrap.sh"] = _HEADER.format(what="Creates the full-access bootstrap token.") + (
        "proconsul acl bootstrap\n"
    )
    policies = _HEADER.format(what="Creates one agent policy per node.")
    old = _HEADER.format(what="Creates agent tokens from the agent policies (the old way).")
    tokens = _HEADER.format(what="Creates agent tokens with node identities.")
    for node in nodes:
        rules = AGENT_RULES.format(name=node.name)
        policies += (
            f"proconsul acl policy create -name \"{node.name}\" -rules - <<'EOF'\n{rules}EOF\n"
        )
        old += (
            f'proconsul acl token create -description "{node.name} agent token" '
            f'-policy-name "{node.name}"\n'
        )
        tokens += (
            f'proconsul acl token create -description "{node.name} agent token" '
            f'-node-identity "{node.name}:{DATACENTER}"\n'
        )
    out["agent_policies.sh"] = policies
    out["agent_tokens_old.sh"] = old
    out["agent_tokens.sh"] = tokens
    services = _HEADER.format(what="Creates one token per service, with service identities.")
    for name, description in SERVICE_TOKEN_DESCRIPTIONS.items():
        services += (
            f'proconsul acl token create -description "{description}" -service-identity {name}\n'
        )
    out["service_tokens.sh"] = services
    out["intentions.sh"] = (
        _HEADER.format(what="Creates an intention to permit communication from WEB to API.")
        + "proconsul intention create -allow web api\n"
    )
    return out


# --------------------------------------------------------------------------- units


def agent_unit(node: str, place: Place) -> str:
    return (
        "[Unit]\n"
        f'Description="Proconsul agent {node}"\n'
        "Wants=network-online.target\nAfter=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={place.proconsul} agent -config-dir={place.config_dir(node)}\n"
        "ExecReload=/bin/kill --signal HUP $MAINPID\n"
        "KillMode=process\nKillSignal=SIGTERM\nRestart=on-failure\nLimitNOFILE=65536\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def demo_environment(
    name: str, nodes: list[Node], *, mesh: bool, upstream_host: str = "127.0.0.1"
) -> dict[str, str]:
    """fake-service's variables for the `api` or `web` demo service.

    Through the mesh web calls api at its sidecar's upstream, `upstream_host`:8081
    (127.0.0.1 on a real host, as in the walkthrough; the web node's own address
    in a lab, where 127.0.0.1 is shared with everything else on the machine).
    """
    host = next(n for n in nodes if n.name == SERVICE_HOSTS[name])
    env = {
        "NAME": name,
        "MESSAGE": f"Hello from {name}",
        "LISTEN_ADDR": f"{host.address}:{SERVICE_PORT}",
    }
    if name == "web":
        api_host = next(n for n in nodes if n.name == SERVICE_HOSTS["api"])
        env["UPSTREAM_URIS"] = (
            f"http://{upstream_host}:{UPSTREAM_PORT}"
            if mesh
            else f"http://{api_host.address}:{SERVICE_PORT}"
        )
    return env


def demo_unit(name: str, place: Place, env: dict[str, str]) -> str:
    environment = "".join(f'Environment="{k}={v}"\n' for k, v in env.items())
    return (
        "[Unit]\n"
        f'Description="Demo service {name} (fake-service compatible)"\n'
        "After=network-online.target\n\n"
        "[Service]\n"
        f"{environment}"
        f"ExecStart={place.proconsul} demo service\n"
        "Restart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def sidecar_args(name: str, host: Node, token_file: str) -> list[str]:
    """`connect envoy` for `name`'s sidecar, its admin port on the node's own address."""
    return [
        "connect",
        "envoy",
        f"-sidecar-for={name}",
        f"-http-addr={host.http_addr}",
        f"-grpc-addr={host.address}:{GRPC_PORT}",
        f"-token-file={token_file}",
        f"-admin-bind={host.address}:{ADMIN_PORT}",
    ]


def sidecar_unit(name: str, place: Place, host: Node) -> str:
    args = " ".join(sidecar_args(name, host, f"{place.root}/secrets/{name}.token"))
    return (
        "[Unit]\n"
        f'Description="Sidecar proxy for {name}"\n'
        "After=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={place.proconsul} {args}\n"
        "Restart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def units(
    nodes: list[Node], place: Place, *, mesh: bool, upstream_host: str = "127.0.0.1"
) -> dict[str, str]:
    out = {f"consul-{node.name}.service": agent_unit(node.name, place) for node in nodes}
    for name, host in SERVICE_HOSTS.items():
        env = demo_environment(name, nodes, mesh=mesh, upstream_host=upstream_host)
        out[f"{name}.service"] = demo_unit(name, place, env)
        node = next(n for n in nodes if n.name == host)
        out[f"{name}-sidecar.service"] = sidecar_unit(name, place, node)
    return out
