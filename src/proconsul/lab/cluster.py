"""The lab's view of its running cluster: HTTP calls, processes, configs on disk.

Rules:
- Every HTTP call has a short timeout (a frozen node must not hang `lab
  status`), and goes to a node's own address, with the bootstrap token once
  there is one.
- Configs are rewritten whole from what the lab has reached (`security`),
  never patched, and written 0600 since they hold the gossip key and tokens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from proconsul.cli.api_client import ApiClient, ApiError, ClientConfig, parse_address
from proconsul.fileio import write_private_file
from proconsul.lab import netns, procs
from proconsul.lab.layout import SERVICE_HOSTS, Lab, Node
from proconsul.lab.render import (
    Place,
    Security,
    agent_config,
    demo_environment,
    service_file,
    sidecar_args,
)
from proconsul.lab.runner import StepFailed

HTTP_TIMEOUT_S = 3.0
# Marks in `lab.json`'s done list that change what the configs hold (see
# `security`); set by the step that writes the configs, before it writes.
TLS_STEP = "secure.tls"
ACL_CONFIG_STEP = "mark.acl-in-configs"
TOKENS_IN_CONFIG_STEP = "mark.tokens-in-configs"
MESH_CONFIG_STEP = "mark.mesh-in-configs"
# Once the sidecars run, web calls api through its upstream (127.0.0.1:8081).
SIDECARS_STEP = "mesh.sidecars"


def web_via_mesh(lab: Lab) -> bool:
    return SIDECARS_STEP in lab.state.done


def client(lab: Lab, node: Node, *, token: str | None = None, stale: bool = False) -> ApiClient:
    """`stale` lets any server answer reads, so they work (and do not wait) without a leader."""
    return ApiClient(
        ClientConfig(
            endpoint=parse_address(node.http_addr),
            token=token if token is not None else lab.secret("bootstrap"),
            stale=stale,
            timeout_s=HTTP_TIMEOUT_S,
        )
    )


def get(lab: Lab, node: Node, path: str) -> Any:
    return client(lab, node).get_json(path)


def first_answer(lab: Lab, path: str, nodes: list[Node] | None = None) -> tuple[Node, Any]:
    """The first node (servers first) that answers `path`."""
    errors = []
    for node in nodes or lab.nodes:
        pid = lab.state.pids.get(node.name)
        if pid is not None and procs.is_stopped(pid):
            continue  # frozen on purpose: asking it would only time out
        try:
            return node, get(lab, node, path)
        except ApiError as exc:
            errors.append(f"{node.name}: {exc}")
    raise ApiError("no node answered " + path + ("; " + "; ".join(errors) if errors else ""))


def lab_place(lab: Lab) -> Place:
    return Place(root=str(lab.root), proconsul=str(lab.bin / "proconsul"), per_node_data=True)


def mark(lab: Lab, name: str) -> None:
    if name not in lab.state.done:
        lab.state.done.append(name)
    lab.save()


def security(lab: Lab, node: Node) -> Security:
    done = lab.state.done
    if ACL_CONFIG_STEP not in done:
        return Security()
    return Security(
        gossip_key=lab.secret("gossip") or "",
        tls=TLS_STEP in done,
        acl=True,
        agent_token=(lab.secret(node.name) or "") if TOKENS_IN_CONFIG_STEP in done else "",
    )


def write_configs(lab: Lab) -> None:
    mesh = MESH_CONFIG_STEP in lab.state.done
    for node in lab.nodes:
        directory = lab.config_dir(node.name)
        directory.mkdir(parents=True, exist_ok=True)
        lab.data_dir(node.name).mkdir(parents=True, exist_ok=True)
        text = agent_config(
            node,
            lab.nodes,
            lab_place(lab),
            security(lab, node),
            mesh=mesh,
            fast=lab.state.fast,
            # Agents start together: one that missed the servers retries soon, not in 30 s.
            retry_interval="2s",
        )
        write_private_file(directory / "consul.hcl", text.encode())


def write_service_files(lab: Lab, *, mesh: bool) -> None:
    for name, host in SERVICE_HOSTS.items():
        node = lab.node(host)
        text = service_file(
            name,
            node,
            lab.state.check_interval,
            token=lab.secret(name) or "",
            mesh=mesh,
            sidecar_address=node.address,
        )
        write_private_file(lab.config_dir(host) / f"{name}.hcl", text.encode())


def agent_argv(lab: Lab, node: str) -> list[str]:
    return procs.proconsul_argv("agent", f"-config-dir={lab.config_dir(node)}")


def on_node(lab: Lab, node: str, argv: list[str]) -> list[str]:
    """`argv` as run on `node`: inside its namespace under --isolation netns."""
    if lab.state.isolation != "netns":
        return argv
    index = [n.name for n in lab.nodes].index(node)
    return [*netns.exec_prefix(lab.state.netns_tag, index), *argv]


def running(lab: Lab, name: str) -> bool:
    pid = lab.state.pids.get(name)
    return pid is not None and procs.is_ours(pid)


def start_agent(lab: Lab, node: str) -> None:
    if running(lab, node):
        return
    lab.state.pids[node] = procs.start(
        on_node(lab, node, agent_argv(lab, node)), lab.log_file(node)
    )
    lab.save()


def stop_process(lab: Lab, *names: str) -> None:
    """Stop these processes together (their shutdowns overlap) and forget their PIDs."""
    pids = [pid for name in names if (pid := lab.state.pids.pop(name, None)) is not None]
    procs.stop_all(pids)
    lab.save()


def upstream_host(lab: Lab) -> str:
    """Where web's sidecar binds its api upstream in a lab: web's node address."""
    return lab.node(SERVICE_HOSTS["web"]).address


def start_demo(lab: Lab, name: str, *, mesh: bool) -> None:
    if running(lab, name):
        return
    env = demo_environment(name, lab.nodes, mesh=mesh, upstream_host=upstream_host(lab))
    argv = on_node(lab, SERVICE_HOSTS[name], procs.proconsul_argv("demo", "service"))
    lab.state.pids[name] = procs.start(argv, lab.log_file(name), env)
    lab.save()


def sidecar_command(name: str, lab: Lab) -> list[str]:
    """`connect envoy -sidecar-for` as the walkthrough runs it when Envoy is installed,
    else the built-in proxy with the same flags."""
    host = lab.node(SERVICE_HOSTS[name])
    args = sidecar_args(name, host, str(lab.secret_path(name)))
    if shutil.which("envoy") is None:
        args = ["connect", "proxy", *args[2:]]
    return procs.proconsul_argv(*args)


def start_sidecar(lab: Lab, name: str) -> None:
    key = f"{name}-sidecar"
    if running(lab, key):
        return
    argv = on_node(lab, SERVICE_HOSTS[name], sidecar_command(name, lab))
    lab.state.pids[key] = procs.start(argv, lab.log_file(key))
    lab.save()


def script_env(lab: Lab) -> dict[str, str]:
    return {**os.environ, "PATH": f"{lab.bin}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_script(lab: Lab, name: str, step_id: str) -> str:
    """Run `scripts/<name>`; keep its output (it may hold secrets) in a 0600 file."""
    done = subprocess.run(
        ["sh", str(lab.scripts / name)],
        capture_output=True,
        text=True,
        env=script_env(lab),
        timeout=120,
        cwd=lab.root,
    )
    output = done.stdout + done.stderr
    path = lab.step_output(step_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(path, output.encode())
    if done.returncode != 0:
        raise StepFailed(f"scripts/{name} exited with {done.returncode}", output)
    return done.stdout


def secret_ids(output: str) -> dict[str, str]:
    """Description -> SecretID for every token block the CLI printed."""
    found: dict[str, str] = {}
    secret = ""
    for line in output.splitlines():
        if line.startswith("SecretID:"):
            secret = line.split(":", 1)[1].strip()
        elif line.startswith("Description:") and secret:
            found[line.split(":", 1)[1].strip()] = secret
            secret = ""
    return found
