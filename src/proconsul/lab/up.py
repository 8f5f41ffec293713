"""`lab up`'s steps: the walkthrough in order, stage by stage.

Rules:
- Stage `discovery`: four plain agents, the demo services with their checks,
  DNS. Stage `secure`: the walkthrough's gossip key, TLS and ACL steps, each
  through its script, then the agents restarted with the tokens. Stage
  `mesh`: sidecars, proxy-defaults and the intention, only where this build
  has the commands (`mesh_missing` says what is not there yet).
- Each step is a file written or a script/command run (see runner.py); what
  a step needs from an earlier one (tokens, key) it reads from `secrets/`.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
from collections.abc import Callable

import dnslib

from proconsul.cli.api_client import ApiError
from proconsul.cli.main import VERBS
from proconsul.fileio import write_file_atomic
from proconsul.lab import cluster, netns, procs
from proconsul.lab.layout import (
    DNS_PORT,
    NODES,
    SERVERS,
    SERVICE_HOSTS,
    SERVICE_PORT,
    UPSTREAM_PORT,
    Lab,
)
from proconsul.lab.render import env_script, scripts, units
from proconsul.lab.runner import Context, Step, StepFailed

LEADER_DEADLINE_S = 60.0
HEALTH_DEADLINE_S = 90.0


# --------------------------------------------------------------------------- helpers


def network(ctx: Context) -> None:
    """Loopback needs nothing; netns makes the bridge and namespaces if they are gone."""
    lab = ctx.lab
    if lab.state.isolation == "netns":
        try:
            netns.setup(lab.state.netns_tag, [n.address for n in lab.nodes])
        except netns.NetnsError as exc:
            raise StepFailed("could not make the lab network", str(exc)) from None


def write_files(ctx: Context) -> None:
    """configs/, scripts/, systemd/ and bin/proconsul: what a learner keeps."""
    lab = ctx.lab
    place = cluster.lab_place(lab)
    procs.write_shim(lab.bin / "proconsul")
    lab.scripts.mkdir(parents=True, exist_ok=True)
    for name, text in {
        "env.sh": env_script(place, lab.nodes[0], lab_bin=True),
        **scripts(lab.nodes),
    }.items():
        write_file_atomic(lab.scripts / name, text.encode(), 0o755)
    (lab.root / "systemd").mkdir(exist_ok=True)
    mesh = cluster.web_via_mesh(lab)
    lab_units = units(lab.nodes, place, mesh=mesh, upstream_host=cluster.upstream_host(lab))
    for name, text in lab_units.items():
        write_file_atomic(lab.root / "systemd" / name, text.encode())
    cluster.write_configs(lab)
    cluster.write_service_files(lab, mesh=cluster.MESH_CONFIG_STEP in lab.state.done)


def members_alive(lab: Lab, names: tuple[str, ...]) -> bool:
    _, members = cluster.first_answer(lab, "/v1/agent/members", [lab.node(n) for n in SERVERS])
    alive = {m["Name"] for m in members if m.get("Status") == 1}
    return set(names) <= alive


def has_leader(lab: Lab) -> bool:
    for name in SERVERS:
        leader = cluster.get(lab, lab.node(name), "/v1/status/leader")
        if not leader:
            return False
    return True


def wait_cluster(ctx: Context, *, everyone: bool) -> None:
    """A leader; with `everyone`, all four members alive (needs a token once ACLs deny)."""
    lab = ctx.lab
    ctx.wait("a Raft leader", lambda: has_leader(lab), LEADER_DEADLINE_S, nodes=SERVERS)
    if everyone:
        ctx.wait(
            f"{len(NODES)} members alive",
            lambda: members_alive(lab, NODES),
            LEADER_DEADLINE_S,
            nodes=NODES,
        )


def start_agents(ctx: Context) -> None:
    for name in NODES:
        cluster.start_agent(ctx.lab, name)
    # Under default deny, members are listed only with a token.
    acl_pending = cluster.ACL_CONFIG_STEP in ctx.lab.state.done and not ctx.lab.secret("bootstrap")
    wait_cluster(ctx, everyone=not acl_pending)


def restart_agents(ctx: Context, *, everyone: bool) -> None:
    cluster.stop_process(ctx.lab, *NODES)
    for name in NODES:
        cluster.start_agent(ctx.lab, name)
    wait_cluster(ctx, everyone=everyone)


def reload_clients(ctx: Context) -> None:
    lab = ctx.lab
    for host in sorted(set(SERVICE_HOSTS.values())):
        try:
            cluster.client(lab, lab.node(host)).request("PUT", "/v1/agent/reload")
        except ApiError as exc:
            raise StepFailed(f"reload of {host} failed", str(exc), [host]) from None


def services_passing(lab: Lab) -> bool:
    for name, host in SERVICE_HOSTS.items():
        _, rows = cluster.first_answer(lab, f"/v1/health/service/{name}?passing")
        if [r["Node"]["Node"] for r in rows] != [host]:
            return False
    return True


def dns_answer(address: str, name: str, port: int = DNS_PORT) -> list[str]:
    query = dnslib.DNSRecord.question(name, "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(query.pack(), (address, port))
        reply = dnslib.DNSRecord.parse(sock.recv(4096))
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == dnslib.QTYPE.A]


def check_dns(ctx: Context) -> None:
    lab = ctx.lab
    api_host = lab.node(SERVICE_HOSTS["api"])
    answer: list[str] = []

    def resolves() -> bool:
        nonlocal answer
        answer = dns_answer(api_host.address, "api.service.consul")
        return answer == [api_host.address]

    ctx.wait("api.service.consul to answer", resolves, 20.0, nodes=[api_host.name])


def wait_services(ctx: Context) -> None:
    ctx.wait(
        "api and web passing",
        lambda: services_passing(ctx.lab),
        HEALTH_DEADLINE_S,
        nodes=list(SERVICE_HOSTS.values()),
    )


# --------------------------------------------------------------------------- discovery


def ensure_demos(ctx: Context) -> None:
    for name in SERVICE_HOSTS:
        cluster.start_demo(ctx.lab, name, mesh=cluster.web_via_mesh(ctx.lab))


def discovery_steps() -> list[Step]:
    def services(ctx: Context) -> None:
        for name in SERVICE_HOSTS:
            cluster.start_demo(ctx.lab, name, mesh=False)
        cluster.write_service_files(ctx.lab, mesh=False)
        reload_clients(ctx)

    return [
        Step(
            "discovery.network",
            "discovery",
            "the nodes' network",
            "127.0.0.x addresses, or `ip netns add` and a bridge under --isolation netns",
            network,
            always=True,
        ),
        Step(
            "discovery.files",
            "discovery",
            "write configs, scripts and units",
            "configs/<node>/consul.hcl, scripts/*.sh, systemd/*.service",
            write_files,
            always=True,
        ),
        Step(
            "discovery.agents",
            "discovery",
            "start the four agents (bootstrap_expect = 2)",
            "proconsul agent -config-dir=configs/<node> (systemd/consul-<node>.service)",
            start_agents,
            always=True,
        ),
        Step(
            "discovery.services",
            "discovery",
            "start api and web with their service files",
            "proconsul demo service (systemd/api.service, web.service); configs/consul-client-*/"
            "{api,web}.hcl; proconsul reload",
            services,
        ),
        Step(
            "discovery.demos",
            "discovery",
            "make sure the demo services run",
            "systemd/api.service, systemd/web.service",
            ensure_demos,
            always=True,
        ),
        Step(
            "discovery.health",
            "discovery",
            "wait for api and web to pass their checks",
            "proconsul catalog services; curl /v1/health/service/api?passing",
            wait_services,
        ),
        Step(
            "discovery.dns",
            "discovery",
            "resolve api.service.consul",
            "dig @<consul-client-1> -p 8600 api.service.consul",
            check_dns,
        ),
    ]


# --------------------------------------------------------------------------- secure


def save_tokens(ctx: Context, script: str, step_id: str, wanted: dict[str, str]) -> None:
    """Run a token script; keep each wanted token (by its description) in secrets/<name>."""
    out = cluster.run_script(ctx.lab, script, step_id)
    secrets = cluster.secret_ids(out)
    for name, description in wanted.items():
        token = secrets.get(description)
        if not token:
            raise StepFailed(f"no token printed for {name}", out)
        ctx.lab.set_secret(name, token)


def secure_steps() -> list[Step]:
    def gossip_key(ctx: Context) -> None:
        out = cluster.run_script(ctx.lab, "gossip_keygen.sh", "secure.gossip-key")
        key = out.strip().splitlines()[-1].strip() if out.strip() else ""
        if len(key) < 40:
            raise StepFailed("keygen printed no key", out)
        ctx.lab.set_secret("gossip", key)

    def tls(ctx: Context) -> None:
        cluster.run_script(ctx.lab, "tls_keygen.sh", "secure.tls")
        for path in ctx.lab.certs.glob("*-key.pem"):
            path.chmod(0o600)

    def configs(ctx: Context) -> None:
        cluster.mark(ctx.lab, cluster.ACL_CONFIG_STEP)
        cluster.write_configs(ctx.lab)

    def bootstrap(ctx: Context) -> None:
        out = cluster.run_script(ctx.lab, "acl_bootstrap.sh", "secure.acl-bootstrap")
        secrets = cluster.secret_ids(out)
        token = next((v for k, v in secrets.items() if k.startswith("Bootstrap Token")), "")
        if not token:
            raise StepFailed("acl bootstrap printed no SecretID", out, SERVERS)
        ctx.lab.set_secret("bootstrap", token)

    def agent_tokens(ctx: Context) -> None:
        wanted = {name: f"{name} agent token" for name in NODES}
        save_tokens(ctx, "agent_tokens.sh", "secure.agent-tokens", wanted)

    def tokens_in_configs(ctx: Context) -> None:
        cluster.mark(ctx.lab, cluster.TOKENS_IN_CONFIG_STEP)
        cluster.write_configs(ctx.lab)
        restart_agents(ctx, everyone=True)

    def service_tokens(ctx: Context) -> None:
        wanted = {name: f"Token for {name.upper()}" for name in SERVICE_HOSTS}
        save_tokens(ctx, "service_tokens.sh", "secure.service-tokens", wanted)
        cluster.write_service_files(ctx.lab, mesh=False)
        reload_clients(ctx)

    def script_step(name: str) -> Callable[[Context], None]:
        def action(ctx: Context) -> None:
            cluster.run_script(ctx.lab, name, f"secure.{name}")

        return action

    return [
        Step(
            "secure.gossip-key",
            "secure",
            "generate the gossip key",
            "scripts/gossip_keygen.sh",
            gossip_key,
        ),
        Step(
            cluster.TLS_STEP,
            "secure",
            "create the CA and server certificates",
            "scripts/tls_keygen.sh",
            tls,
        ),
        Step(
            "secure.configs-written",
            "secure",
            "gossip encryption, TLS and ACLs into the configs",
            "configs/<node>/consul.hcl (encrypt, verify_*, auto_encrypt, acl)",
            configs,
        ),
        Step(
            "secure.restart",
            "secure",
            "restart the agents with the secure configs",
            "systemctl restart consul (each node)",
            lambda ctx: restart_agents(ctx, everyone=False),
        ),
        Step(
            "secure.acl-bootstrap",
            "secure",
            "bootstrap the ACL system",
            "scripts/acl_bootstrap.sh",
            bootstrap,
        ),
        Step(
            "secure.agent-policies",
            "secure",
            "create the agent policies",
            "scripts/agent_policies.sh",
            script_step("agent_policies.sh"),
        ),
        Step(
            "secure.agent-tokens-old",
            "secure",
            "create agent tokens from the policies (the old way)",
            "scripts/agent_tokens_old.sh",
            script_step("agent_tokens_old.sh"),
        ),
        Step(
            "secure.agent-tokens",
            "secure",
            "create the node-identity agent tokens",
            "scripts/agent_tokens.sh",
            agent_tokens,
        ),
        Step(
            "secure.tokens-restart",
            "secure",
            "write the agent tokens into the configs and restart",
            "configs/<node>/consul.hcl (acl.tokens); systemctl restart consul",
            tokens_in_configs,
        ),
        Step(
            "secure.service-tokens",
            "secure",
            "create the service tokens and put them in the service files",
            "scripts/service_tokens.sh; configs/consul-client-*/{api,web}.hcl; proconsul reload",
            service_tokens,
        ),
        Step(
            "secure.health",
            "secure",
            "wait for api and web to pass with their tokens",
            "curl -H 'X-Consul-Token: …' /v1/health/service/api?passing",
            wait_services,
        ),
        Step(
            "secure.dns",
            "secure",
            "resolve api.service.consul through the default token",
            "dig @<consul-client-1> -p 8600 api.service.consul",
            check_dns,
        ),
    ]


# --------------------------------------------------------------------------- mesh


def sidecar_missing() -> str | None:
    """Why this build cannot run a sidecar proxy, in one line; None when it can."""
    if ("connect", "proxy") in VERBS or shutil.which("envoy") is not None:
        return None
    return "a sidecar proxy (no built-in `proconsul connect proxy` yet, no `envoy` on PATH)"


def mesh_missing() -> list[str]:
    """What this build lacks for the whole mesh stage; empty when it is all there."""
    missing = []
    if ("intention", "create") not in VERBS:
        missing.append("`proconsul intention create`")
    sidecar = sidecar_missing()
    if sidecar:
        missing.append(sidecar)
    return missing


def _intention_missing() -> str | None:
    return None if ("intention", "create") in VERBS else "`proconsul intention create`"


def sidecars_passing(lab: Lab) -> bool:
    for name in SERVICE_HOSTS:
        _, rows = cluster.first_answer(lab, f"/v1/health/service/{name}-sidecar-proxy?passing")
        if not rows:
            return False
    return True


def web_reaches_api(lab: Lab) -> bool:
    """web answers 200 with api's own greeting, from api's node, through web's upstream."""
    host = lab.node(SERVICE_HOSTS["web"])
    conn = http.client.HTTPConnection(host.address, SERVICE_PORT, timeout=3.0)
    try:
        conn.request("GET", "/")
        body = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    calls = body.get("upstream_calls") or {}
    upstream = f"http://{cluster.upstream_host(lab)}:{UPSTREAM_PORT}"
    call = calls.get(upstream) or {}
    api_host = lab.node(SERVICE_HOSTS["api"]).address
    return (
        call.get("code") == 200
        and call.get("body") == "Hello from api"
        and api_host in (call.get("ip_addresses") or [])
    )


