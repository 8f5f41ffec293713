"""`proconsul doctor <config-dir>...`: a security review of agent config files.

Job: read a config directory (one node) or a directory of node directories
(`configs/` of the lab, one subdirectory per node), and report each weakness
with the key, the file that set it (or `(not set)`), why it matters and the fix.

Rules:
- `findings(nodes, now)` is pure: it takes what was read (raw config trees with
  the file each key came from, file modes, certificate expiry dates) and the
  time, and returns findings in a stable order. `read_node` does the reading.
- Files are read with the agent's own parser (`config/sources.py`) but not
  validated: `proconsul validate` judges correctness, doctor judges security.
- Exit codes: 0 nothing found, 2 findings, 1 the directory could not be read.
- Secrets are never printed: a finding names the key holding a token, not it.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proconsul.config.errors import ConfigError
from proconsul.config.sources import read_paths

NOT_SET = "(not set)"
# A certificate expiring within this is reported: long enough to renew calmly.
CERT_WARN_DAYS = 30
# Keys whose values are secrets; a world-readable file holding one is a finding.
TOKEN_KEYS = ("acl.tokens", "acl.master_token", "acl_token", "acl_agent_token", "encrypt")


@dataclass(frozen=True)
class Finding:
    """One weakness: `code` is stable (tests and scripts match on it)."""

    code: str
    node: str
    key: str
    file: str
    why: str
    fix: str


@dataclass
class NodeConfig:
    """What doctor knows of one node: merged raw keys, where each came from, files."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    origin: dict[str, str] = field(default_factory=dict)  # dotted key -> file
    file_modes: dict[str, int] = field(default_factory=dict)  # file -> st_mode
    secret_files: dict[str, str] = field(default_factory=dict)  # file -> key it holds
    cert_expiry: dict[str, dt.datetime] = field(default_factory=dict)  # key -> not_after

    def get(self, *keys: str, unset: str = "") -> tuple[str, Any]:
        """The first of `keys` that is set, and its value; else (`unset` or keys[0], None)."""
        for key in keys:
            if key in self.values:
                return key, self.values[key]
        return unset or keys[0], None

    def where(self, key: str) -> str:
        return self.origin.get(key, NOT_SET)


# --------------------------------------------------------------------------- rules


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _node_findings(node: NodeConfig, now: dt.datetime) -> Iterator[Finding]:
    def finding(code: str, key: str, why: str, fix: str) -> Finding:
        return Finding(code, node.name, key, node.where(key), why, fix)

    server = _truthy(node.values.get("server"))
    if not node.values.get("encrypt"):
        yield finding(
            "gossip-unencrypted",
            "encrypt",
            "gossip travels in plaintext: anyone on the network can read membership "
            "and inject members",
            'generate a key with `proconsul keygen` and set encrypt = "<key>" on every agent',
        )
    else:
        for key in ("encrypt_verify_incoming", "encrypt_verify_outgoing"):
            if key in node.values and not _truthy(node.values[key]):
                yield finding(
                    "gossip-verify-off",
                    key,
                    "the agent still accepts or sends unencrypted gossip, so the key "
                    "protects nothing against an active attacker",
                    f"set {key} = true once every agent has the key",
                )
    if server:
        key, value = node.get(
            "tls.internal_rpc.verify_incoming",
            "tls.defaults.verify_incoming",
            "verify_incoming",
            unset="verify_incoming",  # the walkthrough's spelling
        )
        if not _truthy(value):
            yield finding(
                "verify-incoming-off",
                key,
                "the server accepts RPC from anyone without a certificate from your CA",
                "set verify_incoming = true with ca_file, cert_file and key_file",
            )
    key, value = node.get(
        "tls.internal_rpc.verify_server_hostname",
        "tls.defaults.verify_server_hostname",
        "verify_server_hostname",
        unset="verify_server_hostname",
    )
    if not _truthy(value):
        yield finding(
            "no-verify-server-hostname",
            key,
            "any certificate from the CA (a client's too) can pose as a server and "
            "receive its traffic",
            "set verify_server_hostname = true (server certificates name server.<dc>.consul)",
        )
    acl_key, enabled = node.get("acl.enabled", "acl_enabled")
    policy_key, policy = node.get("acl.default_policy", "acl_default_policy")
    acl_on = _truthy(enabled)
    if not acl_on:
        yield finding(
            "acl-off",
            acl_key,
            "without ACLs every request may read and change everything: services, "
            "KV, intentions and the agents themselves",
            'set acl { enabled = true  default_policy = "deny" } and run `proconsul acl bootstrap`',
        )
    elif str(policy or "allow") == "allow":
        yield finding(
            "acl-default-allow",
            policy_key,
            "a request without a token (the anonymous token) may do anything no rule denies",
            'set acl.default_policy = "deny" and give each agent and service its token',
        )
    for path, key in sorted(node.secret_files.items()):
        mode = node.file_modes.get(path, 0)
        if mode & stat.S_IROTH:
            yield Finding(
                "token-world-readable",
                node.name,
                key,
                path,
                "every local user can read the secret in this file and act with its rights",
                f"chmod 600 {path} (and chown it to the user the agent runs as)",
            )
    _, ui = node.get("ui_config.enabled", "ui")
    for key in ("addresses.http", "client_addr"):
        bound = str(node.values.get(key, ""))
        if "0.0.0.0" in bound.split() or bound == "::":
            if not acl_on or str(policy or "allow") == "allow":
                what = "the UI and the HTTP API" if _truthy(ui) else "the HTTP API"
                yield finding(
                    "http-public-without-acl",
                    key,
                    f"{what} listen on every interface with no ACL to refuse anyone",
                    f"bind {key} to 127.0.0.1 or a private address, and turn ACLs on "
                    'with default_policy = "deny"',
                )
            break
    for key, not_after in sorted(node.cert_expiry.items()):
        left = not_after - now
        if left <= dt.timedelta(days=CERT_WARN_DAYS):
            state = "has expired" if left.total_seconds() <= 0 else f"expires in {left.days} days"
            yield finding(
                "cert-near-expiry",
                key,
                f"the certificate {state} ({not_after:%Y-%m-%d %H:%M} UTC); once expired "
                "its peers refuse every TLS connection",
                "issue a new one (`proconsul tls cert create ...`) and reload the agent",
            )


