"""Packages import only packages of their own layer or below (DESIGN.md, "Layers").

`LAYERS` lists the packages of src/proconsul from the lowest layer to the
highest; packages on one line are one layer and may import each other. An
import counts when it runs with the module or is read by the type checker:
module level, class bodies and `if TYPE_CHECKING:` blocks, not function
bodies. Why the order is this one:

- The package root (version strings) and `fileio` (atomic private file
  writes) import nothing of ours.
- `structs` is plain data. `tls` builds keys and certificates with
  `cryptography` and nothing of ours; `connect` signs with it, so it sits
  down here with the data rather than with the adapters (the TLS sockets
  are rpc/tls.py's).
- `config` parses agent config and flags into structs; the cores (`acl`,
  `connect`, `dns`, `gossip`, `raft`) know structs only. `dns` and `gossip`
  also hold their own asyncio server and transport, which need nothing
  higher either.
- `state` is the replicated store over the cores' rows.
- Adapters: `rpc` (frames, TLS, the typed callers) and `checks` (the check
  runners); `http` above them, since it answers an `RPCError` from a server,
  and `xds` (Envoy's configuration and the gRPC server that serves it) beside
  `http`: both are the agent's faces to the outside. `proxy` (the built-in
  sidecar, an xDS client) sits with them: it needs only the Envoy protos.
- `server` serves the endpoints, ACLs and Raft over `rpc` and `state`.
- `agent` wires servers, clients, HTTP, DNS and gossip together.
- `cli`, `demo` and `lab` (the verbs) and `__main__` are the top.

A new package fails `test_every_package_has_a_layer` until it is placed here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import proconsul

SRC = Path(proconsul.__file__).parent
TOP = "proconsul"

LAYERS: list[tuple[str, ...]] = [
    ("proconsul", "fileio"),
    ("structs", "tls"),
    ("config", "acl", "connect", "dns", "gossip", "raft", "query"),
    ("state",),
    ("rpc", "checks"),
    ("http", "xds", "proxy"),
    ("server",),
    ("agent",),
    ("cli", "demo", "lab", "__main__"),
]
LEVEL = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in SRC.rglob("*.py"):
        parts = [TOP, *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = module_names()


def package_of(module: str) -> str:
    """`proconsul.acl.rules` -> "acl", `proconsul.fileio` -> "fileio", `proconsul` -> itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports_of(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, module) for each import that runs at import time or under TYPE_CHECKING.

    `from x import y` names `x.y` when that is a module of ours, else `x`."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue  # runs when called: a deliberate late import
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                source = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                yield node.lineno, candidate if candidate in MODULES else source
        else:
            yield from imports_of(node, module, is_package)


def violations() -> list[str]:
    found = []
    for module, path in sorted(MODULES.items()):
        level = LEVEL.get(package_of(module))
        if level is None:
            continue  # reported by test_every_package_has_a_layer
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, imported in sorted(set(imports_of(tree, module, path.name == "__init__.py"))):
            if imported != TOP and not imported.startswith(TOP + "."):
                continue
            target = package_of(imported)
            if LEVEL.get(target, -1) > level:
                found.append(
                    f"{path.relative_to(SRC.parent)}:{line}: {package_of(module)} "
                    f"(layer {level}) imports {imported} ({target}, layer {LEVEL[target]})"
                )
    return found


def test_every_package_has_a_layer() -> None:
    packages = {package_of(module) for module in MODULES}
    assert packages - set(LEVEL) == set(), "place new packages in LAYERS"
    assert set(LEVEL) - packages == set(), "LAYERS names packages that are gone"


def test_no_package_imports_a_higher_layer() -> None:
    assert violations() == []


def test_type_checking_imports_count_and_late_imports_do_not() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import common\n"
        "if TYPE_CHECKING:\n"
        "    from proconsul.agent.agent import Agent\n"
        "def late() -> None:\n"
        "    from proconsul.cli import main\n"
    )
    found = [name for _, name in imports_of(ast.parse(source), "proconsul.http.api", False)]
    assert found == ["typing", "proconsul.http.common", "proconsul.agent.agent"]
