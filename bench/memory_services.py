"""Memory benchmark: agent RSS with 1,000 services, each with one check.

The baseline is the same agent's RSS when idle, measured in the same run, so
the figure shows what the services cost. TTL checks are used so no probe
traffic disturbs the measurement.

    .venv/bin/python bench/memory_services.py [--services 1000]
"""

from __future__ import annotations

import argparse
import time

from _harness import http, rss_mb, start_dev_agent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    args = parser.parse_args()
    agent, base = start_dev_agent(cpu=None)
    try:
        time.sleep(1.0)  # let start-up allocations settle before the baseline reading
        idle = rss_mb(agent.pid)
        for n in range(args.services):
            http(
                "PUT",
                base + "/v1/agent/service/register",
                {
                    "Name": f"svc-{n}",
                    "Port": 8000 + n % 1000,
                    "Tags": ["bench"],
                    "Check": {"CheckID": f"check-{n}", "TTL": "10m", "Status": "passing"},
                },
            )
        services = http("GET", base + "/v1/catalog/services")
        assert services.count(b"svc-") == args.services
        loaded = rss_mb(agent.pid)
    finally:
        agent.terminate()
        agent.wait()
    print(f"idle agent RSS:              {idle:8.1f} MB")
    print(f"with {args.services} services+checks: {loaded:8.1f} MB")
    print(f"cost per service:            {(loaded - idle) * 1024 / args.services:8.1f} KB")
    print(f"ratio loaded/idle:           {loaded / idle:8.2f}")


if __name__ == "__main__":
    main()
