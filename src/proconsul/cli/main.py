"""The `proconsul` command: finds the verb and hands it the rest of argv.

Verbs live in their own modules and are imported only when used, so
`proconsul kv get` does not pay for importing the agent. Each entry point is
`run(argv: list[str]) -> int` (the exit code).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# verb words -> "module:function". Longest match wins.
VERBS: dict[tuple[str, ...], str] = {
    ("agent",): "proconsul.agent.command:run",
    ("version",): "proconsul.cli.version:run",
    ("validate",): "proconsul.config.validate_command:run",
    ("reload",): "proconsul.cli.agent_verbs:reload",
    ("leave",): "proconsul.cli.agent_verbs:leave",
    ("members",): "proconsul.cli.agent_verbs:members",
    ("rtt",): "proconsul.cli.rtt:run",
    ("join",): "proconsul.cli.gossip_verbs:join",
    ("force-leave",): "proconsul.cli.gossip_verbs:force_leave",
    ("event",): "proconsul.cli.gossip_verbs:event",
    ("keyring",): "proconsul.cli.keyring:run",
    ("services", "register"): "proconsul.cli.services:register",
    ("services", "deregister"): "proconsul.cli.services:deregister",
    ("catalog", "datacenters"): "proconsul.cli.catalog:datacenters",
    ("catalog", "nodes"): "proconsul.cli.catalog:nodes",
    ("catalog", "services"): "proconsul.cli.catalog:services",
    ("kv", "put"): "proconsul.cli.kv:put",
    ("kv", "get"): "proconsul.cli.kv:get",
    ("kv", "delete"): "proconsul.cli.kv:delete",
    ("lock",): "proconsul.cli.lock:lock",
    ("config", "write"): "proconsul.cli.config_entries:write",
    ("config", "read"): "proconsul.cli.config_entries:read",
    ("config", "list"): "proconsul.cli.config_entries:list_entries",
    ("config", "delete"): "proconsul.cli.config_entries:delete",
    ("intention", "create"): "proconsul.cli.intention:create",
    ("intention", "check"): "proconsul.cli.intention:check",
    ("intention", "get"): "proconsul.cli.intention:get",
    ("intention", "delete"): "proconsul.cli.intention:delete",
    ("intention", "list"): "proconsul.cli.intention:list_intentions",
    ("intention", "match"): "proconsul.cli.intention:match",
    ("keygen",): "proconsul.cli.keygen:run",
    ("operator", "raft", "list-peers"): "proconsul.cli.operator:list_peers",
    ("operator", "raft", "remove-peer"): "proconsul.cli.operator:remove_peer",
    ("operator", "raft", "transfer-leader"): "proconsul.cli.operator:transfer_leader",
    ("operator", "autopilot", "get-config"): "proconsul.cli.operator:autopilot_get_config",
    ("operator", "autopilot", "state"): "proconsul.cli.operator:autopilot_state",
    ("operator", "autopilot", "set-config"): "proconsul.cli.operator:autopilot_set_config",
    ("snapshot", "save"): "proconsul.cli.snapshot:save",
    ("snapshot", "restore"): "proconsul.cli.snapshot:restore",
    ("snapshot", "inspect"): "proconsul.cli.snapshot:inspect",
    ("tls", "ca", "create"): "proconsul.cli.tls:ca_create",
    ("tls", "cert", "create"): "proconsul.cli.tls:cert_create",
    ("demo", "service"): "proconsul.demo.command:run",
    ("acl", "bootstrap"): "proconsul.cli.acl_policy:bootstrap",
    ("acl", "policy", "create"): "proconsul.cli.acl_policy:policy_create",
    ("acl", "policy", "update"): "proconsul.cli.acl_policy:policy_update",
    ("acl", "policy", "read"): "proconsul.cli.acl_policy:policy_read",
    ("acl", "policy", "list"): "proconsul.cli.acl_policy:policy_list",
    ("acl", "policy", "delete"): "proconsul.cli.acl_policy:policy_delete",
    ("acl", "role", "create"): "proconsul.cli.acl_policy:role_create",
    ("acl", "role", "read"): "proconsul.cli.acl_policy:role_read",
    ("acl", "role", "update"): "proconsul.cli.acl_policy:role_update",
    ("acl", "role", "list"): "proconsul.cli.acl_policy:role_list",
    ("acl", "role", "delete"): "proconsul.cli.acl_policy:role_delete",
    ("acl", "token", "create"): "proconsul.cli.acl_token:create",
    ("acl", "token", "list"): "proconsul.cli.acl_token:list_tokens",
    ("acl", "token", "read"): "proconsul.cli.acl_token:read",
    ("acl", "token", "update"): "proconsul.cli.acl_token:update",
    ("acl", "token", "clone"): "proconsul.cli.acl_token:clone",
    ("acl", "token", "delete"): "proconsul.cli.acl_token:delete",
    ("acl", "set-agent-token"): "proconsul.cli.acl_agent_token:set_agent_token",
    ("connect", "envoy"): "proconsul.cli.connect_envoy:run",
    ("connect", "proxy"): "proconsul.cli.connect_proxy:run",
    ("doctor",): "proconsul.lab.doctor:run",
    ("lab",): "proconsul.lab.command:run",
    ("troubleshoot",): "proconsul.lab.explain:troubleshoot",
}


def usage() -> str:
    names = sorted(" ".join(words) for words in VERBS)
    lines = ["Usage: proconsul [--version] [--help] <command> [<args>]", "", "Available commands:"]
    lines += [f"    {name}" for name in names]
    return "\n".join(lines)


def find_verb(argv: Sequence[str]) -> tuple[str, int] | None:
    """Return (entry point, number of words used) for the longest matching verb."""
    for length in range(min(3, len(argv)), 0, -1):
        target = VERBS.get(tuple(argv[:length]))
        if target is not None:
            return target, length
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "-help", "--help", "help"):
        print(usage(), file=sys.stderr if not args else sys.stdout)
        return 1 if not args else 0
    if args[0] in ("-v", "-version", "--version"):
        args = ["version"]
    found = find_verb(args)
    if found is None:
        print(f"Unknown command: {' '.join(args[:2])}\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 1
    target, used = found
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        code: int = func(args[used:])
    except KeyboardInterrupt:
        return 130
    return code
