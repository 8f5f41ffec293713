"""Where a lab lives and what it remembers: nodes, paths, and `lab.json`.

Rules:
- The four nodes are the walkthrough's, in its order: two servers, two
  clients. Each gets its own address (127.0.0.x on loopback, consecutive from
  `first_address`) and Consul's default ports, so every address looks like a
  separate machine.
- Everything of a lab is under its directory: configs, scripts, units, certs,
  data, logs, PIDs and `secrets/` (0700, files 0600). Nothing is written
  outside it.
- `lab.json` holds what a re-run needs (settings, the steps done, PIDs, the
  scenarios in force, recent events); secrets stay in `secrets/`, never in it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from proconsul.fileio import write_file_atomic, write_private_file

DATACENTER = "us-west-1"
SERVERS = ("consul-server-1", "consul-server-2")
CLIENTS = ("consul-client-1", "consul-client-2")
NODES = SERVERS + CLIENTS
# The demo services and the client each runs on, as in the walkthrough.
SERVICE_HOSTS = {"api": "consul-client-1", "web": "consul-client-2"}
SERVICE_PORT = 8080
SIDECAR_PORT = 20000
ADMIN_PORT = 19000  # each sidecar's admin (/ready, /stats) on its node's address
UPSTREAM_PORT = 8081  # web's local bind port for api, as in the walkthrough
HTTP_PORT = 8500
DNS_PORT = 8600
GRPC_PORT = 8502
SERVER_PORT = 8300
STAGES = ("discovery", "secure", "mesh")
DEFAULT_FIRST_ADDRESS = "127.0.0.11"
MAX_EVENTS = 20


@dataclass(frozen=True)
class Node:
    name: str
    address: str

    @property
    def server(self) -> bool:
        return self.name in SERVERS

    @property
    def role(self) -> str:
        return "server" if self.server else "client"

    @property
    def http_addr(self) -> str:
        return f"http://{self.address}:{HTTP_PORT}"


def nodes_from(first_address: str) -> list[Node]:
    """The four nodes on consecutive addresses starting at `first_address`."""
    first = ipaddress.IPv4Address(first_address)
    return [Node(name, str(first + i)) for i, name in enumerate(NODES)]


@dataclass
class LabState:
    """What `lab.json` records; see the module rules."""

    first_address: str = DEFAULT_FIRST_ADDRESS
    isolation: str = "loopback"
    netns_tag: str = ""  # names the namespaces and bridge under --isolation netns
    check_interval: str = "2s"
    fast: bool = False  # lab-only gossip profile: failures seen in about a second
    done: list[str] = field(default_factory=list)  # step ids, in order
    pids: dict[str, int] = field(default_factory=dict)  # node or service name -> PID
    broken: dict[str, str] = field(default_factory=dict)  # scenario -> its target
    killed_term: int = 0  # the Raft term when kill-leader struck (heal shows the next)
    events: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.events = [*self.events, f"{stamp} {text}"][-MAX_EVENTS:]


class Lab:
    """A lab directory: its paths and its state."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.state = LabState()

    # ---- paths
    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def nodes(self) -> list[Node]:
        return nodes_from(self.state.first_address)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def config_dir(self, node: str) -> Path:
        return self.root / "configs" / node

    def data_dir(self, node: str) -> Path:
        return self.root / "data" / node

    def log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def step_output(self, step_id: str) -> Path:
        return self.root / "logs" / "steps" / f"{step_id}.out"

    @property
    def scripts(self) -> Path:
        return self.root / "scripts"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    # ---- state
    def exists(self) -> bool:
        return self.state_file.exists()

    def load(self) -> Lab:
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        known = LabState.__dataclass_fields__
        self.state = LabState(**{k: v for k, v in data.items() if k in known})
        return self

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(self.state), indent=2) + "\n"
        write_file_atomic(self.state_file, text.encode())

    # ---- secrets
    def secret(self, name: str) -> str | None:
        try:
            return (self.secrets / f"{name}.token").read_text().strip() or None
        except OSError:
            return None

    def secret_path(self, name: str) -> Path:
        return self.secrets / f"{name}.token"

    def set_secret(self, name: str, value: str) -> None:
        self.secrets.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets, 0o700)
        write_private_file(self.secret_path(name), value.encode() + b"\n")
