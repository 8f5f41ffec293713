"""HTTP benchmark: GET /v1/health/service/api?passing with 100 instances registered.

Runs the dev agent and, as the baseline, a bare aiohttp handler returning the
same bytes, one after the other in the same run, each server pinned to CPU 0
and wrk to CPU 1. Prints requests/s, p50/p99 and the ratio (target >= 0.6).

    .venv/bin/python bench/http_health.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import (
    WrkResult,
    free_port,
    http,
    print_comparison,
    run_wrk,
    start_dev_agent,
    wait_http,
)

PATH = "/v1/health/service/api?passing"

BASELINE = """
import sys
import uvloop
from aiohttp import web

body = open(sys.argv[1], "rb").read()

async def handler(request):
    return web.Response(body=body, content_type="application/json")

app = web.Application()
app.router.add_get("/v1/health/service/api", handler)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)
"""


def register_instances(base: str, count: int) -> None:
    for n in range(count):
        http(
            "PUT",
            base + "/v1/catalog/register",
            {
                "Node": f"node-{n}",
                "Address": f"10.0.{n // 250}.{n % 250 + 1}",
                "Service": {"ID": "api", "Service": "api", "Port": 8080, "Tags": ["v1"]},
                "Check": {
                    "CheckID": "service:api",
                    "Name": "api health",
                    "Status": "passing",
                    "ServiceID": "api",
                },
            },
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--instances", type=int, default=100)
    args = parser.parse_args()

    agent, base = start_dev_agent()
    tmp = tempfile.TemporaryDirectory()
    baseline_proc: subprocess.Popen[bytes] | None = None
    try:
        register_instances(base, args.instances)
        body = http("GET", base + PATH)
        body_file = Path(tmp.name) / "body.json"
        body_file.write_bytes(body)
        script = Path(tmp.name) / "baseline.py"
        script.write_text(BASELINE)
        port = free_port()
        cmd = [sys.executable, str(script), str(body_file), str(port)]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", "0", *cmd]
        baseline_proc = subprocess.Popen(cmd)
        baseline_url = f"http://127.0.0.1:{port}{PATH}"
        wait_http(baseline_url)
        # Alternate the two so a change in machine load hits both alike.
        ours: list[WrkResult] = []
        baseline: list[WrkResult] = []
        for _ in range(args.rounds):
            ours.append(run_wrk(base + PATH, args.seconds, args.connections))
            baseline.append(run_wrk(baseline_url, args.seconds, args.connections))
    finally:
        agent.terminate()
        agent.wait()
        if baseline_proc is not None:
            baseline_proc.terminate()
            baseline_proc.wait()
        tmp.cleanup()

    print(
        f"GET {PATH}: {args.instances} instances, body {len(body)} bytes, "
        f"{args.connections} connections, {args.rounds} alternating rounds of {args.seconds}s"
    )
    print_comparison(
        "server", ("proconsul", ours), ("baseline", baseline), "proconsul/baseline", 0.6
    )


if __name__ == "__main__":
    main()
