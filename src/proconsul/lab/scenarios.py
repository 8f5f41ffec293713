"""`lab status`, `lab break <scenario>` and `lab heal`: watching and breaking the lab.

Rules:
- Each scenario does one real thing to the lab (a signal to a recorded PID, a
  demo service's /health, the keyring, a certificate), records it in
  `lab.json` and prints three things: what it did, what to watch, how to heal.
- `lab heal` undoes every recorded scenario, newest first.
- On loopback a partition is SIGSTOP (the others see a node that stopped
  answering); the output says so.
- kill-leader keeps the walkthrough's two servers: the survivor cannot elect
  itself (a quorum of two needs both), so the break says why and what three
  servers would do, and heal restarts the killed server, waits for a leader
  at a higher term than the one killed, and shows a write succeeding.
"""

from __future__ import annotations

import datetime as dt
import http.client
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TextIO

from proconsul import tls
from proconsul.cli.api_client import ApiError
from proconsul.fileio import write_private_file
from proconsul.lab import cluster, netns, procs
from proconsul.lab.layout import (
    CLIENTS,
    DATACENTER,
    SERVER_PORT,
    SERVERS,
    SERVICE_HOSTS,
    SERVICE_PORT,
    Lab,
    Node,
)
from proconsul.lab.render import server_cert
from proconsul.lab.runner import Context, StepFailed

MEMBER_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}
LEADER_DEADLINE_S = 30.0
PROBE_KEY = "lab/kill-leader"
REFUSED_DEADLINE_S = 35.0  # acl.token_ttl (30 s by default) and a margin


class ScenarioError(Exception):
    """The scenario cannot run now; the message says why."""


# --------------------------------------------------------------------------- status


def leader_node(lab: Lab) -> Node | None:
    try:
        _, leader = cluster.first_answer(lab, "/v1/status/leader", [lab.node(n) for n in SERVERS])
    except ApiError:
        return None
    for node in lab.nodes:
        if leader == f"{node.address}:{SERVER_PORT}":
            return node
    return None


def raft_term(lab: Lab) -> int | None:
    """The highest Raft term the servers report (autopilot health); None if none answers."""
    try:
        _, health = cluster.first_answer(
            lab, "/v1/operator/autopilot/health", [lab.node(n) for n in SERVERS]
        )
    except ApiError:
        return None
    terms = [int(s.get("LastTerm", 0)) for s in health.get("Servers", [])]
    return max(terms) if terms else None


def status(lab: Lab, out: TextIO) -> int:
    out.write(
        f"Lab {lab.root} ({lab.state.isolation}; steps done: {len(lab.state.done)})\n\nNodes\n"
    )
    try:
        _, members = cluster.first_answer(lab, "/v1/agent/members")
    except ApiError as exc:
        members = []
        out.write(f"  (no agent answered: {exc})\n")
    seen = {m["Name"]: MEMBER_STATUS.get(m.get("Status", 0), "?") for m in members}
    for node in lab.nodes:
        pid = lab.state.pids.get(node.name)
        proc = "not running"
        if pid is not None and procs.is_ours(pid):
            proc = f"pid {pid}, " + ("frozen (SIGSTOP)" if procs.is_stopped(pid) else "running")
        out.write(
            f"  {node.name:16} {node.address:12} {node.role:6}  gossip: "
            f"{seen.get(node.name, 'unknown'):8} ({proc})\n"
        )
    leader = leader_node(lab)
    known = raft_term(lab)
    term = "?" if known is None else str(known)
    out.write(f"\nRaft: leader {leader.name if leader else '(none)'}, term {term}\n\nServices\n")
    for name in (*SERVICE_HOSTS, *(f"{n}-sidecar-proxy" for n in SERVICE_HOSTS)):
        try:
            # Stale: any server answers, so status works without a leader too.
            _, rows = cluster.first_answer(lab, f"/v1/health/service/{name}?stale")
        except ApiError as exc:
            out.write(f"  {name:20} ? ({exc})\n")
            continue
        if not rows and name.endswith("-sidecar-proxy"):
            out.write(f"  {name:20} not registered (sidecars come with the mesh stage)\n")
            continue
        if not rows:
            out.write(f"  {name:20} not registered\n")
        for row in rows:
            statuses = [c["Status"] for c in row.get("Checks", [])]
            worst = next((s for s in ("critical", "warning") if s in statuses), "passing")
            out.write(f"  {name:20} {row['Node']['Node']:16} {worst}\n")
    out.write("\nIntentions\n")
    try:
        _, intentions = cluster.first_answer(
            lab, "/v1/connect/intentions", [lab.node(n) for n in SERVERS]
        )
        if not intentions:
            out.write("  (none)\n")
        for item in intentions or []:
            source, destination = item.get("SourceName"), item.get("DestinationName")
            out.write(f"  {source} => {destination} ({item.get('Action')})\n")
    except ApiError as exc:
        missing = "404" in str(exc)
        out.write("  not in this build yet\n" if missing else f"  unknown: {str(exc)[:120]}\n")
    if lab.state.broken:
        out.write("\nBroken on purpose (heal with `proconsul lab heal`)\n")
        for scenario, target in lab.state.broken.items():
            out.write(f"  {scenario} {target}\n")
    out.write("\nLast events\n")
    for event in lab.state.events[-8:] or ["(none)"]:
        out.write(f"  {event}\n")
    return 0


