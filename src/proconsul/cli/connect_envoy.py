"""`proconsul connect envoy`: bootstrap (and run) Envoy as a service's sidecar.

Job: find the proxy (`-proxy-id`, or the connect-proxy registered on the
local agent for `-sidecar-for <service id>`), work out where the agent's xDS
server listens, and build Envoy's bootstrap (xds/bootstrap.py). With
`-bootstrap` print it; otherwise exec `envoy` with it.

Rules (Consul's):
- `-sidecar-for` looks through `/v1/agent/services` for connect-proxies whose
  `Proxy.DestinationServiceID` is that ID (case-insensitive): none is
  `No sidecar proxy registered for <id>`, several list their IDs and ask
  for `-proxy-id`. `CONNECT_PROXY_ID` / `CONNECT_SIDECAR_FOR` stand in for
  the flags.
- The gRPC address: `-grpc-addr`, else `CONSUL_GRPC_ADDR`, else the agent's
  own xDS port (`/v1/agent/self`), else 127.0.0.1:8502. `https://` (or only
  a TLS port on the agent) means TLS, trusting `-ca-file`.
- `-admin-bind` (default localhost:19000) is resolved to an IP.
- The bootstrap carries the ACL token: Envoy gets it through a memory file
  (or a 0600 temporary file where there is none), never on its command
  line. Arguments after `--` go to Envoy.
- No `envoy` on PATH: one line saying so, then the built-in proxy
  (`proconsul connect proxy`, cli/connect_proxy.py) runs in its place with
  the same proxy, token, gRPC address and admin bind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proconsul.cli.api_client import (
    ApiClient,
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    command,
    parse_args,
    quote_path,
)
from proconsul.config.flags import FlagSet
from proconsul.structs.hostport import split_host_port
from proconsul.xds.bootstrap import AgentAddress, BootstrapArgs, bootstrap_config

DEFAULT_GRPC_ADDR = "127.0.0.1:8502"
DEFAULT_ADMIN_BIND = "localhost:19000"
CONNECT_PROXY = "connect-proxy"
NO_ENVOY = "No envoy binary on PATH: running the built-in sidecar proxy (proconsul connect proxy)"


def add_proxy_flags(flags: FlagSet) -> None:
    """The flags that name the proxy and the agent's xDS address (`find_proxy`)."""
    flags.string("proxy-id", None, "The proxy's service ID on the local agent.")
    flags.string("sidecar-for", None, "The ID of the service this proxy is the sidecar of.")
    flags.string(
        "grpc-addr",
        None,
        "The agent's gRPC (xDS) address; https:// for TLS. Also CONSUL_GRPC_ADDR.",
    )


@command
def run(argv: list[str]) -> int:
    flags = FlagSet("connect envoy")
    add_api_flags(flags)
    add_proxy_flags(flags)
    flags.string("admin-bind", DEFAULT_ADMIN_BIND, "host:port of Envoy's admin listener.")
    flags.string("admin-access-log-path", "/dev/null", "Where Envoy logs admin requests.")
    flags.boolean("bootstrap", False, "Print the bootstrap JSON instead of running Envoy.")
    values, envoy_args = parse_args(flags, argv, max_args=sys.maxsize)
    client = client_from(values)
    found = find_proxy(values, client)
    args = BootstrapArgs(
        proxy_id=found.proxy_id,
        cluster=found.cluster,
        agent=found.agent,
        token=client.config.token or "",
        admin_host=_resolve_host(values["admin-bind"]),
        admin_port=_port_of(values["admin-bind"]),
        admin_access_log_path=values["admin-access-log-path"],
        datacenter=found.datacenter,
    )
    text = json.dumps(bootstrap_config(args), indent=2) + "\n"
    if values["bootstrap"]:
        sys.stdout.write(text)
        return 0
    if shutil.which("envoy") is None:
        return run_builtin(found, client.config.token or "", values)
    return exec_envoy(text, envoy_args)


@dataclass(frozen=True)
class FoundProxy:
    """The proxy a `connect envoy`/`connect proxy` run is for, and where its xDS is."""

    proxy_id: str
    cluster: str  # the destination service (Envoy's node.cluster)
    agent: AgentAddress
    datacenter: str


def find_proxy(values: Mapping[str, Any], client: ApiClient) -> FoundProxy:
    """`-proxy-id`, or the sidecar of `-sidecar-for`, and the agent's gRPC address."""
    proxy_id = values["proxy-id"] or os.environ.get("CONNECT_PROXY_ID", "")
    sidecar_for = values["sidecar-for"] or os.environ.get("CONNECT_SIDECAR_FOR", "")
    if not proxy_id and sidecar_for:
        proxy_id = lookup_sidecar(client, sidecar_for)
    if not proxy_id:
        raise CliError("No proxy ID specified. One of -proxy-id or -sidecar-for is required")
    service = _proxy_service(client, proxy_id)
    self_info = _agent_self(client)
    proxy = service.get("Proxy") or {}
    return FoundProxy(
        proxy_id=proxy_id,
        cluster=str(proxy.get("DestinationServiceName") or service.get("Service") or proxy_id),
        agent=grpc_address(values, os.environ, client, self_info),
        datacenter=str((self_info.get("Config") or {}).get("Datacenter", "")),
    )


def run_builtin(found: FoundProxy, token: str, values: Mapping[str, Any]) -> int:
    """No Envoy here: say so in one line and run the built-in proxy instead."""
    print(NO_ENVOY, file=sys.stderr, flush=True)
    return run_proxy(found, token, values)


