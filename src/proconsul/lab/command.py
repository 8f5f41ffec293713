"""`proconsul lab <verb>`: up, steps, status, down, export, break, heal, explain.

The lab is Proconsul's own command, so its options are GNU-style (`--dir`,
`--stage`); the `proconsul` verbs it runs take Consul's flags as always.
Exit codes: 0 done, 1 a step or scenario failed (the output says which and
why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from proconsul.cli.api_client import ApiError
from proconsul.cli.keygen import new_key
from proconsul.fileio import write_private_file
from proconsul.lab import cluster, doctor, explain, netns, procs, scenarios, up
from proconsul.lab.layout import (
    ADMIN_PORT,
    CLIENTS,
    DEFAULT_FIRST_ADDRESS,
    DNS_PORT,
    GRPC_PORT,
    HTTP_PORT,
    NODES,
    SERVER_PORT,
    SERVERS,
    SERVICE_HOSTS,
    SERVICE_PORT,
    STAGES,
    Lab,
    Node,
)
from proconsul.lab.render import (
    Place,
    Security,
    agent_config,
    env_script,
    scripts,
    service_file,
    units,
)
from proconsul.lab.runner import Context, run_steps

LAB_PORTS = (HTTP_PORT, DNS_PORT, SERVER_PORT, 8301, GRPC_PORT, SERVICE_PORT)
PORTS_FREE_DEADLINE_S = 15.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proconsul lab", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    def with_dir(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text)
        sub.add_argument("--dir", default="proconsul-lab", help="lab directory (./proconsul-lab)")
        return sub

    upper = with_dir("up", "build the walkthrough's cluster, step by step")
    upper.add_argument(
        "--stage", choices=STAGES, default=None, help="stop after this stage (default: all)"
    )
    upper.add_argument("--fresh", action="store_true", help="stop and delete an existing lab first")
    upper.add_argument("--isolation", choices=("loopback", "netns"), default="loopback")
    upper.add_argument(
        "--first-address", default=DEFAULT_FIRST_ADDRESS, help="first node's 127.0.0.x"
    )
    upper.add_argument("--check-interval", default="2s", help="interval of the service checks")
    upper.add_argument(
        "--fast",
        action="store_true",
        help="lab-only fast failure detection and a 2 s ACL token cache",
    )
    steps = with_dir("steps", "list the steps and their commands")
    steps.add_argument("--stage", choices=STAGES, default="mesh")
    with_dir("status", "nodes, leader, services, sidecars, intentions, events")
    down = with_dir("down", "stop every process of the lab")
    down.add_argument("--purge", action="store_true", help="also delete the lab directory")
    export = verbs.add_parser("export", help="the same files for four real hosts")
    export.add_argument("--hosts", required=True, help="A,B,C,D: servers 1-2, clients 1-2")
    export.add_argument("--out", required=True)
    breaker = with_dir("break", "break one concept on purpose")
    breaker.add_argument("scenario", choices=list(scenarios.SCENARIOS))
    breaker.add_argument("target", nargs="*")
    with_dir("heal", "undo what `lab break` did")
    explain = with_dir("explain", "why can or can't a service reach another")
    explain.add_argument("source")
    explain.add_argument("destination")
    return parser


def _load(directory: str, out: TextIO) -> Lab | None:
    lab = Lab(Path(directory))
    if not lab.exists():
        out.write(f"No lab in {directory}: run `proconsul lab up` first\n")
        return None
    return lab.load()


# --------------------------------------------------------------------------- up


def summary(lab: Lab, out: TextIO, stage: str, spent_s: float) -> None:
    out.write(f"\nLab is up through the {stage} stage ({spent_s:.1f}s)\n\n")
    leader = scenarios.leader_node(lab)
    try:
        _, members = cluster.first_answer(lab, "/v1/agent/members")
        status = {m["Name"]: scenarios.MEMBER_STATUS.get(m.get("Status", 0), "?") for m in members}
    except ApiError:
        status = {}
    out.write(f"  {'node':16} {'address':12} {'role':7} health\n")
    for node in lab.nodes:
        health = status.get(node.name, "unknown") + (", leader" if node == leader else "")
        out.write(f"  {node.name:16} {node.address:12} {node.role:7} {health}\n")
    token = lab.secret("bootstrap")
    if token:
        out.write(
            f"\n  bootstrap token [SECRET — full access, keep it private]: {token}\n"
            f"    (in {lab.secret_path('bootstrap')}; `. {lab.scripts}/env.sh` uses it)\n"
        )
    server = lab.nodes[0]
    api_host = lab.node(SERVICE_HOSTS["api"])
    web_host = lab.node(SERVICE_HOSTS["web"])
    out.write(f"  UI: {server.http_addr}/ui/\n\nThree things to try:\n")
    out.write(f"  dig @{api_host.address} -p {DNS_PORT} api.service.consul\n")
    through = (
        "through the mesh"
        if stage == "mesh"
        else "directly (the mesh stage routes it through sidecars)"
    )
    out.write(f"  curl http://{web_host.address}:{SERVICE_PORT}    # web calls api {through}\n")
    out.write("  proconsul lab break kill-leader    # then `proconsul lab status`\n")


def lab_up(args: argparse.Namespace, out: TextIO) -> int:
    lab = Lab(Path(args.dir))
    if args.isolation == "netns" and netns.unavailable():
        out.write(f"--isolation netns: {netns.unavailable()}; the default is loopback addresses\n")
        return 1
    if args.fresh and lab.exists():
        lab.load()
        _stop_all(lab, out)
        shutil.rmtree(lab.root)
        lab = Lab(Path(args.dir))
    if lab.exists():
        lab.load()
        out.write(f"Reusing the lab in {lab.root} (use --fresh to start over)\n")
    else:
        lab.state.first_address = args.first_address
        lab.state.isolation = args.isolation
        if args.isolation == "netns":
            lab.state.netns_tag = netns.new_tag()
            lab.state.first_address = f"{netns.free_prefix()}.1"
        lab.state.check_interval = args.check_interval
        lab.state.fast = args.fast
        lab.root.mkdir(parents=True, exist_ok=True)
        lab.save()
    stage = args.stage or "mesh"
    start = time.monotonic()
    result = run_steps(Context(lab, out), up.all_steps(stage))
    if not result.ok:
        return 1
    reached = stage
    if result.missing:
        reached = "secure" if stage == "mesh" else stage
    lab.state.note(f"lab up through {reached}")
    lab.save()
    summary(lab, out, reached, time.monotonic() - start)
    if result.missing:
        out.write(f"\nThe {stage} stage stopped early: this build lacks {result.missing}.\n")
        return 1 if args.stage else 0
    return 0


def lab_steps(args: argparse.Namespace, out: TextIO) -> int:
    lab = Lab(Path(args.dir))
    if lab.exists():
        lab.load()
    steps = up.all_steps(args.stage)
    for number, step in enumerate(steps, 1):
        mark = "✓" if step.id in lab.state.done else " "
        out.write(f"{mark} {number:2d}. [{step.stage}] {step.title}\n      {step.command}\n")
    if args.stage == "mesh" and up.mesh_missing():
        out.write(f"   (not in this build yet: {', '.join(up.mesh_missing())})\n")
    return 0


# --------------------------------------------------------------------------- down


def _stop_all(lab: Lab, out: TextIO) -> None:
    # Sidecars and demo services first, then clients, then servers; each group together.
    others = [name for name in lab.state.pids if name not in NODES]
    for group in (others, CLIENTS, SERVERS):
        live = {
            name: pid
            for name in group
            if (pid := lab.state.pids.pop(name, None)) is not None and procs.is_ours(pid)
        }
        procs.stop_all(list(live.values()))
        for name, pid in live.items():
            out.write(f"stopped {name} (pid {pid})\n")
    lab.state.broken.clear()
    if lab.state.isolation == "netns":
        netns.teardown(lab.state.netns_tag, len(lab.nodes))
        out.write("removed the lab's namespaces and bridge\n")
    lab.save()


def listeners(nodes: list[Node]) -> list[str]:
    return [
        f"{node.address}:{port}"
        for node in nodes
        for port in LAB_PORTS
        if procs.listening(node.address, port, timeout_s=0.2)
    ]


def lab_down(args: argparse.Namespace, out: TextIO) -> int:
    lab = _load(args.dir, out)
    if lab is None:
        return 1
    _stop_all(lab, out)
    lab.state.note("lab down")
    lab.save()
    deadline = time.monotonic() + PORTS_FREE_DEADLINE_S
    # Under netns the namespaces are gone with their sockets; their addresses
    # are no longer this machine's, so there is nothing to probe.
    probed = lab.nodes if lab.state.isolation == "loopback" else []
    left = listeners(probed)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = listeners(probed)
    if left:
        out.write(f"still listening (not started by this lab?): {', '.join(left)}\n")
        return 1
    if args.purge:
        shutil.rmtree(lab.root)
        out.write(f"deleted {lab.root}\n")
    else:
        out.write(f"lab stopped; state kept in {lab.root} (`lab up` resumes, `--purge` deletes)\n")
    return 0


# --------------------------------------------------------------------------- export


def lab_export(args: argparse.Namespace, out: TextIO) -> int:
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if len(hosts) != len(NODES):
        out.write(
            f"--hosts needs {len(NODES)} addresses (servers 1-2, clients 1-2), got {len(hosts)}\n"
        )
        return 2
    nodes = [Node(name, host) for name, host in zip(NODES, hosts, strict=True)]
    root = Path(args.out)
    place = Place(root="/opt/consul", proconsul="/usr/local/bin/proconsul", per_node_data=False)
    security = Security(gossip_key=new_key(), tls=True, acl=True)
    for node in nodes:
        directory = root / "configs" / node.name
        directory.mkdir(parents=True, exist_ok=True)
        text = agent_config(node, nodes, place, security, mesh=True, client_addr="0.0.0.0")
        _private(directory / "consul.hcl", text)
        for name, host in SERVICE_HOSTS.items():
            if host == node.name:
                _private(
                    directory / f"{name}.hcl",
                    service_file(name, node, "10s", mesh=True, check_host="localhost"),
                )
    (root / "scripts").mkdir(parents=True, exist_ok=True)
    for name, text in {
        "env.sh": env_script(place, nodes[0], lab_bin=False),
        **scripts(nodes),
    }.items():
        path = root / "scripts" / name
        path.write_text(text)
        path.chmod(0o755)
    (root / "systemd").mkdir(parents=True, exist_ok=True)
    for name, text in units(nodes, place, mesh=True).items():
        (root / "systemd" / name).write_text(text)
    out.write(
        f"wrote configs/, scripts/ and systemd/ for {', '.join(hosts)} into {root}\n"
        "copy configs/<node>/ to /opt/consul/config on each host; the ACL tokens go in "
        "after scripts/acl_bootstrap.sh and scripts/agent_tokens.sh\n"
    )
    return 0


def _private(path: Path, text: str) -> None:
    write_private_file(path, text.encode())


# --------------------------------------------------------------------------- break/heal


def lab_break(args: argparse.Namespace, out: TextIO) -> int:
    lab = _load(args.dir, out)
    if lab is None:
        return 1
    try:
        scenarios.SCENARIOS[args.scenario](lab, out, list(args.target))
    except (scenarios.ScenarioError, ApiError) as exc:
        out.write(f"{args.scenario}: {exc}\n")
        return 1
    lab.state.note(f"break {args.scenario} {' '.join(args.target)}".strip())
    lab.save()
    return 0


def lab_explain(args: argparse.Namespace, out: TextIO) -> int:
    lab = _load(args.dir, out)
    if lab is None:
        return 1
    node = next(
        (n for n in lab.nodes if cluster.running(lab, n.name) and not _frozen(lab, n.name)),
        lab.nodes[0],
    )
    tokens = {s: t for s in (args.source, args.destination) if (t := lab.secret(s))}
    pair = (args.source, args.destination)
    hosts = {s: lab.node(SERVICE_HOSTS[s]) for s in pair if s in SERVICE_HOSTS}
    probe = explain.Probe(
        cluster.client(lab, node, stale=True),
        tokens,
        [lambda: _leader(lab), lambda: _agent_certs(lab)],
        # Where the lab started each sidecar (render.sidecar_args) and the agent it talks to.
        admin={s: f"{host.address}:{ADMIN_PORT}" for s, host in hosts.items()},
        agents={s: cluster.client(lab, host, stale=True) for s, host in hosts.items()},
    )
    found = explain.checks(probe, args.source, args.destination)
    out.write(explain.render(found) + "\n")
    return 0 if all(c.ok for c in found) else 1


def _frozen(lab: Lab, name: str) -> bool:
    pid = lab.state.pids.get(name)
    return pid is not None and procs.is_stopped(pid)


def _leader(lab: Lab) -> explain.Check:
    leader = scenarios.leader_node(lab)
    if leader is None:
        return explain.Check(
            False,
            "cluster",
            "no Raft leader: reads may be stale and no write (intention, token) can happen",
            "bring the servers back (`proconsul lab heal`); two servers tolerate no failure",
        )
    return explain.Check(True, "cluster", f"{leader.name} leads")


def _agent_certs(lab: Lab) -> explain.Check:
    now = dt.datetime.now(dt.UTC)
    for node in doctor.read_nodes(lab.root / "configs"):
        for key, not_after in node.cert_expiry.items():
            if not_after <= now:
                return explain.Check(
                    False,
                    "agent TLS",
                    f"{node.name}'s {key} expired {not_after:%F %T} UTC: its peers refuse it",
                    "issue a new certificate and restart the agent (`proconsul lab heal`)",
                )
    return explain.Check(True, "agent TLS", "every agent certificate in the configs is in date")


def run(argv: list[str], out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and 2
    if args.verb == "up":
        return lab_up(args, out)
    if args.verb == "steps":
        return lab_steps(args, out)
    if args.verb == "export":
        return lab_export(args, out)
    lab = _load(args.dir, out)
    if lab is None:
        return 1
    if args.verb == "status":
        return scenarios.status(lab, out)
    if args.verb == "down":
        return lab_down(args, out)
    if args.verb == "break":
        return lab_break(args, out)
    if args.verb == "explain":
        return lab_explain(args, out)
    return scenarios.heal(lab, out)