def mesh_steps() -> list[Step]:
    """The mesh stage: each step says what it needs, so a build without it stops there."""

    def configs(ctx: Context) -> None:
        cluster.mark(ctx.lab, cluster.MESH_CONFIG_STEP)
        write_files(ctx)
        cluster.write_service_files(ctx.lab, mesh=True)
        restart_agents(ctx, everyone=True)
        wait_services(ctx)

    def proxy_defaults(ctx: Context) -> None:
        def written() -> bool:
            _, entry = cluster.first_answer(ctx.lab, "/v1/config/proxy-defaults/global")
            return bool(entry) and (entry.get("Config") or {}).get("protocol") == "http"

        ctx.wait("proxy-defaults global (protocol http)", written, 30.0, nodes=SERVERS)

    def intention(ctx: Context) -> None:
        cluster.run_script(ctx.lab, "intentions.sh", "mesh.intention")

    def sidecars(ctx: Context) -> None:
        for name in SERVICE_HOSTS:
            cluster.start_sidecar(ctx.lab, name)
        ctx.wait(
            "both sidecars passing",
            lambda: sidecars_passing(ctx.lab),
            HEALTH_DEADLINE_S,
            nodes=["api-sidecar", "web-sidecar", *SERVICE_HOSTS.values()],
        )
        if not cluster.web_via_mesh(ctx.lab):  # web now calls api through its upstream
            cluster.mark(ctx.lab, cluster.SIDECARS_STEP)
            cluster.stop_process(ctx.lab, "web")
            cluster.start_demo(ctx.lab, "web", mesh=True)
            write_files(ctx)

    def traffic(ctx: Context) -> None:
        ctx.wait(
            "web -> api through the mesh",
            lambda: web_reaches_api(ctx.lab),
            30.0,
            nodes=["web", "web-sidecar", "api-sidecar"],
        )

    return [
        Step(
            "mesh.configs",
            "mesh",
            "ports.grpc, proxy-defaults bootstrap and the sidecar registrations",
            "configs/<node>/consul.hcl (config_entries.bootstrap); {api,web}.hcl (connect)",
            configs,
        ),
        Step(
            "mesh.proxy-defaults",
            "mesh",
            "check proxy-defaults took effect",
            "proconsul config read -kind proxy-defaults -name global",
            proxy_defaults,
        ),
        Step(
            "mesh.intention",
            "mesh",
            "allow web to call api",
            "scripts/intentions.sh",
            intention,
            needs=_intention_missing,
        ),
        Step(
            cluster.SIDECARS_STEP,
            "mesh",
            "start the sidecars",
            "proconsul connect envoy (or the built-in connect proxy) -sidecar-for=api|web "
            "(systemd/*-sidecar.service)",
            sidecars,
            always=True,
            needs=sidecar_missing,
        ),
        Step(
            "mesh.traffic",
            "mesh",
            "web calls api through the mesh",
            f"curl http://<consul-client-2>:{SERVICE_PORT}",
            traffic,
            needs=sidecar_missing,
        ),
    ]


def ready_step(stage: str) -> Step:
    """Every run, done steps or not: the services pass again before anything else."""
    return Step(
        f"{stage}.ready",
        stage,
        "api and web passing",
        "curl /v1/health/service/api?passing",
        wait_services,
        always=True,
    )


def all_steps(stage: str) -> list[Step]:
    steps = discovery_steps()
    if stage in ("secure", "mesh"):
        steps += secure_steps()
    steps.append(ready_step("secure" if stage == "mesh" else stage))
    if stage == "mesh":
        steps += mesh_steps()
    return steps