# --------------------------------------------------------------------------- scenarios


def _report(out: TextIO, did: str, watch: str, heal: str) -> None:
    out.write(f"did:   {did}\nwatch: {watch}\nheal:  {heal}\n")


def _pid(lab: Lab, name: str) -> int:
    pid = lab.state.pids.get(name)
    if pid is None or not procs.is_ours(pid):
        raise ScenarioError(f"{name} is not running; `proconsul lab up` first")
    return pid


def _kill(lab: Lab, name: str) -> int:
    pid = _pid(lab, name)
    procs.signal_pid(pid, signal.SIGKILL)
    procs.stop(pid, grace_s=5.0)  # reaps it
    lab.state.pids.pop(name, None)
    return pid


def kill_leader(lab: Lab, out: TextIO, _: list[str]) -> None:
    leader = leader_node(lab)
    if leader is None:
        raise ScenarioError("no leader to kill: the cluster has none right now")
    term = raft_term(lab) or 0
    pid = _kill(lab, leader.name)
    lab.state.broken["kill-leader"] = leader.name
    lab.state.killed_term = term
    survivor = lab.node(next(n for n in SERVERS if n != leader.name))
    _report(
        out,
        f"killed the Raft leader {leader.name} (SIGKILL to pid {pid}) at term {term}",
        f"`proconsul lab status`: no leader. Raft elects a leader only with the votes of a "
        f"majority (quorum) of the servers: with two servers the quorum is two, so "
        f"{survivor.name} alone cannot win a vote, however often it tries. Until "
        f"{leader.name} is back every write fails with 'No cluster leader' (try "
        f"`proconsul kv put -http-addr {survivor.http_addr} {PROBE_KEY} 1`); DNS keeps "
        "answering from the catalog it has (stale reads). With three servers the quorum "
        "would still be two: the two survivors would elect a new leader within seconds and "
        "writes would resume on their own; that is why production runs 3 or 5 servers",
        f"`proconsul lab heal` starts {leader.name} again: with both servers there is a "
        "quorum, a new leader is elected at a higher term, and heal shows it and a write "
        "succeeding",
    )


