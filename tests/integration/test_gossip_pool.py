"""A live, encrypted pool of five real agents on 127.0.0.41-45.

One pool serves the whole module, and the tests run in order on it: join,
catalog health on the server, user events, key rotation, what a sniffer sees
and what junk does, then the destructive ones: kill -9 and restart,
force-leave, graceful leave. Every wait has a deadline derived from the
gossip parameters; nothing sleeps blindly.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from tests.agent_process import wait_for
from tests.gossip_agents import GossipPool, Member, detection_bound

from proconsul.gossip import Keyring, State
from proconsul.gossip import messages as m

KEY1 = base64.b64encode(b"\x01" * 32).decode()
KEY2 = base64.b64encode(b"\x02" * 32).decode()
NAMES = ["n0", "n1", "n2", "n3", "n4"]
SNIFFER_IP = "127.0.0.99"


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GossipPool]:
    found = GossipPool(tmp_path_factory.mktemp("pool"), 5, base=41, key=KEY1, server_first=True)
    try:
        found.start_all()
        found.all_alive()
        yield found
    finally:
        found.stop_all()


def cli(member: Member, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env["CONSUL_HTTP_ADDR"] = member.running.http_addr
    return subprocess.run(
        [sys.executable, "-m", "proconsul", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_five_agents_join_and_see_five_alive(pool: GossipPool) -> None:
    n0, n1 = pool["n0"], pool["n1"]
    rows = n1.running.get_json("/v1/agent/members")
    assert sorted(r["Name"] for r in rows) == NAMES
    server = next(r for r in rows if r["Name"] == "n0")
    assert (server["Addr"], server["Port"], server["Status"]) == ("127.0.0.41", n0.serf_port, 1)
    assert server["Tags"]["role"] == "consul" and server["Tags"]["dc"] == "dc1"
    client = next(r for r in rows if r["Name"] == "n1")
    assert client["Tags"]["role"] == "node" and client["Tags"]["id"]
    me = n1.running.get_json("/v1/agent/self")
    assert me["Member"]["Name"] == "n1" and me["Member"]["Status"] == 1
    assert me["Stats"]["serf_lan"]["encrypted"] == "true"
    # The CLI table: servers first, Consul's columns.
    result = cli(n1, "members")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"
    ]  # fmt: skip
    assert lines[1].split()[:4] == ["n0", f"127.0.0.41:{n0.serf_port}", "alive", "server"]
    assert len(lines) == 6
    assert cli(n1, "members", "-status", "failed").returncode == 2
    detailed = cli(n1, "members", "-detailed").stdout
    assert "role=node" in detailed and "Tags" in detailed.splitlines()[0]
    # The keyring file is private and the key is in no log.
    ring = n1.data_dir / "serf" / "local.keyring"
    assert json.loads(ring.read_text()) == [KEY1]
    assert ring.stat().st_mode & 0o777 == 0o600
    assert KEY1 not in n1.running.log_text()


def test_server_catalog_follows_gossip(pool: GossipPool) -> None:
    n0 = pool["n0"]

    def serf_health() -> dict[str, tuple[str, str]]:
        found = {}
        for name in NAMES:
            for check in n0.running.get_json(f"/v1/health/node/{name}"):
                if check["CheckID"] == "serfHealth":
                    found[name] = (check["Status"], check["Output"])
        return found

    alive = ("passing", "Agent alive and reachable")
    wait_for(lambda: serf_health() == dict.fromkeys(NAMES, alive), 10)
    nodes = {row["Node"]: row["Address"] for row in n0.running.get_json("/v1/catalog/nodes")}
    assert nodes["n3"] == "127.0.0.44"


def test_events_reach_every_member_and_list_blocks(pool: GossipPool) -> None:
    n1, n2 = pool["n1"], pool["n2"]
    fired = cli(n1, "event", "-name", "deploy", "v1.2.3")
    assert fired.returncode == 0, fired.stderr
    match = re.fullmatch(r"Event ID: ([0-9a-f-]{36})\n", fired.stdout)
    assert match, fired.stdout
    event_id = match.group(1)

    def has_event(member: Member) -> bool:
        events = member.running.get_json("/v1/event/list?name=deploy")
        return any(e["ID"] == event_id and e["Payload"] == "djEuMi4z" for e in events)

    wait_for(lambda: all(has_event(x) for x in pool.members), 10)
    # A node filter: only n2 keeps it.
    status, _, body = n1.running.request("PUT", "/v1/event/fire/only-n2?node=^n2$", b"x")
    assert status == 200, body
    only_id = json.loads(body)["ID"]
    wait_for(lambda: any(e["ID"] == only_id for e in n2.running.get_json("/v1/event/list")), 10)
    assert not any(e["ID"] == only_id for e in n1.running.get_json("/v1/event/list"))
    # Blocking on the current index returns when the next event lands.
    status, headers, _ = n2.running.request("GET", "/v1/event/list")
    index = headers["X-Consul-Index"]
    answer: dict[str, object] = {}

    def block() -> None:
        answer["reply"] = n2.running.request("GET", f"/v1/event/list?index={index}&wait=20s")

    waiter = threading.Thread(target=block)
    start = time.monotonic()
    waiter.start()
    assert cli(n1, "event", "-name", "later").returncode == 0
    waiter.join(20)
    assert time.monotonic() - start < 10
    status, headers, body = answer["reply"]  # type: ignore[misc]
    assert status == 200 and headers["X-Consul-Index"] != index
    assert json.loads(body)[-1]["Name"] == "later"
    bad = cli(n1, "event", "-name", "x", "-tag", "v1")
    assert bad.returncode == 1 and "Cannot provide tag filter without service filter" in bad.stderr


def test_key_rotation_marks_no_member_failed(pool: GossipPool) -> None:
    n1, n3 = pool["n1"], pool["n3"]
    failures = pool.failure_events()
    bad = cli(n1, "keyring", "-install", "not-a-key")
    assert bad.returncode == 1 and "Invalid key" in bad.stderr
    installed = cli(n1, "keyring", "-install", KEY2)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout == "==> Installing new gossip encryption key...\n"
    listed = cli(n3, "keyring", "-list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[:2] == ["==> Gathering installed encryption keys...", ""]
    assert f"  {KEY1} [5/5]" in listed.stdout and f"  {KEY2} [5/5]" in listed.stdout
    assert "dc1 (LAN):" in listed.stdout
    assert cli(n3, "keyring", "-use", KEY2).returncode == 0
    primary = cli(n1, "keyring", "-list-primary")
    assert f"  {KEY2} [5/5]" in primary.stdout and KEY1 not in primary.stdout
    refused = cli(n1, "keyring", "-remove", KEY2)
    assert refused.returncode == 1
    assert "Removing the primary key is not allowed" in refused.stderr
    assert cli(n1, "keyring", "-remove", KEY1).returncode == 0
    response = n1.running.get_json("/v1/operator/keyring")
    assert response[0]["Keys"] == {KEY2: 5} and response[0]["NumNodes"] == 5
    for member in pool.members:
        assert json.loads((member.data_dir / "serf" / "local.keyring").read_text()) == [KEY2]
        assert KEY2 not in member.running.log_text()
    # The pool still talks (only KEY2 now) and nobody was ever marked failed.
    assert cli(n1, "event", "-name", "after-rotation").returncode == 0
    wait_for(
        lambda: all(x.running.get_json("/v1/event/list?name=after-rotation") for x in pool.members),
        10,
    )
    pool.all_alive(5)
    assert pool.failure_events() == failures


def _read_frame(sock: socket.socket) -> bytes:
    header = sock.recv(4, socket.MSG_WAITALL)
    (size,) = struct.unpack(">I", header)
    return sock.recv(size, socket.MSG_WAITALL)


def test_sniffed_gossip_is_sealed_and_junk_is_dropped_and_counted(pool: GossipPool) -> None:
    n1, n2 = pool["n1"], pool["n2"]
    keyring = Keyring.from_list([KEY2])
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((SNIFFER_IP, 0))
    udp.settimeout(10)
    me = (SNIFFER_IP, udp.getsockname()[1])
    try:
        # Join as a member "sniffer" that only listens, to see real traffic.
        state = m.NodeState("sniffer", me, {"role": "node"}, 1, State.ALIVE)
        hello = m.PushPull("sniffer", True, False, [state], 0, [])
        sealed = keyring.seal(m.encode(hello), os.urandom(12))
        with socket.create_connection((n1.ip, n1.serf_port), timeout=10) as tcp:
            tcp.sendall(struct.pack(">I", len(sealed)) + sealed)
            reply = _read_frame(tcp)
        assert reply[0] == 1 and b"n0" not in reply and b"127.0.0.4" not in reply
        assert isinstance(m.decode(keyring.open(reply)), m.PushPull)
        # Listen until a ping has been seen and every member knows the sniffer,
        # acking pings like a live member so nobody suspects it meanwhile.
        ping = None
        udp.settimeout(0.05)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                data, sender = udp.recvfrom(65536)
            except TimeoutError:
                data = b""
            if data:
                assert data[0] == 1 and b"sniffer" not in data and b"n0" not in data
                for msg in m.decode_packet(keyring.open(data)):
                    if isinstance(msg, m.Ping):
                        ping = ping or data
                        ack = keyring.seal(m.encode(m.Ack(msg.seq)), os.urandom(12))
                        udp.sendto(ack, sender)
            if ping is not None and all(
                GossipPool.view(member).get("sniffer") == "alive" for member in pool.members
            ):
                break
        assert ping is not None
        pool.wait_statuses({"sniffer": "alive"}, 1)
        udp.settimeout(10)
        bye = keyring.seal(m.encode(m.Dead(1, "sniffer", "sniffer", True)), os.urandom(12))
        for member in pool.members:
            udp.sendto(bye, (member.ip, member.serf_port))
        pool.wait_statuses({"sniffer": "left"}, 10)

        before = {name: pool.metric(n2, f"consul.gossip.{name}") for name in COUNTERS}
        target = (n2.ip, n2.serf_port)
        tampered = bytearray(ping)
        tampered[20] ^= 0xFF
        wrong_key = Keyring.from_list([KEY1]).seal(m.encode(m.Ping(1, "n2")), os.urandom(12))
        junk = [
            ping,  # replayed: a ping for someone else
            bytes(tampered),  # forged: the tag no longer matches
            wrong_key,  # forged with another key
            ping[:10],  # truncated
            m.encode(m.Ping(7, "n2")),  # plaintext
            os.urandom(40_000),  # oversized random
            os.urandom(300),  # random
        ]
        for packet in junk:
            udp.sendto(packet, target)
        after: dict[str, float] = {}

        def counted() -> bool:
            after.update({n: pool.metric(n2, f"consul.gossip.{n}") for n in COUNTERS})
            return after["udp_in_packets"] - before["udp_in_packets"] >= len(junk)

        wait_for(counted, 10)
        assert after["misdirected"] > before["misdirected"]
        assert after["refused_decrypt_failed"] >= before["refused_decrypt_failed"] + 2
        assert after["refused_plaintext_refused"] > before["refused_plaintext_refused"]
        assert after["refused_oversized"] > before["refused_oversized"]
        assert after["refused_malformed"] > before["refused_malformed"]
        # Every packet but the replay is refused before it reaches the protocol.
        assert after["refused_total"] == before["refused_total"] + len(junk) - 1
        assert after["core_errors"] == 0
    finally:
        udp.close()
    assert "refused udp packet from 127.0.0.99" in n2.running.log_text()
    pool.all_alive(5)
    assert cli(n2, "members").returncode == 0


COUNTERS = (
    "udp_in_packets",
    "misdirected",
    "refused_decrypt_failed",
    "refused_plaintext_refused",
    "refused_oversized",
    "refused_malformed",
    "core_errors",
    "refused_total",
)


def test_kill_9_is_marked_failed_within_the_bound_then_alive_after_restart(
    pool: GossipPool,
) -> None:
    n2 = pool["n2"]
    others = [x for x in pool.members if x is not n2]
    bound = detection_bound(pool.params, len(pool.members))
    pool.kill(n2)
    took = pool.wait_statuses({"n2": "failed"}, bound, viewers=others)
    assert took <= bound
    # The server's catalog follows: serfHealth critical with Consul's output.
    n0 = pool["n0"]

    def critical() -> bool:
        checks = n0.running.get_json("/v1/health/node/n2")
        return any(
            c["CheckID"] == "serfHealth"
            and (c["Status"], c["Output"]) == ("critical", "Agent not live or unreachable")
            for c in checks
        )

    wait_for(critical, 10)
    # Restart with the original -encrypt: the rotated keyring file wins, with a warning.
    agent = pool.start(n2)
    pool.all_alive(15)
    log = agent.log_text()
    assert "not in the keyring file" in log and KEY1 not in log and KEY2 not in log


def test_force_leave_turns_a_failed_member_left_and_join_brings_it_back(
    pool: GossipPool,
) -> None:
    n4, n1 = pool["n4"], pool["n1"]
    others = [x for x in pool.members if x is not n4]
    # A live member is not removed (Consul's documented force-leave): it stays alive.
    live = cli(n1, "force-leave", "n3")
    assert (live.returncode, live.stdout) == (0, ""), live.stderr
    pool.all_alive(5)
    pool.kill(n4)
    pool.wait_statuses({"n4": "failed"}, detection_bound(pool.params, 5), viewers=others)
    unknown = cli(n1, "force-leave", "nobody")
    assert unknown.returncode == 1 and "No node found with name 'nobody'" in unknown.stderr
    done = cli(n1, "force-leave", "n4")
    assert (done.returncode, done.stdout) == (0, ""), done.stderr
    pool.wait_statuses({"n4": "left"}, 10, viewers=others)
    # Back, without retry_join this time: `proconsul join` brings it in.
    pool.start(n4, join=False)
    assert set(pool.view(n4)) == {"n4"}
    failed = cli(n4, "join", "127.0.0.1:1")
    assert failed.returncode == 1
    assert "Error joining address '127.0.0.1:1': Unexpected response code: 500" in failed.stderr
    assert "connection refused" in failed.stderr and "Failed to join any nodes." in failed.stderr
    joined = cli(n4, "join", pool["n0"].serf_addr, pool["n1"].serf_addr)
    assert joined.stdout == "Successfully joined cluster by contacting 2 nodes.\n", joined.stderr
    pool.all_alive(10)


def test_graceful_leave_is_left_not_failed(pool: GossipPool) -> None:
    n3 = pool["n3"]
    others = [x for x in pool.members if x.name in ("n0", "n1", "n2")]
    failures = pool.failure_events()
    result = cli(n3, "leave")
    assert (result.returncode, result.stdout) == (0, "Graceful leave complete\n")
    pool.wait_statuses({"n3": "left"}, 10, viewers=others)
    assert n3.running.proc.wait(timeout=15) == 0
    assert pool.failure_events() == failures
    # The server drops a left node from its catalog, as Consul's leader does.
    wait_for(
        lambda: "n3" not in {r["Node"] for r in pool["n0"].running.get_json("/v1/catalog/nodes")},
        10,
    )
