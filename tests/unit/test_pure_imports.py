"""The pure cores import no I/O, clock or global randomness (DESIGN.md, "Shapes to follow").

Every module of a core package is checked, except the adapters named here; a
new module in a core package is pure unless it is added to the adapter list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import proconsul

SRC = Path(proconsul.__file__).parent
FORBIDDEN = {"asyncio", "socket", "ssl", "time", "threading", "select", "aiohttp"}

# package -> modules in it that are adapters (allowed to do I/O)
CORE_PACKAGES: dict[str, set[str]] = {
    "structs": set(),
    "state": set(),
    "acl": set(),
    "gossip": {"transport", "adapter", "keyring_file"},
    "raft": {"storage", "transport", "adapter"},
    "dns": {"server"},
    "connect": set(),
    "query": set(),
}
CORE_MODULES = [
    "checks/status.py",
    "checks/kinds.py",
    "checks/alias.py",
    "server/autopilot.py",
    # the xDS translator and protocol cores (xds/sources.py and xds/server.py are adapters)
    "xds/snapshot.py",
    "xds/common.py",
    "xds/rbac.py",
    "xds/secrets.py",
    "xds/clusters.py",
    "xds/routes.py",
    "xds/listeners.py",
    "xds/translate.py",
    "xds/ads.py",
    "xds/bootstrap.py",
    # the built-in proxy's model, decisions and control-plane state machine
    "proxy/matchers.py",
    "proxy/rbac.py",
    "proxy/routing.py",
    "proxy/config.py",
    "proxy/ads_state.py",
    "proxy/balancer.py",
    "proxy/stats.py",
]


def imported_top_level(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def core_files() -> list[Path]:
    files = [SRC / module for module in CORE_MODULES]
    for package, adapters in CORE_PACKAGES.items():
        for path in sorted((SRC / package).glob("*.py")):
            if path.stem not in adapters:
                files.append(path)
    return files


def global_random_uses(path: Path) -> list[str]:
    """Uses of the module-level generator; a seeded `random.Random` passed in is fine."""
    uses = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr != "Random"
        ):
            uses.append(f"random.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "random":
            uses += [f"from random import {a.name}" for a in node.names if a.name != "Random"]
    return uses


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_core_module_is_pure(path: Path) -> None:
    assert imported_top_level(path) & FORBIDDEN == set()
    assert global_random_uses(path) == []
