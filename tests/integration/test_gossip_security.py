"""Gossip encryption with real agents: who cannot join (and why the log says so), and
Consul's three-step rolling rollout from plaintext to encrypted on a live pool."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from tests.agent_process import free_port, proconsul_cmd
from tests.gossip_agents import GossipPool, Member

KEY = base64.b64encode(b"\x07" * 32).decode()
OTHER = base64.b64encode(b"\x09" * 16).decode()


def run_joiner(pool: GossipPool, member: Member, target: Member, *extra: str) -> str:
    """Start `member` with `-join target`; it must exit 1. Returns its output."""
    command = proconsul_cmd(
        "agent",
        *member.args,
        "-join",
        target.serf_addr,
        "-http-port",
        str(free_port()),
        "-dns-port",
        "-1",
        "-grpc-port",
        "-1",
        *extra,
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_another_key_or_no_key_cannot_join_and_the_logs_say_why(tmp_path: Path) -> None:
    pool = GossipPool(tmp_path, 4, base=51, key=KEY)
    n0, n1, intruder, plain = pool.members
    try:
        pool.start(n0)
        pool.start(n1)
        pool.wait_statuses({"n0": "alive", "n1": "alive"}, 10)
        out = run_joiner(pool, intruder, n0, "-encrypt", OTHER)
        assert "Failed to join" in out and "the encryption keys differ" in out
        assert OTHER not in out and KEY not in out
        out = run_joiner(pool, plain, n0)
        assert "requires encrypted gossip" in out
        log = n0.running.log_text()
        assert "refused tcp packet from 127.0.0.53" in log
        assert "no installed gossip key decrypts it" in log
        assert "refused tcp packet from 127.0.0.54" in log and "not encrypted" in log
        assert set(pool.view(n0)) == set(pool.view(n1)) == {"n0", "n1"}
        # An encrypted agent cannot join a plaintext pool either.
        solo = GossipPool(tmp_path / "plain", 2, base=56)
        try:
            solo.start(solo.members[0])
            out = run_joiner(solo, solo.members[1], solo.members[0], "-encrypt", KEY)
            assert "has no gossip encryption key" in out
        finally:
            solo.stop_all()
    finally:
        pool.stop_all()


def test_three_step_rolling_rollout_marks_no_member_failed(tmp_path: Path) -> None:
    pool = GossipPool(tmp_path, 3, base=61)
    steps = [
        ("encrypt_verify_incoming = false", "encrypt_verify_outgoing = false"),
        ("encrypt_verify_incoming = false", "encrypt_verify_outgoing = true"),
        ("encrypt_verify_incoming = true", "encrypt_verify_outgoing = true"),
    ]
    try:
        pool.start_all()
        pool.all_alive()
        for incoming, outgoing in steps:
            for member in pool.members:
                pool.stop(member)
                pool.start(member, "-hcl", incoming, "-hcl", outgoing, key=KEY)
                pool.all_alive()
        assert pool.failure_events() == 0
        for member in pool.members:
            stats = member.running.get_json("/v1/agent/self")["Stats"]["serf_lan"]
            assert stats["encrypted"] == "true"
            assert pool.metric(member, "consul.gossip.refused_total") == 0
            assert KEY not in member.running.log_text()
    finally:
        pool.stop_all()
