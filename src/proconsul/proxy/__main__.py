"""`python -m proconsul.proxy`: the built-in proxy pointed straight at an xDS server.

Job: run the proxy without asking an agent's HTTP API which proxy it is
(benchmarks and labs that serve xDS themselves). Users run
`proconsul connect proxy -sidecar-for <id>` instead.

Flags: `-proxy-id` (required; the xDS node id), `-service` (node cluster,
default the proxy id), `-grpc-addr` (default 127.0.0.1:8502; `https://` for
TLS with `-ca-file`), `-token` (also CONSUL_HTTP_TOKEN), `-admin-bind`
(default 127.0.0.1:19000), `-log-level`.
"""

from __future__ import annotations

import os
import sys

from proconsul.config.flags import FlagError, FlagSet
from proconsul.proxy.ads_client import AgentTarget
from proconsul.proxy.command import ProxyOptions, run
from proconsul.structs.hostport import split_host_port


def main(argv: list[str]) -> int:
    flags = FlagSet("proxy")
    flags.string("proxy-id", "", help="The proxy's ID (xDS node id).")
    flags.string("service", "", help="The service it fronts (xDS node cluster).")
    flags.string("grpc-addr", "127.0.0.1:8502", help="The xDS server; https:// for TLS.")
    flags.string("ca-file", "", help="CA to trust for an https:// xDS server.")
    flags.string("token", "", help="ACL token. Also CONSUL_HTTP_TOKEN.")
    flags.string("admin-bind", "127.0.0.1:19000", help="host:port of the admin listener.")
    flags.string("log-level", "info", help="trace, debug, info, warn, err.")
    try:
        values, _ = flags.parse(argv)
        admin_host, admin_port = split_host_port(values["admin-bind"], 19000)
    except (FlagError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    if not values["proxy-id"]:
        print("-proxy-id is required", file=sys.stderr)
        return 1
    address = values["grpc-addr"]
    tls = address.startswith("https://")
    address = address.split("://", 1)[1] if "://" in address else address
    ca_pem = None
    if tls and values["ca-file"]:
        with open(values["ca-file"], "rb") as handle:
            ca_pem = handle.read()
    options = ProxyOptions(
        proxy_id=values["proxy-id"],
        cluster=values["service"] or values["proxy-id"],
        target=AgentTarget(address.rstrip("/"), tls=tls, ca_pem=ca_pem),
        token=values["token"] or os.environ.get("CONSUL_HTTP_TOKEN", ""),
        admin_host=admin_host or "127.0.0.1",
        admin_port=admin_port,
        log_level=values["log-level"],
    )
    return run(options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
