"""The Envoy bootstrap `proconsul connect envoy` writes, in Consul's shape.

Job: `bootstrap_config` turns a proxy's identity and the agent's gRPC
address into the bootstrap JSON (as a dict) Envoy starts from: its admin
listener, its node (the proxy ID is what the xDS server looks up), the
static `local_agent` cluster pointing at the agent's gRPC port, and ADS
over that cluster for everything else.

Rules (Consul 1.16's bootstrap):
- `node.id` is the proxy's service ID, `node.cluster` the service it fronts.
- `local_agent`: STATIC, HTTP/2, 1s connect timeout; TLS to the agent when
  the gRPC address is https (`-ca-file` is the CA to trust); a unix socket
  address is a pipe.
- ADS is DELTA_GRPC, transport V3, with the token as `x-consul-token`
  initial metadata; listeners and clusters come from it.
- The result holds the ACL token: whoever writes it to disk writes 0600.
- Stdlib only: the CLI imports this without the protobuf modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOCAL_AGENT_CLUSTER = "local_agent"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
FILE_ACCESS_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@dataclass(frozen=True)
class AgentAddress:
    """Where Envoy reaches the agent's xDS server."""

    host: str = "127.0.0.1"  # an IP, or the socket path when `unix`
    port: int = 8502
    tls: bool = False
    unix: bool = False
    ca_file: str = ""


@dataclass(frozen=True)
class BootstrapArgs:
    proxy_id: str
    cluster: str  # the destination service (or the proxy's own name)
    agent: AgentAddress
    token: str = ""
    admin_host: str = "127.0.0.1"
    admin_port: int = 19000
    admin_access_log_path: str = "/dev/null"
    datacenter: str = ""

    def __repr__(self) -> str:
        return f"BootstrapArgs(proxy_id={self.proxy_id!r}, token=<redacted>)"


def _ads() -> dict[str, Any]:
    return {"ads": {}, "resource_api_version": "V3"}


def _agent_address(agent: AgentAddress) -> dict[str, Any]:
    if agent.unix:
        return {"pipe": {"path": agent.host}}
    return {"socket_address": {"address": agent.host, "port_value": agent.port}}


def local_agent_cluster(agent: AgentAddress) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": LOCAL_AGENT_CLUSTER,
        "ignore_health_on_host_removal": False,
        "connect_timeout": "1s",
        "type": "STATIC",
        "typed_extension_protocol_options": {
            HTTP_OPTIONS_KEY: {
                "@type": f"type.googleapis.com/{HTTP_OPTIONS_KEY}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": LOCAL_AGENT_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _agent_address(agent)}}]}],
        },
    }
    if agent.tls:
        validation: dict[str, Any] = {}
        if agent.ca_file:
            validation["trusted_ca"] = {"filename": agent.ca_file}
        cluster["transport_socket"] = {
            "name": "tls",
            "typed_config": {
                "@type": UPSTREAM_TLS,
                "common_tls_context": {"validation_context": validation},
            },
        }
    return cluster


def _stats_tags(args: BootstrapArgs) -> list[dict[str, str]]:
    fixed = {
        "local_cluster": args.cluster,
        "consul.source.service": args.cluster,
        "consul.source.namespace": "default",
        "consul.source.partition": "default",
    }
    if args.datacenter:
        fixed["consul.source.datacenter"] = args.datacenter
    return [{"tag_name": name, "fixed_value": value} for name, value in fixed.items()]


def bootstrap_config(args: BootstrapArgs) -> dict[str, Any]:
    return {
        "admin": {
            "access_log": [
                {
                    "name": "Consul Listener Filter Log",
                    "typed_config": {"@type": FILE_ACCESS_LOG, "path": args.admin_access_log_path},
                }
            ],
            "address": {
                "socket_address": {"address": args.admin_host, "port_value": args.admin_port}
            },
        },
        "node": {
            "cluster": args.cluster,
            "id": args.proxy_id,
            "metadata": {"namespace": "default", "partition": "default"},
        },
        "layered_runtime": {
            "layers": [
                {"name": "base", "static_layer": {"re2.max_program_size.error_level": 1048576}}
            ]
        },
        "static_resources": {"clusters": [local_agent_cluster(args.agent)]},
        "stats_config": {"stats_tags": _stats_tags(args), "use_all_default_tags": True},
        "dynamic_resources": {
            "lds_config": _ads(),
            "cds_config": _ads(),
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "grpc_services": [
                    {
                        "initial_metadata": [{"key": "x-consul-token", "value": args.token}],
                        "envoy_grpc": {"cluster_name": LOCAL_AGENT_CLUSTER},
                    }
                ],
            },
        },
    }
