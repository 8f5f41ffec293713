"""Sessions and `proconsul lock` on a real cluster: one server (n0) and two clients (n1, n2).

What a user would notice:
- two `proconsul lock` runs on one prefix, through different client agents,
  never run their children at the same time;
- `-n 2` lets two of three contenders run at once, never three;
- killing the holder's client agent with kill -9: its `lock` process says
  `Lock lost, killing child`; the waiter on the other client gets the lock
  only once the server has marked the dead node's serfHealth critical, and
  not before the 15s lock-delay has passed since then;
- a TTL session that is not renewed is destroyed by the leader between TTL
  and 2 x TTL (plus slack); one renewed in time lives on.
Children stamp wall-clock times into files; every wait has a deadline.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from tests.agent_process import proconsul_cmd, wait_for
from tests.gossip_agents import GossipPool, Member

DEADLINE_S = 30.0
LOCK_DELAY_S = 15.0
TTL_S = 10.0


def lock_process(member: Member, tmp_path: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(
        proconsul_cmd("lock", "-http-addr", member.running.http_addr, *args),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stamped(out: Path, tag: str, hold_s: float) -> str:
    """A child that writes `start <tag> <time>`, holds, then `end <tag> <time>`."""
    return (
        f'echo "start {tag} $(date +%s.%N)" >> {out}; sleep {hold_s}; '
        f'echo "end {tag} $(date +%s.%N)" >> {out}'
    )


def intervals(out: Path) -> dict[str, tuple[float, float]]:
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for line in out.read_text().splitlines():
        kind, tag, when = line.split()
        (starts if kind == "start" else ends)[tag] = float(when)
    return {tag: (starts[tag], ends[tag]) for tag in starts if tag in ends}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    live = peak = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak


def wait_exit(proc: subprocess.Popen[bytes], deadline_s: float = DEADLINE_S) -> int:
    return proc.wait(timeout=deadline_s)


def serf_status(server: Member, node: str) -> str:
    rows = server.running.get_json(f"/v1/health/node/{node}")
    return next((r["Status"] for r in rows if r["CheckID"] == "serfHealth"), "")


def test_locks_semaphores_failures_and_ttl(tmp_path: Path) -> None:
    pool = GossipPool(tmp_path, 3, base=91, server_first=True)
    server, n1, n2 = pool.members
    try:
        pool.start_all()
        pool.all_alive()
        for node in ("n1", "n2"):
            wait_for(lambda node=node: serf_status(server, node) == "passing", DEADLINE_S)

        # TTL sessions on the server's node, watched in the background.
        created_at = time.time()
        lone = server.running.request("PUT", "/v1/session/create", {"TTL": f"{TTL_S:g}s"})
        kept = server.running.request("PUT", "/v1/session/create", {"TTL": f"{TTL_S:g}s"})
        lone_id = json.loads(lone[2])["ID"]
        kept_id = json.loads(kept[2])["ID"]
        gone_at: list[float] = []
        stop = threading.Event()

        def watch_ttl() -> None:
            while not stop.is_set():
                status, _, body = server.running.request("PUT", f"/v1/session/renew/{kept_id}")
                assert status == 200, body
                info = server.running.get_json(f"/v1/session/info/{lone_id}")
                if not info and not gone_at:
                    gone_at.append(time.time())
                stop.wait(0.5)

        watcher = threading.Thread(target=watch_ttl, daemon=True)
        watcher.start()

        # Mutual exclusion through two different client agents.
        out = tmp_path / "mutex.txt"
        procs = [
            lock_process(
                member,
                tmp_path,
                f"mutex-{member.name}",
                "app/mutex",
                stamped(out, member.name, 1.5),
            )
            for member in (n1, n2)
        ]
        assert [wait_exit(p) for p in procs] == [0, 0]
        spans = intervals(out)
        assert sorted(spans) == ["n1", "n2"]
        assert most_at_once(list(spans.values())) == 1, spans

        # A semaphore of two, three contenders.
        out = tmp_path / "sem.txt"
        procs = [
            lock_process(
                member, tmp_path, f"sem-{i}", "-n", "2", "app/sem", stamped(out, str(i), 3)
            )
            for i, member in enumerate((n1, n2, n2))
        ]
        assert [wait_exit(p) for p in procs] == [0, 0, 0]
        spans = intervals(out)
        assert len(spans) == 3
        assert most_at_once(list(spans.values())) == 2, spans

        # kill -9 of the holder's agent: the lock goes only after serfHealth
        # critical and the lock-delay.
        held = tmp_path / "held.txt"
        holder = lock_process(
            n1, tmp_path, "holder", "app/failover", f"echo held >> {held}; sleep 600"
        )
        wait_for(lambda: held.exists(), DEADLINE_S)
        got = tmp_path / "got.txt"
        waiter = lock_process(
            n2, tmp_path, "waiter", "app/failover", f'echo "$(date +%s.%N)" >> {got}'
        )
        pool.kill(n1)
        critical_seen = wait_for(
            lambda: time.time() if serf_status(server, "n1") == "critical" else None, DEADLINE_S
        )
        assert wait_exit(holder) == 1
        assert "Lock lost, killing child" in (tmp_path / "holder.log").read_text()
        assert wait_exit(waiter, DEADLINE_S + LOCK_DELAY_S) == 0
        acquired_at = float(got.read_text().split()[0])
        # Observed critical at most a poll after the invalidation, so this is a
        # lower bound of the wait since the lock was freed (less the poll).
        waited = acquired_at - critical_seen
        print(f"lock acquired {waited:.2f}s after serfHealth was seen critical")
        assert waited >= LOCK_DELAY_S - 0.5, waited

        # TTL: the lone session went between TTL and 2 x TTL (+ a check round
        # and slack); the renewed one lives.
        wait_for(lambda: gone_at, 2 * TTL_S + 10)
        lived = gone_at[0] - created_at
        assert TTL_S <= lived <= 2 * TTL_S + 5, lived
        assert time.time() - created_at > 2 * TTL_S + 2
        assert server.running.get_json(f"/v1/session/info/{kept_id}")
        assert pool.metric(server, "consul.session_ttl.expired") >= 1
        stop.set()
        watcher.join(5)
    finally:
        pool.stop_all()
