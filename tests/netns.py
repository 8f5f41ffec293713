"""Network namespaces for multi-host tests: a hub bridge and one namespace per host.

Job: `Namespaces` builds, for a run, a hub namespace with a bridge (the
cluster network: cutting a host off is taking its hub port down) and one
namespace per host, each also linked to the root namespace on a /30 of its
own (the management network, where the test's HTTP calls go). `close` undoes
whatever was made, also after a failure half way.

Rules: root and iproute2's `ip` only; names carry a random tag, so runs never
collide and interface names stay within 15 characters; the management /24 is
one no address or route of the root namespace touches.
"""

from __future__ import annotations

import secrets
import subprocess


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


class Namespaces:
    """The hub, host namespaces and links of one run; `close` undoes whatever was made."""

    def __init__(self, ns_prefix: str, link_prefix: str, cluster_net: str, mgmt_net: str) -> None:
        """`cluster_net` like "10.78.0" (hosts are .1, .2, ...), `mgmt_net` like
        "10.214" (a free /24 under it is picked)."""
        self.tag = secrets.token_hex(3)  # interface names stay within 15 chars
        self.ns_prefix = ns_prefix
        self.link_prefix = link_prefix
        self.cluster_net = cluster_net
        self.mgmt_net = mgmt_net
        self.hub = f"{ns_prefix}-{self.tag}-hub"
        self.namespaces: list[str] = []
        self.root_links: list[str] = []

    def probe(self) -> None:
        """The first steps, whose failure means this machine cannot make namespaces."""
        self.namespaces.append(self.hub)  # first: a half-made one must go too
        ip("netns", "add", self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "link", "set", "br0", "up")

    def add_host(self, i: int, mgmt: str) -> tuple[str, str, str, str]:
        """Namespace, cluster address, HTTP address and hub port of host `i`."""
        netns = f"{self.ns_prefix}-{self.tag}-h{i}"
        self.namespaces.append(netns)
        ip("netns", "add", netns)
        ip("-n", netns, "link", "set", "lo", "up")
        inside, hub_end = f"{self.link_prefix}{self.tag}c{i}", f"{self.link_prefix}{self.tag}h{i}"
        veth = ["type", "veth", "peer", "name", hub_end, "netns", self.hub]
        ip("link", "add", inside, "netns", netns, *veth)
        ip("-n", self.hub, "link", "set", hub_end, "master", "br0")
        ip("-n", self.hub, "link", "set", hub_end, "up")
        cluster_ip = f"{self.cluster_net}.{i + 1}"
        ip("-n", netns, "addr", "add", f"{cluster_ip}/24", "dev", inside)
        ip("-n", netns, "link", "set", inside, "up")
        root_end, ns_end = f"{self.link_prefix}{self.tag}m{i}", f"{self.link_prefix}{self.tag}n{i}"
        ip("link", "add", root_end, "type", "veth", "peer", "name", ns_end, "netns", netns)
        self.root_links.append(root_end)
        ip("addr", "add", f"{mgmt}.{4 * i + 1}/30", "dev", root_end)
        ip("link", "set", root_end, "up")
        http_ip = f"{mgmt}.{4 * i + 2}"
        ip("-n", netns, "addr", "add", f"{http_ip}/30", "dev", ns_end)
        ip("-n", netns, "link", "set", ns_end, "up")
        return netns, cluster_ip, http_ip, hub_end

    def free_management_prefix(self) -> str:
        """A `mgmt_net`.x.0/24 that no address or route of the root namespace touches."""
        used = ip("-4", "-o", "addr") + ip("-4", "route")
        for _ in range(100):
            prefix = f"{self.mgmt_net}.{secrets.randbelow(254) + 1}"
            if f"{prefix}." not in used:
                return prefix
        raise RuntimeError(f"no free {self.mgmt_net}.x.0/24 for the management network")

    def close(self) -> None:
        # Deleting one end of a veth deletes both; a namespace takes its links along.
        for link in self.root_links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10)
        for netns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10)
