"""What the fault suite's clients did and what the nemesis did, and the checks made on it.

Job: hold the records of one run — client operations with invoke and complete
times and their outcome, faults with start and heal times, samples of who led —
and judge them afterwards:
- `lost_writes`: acknowledged unique-key writes missing from a view of the store;
- `register_ops` / `check_registers`: the register histories, expressed in the
  shared checker's model (tests/lincheck.py) and checked for linearizability;
- `hangs`: requests not answered within rpc_hold_timeout plus a margin while a
  leader existed, each with the faults around it and a cause;
- `unavailability`: per fault, the longest stretch without an acknowledged write
  from the fault's start until shortly after it healed;
- `tracebacks`: tracebacks in the agents' logs, known defect or not.

How a CAS on ModifyIndex becomes a CAS on values: every value a client writes
is unique (`<process>:<seq>`), so "the key's ModifyIndex is still I" holds
exactly when "the key still holds the value read together with I" (absent, for
`?cas=0`). A CAS that sent index I after reading value V is checked as
cas(expected=V, new=W). A duplicated application of one write would break that
equivalence, and the checker would rightly reject the history.

Outcomes: "ok" (answered, result known), "fail" (a definite refusal: the
operation did not take effect), "unknown" (timeout, connection error, any
other error: it may or may not have taken effect, at any time after its
invoke). A read whose outcome is not "ok" tells nothing and is left out.

Rules: pure — no I/O, no clock; times are seconds on the one monotonic clock the
harness reads.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tests.lincheck import UNKNOWN, Op, Result, check_register

OK = "ok"
FAIL = "fail"
UNKNOWN_OUTCOME = "unknown"


def definite_refusal(status: int, body: bytes, via_server: bool) -> bool:
    """Whether an error answer means the write did not happen.

    Only a server's own answer is taken at its word: Consul's "No cluster
    leader" (no leader appeared within rpc_hold_timeout, nothing was proposed)
    and "rpc: cannot connect to ..." (its hop to the leader could not even be
    dialled, nothing was sent). A client agent's answer is never definite: it
    moves on to the next server after a connection error, so the error it
    reports may hide an earlier attempt that reached a server.
    """
    text = body.strip()
    return (
        via_server
        and status == 500
        and (text == b"No cluster leader" or text.startswith(b"rpc: cannot connect to "))
    )


@dataclass
class Event:
    """One client operation. `kind`: "write" (unique key), "put", "read" or "cas"."""

    process: str
    kind: str
    key: str
    target: str  # the agent the HTTP request went to
    invoke: float
    complete: float = math.nan  # when it was answered or given up on
    outcome: str = "pending"
    value: str | None = None  # written, or read (None: absent)
    expected: str | None = None  # cas: the value read together with `index`
    index: int = 0  # cas: the ModifyIndex sent as ?cas=
    result: bool | None = None  # put/cas/write: the body's true/false
    detail: str = ""  # status and body, or the exception, when not ok

    @property
    def latency(self) -> float:
        return self.complete - self.invoke


@dataclass
class Fault:
    """One fault the nemesis applied: `kind` kill|stop|partition, on the `role`'s host."""

    kind: str
    role: str  # "leader" | "follower"
    host: str
    start: float
    end: float = math.nan  # healed: restarted and answering, resumed, link up
    duration_s: float = 0.0  # planned time down, frozen or cut

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.role}"

    def describe(self, t0: float) -> str:
        return f"{self.name} {self.host} [{self.start - t0:.1f}s, {self.end - t0:.1f}s]"


@dataclass(frozen=True)
class LeaderSample:
    """At `time`, the host a majority of servers named leader (None: none usable)."""

    time: float
    leader: str | None


# ----- (1) acknowledged writes ---------------------------------------------------------------


def acked_keys(events: Iterable[Event]) -> set[str]:
    return {e.key for e in events if e.kind == "write" and e.outcome == OK and e.result is True}


def lost_writes(events: Iterable[Event], views: dict[str, set[str]]) -> dict[str, list[str]]:
    """For each view (name -> keys present), the acknowledged keys it lacks."""
    acked = acked_keys(events)
    return {name: sorted(acked - present) for name, present in views.items() if acked - present}


# ----- (2) registers -------------------------------------------------------------------------


