"""The cost of ACLs on the hottest read: GET /v1/health/service/api?passing.

Two dev agents with the same 100 `api` instances: one with ACLs disabled (the
baseline) and one with `default_policy = "deny"` asked with a token whose
50-rule policy allows the read (48 rules for other services, a prefix rule
for `api` and `node_prefix ""` read). wrk runs against both in alternating
rounds, each agent pinned to CPU 0 and wrk to CPU 1. Prints requests/s,
p50/p99 and the ratio (target >= 0.8).

    .venv/bin/python bench/acl_http.py [--seconds 5] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import urllib.request
import uuid
from typing import Any

from _harness import WrkResult, free_port, print_comparison, run_wrk, wait_http

PATH = "/v1/health/service/api?passing"
RULE_COUNT = 50


def start_agent(*hcl: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "proconsul", "agent", "-dev", "-http-port", str(port)]
    cmd += ["-dns-port", "-1", "-grpc-port", "-1", "-log-level", "warn"]
    cmd += ["-serf-lan-port", str(free_port())]  # two agents at once: own gossip ports
    for fragment in hcl:
        cmd += ["-hcl", fragment]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/v1/status/leader")
    return proc, base


def call(method: str, url: str, body: Any = None, token: str = "") -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-Consul-Token": token} if token else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return bytes(resp.read())


def register_instances(base: str, count: int, token: str = "") -> None:
    for n in range(count):
        registration = {
            "Node": f"node-{n}",
            "Address": f"10.0.{n // 250}.{n % 250 + 1}",
            "Service": {"ID": "api", "Service": "api", "Port": 8080, "Tags": ["v1"]},
            "Check": {
                "CheckID": "service:api",
                "Name": "api health",
                "Status": "passing",
                "ServiceID": "api",
            },
        }
        call("PUT", base + "/v1/catalog/register", registration, token)


def reader_token(base: str, management: str) -> str:
    """A token whose policy has RULE_COUNT rules, of which two allow the read."""
    rules = [f'service "other-{n}" {{ policy = "read" }}' for n in range(RULE_COUNT - 2)]
    rules += ['service_prefix "ap" { policy = "read" }', 'node_prefix "" { policy = "read" }']
    policy = {"Name": "bench-reader", "Rules": "\n".join(rules)}
    call("PUT", base + "/v1/acl/policy", policy, management)
    token = json.loads(
        call("PUT", base + "/v1/acl/token", {"Policies": [{"Name": "bench-reader"}]}, management)
    )
    return str(token["SecretID"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--instances", type=int, default=100)
    args = parser.parse_args()

    management = str(uuid.uuid4())
    acl_hcl = (
        f'acl {{ enabled = true default_policy = "deny" '
        f'tokens {{ initial_management = "{management}" }} }}'
    )
    plain, plain_base = start_agent()
    secured, secured_base = start_agent(acl_hcl)
    try:
        register_instances(plain_base, args.instances)
        register_instances(secured_base, args.instances, management)
        secret = reader_token(secured_base, management)
        body_plain = call("GET", plain_base + PATH)
        body_secured = call("GET", secured_base + PATH, token=secret)
        if len(json.loads(body_secured)) != args.instances:
            raise SystemExit("the reader token does not see every instance")
        if len(json.loads(call("GET", secured_base + PATH))) != 0:
            raise SystemExit("the anonymous token sees instances under default deny")
        # ?token= keeps wrk's request line simple; the agent reads it like the header.
        secured_url = f"{secured_base}{PATH}&token={secret}"
        ours: list[WrkResult] = []
        baseline: list[WrkResult] = []
        for _ in range(args.rounds):
            ours.append(run_wrk(secured_url, args.seconds, args.connections))
            baseline.append(run_wrk(plain_base + PATH, args.seconds, args.connections))
    finally:
        for proc in (plain, secured):
            proc.terminate()
            proc.wait()

    print(
        f"GET {PATH}: {args.instances} instances, body {len(body_plain)} bytes "
        f"({len(body_secured)} with ACLs: the raft indexes differ), "
        f"{args.connections} connections, {args.rounds} alternating rounds of {args.seconds}s"
    )
    print_comparison(
        "agent",
        ("ACLs, 50-rule token", ours),
        ("ACLs disabled", baseline),
        "ACLs/disabled",
        0.8,
    )


if __name__ == "__main__":
    main()
