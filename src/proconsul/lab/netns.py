"""`--isolation netns`: each lab node in its own network namespace, on one bridge.

Job: make (idempotently) and remove the lab's network: a bridge in the root
namespace holding the lab's /24 (the lab process reaches every node over it,
as a laptop on the same switch would), and one namespace per node joined to
the bridge by a veth pair. A partition takes a node's bridge port down: its
packets are dropped, as when a cable is pulled.

Rules: root and iproute2's `ip` only (`unavailable` says why not); names
carry the lab's random tag, so labs never collide, and stay within 15
characters; the /24 is one no address or route of this machine touches.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

BRIDGE_HOST = 254  # the root namespace's address on the lab's /24


class NetnsError(Exception):
    pass


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's `ip`"
    return None


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def new_tag() -> str:
    return secrets.token_hex(2)


def free_prefix() -> str:
    """A 10.x.y (/24) that no address or route of the root namespace touches."""
    used = ip("-4", "-o", "addr") + ip("-4", "route")
    for _ in range(200):
        prefix = f"10.{secrets.randbelow(200) + 50}.{secrets.randbelow(254) + 1}"
        if f"{prefix}." not in used:
            return prefix
    raise NetnsError("no free 10.x.y.0/24 for the lab network")


def namespace(tag: str, index: int) -> str:
    return f"pclab-{tag}-{index}"


def bridge(tag: str) -> str:
    return f"pclab{tag}br"


def bridge_port(tag: str, index: int) -> str:
    return f"pcl{tag}b{index}"


def exists(tag: str) -> bool:
    return bridge(tag) in ip("-o", "link", "show", check=False)


def setup(tag: str, addresses: list[str]) -> None:
    """The bridge and one namespace per address (the first three octets are the /24)."""
    if exists(tag):
        return
    prefix = addresses[0].rsplit(".", 1)[0]
    try:
        # No forward delay: a new port forwards at once, not after 2 x 15 s.
        ip("link", "add", bridge(tag), "type", "bridge", "forward_delay", "0")
        ip("addr", "add", f"{prefix}.{BRIDGE_HOST}/24", "dev", bridge(tag))
        ip("link", "set", bridge(tag), "up")
        for index, address in enumerate(addresses):
            ns = namespace(tag, index)
            inside = f"pcl{tag}n{index}"
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip(
                "link",
                "add",
                bridge_port(tag, index),
                "type",
                "veth",
                "peer",
                "name",
                inside,
                "netns",
                ns,
            )
            ip("link", "set", bridge_port(tag, index), "master", bridge(tag))
            ip("link", "set", bridge_port(tag, index), "up")
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
            ip("-n", ns, "link", "set", inside, "up")
    except NetnsError:
        teardown(tag, len(addresses))
        raise


def teardown(tag: str, count: int) -> None:
    """Remove whatever `setup` made; missing pieces are fine."""
    for index in range(count):
        ip("link", "del", bridge_port(tag, index), check=False)
        ip("netns", "del", namespace(tag, index), check=False)
    ip("link", "del", bridge(tag), check=False)


def exec_prefix(tag: str, index: int) -> list[str]:
    """Run a command inside node `index`'s namespace (`ip netns exec` execs: same PID)."""
    return ["ip", "netns", "exec", namespace(tag, index)]


def cut(tag: str, index: int) -> None:
    ip("link", "set", bridge_port(tag, index), "down")


def restore(tag: str, index: int) -> None:
    ip("link", "set", bridge_port(tag, index), "up")
