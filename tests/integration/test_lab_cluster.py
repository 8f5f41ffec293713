"""The lab end to end on loopback: up, doctor, status, every discovery scenario, export, down.

`proconsul lab up` runs as a user runs it (a subprocess), on 127.0.0.246-249
with short check intervals and the fast gossip profile. The stages run one
after the other, so the second `lab up` also proves a re-run reuses the lab.
`doctor` on the lab's configs finds the walkthrough's weaknesses after the
discovery stage and nothing after the secure stage. Each `lab break` is
checked by what a user would see (status, DNS, health, logs), then healed.
`lab down` must leave no process and no listener.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.agent_process import proconsul_cmd, wait_for

from proconsul.lab import procs, up
from proconsul.lab.command import LAB_PORTS
from proconsul.lab.layout import nodes_from

FIRST = "127.0.0.246"
NODES = nodes_from(FIRST)
DEADLINE_S = 45.0


def lab(directory: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        proconsul_cmd("lab", *args, "--dir", str(directory)),
        capture_output=True,
        text=True,
        timeout=240,
    )
    if check:
        assert done.returncode == 0, (args, done.stdout[-4000:], done.stderr[-2000:])
    return done.stdout


def status(directory: Path) -> str:
    return lab(directory, "status")


def explain(directory: Path) -> str:
    """`lab explain web api`: exit 1 whenever something is ✗ (always here: no sidecars run)."""
    return lab(directory, "explain", "web", "api", check=False)


def our_processes(directory: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and procs.is_ours(int(entry.name)):
            try:
                env = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(directory).encode() in env:
                found.append(int(entry.name))
    return found


def cli_env(directory: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CONSUL_HTTP_ADDR": f"http://{FIRST}:8500",
        "CONSUL_HTTP_TOKEN_FILE": str(directory / "secrets" / "bootstrap.token"),
    }


def check_intention(directory: Path) -> str:
    done = subprocess.run(
        proconsul_cmd("intention", "check", "web", "api"),
        capture_output=True,
        text=True,
        env=cli_env(directory),
    )
    return done.stdout.strip()


def web_calls_api() -> bool:
    """curl web: its call to api (through web's sidecar upstream) answered by api itself."""
    try:
        with urllib.request.urlopen(f"http://{NODES[3].address}:8080/", timeout=5) as reply:
            body = json.loads(reply.read())
    except (OSError, ValueError):
        return False
    calls = body.get("upstream_calls") or {}
    return any(c.get("code") == 200 and c.get("body") == "Hello from api" for c in calls.values())


def listeners() -> list[str]:
    return [
        f"{n.address}:{p}" for n in NODES for p in LAB_PORTS if procs.listening(n.address, p, 0.2)
    ]


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("lab") / "proconsul-lab"
    if listeners():
        pytest.skip(f"lab addresses busy: {listeners()}")
    try:
        yield directory
    finally:
        subprocess.run(proconsul_cmd("lab", "down", "--dir", str(directory)), timeout=60)


def api_passing_on(directory: Path) -> bool:
    return bool(re.search(r"^  api\s+consul-client-1\s+passing$", status(directory), re.M))


def test_lab_end_to_end(lab_dir: Path) -> None:
    first = ["--first-address", FIRST, "--check-interval", "1s", "--fast"]
    out = lab(lab_dir, "up", "--stage", "discovery", *first)
    assert re.search(r"^✓ \[ *\d+/\d+\] resolve api.service.consul \(", out, re.M), out
    doctor = subprocess.run(
        proconsul_cmd("doctor", str(lab_dir / "configs")), capture_output=True, text=True
    )
    assert doctor.returncode == 2
    codes = set(re.findall(r"✗ \[([a-z-]+)\]", doctor.stdout))
    assert codes == {
        "gossip-unencrypted",
        "verify-incoming-off",
        "no-verify-server-hostname",
        "acl-off",
    }

    out = lab(lab_dir, "up", "--stage", "secure")
    assert "Reusing the lab" in out and "(done before)" in out
    assert "bootstrap token [SECRET" in out and "UI: http://127.0.0.246:8500/ui/" in out
    assert "dig @127.0.0.248 -p 8600 api.service.consul" in out
    doctor = subprocess.run(
        proconsul_cmd("doctor", str(lab_dir / "configs")), capture_output=True, text=True
    )
    assert doctor.returncode == 0, doctor.stdout
    for script in (
        "gossip_keygen.sh",
        "tls_keygen.sh",
        "acl_bootstrap.sh",
        "agent_policies.sh",
        "agent_tokens_old.sh",
        "agent_tokens.sh",
        "service_tokens.sh",
    ):
        assert (lab_dir / "scripts" / script).exists(), script
    assert oct((lab_dir / "secrets" / "bootstrap.token").stat().st_mode & 0o777) == "0o600"

    text = status(lab_dir)
    assert re.search(r"Raft: leader consul-server-[12], term \d+", text), text
    assert len(re.findall(r"gossip: alive", text)) == 4
    assert re.search(r"^  web\s+consul-client-2\s+passing$", text, re.M)

    # kill-leader: two servers have no quorum alone; DNS still answers (stale reads);
    # heal brings the quorum back: a new leader at a higher term, and a write succeeds.
    out = lab(lab_dir, "break", "kill-leader")
    assert out.startswith("did:   killed the Raft leader") and "heal:" in out
    assert "the quorum is two" in out and "With three servers" in out
    assert up.dns_answer(NODES[2].address, "api.service.consul") == [NODES[2].address]
    assert "✗ cluster: no Raft leader" in explain(lab_dir)
    out = lab(lab_dir, "heal")
    elected = re.search(
        r"new leader: consul-server-[12] at term (\d+) \(the killed leader's term was (\d+)\)",
        out,
    )
    assert elected and int(elected[1]) > int(elected[2]), out
    assert re.search(r"writes resume: kv put lab/kill-leader \S+ answered true", out), out
    assert "Raft: leader consul-server" in status(lab_dir)

    # partition (SIGSTOP on loopback): the others see consul-client-2 failed.
    out = lab(lab_dir, "break", "partition", "consul-client-2")
    assert "SIGSTOP" in out
    wait_for(
        lambda: re.search(r"consul-client-2 .* gossip: failed .*frozen", status(lab_dir)),
        DEADLINE_S,
    )
    wait_for(lambda: "✗ catalog: no healthy web instance" in explain(lab_dir), DEADLINE_S)
    lab(lab_dir, "heal")
    wait_for(lambda: len(re.findall(r"gossip: alive", status(lab_dir))) == 4, DEADLINE_S)

    # kill-client: api's node fails, api goes critical and DNS stops answering it.
    lab(lab_dir, "break", "kill-client")
    wait_for(lambda: up.dns_answer(NODES[3].address, "api.service.consul") == [], DEADLINE_S)
    wait_for(
        lambda: "✗ catalog: no healthy api instance (consul-client-1" in explain(lab_dir),
        DEADLINE_S,
    )
    lab(lab_dir, "heal")
    wait_for(lambda: api_passing_on(lab_dir), DEADLINE_S)

    # fail-api: the check goes critical after failures_before_critical, DNS drops api.
    lab(lab_dir, "break", "fail-api")
    wait_for(
        lambda: re.search(r"^  api\s+consul-client-1\s+critical$", status(lab_dir), re.M),
        DEADLINE_S,
    )
    assert up.dns_answer(NODES[2].address, "api.service.consul") == []
    wait_for(lambda: "Check API health 8080 critical" in explain(lab_dir), DEADLINE_S)
    lab(lab_dir, "heal")
    wait_for(lambda: api_passing_on(lab_dir), DEADLINE_S)

    # rotate-gossip-key: one new key everywhere, nobody lost.
    old_key = (lab_dir / "secrets" / "gossip.token").read_text().strip()
    out = lab(lab_dir, "break", "rotate-gossip-key")
    assert "keyring -install" in out
    new_key = (lab_dir / "secrets" / "gossip.token").read_text().strip()
    assert (
        new_key != old_key
        and new_key in (lab_dir / "configs/consul-client-1/consul.hcl").read_text()
    )
    assert len(re.findall(r"gossip: alive", status(lab_dir))) == 4

    # expire-cert: the expired server certificate is refused, and the log says so.
    lab(lab_dir, "break", "expire-cert")
    log = lab_dir / "logs" / "consul-server-2.log"
    wait_for(
        lambda: (
            "certificate expired" in log.read_text() or "certificate has expired" in log.read_text()
        ),
        DEADLINE_S,
    )
    assert "✗ agent TLS: consul-server-2's cert_file expired" in explain(lab_dir)
    lab(lab_dir, "heal")
    wait_for(lambda: len(re.findall(r"gossip: alive", status(lab_dir))) == 4, DEADLINE_S)
    assert "Broken on purpose" not in status(lab_dir)

    # The mesh stage: sidecars, proxy-defaults, the intention, web -> api through the mesh.
    done = subprocess.run(
        proconsul_cmd("lab", "up", "--dir", str(lab_dir)),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"^✓ \[\d+/\d+\] allow web to call api", done.stdout, re.M), done.stdout
    if up.sidecar_missing():
        assert re.search(
            r"^■ \[\d+/\d+\] mesh: start the sidecars — not in this build", done.stdout, re.M
        )
        assert "The mesh stage stopped early" in done.stdout
    else:
        assert re.search(r"^✓ \[\d+/\d+\] web calls api through the mesh", done.stdout, re.M)
        assert "Lab is up through the mesh stage" in done.stdout
        assert web_calls_api()
        healthy = explain(lab_dir)
        assert healthy.count("✗") == 0, healthy
        for proxy, host in (("web-sidecar-proxy", NODES[3]), ("api-sidecar-proxy", NODES[2])):
            assert (
                f"✓ proxies: {proxy} listens, admin {host.address}:19000 is LIVE, "
                "up to date with the agent" in healthy
            ), healthy
            assert f"✓ proxies: {proxy} counters: rbac.denied 0," in healthy, healthy
        # Outside the lab: admin addresses by flag, else Envoy's default, which it says.
        done = subprocess.run(
            proconsul_cmd(
                "troubleshoot", "-source-admin-addr", f"{NODES[3].address}:19000", "web", "api"
            ),
            capture_output=True,
            text=True,
            env=cli_env(lab_dir),
        )
        assert done.returncode == 1, done.stdout
        web_line = "✓ proxies: web-sidecar-proxy listens, admin 127.0.0.249:19000 is LIVE, "
        assert web_line + "versions not compared" in done.stdout, done.stdout
        assert re.search(
            r"^✗ proxies: api-sidecar-proxy listens on 127\.0\.0\.248:20000, but its admin at "
            r"127\.0\.0\.1:19000 \(Envoy's default;",
            done.stdout,
            re.M,
        ), done.stdout
    assert re.search(r"^  web => api \(allow\)$", status(lab_dir), re.M)
    lab(lab_dir, "break", "deny-intention")
    assert check_intention(lab_dir) == "Denied"
    assert "✗ intentions: denied by intention web => api (deny, precedence 9)" in explain(lab_dir)
    if not up.sidecar_missing():
        wait_for(lambda: not web_calls_api(), DEADLINE_S)  # api's sidecar refuses web
        denied = explain(lab_dir)
        assert re.search(r"^✗ proxies: api-sidecar-proxy counters: rbac.denied [1-9]", denied, re.M)
    lab(lab_dir, "heal")
    assert check_intention(lab_dir) == "Allowed"
    if not up.sidecar_missing():
        wait_for(web_calls_api, DEADLINE_S)
    out = lab(lab_dir, "break", "revoke-token", "web")
    assert "deleted web's service token" in out
    web_host = NODES[3]
    subprocess.run(
        proconsul_cmd("reload", "-http-addr", web_host.address + ":8500"),
        check=True,
        capture_output=True,
        env=cli_env(lab_dir),
    )
    client_log = lab_dir / "logs" / "consul-client-2.log"
    wait_for(lambda: "ACL not found" in client_log.read_text(), DEADLINE_S)
    assert "✗ tokens: web's sidecar token is refused" in explain(lab_dir)
    if not up.sidecar_missing():  # the restarted sidecar cannot even look itself up
        assert "restarted its sidecar" in out
        assert re.search(
            r"^✗ proxies: web-sidecar-proxy does not listen on 127\.0\.0\.249:20000.*\n"
            r"    fix: start it: .*a refused token",
            explain(lab_dir),
            re.M,
        )
    lab(lab_dir, "heal")
    wait_for(
        lambda: re.search(r"^  web\s+consul-client-2\s+passing$", status(lab_dir), re.M), DEADLINE_S
    )

    for log in (lab_dir / "logs").glob("*.log"):
        assert "Traceback" not in log.read_text(), log.name

    out = lab(lab_dir, "down")
    assert "lab stopped" in out
    assert our_processes(lab_dir) == []
    assert listeners() == []
    assert (lab_dir / "lab.json").exists()  # state kept without --purge


def test_lab_export_validates(tmp_path: Path) -> None:
    out_dir = tmp_path / "export"
    done = subprocess.run(
        proconsul_cmd(
            "lab",
            "export",
            "--hosts",
            "10.0.1.11,10.0.1.12,10.0.1.21,10.0.1.22",
            "--out",
            str(out_dir),
        ),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    for node in ("consul-server-1", "consul-server-2", "consul-client-1", "consul-client-2"):
        config = out_dir / "configs" / node
        text = (config / "consul.hcl").read_text()
        assert 'data_dir = "/opt/consul/data"' in text and "10.0.1." in text
        valid = subprocess.run(
            proconsul_cmd("validate", str(config)), capture_output=True, text=True
        )
        assert valid.returncode == 0, (node, valid.stderr)
    assert (out_dir / "configs/consul-client-1/api.hcl").exists()
    assert (
        "ExecStart=/usr/local/bin/proconsul agent -config-dir=/opt/consul/config"
        in (out_dir / "systemd/consul-consul-server-1.service").read_text()
    )
    assert 'CONSUL_HTTP_ADDR="http://10.0.1.11:8500"' in (out_dir / "scripts/env.sh").read_text()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="--isolation netns needs root and iproute2's `ip`",
)
def test_lab_in_network_namespaces(tmp_path: Path) -> None:
    """Each node in its own namespace; a partition cuts the node's link for real."""
    directory = tmp_path / "netns-lab"
    try:
        out = lab(
            directory,
            "up",
            "--isolation",
            "netns",
            "--stage",
            "discovery",
            "--check-interval",
            "1s",
            "--fast",
        )
        assert "api and web passing" in out
        state = json.loads((directory / "lab.json").read_text())
        tag = state["netns_tag"]
        assert sum(f"pclab-{tag}-" in line for line in netns_list()) == 4
        out = lab(directory, "break", "partition", "consul-client-2")
        assert "cut consul-client-2's link" in out
        wait_for(
            lambda: re.search(r"consul-client-2 .* gossip: failed .*running", status(directory)),
            DEADLINE_S,
        )
        lab(directory, "heal")
        wait_for(lambda: len(re.findall(r"gossip: alive", status(directory))) == 4, DEADLINE_S)
    finally:
        subprocess.run(
            proconsul_cmd("lab", "down", "--dir", str(directory)), timeout=60, capture_output=True
        )
    assert our_processes(directory) == []
    assert not any(f"pclab-{tag}-" in line for line in netns_list())


def netns_list() -> list[str]:
    return subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True
    ).stdout.splitlines()
