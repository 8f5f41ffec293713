"""`proconsul doctor`: one row per finding, each made by one change to a clean config.

The baseline is a secure server config that has no finding; each row breaks
exactly one thing the way a user would (a line removed, a flag flipped, a file
mode) and expects exactly that finding, with the key and the file named.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proconsul.lab import doctor

SECURE = """server = true
bootstrap_expect = 1
encrypt = "Xo4DihfBGcAcrXrazJ+OlRXy4GGRZHuRIEny2NtG+lM="
encrypt_verify_incoming = true
encrypt_verify_outgoing = true
verify_incoming = true
verify_outgoing = true
verify_server_hostname = true
client_addr = "127.0.0.1"
acl {
  enabled = true
  default_policy = "deny"
  tokens {
    agent = "9ed687c1-4ec6-0fd5-0cf2-fee83dbb2999"
  }
}
"""
NOW = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


def write_cert(path: Path, not_after: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server.us-west-1.consul")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_after - dt.timedelta(days=365))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    path.write_bytes(cert.public_bytes(Encoding.PEM))


def node_dir(root: Path, name: str, text: str, mode: int = 0o600) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    path = directory / "consul.hcl"
    path.write_text(text)
    os.chmod(path, mode)
    return directory


def run_doctor(root: Path) -> list[doctor.Finding]:
    return doctor.findings(doctor.read_nodes(root), NOW)


def test_the_baseline_is_clean(tmp_path: Path) -> None:
    node_dir(tmp_path, "consul-server-1", SECURE)
    assert run_doctor(tmp_path) == []


# code, change to the baseline (old, new), file mode, expected key
ROWS = [
    (
        "gossip-unencrypted",
        ('encrypt = "Xo4DihfBGcAcrXrazJ+OlRXy4GGRZHuRIEny2NtG+lM="\n', ""),
        0o600,
        "encrypt",
    ),
    (
        "gossip-verify-off",
        ("encrypt_verify_incoming = true", "encrypt_verify_incoming = false"),
        0o600,
        "encrypt_verify_incoming",
    ),
    (
        "verify-incoming-off",
        ("\nverify_incoming = true", "\nverify_incoming = false"),
        0o600,
        "verify_incoming",
    ),
    (
        "no-verify-server-hostname",
        ("verify_server_hostname = true", ""),
        0o600,
        "verify_server_hostname",
    ),
    ("acl-off", ("enabled = true", "enabled = false"), 0o600, "acl.enabled"),
    (
        "acl-default-allow",
        ('default_policy = "deny"', 'default_policy = "allow"'),
        0o600,
        "acl.default_policy",
    ),
    ("token-world-readable", ("", ""), 0o644, "encrypt"),
]


@pytest.mark.parametrize(("code", "change", "mode", "key"), ROWS, ids=[r[0] for r in ROWS])
def test_one_finding_per_change(
    tmp_path: Path, code: str, change: tuple[str, str], mode: int, key: str
) -> None:
    old, new = change
    assert old in SECURE
    node_dir(tmp_path, "consul-server-1", SECURE.replace(old, new, 1), mode)
    found = run_doctor(tmp_path)
    assert [(f.code, f.key) for f in found] == [(code, key)]
    assert found[0].node == "consul-server-1"
    assert found[0].why and found[0].fix
    if new or code == "token-world-readable":  # the key is in the file
        assert found[0].file == str(tmp_path / "consul-server-1" / "consul.hcl")
    else:  # the key is missing: nothing to point at
        assert found[0].file == doctor.NOT_SET


def test_http_on_every_interface_without_acl(tmp_path: Path) -> None:
    text = SECURE.replace(
        'client_addr = "127.0.0.1"', 'client_addr = "0.0.0.0"\nui_config { enabled = true }'
    )
    node_dir(tmp_path, "a", text)
    assert run_doctor(tmp_path) == []  # ACLs with deny guard it
    node_dir(tmp_path, "b", text.replace('default_policy = "deny"', 'default_policy = "allow"'))
    found = [f for f in run_doctor(tmp_path) if f.node == "b"]
    assert [f.code for f in found] == ["acl-default-allow", "http-public-without-acl"]
    assert found[1].key == "client_addr" and "the UI and the HTTP API" in found[1].why


@pytest.mark.parametrize(("days", "reported"), [(400, False), (10, True), (-1, True)])
def test_certificate_near_expiry(tmp_path: Path, days: int, reported: bool) -> None:
    cert = tmp_path / "server.pem"
    write_cert(cert, NOW + dt.timedelta(days=days))
    node_dir(tmp_path, "consul-server-1", SECURE + f'cert_file = "{cert}"\n')
    found = run_doctor(tmp_path)
    assert [(f.code, f.key) for f in found] == (
        [("cert-near-expiry", "cert_file")] if reported else []
    )
    if days < 0:
        assert "has expired" in found[0].why


def test_bootstrap_expect_mismatches(tmp_path: Path) -> None:
    node_dir(
        tmp_path, "consul-server-1", SECURE.replace("bootstrap_expect = 1", "bootstrap_expect = 2")
    )
    node_dir(
        tmp_path, "consul-server-2", SECURE.replace("bootstrap_expect = 1", "bootstrap_expect = 2")
    )
    assert run_doctor(tmp_path) == []  # two servers expecting two
    node_dir(
        tmp_path, "consul-server-3", SECURE.replace("bootstrap_expect = 1", "bootstrap_expect = 3")
    )
    found = run_doctor(tmp_path)
    assert {f.code for f in found} == {"bootstrap-expect-mismatch"}
    assert len(found) == 3 and "disagree" in found[0].why
    client = SECURE.replace("server = true\n", "").replace("verify_incoming = true\n", "")
    other = tmp_path / "again"
    node_dir(
        other, "consul-server-1", SECURE.replace("bootstrap_expect = 1", "bootstrap_expect = 2")
    )
    node_dir(
        other, "consul-client-1", client.replace("bootstrap_expect = 1", "bootstrap_expect = 2")
    )
    found = run_doctor(other)
    assert [(f.node, f.code) for f in found] == [
        ("consul-client-1", "bootstrap-expect-mismatch"),
        ("consul-server-1", "bootstrap-expect-mismatch"),
    ]


def test_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node_dir(tmp_path, "consul-server-1", SECURE)
    assert doctor.run([str(tmp_path)]) == 0
    assert "no findings" in capsys.readouterr().out
    node_dir(tmp_path, "consul-server-2", SECURE.replace("verify_server_hostname = true", ""))
    assert doctor.run([str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "✗ [no-verify-server-hostname] consul-server-2" in out and "fix: " in out
    assert "9ed687c1" not in out  # no secret printed
    assert doctor.run([str(tmp_path / "missing")]) == 1