def run_proxy(found: FoundProxy, token: str, values: Mapping[str, Any]) -> int:
    """Run the built-in proxy for `found` until a stop signal (its modules load only here)."""
    from proconsul.proxy.ads_client import AgentTarget
    from proconsul.proxy.command import ProxyOptions
    from proconsul.proxy.command import run as run_command

    agent = found.agent
    if agent.unix:
        address = f"unix:{agent.host}"
    else:
        host = f"[{agent.host}]" if ":" in agent.host else agent.host
        address = f"{host}:{agent.port}"
    ca_pem = None
    if agent.tls and agent.ca_file:
        try:
            with open(agent.ca_file, "rb") as handle:
                ca_pem = handle.read()
        except OSError as err:
            raise CliError(f"Failed to read the CA file {agent.ca_file}: {err}") from None
    options = ProxyOptions(
        proxy_id=found.proxy_id,
        cluster=found.cluster,
        target=AgentTarget(address, tls=agent.tls, ca_pem=ca_pem),
        token=token,
        admin_host=_resolve_host(values["admin-bind"]),
        admin_port=_port_of(values["admin-bind"]),
        log_level=str(values.get("log-level") or "info"),
    )
    return run_command(options)


def lookup_sidecar(client: ApiClient, sidecar_for: str) -> str:
    """The ID of the one connect-proxy registered here for service `sidecar_for`."""
    try:
        services = client.get_json("/v1/agent/services") or {}
    except ApiError as err:
        raise CliError(f"Failed looking up sidecar proxy info for {sidecar_for}: {err}") from None
    found = sorted(
        str(svc.get("ID", ""))
        for svc in services.values()
        if svc.get("Kind") == CONNECT_PROXY
        and str((svc.get("Proxy") or {}).get("DestinationServiceID", "")).lower()
        == sidecar_for.lower()
    )
    if not found:
        raise CliError(f"No sidecar proxy registered for {sidecar_for}")
    if len(found) > 1:
        raise CliError(
            f"More than one sidecar proxy registered for {sidecar_for}.\n"
            f"    Start proxy with -proxy-id and one of the following IDs: {', '.join(found)}"
        )
    return found[0]


def _proxy_service(client: ApiClient, proxy_id: str) -> dict[str, Any]:
    try:
        service = client.get_json(f"/v1/agent/service/{quote_path(proxy_id)}")
    except ApiError as err:
        raise CliError(f"Failed to look up proxy service {proxy_id}: {err}") from None
    if not isinstance(service, dict):
        raise CliError(f"Failed to look up proxy service {proxy_id}: unexpected answer")
    return service


def _agent_self(client: ApiClient) -> dict[str, Any]:
    try:
        info = client.get_json("/v1/agent/self")
    except ApiError as err:
        if err.status == 403:
            return {}  # a proxy token need not read the agent: use the defaults
        raise CliError(f"Error connecting to Consul agent: {err}") from None
    return info if isinstance(info, dict) else {}


def grpc_address(
    values: Mapping[str, Any],
    env: Mapping[str, str],
    client: ApiClient,
    self_info: Mapping[str, Any],
) -> AgentAddress:
    ca_file = client.config.ca_file or ""
    text = values.get("grpc-addr") or env.get("CONSUL_GRPC_ADDR", "")
    if not text:
        ports = (self_info.get("xDS") or {}).get("Ports") or {}
        host = client.config.endpoint.host if client.config.endpoint.scheme != "unix" else ""
        host = host or "127.0.0.1"
        plain, tls = int(ports.get("Plaintext") or -1), int(ports.get("TLS") or -1)
        if plain > 0:
            return AgentAddress(host, plain)
        if tls > 0:
            return AgentAddress(host, tls, tls=True, ca_file=ca_file)
        text = DEFAULT_GRPC_ADDR
    if text.startswith("unix://"):
        return AgentAddress(text[len("unix://") :], 0, unix=True)
    use_tls = text.startswith("https://")
    rest = text.split("://", 1)[1] if "://" in text else text
    try:
        host, port = split_host_port(rest.rstrip("/"), 8502)
    except ValueError:
        raise CliError(f"Invalid Consul gRPC address: {text}") from None
    return AgentAddress(host or "127.0.0.1", port, tls=use_tls, ca_file=ca_file)


def _port_of(hostport: str) -> int:
    try:
        return split_host_port(hostport, 19000)[1]
    except ValueError:
        raise CliError(f"Failed to parse -admin-bind {hostport!r}: invalid address") from None


def _resolve_host(hostport: str) -> str:
    """The admin bind host as an IP, as Go's ResolveTCPAddr gives it."""
    try:
        host = split_host_port(hostport, 19000)[0] or "0.0.0.0"
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        # Go prefers an IPv4 address for a name that has both (localhost).
        found.sort(key=lambda info: info[0] != socket.AF_INET)
        return str(found[0][4][0])
    except (ValueError, OSError) as err:
        raise CliError(f"Failed to resolve -admin-bind {hostport!r}: {err}") from None


def exec_envoy(bootstrap: str, envoy_args: list[str]) -> int:
    """Replace this process with Envoy, its bootstrap in a file only it can read."""
    binary = shutil.which("envoy")
    if binary is None:
        raise CliError("envoy is not on PATH")
    fd = _bootstrap_fd(bootstrap)
    os.execv(binary, [binary, "--config-path", f"/dev/fd/{fd}", *envoy_args])
    return 1  # not reached


def _bootstrap_fd(bootstrap: str) -> int:
    data = bootstrap.encode()
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = int(memfd_create("envoy-bootstrap", 0))  # no CLOEXEC: Envoy inherits it
    else:
        fd, path = tempfile.mkstemp(prefix="envoy-bootstrap-", suffix=".json")  # 0600
        os.unlink(path)
        os.set_inheritable(fd, True)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
