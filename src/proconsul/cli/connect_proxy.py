"""`proconsul connect proxy`: run the built-in sidecar proxy for a service.

Job: find the proxy exactly as `connect envoy` does (`find_proxy` in
cli/connect_envoy.py: `-proxy-id`, or the sidecar registered for
`-sidecar-for`; the gRPC address from `-grpc-addr`, `CONSUL_GRPC_ADDR` or
the agent), then run the proxy (proxy/command.py) until SIGINT/SIGTERM.

Rules (Consul's flags for it): `-sidecar-for`, `-proxy-id`, `-token`,
`-token-file`, `-http-addr`, `-grpc-addr`, `-log-level` (default info),
`-admin-bind` (default 127.0.0.1:19000). The token reaches the agent as gRPC
metadata only. A bad flag, an unknown sidecar or an admin port in use: one
line, exit 1. The agent being down is not an error: the proxy keeps retrying.
"""

from __future__ import annotations

from proconsul.cli.api_client import add_api_flags, client_from, command, parse_args
from proconsul.cli.connect_envoy import add_proxy_flags, find_proxy, run_proxy
from proconsul.config.flags import FlagSet

DEFAULT_ADMIN_BIND = "127.0.0.1:19000"


@command
def run(argv: list[str]) -> int:
    flags = FlagSet("connect proxy")
    add_api_flags(flags)
    add_proxy_flags(flags)
    flags.string("admin-bind", DEFAULT_ADMIN_BIND, "host:port of the proxy's admin listener.")
    flags.string("log-level", "info", "Log level: trace, debug, info, warn, err.")
    values, _ = parse_args(flags, argv, max_args=0)
    client = client_from(values)
    found = find_proxy(values, client)
    return run_proxy(found, client.config.token or "", values)