def register_ops(events: Iterable[Event]) -> dict[str, list[Op]]:
    """The register operations per key, in the checker's model (module docstring)."""
    clients: dict[str, int] = {}
    by_key: dict[str, list[Op]] = {}
    for e in events:
        if e.kind not in ("read", "put", "cas") or e.outcome == FAIL:
            continue
        client = clients.setdefault(e.process, len(clients))
        if e.outcome == OK:
            ret = e.complete
        elif e.kind == "read":
            continue  # an unanswered read changed nothing
        else:
            ret = math.inf  # may take effect at any time after its invoke, or never
        if e.kind == "read":
            op = Op(client, "get", e.key, None, e.value, e.invoke, ret)
        elif e.kind == "put":
            if e.outcome == OK and e.result is not True:
                continue  # a plain PUT answered false did not happen
            op = Op(client, "put", e.key, e.value, None, e.invoke, ret)
        else:
            output = e.result if e.outcome == OK else UNKNOWN
            op = Op(client, "cas", e.key, (e.expected, e.value), output, e.invoke, ret)
        by_key.setdefault(e.key, []).append(op)
    return by_key


def check_registers(events: Iterable[Event], budget: int = 5_000_000) -> dict[str, Result | None]:
    """Each register key's verdict (None: undecided, the search ran out of budget);
    every key starts absent (None)."""
    verdicts: dict[str, Result | None] = {}
    for key, ops in sorted(register_ops(events).items()):
        try:
            verdicts[key] = check_register(ops, None, budget)
        except RuntimeError:
            verdicts[key] = None
    return verdicts


def explain(events: Iterable[Event], key: str, result: Result | None, t0: float) -> list[str]:
    """The events on `key` around where the search got stuck, one line each."""
    on_key = sorted((e for e in events if e.key == key), key=lambda e: e.invoke)
    if result is not None and result.partial:
        stuck = max(op.call for op in result.partial)
    else:
        stuck = on_key[0].invoke if on_key else 0.0
    return [
        f"{e.invoke - t0:8.3f}-{e.complete - t0:8.3f} {e.process:<6} {e.kind:<4} via {e.target} "
        f"{e.outcome:<7} value={e.value} expected={e.expected} index={e.index} "
        f"result={e.result} {e.detail}"
        for e in on_key
        if stuck - 2.0 <= e.invoke <= stuck + 2.0 or (e.outcome != OK and e.invoke <= stuck)
    ]


# ----- (4) hangs -----------------------------------------------------------------------------


@dataclass
class Hang:
    event: Event
    cause: str  # see `hangs`
    context: list[str] = field(default_factory=list)  # the faults around it


def leader_existed(samples: Sequence[LeaderSample], start: float, end: float) -> bool:
    """Whether some sample in [start, end], or the last one before start, names a leader."""
    before = [s for s in samples if s.time <= start]
    window = [s for s in samples if start <= s.time <= end]
    if before and before[-1].leader is not None:
        return True
    return any(s.leader is not None for s in window)


def hangs(
    events: Iterable[Event],
    faults: Sequence[Fault],
    samples: Sequence[LeaderSample],
    hold_s: float,
    margin_s: float,
    t0: float,
) -> list[Hang]:
    """Requests that took longer than `hold_s + margin_s` while a leader existed.

    Not counted: a request to an agent that was itself frozen meanwhile (a
    stopped process answers nothing, by definition), and one during which no
    leader existed within the hold (it may legitimately wait that long and
    more). The cause comes from the faults that could have held it past the
    bound (in place at its invoke or begun within the hold after it), the
    first that applies:
    - "frozen-leader": a SIGSTOP of the leader. The known defect: a request
      forwarded to the leader waits on it until it resumes, although the
      others elected a new leader meanwhile;
    - "cut-off-follower": the target was a server cut off by a partition while
      not leading; a request it had forwarded to the leader waits on the cut
      link (until the partition heals and TCP retransmits, or the RPC
      connection's dead-peer timeout, 10 s);
    - "cut-off-leader": the leader was cut off and the request went to another
      agent, which forwarded it there: the same wait;
    - "cut-off-leader-itself": the target was the cut-off leader (a proposal it
      can no longer commit waits until the partition heals);
    - "cut-off-server": a follower was cut off and the request went to another
      agent (a client agent's RPC to the server it sticks to waits on the cut
      link the same way);
    - "frozen-server": a SIGSTOP of a follower (likewise, until it resumes);
    - "unexplained": none of these.
    """
    bound = hold_s + margin_s
    found: list[Hang] = []
    for e in events:
        if not e.latency > bound:
            continue
        around = [f for f in faults if f.start <= e.complete and e.invoke <= f.end]
        if any(f.kind == "stop" and f.host == e.target for f in around):
            continue
        if not leader_existed(samples, e.invoke, e.invoke + hold_s):
            continue
        relevant = [f for f in around if f.start <= e.invoke + hold_s]
        found.append(Hang(e, _cause(e, relevant), [f.describe(t0) for f in around]))
    return found


