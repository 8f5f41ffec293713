"""Snapshots on real servers: save a 3-server cluster with ACLs, wipe it, restore.

Three servers (127.0.0.247-249, ACLs on, default deny) hold KV keys (two
written by a transaction sent to a follower), a registered service and an
ACL token. `proconsul snapshot save` through a
follower writes the archive; `snapshot inspect` reads it offline. Every
server is stopped and its data_dir wiped, a fresh cluster with the same
config starts, and the archive is restored: refused without a management
token (403) and with one flipped byte (400, nothing changed), then accepted
by `proconsul snapshot restore`. Afterwards every server (stale reads) has
the keys with their original ModifyIndex, the service is back, and the token
made before the backup works again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.agent_process import proconsul_cmd, wait_for
from tests.gossip_agents import GossipPool, Member
from tests.integration.test_cluster import agreed_leader, server_at
from tests.integration.test_raft_operator import server_pool

DEADLINE_S = 40.0
MGMT = "5a5a0000-0000-4000-8000-00000000000a"
READER = "5a5a0000-0000-4000-8000-00000000000b"
ACL = (
    f'acl {{ enabled = true default_policy = "deny" '
    f'tokens {{ initial_management = "{MGMT}" agent = "{MGMT}" }} }}'
)
HEADERS = {"X-Consul-Token": MGMT}


def management_ready(member: Member) -> bool:
    """The leader wrote the initial management token (a leader duty, just after election)."""
    status, _, _ = member.running.request("GET", "/v1/acl/token/self", headers=HEADERS)
    return status == 200


def ok(member: Member, method: str, path: str, body: object = None) -> bytes:
    status, _, raw = member.running.request(method, path, body, headers=HEADERS)  # type: ignore[arg-type]
    assert status == 200, (method, path, status, raw)
    return raw


def cli(member: Member, verb: str, path: Path) -> subprocess.CompletedProcess[str]:
    flags = ["-http-addr", member.running.url, "-token", MGMT]
    return subprocess.run(
        proconsul_cmd("snapshot", verb, *flags, str(path)),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )


def kv_rows(member: Member) -> dict[str, int]:
    status, _, raw = member.running.request("GET", "/v1/kv/app/?recurse&stale", headers=HEADERS)
    if status != 200:
        return {}
    return {row["Key"]: row["ModifyIndex"] for row in json.loads(raw)}


def test_save_wipe_restore(tmp_path: Path) -> None:
    pool: GossipPool = server_pool(tmp_path, 3, 247, 3, ACL)
    try:
        pool.start_all()
        leader = server_at(pool, agreed_leader(pool, DEADLINE_S))
        wait_for(lambda: management_ready(leader), DEADLINE_S)
        for i in range(20):
            ok(leader, "PUT", f"/v1/kv/app/{i}", f"value-{i}")
        ok(
            leader,
            "PUT",
            "/v1/catalog/register",
            {"Node": "ext", "Address": "10.9.9.9", "Service": {"Service": "billing", "Port": 9}},
        )
        ok(
            leader,
            "PUT",
            "/v1/acl/policy",
            {"Name": "app-read", "Rules": 'key_prefix "app/" { policy = "read" }'},
        )
        ok(leader, "PUT", "/v1/acl/token", {"SecretID": READER, "Policies": [{"Name": "app-read"}]})
        # A transaction through a follower: forwarded to the leader as one entry.
        follower = next(m for m in pool.members if m is not leader)
        ops = [{"KV": {"Verb": "set", "Key": f"app/t{i}", "Value": "dA=="}} for i in range(2)]
        written = json.loads(ok(follower, "PUT", "/v1/txn", ops))
        assert [r["KV"]["Key"] for r in written["Results"]] == ["app/t0", "app/t1"]
        reads = [{"KV": {"Verb": "get", "Key": "app/t1"}}]
        read = json.loads(ok(follower, "PUT", "/v1/txn?consistent", reads))
        assert read["Results"][0]["KV"]["Value"] == "dA=="
        before = wait_for(lambda: kv_rows(leader) if len(kv_rows(leader)) == 22 else None, 10)

        status, _, _ = follower.running.request("GET", "/v1/snapshot")
        assert status == 403
        status, headers, raw = follower.running.request("GET", "/v1/snapshot", headers=HEADERS)
        assert status == 200 and headers["Content-Type"] == "application/x-gzip"
        assert int(headers["X-Consul-Index"]) >= max(before.values()) and raw[:2] == b"\x1f\x8b"
        backup = tmp_path / "backup.snap"
        saved = cli(follower, "save", backup)
        assert saved.returncode == 0, saved.stderr
        assert saved.stdout.startswith("Saved and verified snapshot to index ")
        inspected = subprocess.run(
            proconsul_cmd("snapshot", "inspect", str(backup)),
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
        assert inspected.returncode == 0, inspected.stderr
        lines = {
            line.split()[0]: line.split()[1:]
            for line in inspected.stdout.splitlines()
            if line.strip()
        }
        assert lines["KVS"][0] == "22" and int(lines["ACLToken"][0]) >= 3
        assert lines["Size"] == [str(backup.stat().st_size)]

        # Wipe every server and start a fresh cluster with the same config.
        pool.stop_all()
        for member in pool.members:
            shutil.rmtree(member.data_dir)
            member.data_dir.mkdir()
        pool.start_all()
        leader = server_at(pool, agreed_leader(pool, DEADLINE_S))
        wait_for(lambda: management_ready(leader), DEADLINE_S)
        assert kv_rows(leader) == {}
        archive = backup.read_bytes()
        status, _, _ = leader.running.request("PUT", "/v1/snapshot", archive)
        assert status == 403
        flipped = bytearray(archive)
        flipped[len(flipped) // 2] ^= 0x01
        status, _, body = leader.running.request(
            "PUT", "/v1/snapshot", bytes(flipped), headers=HEADERS
        )
        assert status == 400 and b"snapshot restore failed" in body, (status, body)
        assert kv_rows(leader) == {}

        follower = next(m for m in pool.members if m is not leader)
        restored = cli(follower, "restore", backup)
        assert (restored.returncode, restored.stdout) == (0, "Restored snapshot\n"), restored.stderr
        for member in pool.members:
            wait_for(lambda m=member: kv_rows(m) == before, DEADLINE_S)
        services = leader.running.get_json("/v1/catalog/services?token=" + MGMT)
        assert "billing" in services
        status, _, raw = follower.running.request(
            "GET", "/v1/kv/app/3?raw", headers={"X-Consul-Token": READER}
        )
        assert (status, raw) == (200, b"value-3")
        status, _, _ = follower.running.request(
            "PUT", "/v1/kv/app/3", "x", headers={"X-Consul-Token": READER}
        )
        assert status == 403
    finally:
        pool.stop_all()