def _cluster_findings(nodes: list[NodeConfig]) -> Iterator[Finding]:
    servers = [n for n in nodes if _truthy(n.values.get("server"))]
    expects = {n.name: n.values.get("bootstrap_expect") for n in servers}
    for node in nodes:
        if not _truthy(node.values.get("server")) and "bootstrap_expect" in node.values:
            yield Finding(
                "bootstrap-expect-mismatch",
                node.name,
                "bootstrap_expect",
                node.where("bootstrap_expect"),
                "bootstrap_expect only means something on a server; on a client it "
                "hints at a copied server config",
                "remove bootstrap_expect from client configs",
            )
    declared = {int(v) for v in expects.values() if v is not None}
    if len(declared) > 1:
        for node in servers:
            yield Finding(
                "bootstrap-expect-mismatch",
                node.name,
                "bootstrap_expect",
                node.where("bootstrap_expect"),
                f"servers disagree on bootstrap_expect ({', '.join(map(str, sorted(declared)))}): "
                "they may bootstrap two clusters or none",
                "set the same bootstrap_expect on every server",
            )
    elif declared and len(nodes) > 1:
        expect = declared.pop()
        if expect != len(servers):
            node = next(n for n in servers if n.values.get("bootstrap_expect") is not None)
            yield Finding(
                "bootstrap-expect-mismatch",
                node.name,
                "bootstrap_expect",
                node.where("bootstrap_expect"),
                f"bootstrap_expect = {expect} but {len(servers)} server configs are here: "
                "the cluster waits forever or elects before all servers joined",
                f"set bootstrap_expect = {len(servers)} on every server",
            )


def findings(nodes: list[NodeConfig], now: dt.datetime) -> list[Finding]:
    """Every finding for these nodes, node by node, then the cluster-wide ones."""
    out: list[Finding] = []
    for node in nodes:
        out.extend(_node_findings(node, now))
    out.extend(_cluster_findings(nodes))
    return out


# --------------------------------------------------------------------------- reading


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            if key in ("service", "services", "check", "checks", "config_entries"):
                yield dotted, value
                continue
            value = {k: v for item in value for k, v in item.items()}  # repeated blocks
        if isinstance(value, dict) and key not in ("meta", "node_meta"):
            yield dotted, value
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


def _holds_token(key: str, value: Any) -> bool:
    if key in ("service", "services"):
        items = value if isinstance(value, list) else [value]
        return any(isinstance(item, dict) and item.get("token") for item in items)
    return any(key == t or key.startswith(t + ".") for t in TOKEN_KEYS) and bool(value)


def _cert_not_after(path: Path) -> dt.datetime | None:
    from cryptography import x509  # only when a certificate is named

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc


def read_node(directory: Path) -> NodeConfig:
    """Read one node's config directory (files directly in it)."""
    node = NodeConfig(directory.name)
    sources, _ = read_paths([str(directory)])
    for source in sources:
        try:
            node.file_modes[source.name] = os.stat(source.name).st_mode
        except OSError:
            continue
        for key, value in _flatten(source.data):
            if _holds_token(key, value) and source.name not in node.secret_files:
                node.secret_files[source.name] = key if key in TOKEN_KEYS else f"{key}.token"
            if key in ("service", "services") and isinstance(value, list):
                continue
            node.values[key] = value
            node.origin[key] = source.name
    for key in ("cert_file", "ca_file", "tls.defaults.cert_file", "tls.internal_rpc.cert_file"):
        path = node.values.get(key)
        if isinstance(path, str) and path:
            not_after = _cert_not_after(Path(path))
            if not_after is not None:
                node.cert_expiry[key] = not_after
    return node


def _has_config(directory: Path) -> bool:
    return any(directory.glob("*.hcl")) or any(directory.glob("*.json"))


def read_nodes(directory: Path) -> list[NodeConfig]:
    """The node directories under `directory`, or `directory` itself as one node."""
    nodes = [read_node(d) for d in sorted(directory.iterdir()) if d.is_dir() and _has_config(d)]
    if _has_config(directory) or not nodes:
        nodes.insert(0, read_node(directory))
    return nodes


def render(found: list[Finding]) -> str:
    lines: list[str] = []
    for item in found:
        lines.append(f"✗ [{item.code}] {item.node}: {item.key} in {item.file}")
        lines.append(f"    why: {item.why}")
        lines.append(f"    fix: {item.fix}")
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "-help", "--help"):
        print(
            "Usage: proconsul doctor <config-dir>...", file=sys.stderr if not argv else sys.stdout
        )
        return 1 if not argv else 0
    found: list[Finding] = []
    nodes = 0
    for arg in argv:
        directory = Path(arg)
        if not directory.is_dir():
            print(f"Error: {arg} is not a directory", file=sys.stderr)
            return 1
        try:
            read = read_nodes(directory)
        except ConfigError as exc:
            print(f"Error reading {arg}: {exc}", file=sys.stderr)
            return 1
        nodes += len(read)
        found += findings(read, dt.datetime.now(dt.UTC))
    if not found:
        print(f"✓ no findings in {nodes} node config(s)")
        return 0
    print(render(found))
    print(f"\n{len(found)} finding(s) in {nodes} node config(s)")
    return 2