def _heal_kill_leader(lab: Lab, out: TextIO, target: str) -> None:
    """Restart the killed server, wait for a leader at a higher term, then write."""
    cluster.start_agent(lab, target)
    out.write(f"healed kill-leader: started {target} again; waiting for a leader\n")
    before = lab.state.killed_term
    elected: list[tuple[Node, int]] = []

    def new_leader() -> bool:
        leader, term = leader_node(lab), raft_term(lab)
        if leader is None or term is None or term <= before:
            return False
        elected.append((leader, term))
        return True

    try:
        Context(lab, out).wait("a new leader", new_leader, LEADER_DEADLINE_S, nodes=SERVERS)
    except StepFailed as exc:
        out.write(f"  {exc.message}; see logs/{SERVERS[0]}.log and logs/{SERVERS[1]}.log\n")
        return
    leader, term = elected[-1]
    out.write(
        f"  new leader: {leader.name} at term {term} (the killed leader's term was {before}): "
        "two servers, two votes, a quorum again\n"
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%FT%TZ")
    try:
        written = cluster.client(lab, leader).request(
            "PUT", f"/v1/kv/{PROBE_KEY}", body=stamp.encode()
        )
    except ApiError as exc:
        out.write(f"  the write failed: {exc}\n")
        return
    answer = written.body.decode().strip()
    out.write(f"  writes resume: kv put {PROBE_KEY} {stamp} answered {answer}\n")


def partition(lab: Lab, out: TextIO, args: list[str]) -> None:
    if not args or args[0] not in {n.name for n in lab.nodes}:
        names = ", ".join(n.name for n in lab.nodes)
        raise ScenarioError(f"partition needs a node: one of {names}")
    name = args[0]
    if lab.state.isolation == "netns":
        index = [n.name for n in lab.nodes].index(name)
        netns.cut(lab.state.netns_tag, index)
        lab.state.broken["partition"] = name
        _report(
            out,
            f"cut {name}'s link: its port on the lab bridge "
            f"({netns.bridge_port(lab.state.netns_tag, index)}) is down, so its packets are "
            "dropped as when a cable is pulled (netns isolation)",
            f"`proconsul lab status`: the others mark {name} failed after the gossip "
            "suspicion timeout"
            + ("; if it led, a new leader is elected" if name in SERVERS else "")
            + f"; {name} itself, unreachable from here too, still runs",
            "`proconsul lab heal` brings the link back up and it rejoins",
        )
        return
    pid = _pid(lab, name)
    procs.signal_pid(pid, signal.SIGSTOP)
    lab.state.broken["partition"] = name
    _report(
        out,
        f"froze {name} with SIGSTOP (pid {pid}): on loopback there is no link to cut, so "
        "a frozen agent is the partition — it neither answers nor speaks",
        f"`proconsul lab status`: the others mark {name} failed after the gossip "
        "suspicion timeout" + ("; if it led, a new leader is elected" if name in SERVERS else ""),
        "`proconsul lab heal` thaws it (SIGCONT) and it rejoins",
    )


def kill_client(lab: Lab, out: TextIO, args: list[str]) -> None:
    name = args[0] if args else CLIENTS[0]
    if name not in CLIENTS:
        raise ScenarioError(f"kill-client takes one of {', '.join(CLIENTS)}")
    pid = _kill(lab, name)
    lab.state.broken["kill-client"] = name
    services = [s for s, host in SERVICE_HOSTS.items() if host == name]
    _report(
        out,
        f"killed the client agent {name} (SIGKILL to pid {pid})",
        f"`proconsul lab status`: {name} becomes failed, its services ({', '.join(services)}) "
        f"critical, and `dig @{lab.node(SERVERS[0]).address} -p 8600 "
        f"{services[0] if services else 'api'}.service.consul` stops answering them",
        f"`proconsul lab heal` starts {name} again",
    )


def _demo_call(lab: Lab, name: str, path: str) -> None:
    host = lab.node(SERVICE_HOSTS[name])
    conn = http.client.HTTPConnection(host.address, SERVICE_PORT, timeout=3.0)
    try:
        conn.request("PUT", path)
        conn.getresponse().read()
    except OSError as exc:
        raise ScenarioError(f"the {name} demo service did not answer: {exc}") from None
    finally:
        conn.close()


def fail_api(lab: Lab, out: TextIO, _: list[str]) -> None:
    _demo_call(lab, "api", "/health/fail")
    lab.state.broken["fail-api"] = "api"
    _report(
        out,
        "made api's /health answer 500 (PUT /health/fail on the demo service)",
        "`proconsul lab status`: api_check goes critical after failures_before_critical = 3 "
        "runs, then `dig ... api.service.consul` returns no address",
        "`proconsul lab heal` makes /health pass again (3 passing runs to recover)",
    )


def _needs_secure(lab: Lab, what: str) -> None:
    if cluster.ACL_CONFIG_STEP not in lab.state.done or not lab.secret("bootstrap"):
        raise ScenarioError(f"{what} needs the secure stage: `proconsul lab up --stage secure`")


def _cli(lab: Lab, *args: str) -> str:
    env = cluster.script_env(lab)
    env["CONSUL_HTTP_ADDR"] = lab.node(SERVERS[0]).http_addr
    env["CONSUL_HTTP_TOKEN_FILE"] = str(lab.secret_path("bootstrap"))
    done = subprocess.run(
        procs.proconsul_argv(*args), capture_output=True, text=True, env=env, timeout=60
    )
    if done.returncode != 0:
        raise ScenarioError(f"proconsul {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def rotate_gossip_key(lab: Lab, out: TextIO, _: list[str]) -> None:
    _needs_secure(lab, "rotate-gossip-key")
    old = lab.secret("gossip") or ""
    new = _cli(lab, "keygen").strip()
    _cli(lab, "keyring", "-install", new)
    _cli(lab, "keyring", "-use", new)
    _cli(lab, "keyring", "-remove", old)
    lab.set_secret("gossip", new)
    cluster.write_configs(lab)
    _report(
        out,
        "rolled a new gossip key out: keyring -install (every agent learns it), -use (every "
        "agent encrypts with it), -remove (the old key is gone); configs now name the new key",
        "`proconsul keyring -list` shows one key on all four nodes; members stay alive throughout",
        "nothing to heal: the cluster never lost a member",
    )


def expire_cert(lab: Lab, out: TextIO, _: list[str]) -> None:
    _needs_secure(lab, "expire-cert")
    name = SERVERS[1]
    index = SERVERS.index(name)
    cert_name, key_name = server_cert(index)
    ca = tls.load_ca(
        (lab.certs / "consul-agent-ca.pem").read_bytes(),
        (lab.certs / "consul-agent-ca-key.pem").read_bytes(),
    )
    spec = tls.agent_cert_spec(
        "server", datacenter=DATACENTER, domain="consul", valid_for=dt.timedelta(days=1)
    )
    # Issued two days ago for one day: expired yesterday.
    pair = tls.issue_leaf(ca, spec, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    expired_cert = cert_name.replace(".pem", "-expired.pem")
    expired_key = key_name.replace("-key.pem", "-expired-key.pem")
    (lab.certs / expired_cert).write_text(pair.cert_pem)
    write_private_file(lab.certs / expired_key, pair.key_pem.encode())
    config = lab.config_dir(name) / "consul.hcl"
    text = config.read_text().replace(cert_name, expired_cert).replace(key_name, expired_key)
    write_private_file(config, text.encode())
    cluster.stop_process(lab, name)
    cluster.start_agent(lab, name)
    lab.state.broken["expire-cert"] = name
    _report(
        out,
        f"gave {name} a server certificate that expired yesterday "
        f"(certs/{expired_cert}) and restarted it",
        f"logs/{SERVERS[0]}.log and logs/{name}.log: TLS handshakes refused with "
        "'certificate has expired'; `proconsul doctor configs` reports cert-near-expiry",
        f"`proconsul lab heal` puts the valid certificate back and restarts {name}",
    )


def _needs_intention(lab: Lab, what: str) -> None:
    if "mesh.intention" not in lab.state.done:
        raise ScenarioError(f"{what} needs the mesh stage's intention: `proconsul lab up`")


def _sidecar_note(lab: Lab) -> str:
    if cluster.running(lab, "web-sidecar"):
        return ""
    return " (no sidecar runs in this build yet, so no request crosses the mesh to refuse)"


def deny_intention(lab: Lab, out: TextIO, _: list[str]) -> None:
    _needs_intention(lab, "deny-intention")
    _cli(lab, "intention", "create", "-deny", "-replace", "web", "api")
    lab.state.broken["deny-intention"] = "web => api"
    _report(
        out,
        "replaced the intention web => api with a deny (intention create -deny -replace)",
        "`proconsul intention check web api` says Denied; `curl` on web shows api's call "
        "refused by api's sidecar" + _sidecar_note(lab),
        "`proconsul lab heal` allows web => api again",
    )


def revoke_token(lab: Lab, out: TextIO, args: list[str]) -> None:
    name = args[0] if args else "web"
    if name not in SERVICE_HOSTS:
        raise ScenarioError(f"revoke-token takes a service: {', '.join(SERVICE_HOSTS)}")
    _needs_secure(lab, "revoke-token")
    secret = lab.secret(name)
    if not secret:
        raise ScenarioError(f"{name} has no token yet")
    host = lab.node(SERVICE_HOSTS[name])
    me = cluster.client(lab, host, token=secret).get_json("/v1/acl/token/self")
    accessor = me["AccessorID"]
    cluster.client(lab, host).request("DELETE", f"/v1/acl/token/{accessor}")
    lab.state.broken["revoke-token"] = name
    restarted = cluster.running(lab, f"{name}-sidecar")
    waited_s = 0.0
    if restarted:  # a running proxy keeps what it has; a new one must show its token
        waited_s = _until_refused(lab, host, secret, f"{name}-sidecar-proxy")
        cluster.stop_process(lab, f"{name}-sidecar")
        cluster.start_sidecar(lab, name)
    _report(
        out,
        f"deleted {name}'s service token (AccessorID {accessor}); its secret stays in the "
        "service file and the sidecar's unit, now naming nothing"
        + (
            f"; once {host.name}'s ACL cache let the token go ({waited_s:.0f} s), restarted "
            "its sidecar, which must present the token again"
            if restarted
            else ""
        ),
        f"logs/{host.name}.log: 'blocked by ACLs ... ACL not found' on the agent's next sync "
        f"of {name} (about a minute; `proconsul reload -http-addr {host.http_addr}` forces "
        "one); its sidecar's xDS stream is refused (UNAUTHENTICATED) once the client "
        "agent's ACL cache lets the token go (acl.token_ttl: 30 s, 2 s with --fast), and the "
        "restarted sidecar then gets no configuration (its admin /ready stays "
        "PRE_INITIALIZING); `proconsul lab explain web api` names the token at once and "
        "the sidecar once the agent refuses it" + _sidecar_note(lab),
        f"`proconsul lab heal` makes a new token for {name} and puts it in the service file",
    )


def _until_refused(lab: Lab, host: Node, secret: str, proxy_id: str) -> float:
    """Wait until `host`'s agent refuses `secret` (its ACL cache keeps a token for
    acl.token_ttl); the seconds waited."""
    agent = cluster.client(lab, host, token=secret)
    start = time.monotonic()
    while time.monotonic() - start < REFUSED_DEADLINE_S:
        try:
            agent.get_json(f"/v1/agent/service/{proxy_id}")
        except ApiError:
            break
        time.sleep(0.2)
    return time.monotonic() - start


SCENARIOS: dict[str, Callable[[Lab, TextIO, list[str]], None]] = {
    "kill-leader": kill_leader,
    "partition": partition,
    "kill-client": kill_client,
    "fail-api": fail_api,
    "rotate-gossip-key": rotate_gossip_key,
    "expire-cert": expire_cert,
    "revoke-token": revoke_token,
    "deny-intention": deny_intention,
}


def heal(lab: Lab, out: TextIO) -> int:
    if not lab.state.broken:
        out.write("nothing to heal\n")
        return 0
    for scenario, target in reversed(list(lab.state.broken.items())):
        if scenario == "kill-leader":
            _heal_kill_leader(lab, out, target)
        elif scenario == "kill-client":
            cluster.start_agent(lab, target)
            out.write(f"healed {scenario}: started {target} again\n")
        elif scenario == "partition" and lab.state.isolation == "netns":
            netns.restore(lab.state.netns_tag, [n.name for n in lab.nodes].index(target))
            out.write(f"healed partition: {target}'s link is up again\n")
        elif scenario == "partition":
            pid = lab.state.pids.get(target)
            if pid is not None:
                procs.signal_pid(pid, signal.SIGCONT)
            out.write(f"healed partition: thawed {target} (SIGCONT)\n")
        elif scenario == "fail-api":
            _demo_call(lab, "api", "/health/recover")
            out.write("healed fail-api: api's /health passes again\n")
        elif scenario == "deny-intention":
            _cli(lab, "intention", "create", "-allow", "-replace", "web", "api")
            out.write("healed deny-intention: web => api is allowed again\n")
        elif scenario == "revoke-token":
            created = _cli(
                lab,
                "acl",
                "token",
                "create",
                "-description",
                f"Token for {target.upper()}",
                "-service-identity",
                target,
            )
            lab.set_secret(target, cluster.secret_ids(created)[f"Token for {target.upper()}"])
            cluster.write_service_files(lab, mesh=cluster.MESH_CONFIG_STEP in lab.state.done)
            cluster.client(lab, lab.node(SERVICE_HOSTS[target])).request("PUT", "/v1/agent/reload")
            sidecar = f"{target}-sidecar"
            if sidecar in lab.state.pids:
                cluster.stop_process(lab, sidecar)
                cluster.start_sidecar(lab, target)
                out.write(f"  ({sidecar} restarted with the new token)\n")
            out.write(f"healed revoke-token: {target} has a new token in its service file\n")
        elif scenario == "expire-cert":
            cluster.write_configs(lab)
            cluster.stop_process(lab, target)
            cluster.start_agent(lab, target)
            out.write(f"healed expire-cert: {target} has its valid certificate again\n")
        lab.state.note(f"heal {scenario} {target}")
        del lab.state.broken[scenario]
        lab.save()
    return 0
