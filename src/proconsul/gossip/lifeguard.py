"""Lifeguard's two pieces of local state: the health-awareness score and suspicions.

Job: `Awareness` is the local health multiplier (a member that misses acks and
nacks, or is itself suspected, grows slower and more tolerant); `Suspicion`
tracks one suspected member: when it was suspected, who independently
confirmed it, and so when it will be declared dead. `awareness_publish_due`
is the rule for republishing one's own score in one's gossip tags.

Rules: pure values driven by `now` passed in; the formulas live in `params`.
"""

from __future__ import annotations

from .params import suspicion_timeout

# The member tag each agent publishes its own awareness score under, so every
# agent can show every member's (each agent measures only its own).
AWARENESS_TAG = "awareness"


def awareness_publish_due(
    score: int, published: int, published_at_s: float, now_s: float, min_interval_s: float
) -> bool:
    """Whether to publish `score` in our tags now.

    Only a score that differs from the one published, and at most once per
    `min_interval_s`: each publication is a tag update (an alive with a new
    incarnation, gossiped to everyone), so a flapping score must not flood
    gossip. A score that settles is published once the interval has passed.
    """
    return score != published and now_s - published_at_s >= min_interval_s


class Awareness:
    """Score in [0, max_multiplier - 1]; timeouts are multiplied by score + 1."""

    __slots__ = ("_max", "score")

    def __init__(self, max_multiplier: int) -> None:
        self._max = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self._max - 1)


class Suspicion:
    """One member under suspicion.

    The timeout starts at `max_timeout` and shrinks toward `min_timeout` as
    members other than the first accuser confirm it (Lifeguard's dynamic
    suspicion): several independent accusers are stronger evidence than one
    slow member repeating itself.
    """

    __slots__ = (
        "_accusers",
        "answered",
        "deadline",
        "expected",
        "incarnation",
        "max_timeout",
        "min_timeout",
        "start",
    )

    def __init__(
        self,
        accuser: str | None,
        incarnation: int,
        expected: int,
        min_timeout: float,
        max_timeout: float,
        now: float,
    ) -> None:
        # No accuser when the suspicion was learnt second hand: the first real
        # accusation then counts as the original, not as a confirmation.
        self._accusers: set[str] = set() if accuser is None else {accuser}
        self.incarnation = incarnation
        self.expected = expected
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.start = now
        self.deadline = now + suspicion_timeout(0, expected, min_timeout, max_timeout)
        # Set when the suspect acks one of our own probes during the suspicion.
        self.answered = False

    @property
    def confirmations(self) -> int:
        return max(0, len(self._accusers) - 1)

    def confirm(self, accuser: str) -> bool:
        """Record an accuser; True if it is new (worth passing on).

        Every accuser after the first is an independent confirmation and moves
        the deadline closer; confirmations beyond `expected` are ignored.
        """
        if self.confirmations >= self.expected or accuser in self._accusers:
            return False
        self._accusers.add(accuser)
        total = suspicion_timeout(
            self.confirmations, self.expected, self.min_timeout, self.max_timeout
        )
        self.deadline = self.start + total
        return True
