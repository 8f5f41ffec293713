"""The agent's live view of gossip and Raft, for `GET /v1/agent/live` (the UI's Live page).

Job: take a picture of what this agent's gossip pool and (on a server) its Raft
node know right now (`live_state`), and tell what happened between two pictures
as events (`live_events`, pure: two dicts in, a list out).

Rules:
- Only what the cores already expose: member states from the gossip core, its
  counters (probes, failed probes, indirect probes, suspicions raised,
  refutations), Lifeguard's awareness score of this agent (each agent knows
  only its own), and the Raft status, the leader's progress books and the last
  entries applied. Nothing here changes either core.
- The picture is plain JSON (PascalCase keys as the rest of the API), small
  enough to send a few times a second; no secrets in it.
- Events come from differences only, so a reconnecting viewer simply starts
  from a new picture.
"""

from __future__ import annotations

from typing import Any, Protocol

from proconsul.gossip.messages import State

_STATE_NAMES = {
    State.ALIVE: "alive",
    State.SUSPECT: "suspect",
    State.DEAD: "dead",
    State.LEFT: "left",
}

# Gossip counters reported, by the name the core counts them under.
GOSSIP_COUNTERS = {
    "Probes": "probes",
    "ProbeFailures": "probe_failures",
    "IndirectProbes": "indirect_probes",
    "Suspicions": "suspects",
    "Refutations": "refutes",
    "Acks": "acks",
}


class LiveSource(Protocol):
    """What `live_state` reads; the Agent provides it."""

    node_name: str

    def live_gossip(self) -> tuple[list[Any], dict[str, float]] | None:
        """(gossip members, core counters) or None without a pool."""

    def live_raft(self) -> dict[str, Any] | None:
        """The Raft part of the picture, or None on a client agent."""


def gossip_part(members: list[Any], stats: dict[str, float]) -> dict[str, Any]:
    rows = [
        {
            "Name": m.name,
            "ID": m.tags.get("id", ""),
            "Addr": f"{m.addr[0]}:{m.addr[1]}",
            "State": _STATE_NAMES.get(m.state, "unknown"),
            "Incarnation": m.incarnation,
            "Role": "server" if m.tags.get("role") == "consul" else "client",
        }
        for m in sorted(members, key=lambda m: m.name)
    ]
    counters = {name: int(stats.get(key, 0)) for name, key in GOSSIP_COUNTERS.items()}
    return {"Members": rows, "Awareness": int(stats.get("awareness", 0)), "Counters": counters}


def live_state(source: LiveSource) -> dict[str, Any]:
    gossip = source.live_gossip()
    return {
        "Node": source.node_name,
        "Gossip": gossip_part(*gossip) if gossip is not None else None,
        "Raft": source.live_raft(),
    }


def live_events(before: dict[str, Any] | None, after: dict[str, Any]) -> list[dict[str, Any]]:
    """What changed from `before` to `after`, as `{"Kind", "Text"}` rows, oldest first."""
    if before is None:
        return []
    out: list[dict[str, Any]] = []

    def add(kind: str, text: str) -> None:
        out.append({"Kind": kind, "Text": text})

    g0, g1 = before.get("Gossip"), after.get("Gossip")
    if g0 is not None and g1 is not None:
        old = {m["Name"]: m for m in g0["Members"]}
        for m in g1["Members"]:
            prev = old.get(m["Name"])
            if prev is None:
                add("join", f"{m['Name']} joined ({m['State']})")
            elif prev["State"] != m["State"]:
                kind = "suspicion" if m["State"] == "suspect" else m["State"]
                if prev["State"] == "suspect" and m["State"] == "alive":
                    kind = "refutation"
                add(kind, f"{m['Name']}: {prev['State']} -> {m['State']}")
        c0, c1 = g0["Counters"], g1["Counters"]
        for name, label in (
            ("Probes", "probe"),
            ("ProbeFailures", "probe failed"),
            ("IndirectProbes", "indirect probe"),
            ("Suspicions", "suspicion raised"),
            ("Refutations", "refuted a suspicion of this node"),
        ):
            delta = c1.get(name, 0) - c0.get(name, 0)
            if delta > 0:
                add(label.split()[0], f"{label} x{delta}" if delta > 1 else label)
        if g0["Awareness"] != g1["Awareness"]:
            add("awareness", f"awareness {g0['Awareness']} -> {g1['Awareness']}")
    r0, r1 = before.get("Raft"), after.get("Raft")
    names = {m.get("ID"): m["Name"] for m in (g1 or {}).get("Members", [])}
    if r0 is not None and r1 is not None:
        if r1["Term"] != r0["Term"]:
            add("election", f"term {r0['Term']} -> {r1['Term']}")
        if r1["Leader"] != r0["Leader"]:
            leader = names.get(r1["Leader"], r1["Leader"]) or "(none)"
            add("leader", f"leader is now {leader}")
        if r1["Role"] != r0["Role"]:
            add("role", f"this server is now {r1['Role']}")
        seen = {e["Index"] for e in r0["RecentApplied"]}
        for e in r1["RecentApplied"]:
            if e["Index"] not in seen:
                add("applied", f"applied #{e['Index']} (term {e['Term']}, {e['Type']})")
    return out