def _cause(e: Event, faults: Sequence[Fault]) -> str:
    def any_of(kind: str, role: str, on_target: bool | None = None) -> bool:
        return any(
            f.kind == kind
            and f.role == role
            and (on_target is None or (f.host == e.target) == on_target)
            for f in faults
        )

    if any_of("stop", "leader"):
        return "frozen-leader"
    if any_of("partition", "follower", on_target=True):
        return "cut-off-follower"
    if any_of("partition", "leader", on_target=False):
        return "cut-off-leader"
    if any_of("partition", "leader", on_target=True):
        return "cut-off-leader-itself"
    if any_of("partition", "follower", on_target=False):
        return "cut-off-server"
    if any_of("stop", "follower"):
        return "frozen-server"
    return "unexplained"


def describe_hang(hang: Hang, t0: float) -> str:
    e = hang.event
    return (
        f"{e.kind} {e.key} via {e.target}: {e.latency:.1f}s from {e.invoke - t0:.1f}s "
        f"({e.outcome}{': ' + e.detail if e.detail else ''}); cause {hang.cause}; "
        f"faults: {', '.join(hang.context) or 'none'}"
    )


# ----- availability --------------------------------------------------------------------------


def acked_write_times(events: Iterable[Event]) -> list[tuple[float, float]]:
    """(invoke, complete) of every write that took effect and was acknowledged
    (the prober's open-loop writes among them: a hung closed-loop client sends
    nothing new, a probe is sent every 100 ms regardless)."""
    return sorted(
        (e.invoke, e.complete)
        for e in events
        if e.kind in ("write", "put", "cas") and e.outcome == OK and e.result is True
    )


def unavailability(
    acks: Sequence[tuple[float, float]], start: float, until: float, cut: bool = False
) -> float:
    """The longest stretch with no acknowledged write, from `start` up to the first
    acknowledgement after `until` (inf when none came after `start`), or up to
    `until` itself when `cut` (the next fault began there: what follows is its
    outage, not this one's). Only writes invoked after `start` count: an answer
    to a request sent before the fault says nothing about after it. When the
    run ended before `until` with writes going through, its end is not counted."""
    done = sorted(c for i, c in acks if i >= start)
    points = [start, *(c for c in done if c <= until)]
    later = [c for c in done if c > until]
    if cut:
        points.append(until)
    elif later:
        points.append(later[0])
    elif len(points) == 1:
        return math.inf  # never written again
    return max(b - a for a, b in itertools.pairwise(points))


def unavailability_by_fault(
    events: Iterable[Event], faults: Sequence[Fault], settle_s: float
) -> dict[str, list[float]]:
    """Per fault type, each fault's unavailability, measured until `settle_s` after
    it healed or until the next fault began, whichever is first (so one fault's
    outage is never charged to the one before it)."""
    acks = acked_write_times(events)
    out: dict[str, list[float]] = {}
    ordered = sorted(faults, key=lambda f: f.start)
    for fault, after in itertools.zip_longest(ordered, ordered[1:]):
        until = fault.end + settle_s
        cut = after is not None and after.start < until
        if after is not None and cut:
            until = after.start
        out.setdefault(fault.name, []).append(unavailability(acks, fault.start, until, cut))
    return out


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """(median, max)."""
    return statistics.median(values), max(values)


# ----- logs ----------------------------------------------------------------------------------

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[")
EXPECTED_TRANSPORT = re.compile(r"^(?:[\w.]+\.)?(?:Connection\w*Error|BrokenPipeError)\b")


@dataclass(frozen=True)
class Traceback:
    source: str  # the log file's name
    header: str  # the log line the traceback belongs to
    exception: str  # its last line: the exception raised

    @property
    def known(self) -> bool:
        """The known defect: an expected transport failure of a forwarded write
        logged as a handler crash ("rpc: Apply handler failed" ... ConnectionError)."""
        return "Apply handler failed" in self.header and bool(
            EXPECTED_TRANSPORT.match(self.exception)
        )


def tracebacks(source: str, text: str) -> list[Traceback]:
    """Every traceback in one agent log, with its log line and final exception."""
    lines = text.splitlines()
    found: list[Traceback] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("Traceback (most recent call last):"):
            header = next((lines[j] for j in range(i - 1, -1, -1) if LOG_LINE.match(lines[j])), "")
            j = i + 1
            while j < len(lines) and not LOG_LINE.match(lines[j]):
                j += 1
            block = [line for line in lines[i:j] if line.strip()]
            found.append(Traceback(source, header, block[-1] if block else ""))
            i = j
        else:
            i += 1
    return found
