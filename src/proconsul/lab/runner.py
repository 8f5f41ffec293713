"""Running the lab's steps: one line as each starts and ends, a bar for each wait.

Rules:
- A step is a file written or a command run; `command` says which, in the
  words a learner would type, and `lab steps` prints the same text.
- A step that fails raises `StepFailed`; the runner stops and prints the
  step's command, its output and the log lines of the nodes involved that
  explain it (warnings and errors first), then exits 1. No step is retried
  behind the user's back.
- Steps recorded as done in `lab.json` are skipped on a re-run, except those
  marked `always` (making sure the processes run).
- Waits poll a condition with a deadline; on a terminal they draw a progress
  bar on one line, elsewhere they print nothing until the step ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from proconsul.lab.layout import Lab

LOG_HINTS = ("[ERROR]", "[WARN]", "Traceback", "Error", "denied", "refused", "expired")
# Warnings every lab agent prints at start; they explain nothing.
LOG_NOISE = ("deprecated", "no failure tolerance")
BAR_WIDTH = 24


class StepFailed(Exception):
    """A step did not do what it should: `output` is what it printed, `nodes` whose logs explain."""

    def __init__(self, message: str, output: str = "", nodes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.output = output
        self.nodes = list(nodes)


@dataclass
class Step:
    id: str
    stage: str
    title: str
    command: str
    action: Callable[[Context], None]
    always: bool = False
    # What this build lacks for the step (one line), or None: checked first.
    needs: Callable[[], str | None] | None = None


@dataclass
class Context:
    """What a step's action gets: the lab and a way to wait with progress."""

    lab: Lab
    out: TextIO = field(default_factory=lambda: sys.stdout)
    options: dict[str, object] = field(default_factory=dict)

    def wait(
        self,
        label: str,
        condition: Callable[[], bool],
        deadline_s: float,
        *,
        nodes: Sequence[str] = (),
        interval_s: float = 0.2,
    ) -> None:
        """Poll `condition` until true; past `deadline_s`, fail naming `label`."""
        start = time.monotonic()
        tty = self.out.isatty()
        last_error = ""
        while True:
            try:
                if condition():
                    break
            except Exception as exc:  # a condition may fail while agents start
                last_error = f"{type(exc).__name__}: {exc}"
            spent = time.monotonic() - start
            if spent > deadline_s:
                if tty:
                    self.out.write("\n")
                raise StepFailed(
                    f"timed out after {deadline_s:.0f}s waiting for {label}", last_error, nodes
                )
            if tty:
                filled = min(BAR_WIDTH, int(BAR_WIDTH * spent / deadline_s))
                bar = "#" * filled + "." * (BAR_WIDTH - filled)
                self.out.write(f"\r      waiting for {label} [{bar}] {spent:4.1f}s")
                self.out.flush()
            time.sleep(interval_s)
        if tty:
            self.out.write("\r" + " " * (len(label) + BAR_WIDTH + 30) + "\r")
            self.out.flush()


def explain_logs(lab: Lab, nodes: Sequence[str], limit: int = 8) -> list[str]:
    """The log lines of `nodes` most likely to explain a failure."""
    lines: list[str] = []
    for node in nodes:
        try:
            text = lab.log_file(node).read_text(errors="replace").splitlines()
        except OSError:
            continue
        hinted = [
            line
            for line in text
            if any(hint in line for hint in LOG_HINTS) and not any(n in line for n in LOG_NOISE)
        ]
        chosen = (hinted or text)[-limit:]
        lines += [f"  {node}: {line}" for line in chosen]
    return lines


@dataclass(frozen=True)
class RunResult:
    ok: bool
    missing: str = ""  # set when the run stopped before a step this build cannot do


def run_steps(ctx: Context, steps: Sequence[Step]) -> RunResult:
    """Run `steps` in order; on a failure print why and return not ok.

    A step whose `needs` names something missing stops the run there (ok, with
    `missing` set): what came before stands, nothing after it is pretended.
    """
    out = ctx.out
    total = len(steps)
    for number, step in enumerate(steps, 1):
        tag = f"[{number:2d}/{total}]"
        if step.id in ctx.lab.state.done and not step.always:
            out.write(f"· {tag} {step.stage}: {step.title} (done before)\n")
            continue
        missing = step.needs() if step.needs else None
        if missing:
            out.write(f"■ {tag} {step.stage}: {step.title} — not in this build: {missing}\n")
            return RunResult(True, missing)
        out.write(f"▶ {tag} {step.stage}: {step.title} — {step.command}\n")
        out.flush()
        start = time.monotonic()
        try:
            step.action(ctx)
        except StepFailed as failure:
            out.write(f"✗ {tag} {step.title}: {failure.message}\n")
            out.write(f"  command: {step.command}\n")
            if failure.output.strip():
                out.write("  output:\n")
                for line in failure.output.strip().splitlines()[-30:]:
                    out.write(f"    {line}\n")
            logs = explain_logs(ctx.lab, failure.nodes)
            if logs:
                out.write("  node logs:\n" + "\n".join(logs) + "\n")
            ctx.lab.state.note(f"step failed: {step.title}")
            ctx.lab.save()
            return RunResult(False)
        if step.id not in ctx.lab.state.done:
            ctx.lab.state.done.append(step.id)
        ctx.lab.save()
        out.write(f"✓ {tag} {step.title} ({time.monotonic() - start:.1f}s)\n")
        out.flush()
    return RunResult(True)
