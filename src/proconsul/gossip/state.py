"""The member table: who we know about, in what state, and in what probe order.

Job: keep one record per known member (including ourselves), the shuffled list
the prober walks round-robin and gossip targets are drawn from, and the
immutable snapshots (`Member`) handed to the outside world.

Rules:
- A record is "forgotten" by the SWIM layer once it has been dead or left for
  `gossip_to_the_dead_time`: it leaves the probe list and any alive message for
  it is accepted as news again (memberlist forgets such nodes; that is what lets
  two halves of a healed partition re-merge). The record itself stays, as serf
  keeps failed and left members, until it is reaped.
- The probe list never holds ourselves. Random choices use the caller's rng.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import msgspec

from .messages import Address, State

if TYPE_CHECKING:
    # Only the type: randomness always comes from the caller's seeded Random.
    import random


class Member(msgspec.Struct, frozen=True):
    """An immutable snapshot of one member, as the agent and HTTP API see it."""

    name: str
    addr: Address
    tags: dict[str, str]
    incarnation: int
    state: State


class MemberRecord:
    """Mutable per-member state inside the core."""

    __slots__ = (
        "addr",
        "forgotten",
        "in_list",
        "incarnation",
        "name",
        "state",
        "state_change",
        "tags",
    )

    def __init__(
        self, name: str, addr: Address, tags: dict[str, str], incarnation: int, now: float
    ) -> None:
        self.name = name
        self.addr = addr
        self.tags = tags
        self.incarnation = incarnation
        self.state = State.ALIVE
        self.state_change = now
        self.in_list = False
        self.forgotten = False

    def snapshot(self) -> Member:
        return Member(self.name, self.addr, self.tags, self.incarnation, self.state)

    @property
    def dead_or_left(self) -> bool:
        return self.state >= State.DEAD


class MemberTable:
    """Records by name plus the probe/gossip list of everyone but ourselves."""

    __slots__ = ("_list", "_rng", "by_name", "local", "probe_index")

    def __init__(self, local: MemberRecord, rng: random.Random) -> None:
        self.local = local
        self.by_name: dict[str, MemberRecord] = {local.name: local}
        self._list: list[MemberRecord] = []
        self.probe_index = 0
        self._rng = rng

    def __len__(self) -> int:
        return len(self.by_name)

    def __iter__(self) -> Iterator[MemberRecord]:
        return iter(self.by_name.values())

    def get(self, name: str) -> MemberRecord | None:
        return self.by_name.get(name)

    @property
    def listed(self) -> int:
        """Members the SWIM layer counts (everyone not forgotten, ourselves included)."""
        return len(self._list) + 1

    def add(self, rec: MemberRecord) -> None:
        self.by_name[rec.name] = rec
        self.enlist(rec)

    def enlist(self, rec: MemberRecord) -> None:
        """Put a (re)joined member in the probe list at a random position.

        Appending and swapping with a random slot keeps this O(1) and spreads a
        new member's first probes over the round instead of all at its end.
        """
        if rec.in_list or rec is self.local:
            return
        rec.in_list = True
        rec.forgotten = False
        self._list.append(rec)
        n = len(self._list)
        # random() is several times cheaper than randrange() and just as seeded.
        j = int(self._rng.random() * n)
        self._list[n - 1], self._list[j] = self._list[j], self._list[n - 1]

    def remove(self, rec: MemberRecord) -> None:
        if rec.in_list:
            self._list.remove(rec)
            rec.in_list = False
        if self.by_name.get(rec.name) is rec:
            del self.by_name[rec.name]

    def next_probe_target(self, now: float, dead_window: float) -> MemberRecord | None:
        """The next alive or suspect member round-robin; reshuffles after a round."""
        checked = 0
        while checked <= len(self._list):
            if self.probe_index >= len(self._list):
                self.reset_round(now, dead_window)
                if not self._list:
                    return None
            rec = self._list[self.probe_index]
            self.probe_index += 1
            checked += 1
            if rec.state <= State.SUSPECT:
                return rec
        return None

    def reset_round(self, now: float, dead_window: float) -> None:
        """End of a probe round: forget long-dead members, then reshuffle."""
        keep: list[MemberRecord] = []
        for rec in self._list:
            if rec.state >= State.DEAD and now - rec.state_change > dead_window:
                rec.in_list = False
                rec.forgotten = True
            else:
                keep.append(rec)
        self._rng.shuffle(keep)
        self._list = keep
        self.probe_index = 0

    def random_members(
        self, k: int, accept: Callable[[MemberRecord], bool], exclude: MemberRecord | None = None
    ) -> list[MemberRecord]:
        """Up to k distinct listed members passing `accept`, chosen at random.

        Random probing rather than filtering the whole list keeps this O(k) for
        large pools; 3n attempts bounds it when few members qualify.
        """
        members = self._list
        n = len(members)
        if n == 0 or k <= 0:
            return []
        out: list[MemberRecord] = []
        rand = self._rng.random
        for _ in range(3 * n):
            rec = members[int(rand() * n)]
            if rec is exclude or rec in out or not accept(rec):
                continue
            out.append(rec)
            if len(out) >= k:
                break
        return out

    def alive_count(self) -> int:
        return sum(1 for rec in self.by_name.values() if rec.state <= State.SUSPECT)
