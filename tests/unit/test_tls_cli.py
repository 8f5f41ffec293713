"""`proconsul tls ca create` / `tls cert create`: files, contents, output, errors,
and real TLS handshakes with what they produce."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proconsul import tls
from proconsul.cli import tls as tls_cli
from proconsul.cli.main import main
from proconsul.cli.offline import OfflineError

WARNING_FIRST_LINE = "==> WARNING: Server Certificates grants authority to become a"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def dns_names(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)


def ip_names(cert: x509.Certificate) -> list[str]:
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]


def ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- ca create --------------------------------------------------------------


def test_ca_create_writes_ca_and_private_key(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "tls", "ca", "create")
    assert (code, err) == (0, "")
    assert out == "==> Saved consul-agent-ca.pem\n==> Saved consul-agent-ca-key.pem\n"
    assert sorted(p.name for p in in_tmp.iterdir()) == [
        "consul-agent-ca-key.pem",
        "consul-agent-ca.pem",
    ]
    assert mode(in_tmp / "consul-agent-ca-key.pem") == 0o600
    cert = load(in_tmp / "consul-agent-ca.pem")
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=1825) <= validity <= timedelta(days=1825, minutes=2)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.NameConstraints)


def test_ca_create_refuses_to_overwrite(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "tls", "ca", "create")[0] == 0
    before = (in_tmp / "consul-agent-ca.pem").read_bytes()
    code, out, err = run(capsys, "tls", "ca", "create")
    assert code == 1
    assert "consul-agent-ca.pem already exists." in err
    assert out == ""
    assert (in_tmp / "consul-agent-ca.pem").read_bytes() == before

    (in_tmp / "consul-agent-ca.pem").unlink()
    code, _, err = run(capsys, "tls", "ca", "create")
    assert code == 1 and "consul-agent-ca-key.pem already exists." in err
    assert not (in_tmp / "consul-agent-ca.pem").exists()


def test_ca_create_options(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "tls",
        "ca",
        "create",
        "-domain=example",
        "-days",
        "30",
        "-name-constraint",
        "-additional-name-constraint",
        "ui.example.com",
        "-common-name",
        "Test CA",
        "-cluster-id=1234",
    )
    assert code == 0
    assert out == "==> Saved example-agent-ca.pem\n==> Saved example-agent-ca-key.pem\n"
    cert = load(in_tmp / "example-agent-ca.pem")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test CA"
    nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert nc.value.permitted_subtrees == [
        x509.DNSName("ui.example.com"),
        x509.DNSName("example"),
        x509.DNSName("localhost"),
    ]
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://1234.example"]
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=30) <= validity <= timedelta(days=30, minutes=2)


# --- cert create ------------------------------------------------------------


def test_server_certs_are_numbered_and_complete(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "tls", "ca", "create")[0] == 0
    code, out, err = run(capsys, "tls", "cert", "create", "-server")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        WARNING_FIRST_LINE,
        "    server and access all state in the cluster including root keys",
        "    and all ACL tokens. Do not distribute them to production hosts",
        "    that are not server nodes. Store them as securely as CA keys.",
        "==> Using consul-agent-ca.pem and consul-agent-ca-key.pem",
        "==> Saved dc1-server-consul-0.pem",
        "==> Saved dc1-server-consul-0-key.pem",
    ]
    code, out, _ = run(capsys, "tls", "cert", "create", "-server")
    assert code == 0
    assert out.splitlines()[-2:] == [
        "==> Saved dc1-server-consul-1.pem",
        "==> Saved dc1-server-consul-1-key.pem",
    ]
    ca = load(in_tmp / "consul-agent-ca.pem")
    for n in (0, 1):
        cert = load(in_tmp / f"dc1-server-consul-{n}.pem")
        key_path = in_tmp / f"dc1-server-consul-{n}-key.pem"
        assert mode(key_path) == 0o600
        private = load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert isinstance(private.curve, ec.SECP256R1)
        assert private.public_key() == cert.public_key()
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
            "server.dc1.consul"
        )
        assert dns_names(cert) == ["server.dc1.consul", "localhost"]
        assert ip_names(cert) == ["127.0.0.1"]
        assert ekus(cert) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        validity = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert timedelta(days=365) <= validity <= timedelta(days=365, minutes=2)
    assert load(in_tmp / "dc1-server-consul-0.pem").serial_number != (
        load(in_tmp / "dc1-server-consul-1.pem").serial_number
    )


def test_client_and_cli_certs(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "tls", "ca", "create")[0] == 0
    code, out, _ = run(capsys, "tls", "cert", "create", "-client")
    assert code == 0
    assert out == (
        "==> Using consul-agent-ca.pem and consul-agent-ca-key.pem\n"
        "==> Saved dc1-client-consul-0.pem\n"
        "==> Saved dc1-client-consul-0-key.pem\n"
    )
    client = load(in_tmp / "dc1-client-consul-0.pem")
    assert dns_names(client) == ["client.dc1.consul", "localhost"]
    assert ip_names(client) == ["127.0.0.1"]
    assert ekus(client) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]

    code, out, _ = run(capsys, "tls", "cert", "create", "-cli")
    assert code == 0 and "==> Saved dc1-cli-consul-0-key.pem" in out
    cli = load(in_tmp / "dc1-cli-consul-0.pem")
    assert dns_names(cli) == ["cli.dc1.consul", "localhost"]
    assert ip_names(cli) == []
    assert ekus(cli) == []
    assert mode(in_tmp / "dc1-cli-consul-0-key.pem") == 0o600


def test_dc_domain_node_and_additional_names(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "tls", "ca", "create", "-domain", "example")[0] == 0
    code, out, err = run(
        capsys,
        "tls",
        "cert",
        "create",
        "-server",
        "-dc=us-west-1",
        "-domain=example",
        "-node",
        "n1",
        "-additional-dnsname",
        "consul.internal",
        "-additional-dnsname= spaced.internal ",
        "-additional-ipaddress",
        "10.0.0.5",
        "-additional-ipaddress=fd00::5",
        "-days",
        "7",
    )
    assert (code, err) == (0, ""), err
    assert "==> Using example-agent-ca.pem and example-agent-ca-key.pem" in out
    cert = load(in_tmp / "us-west-1-server-example-0.pem")
    assert (in_tmp / "us-west-1-server-example-0-key.pem").exists()
    assert dns_names(cert) == [
        "server.us-west-1.example",
        "n1.server.us-west-1.example",
        "localhost",
        "consul.internal",
        "spaced.internal",
    ]
    assert ip_names(cert) == ["127.0.0.1", "10.0.0.5", "fd00::5"]
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=7) <= validity <= timedelta(days=7, minutes=2)


def test_explicit_ca_paths(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "tls", "ca", "create")[0] == 0
    sub = in_tmp / "ca"
    sub.mkdir()
    (in_tmp / "consul-agent-ca.pem").rename(sub / "root.pem")
    (in_tmp / "consul-agent-ca-key.pem").rename(sub / "root-key.pem")
    code, out, _ = run(
        capsys, "tls", "cert", "create", "-client", "-ca", "ca/root.pem", "-key", "ca/root-key.pem"
    )
    assert code == 0
    assert "==> Using ca/root.pem and ca/root-key.pem" in out
    load(in_tmp / "dc1-client-consul-0.pem").verify_directly_issued_by(load(sub / "root.pem"))


def test_numbering_skips_half_pairs(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "tls", "ca", "create")[0] == 0
    (in_tmp / "dc1-server-consul-0-key.pem").write_text("not mine")
    code, out, _ = run(capsys, "tls", "cert", "create", "-server")
    assert code == 0 and "==> Saved dc1-server-consul-1.pem" in out
    assert (in_tmp / "dc1-server-consul-0-key.pem").read_text() == "not mine"
    assert not (in_tmp / "dc1-server-consul-0.pem").exists()


def test_pair_is_all_or_nothing(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A key file appearing between the free-name check and the write (another
    # process) must fail the command and leave no half pair behind.
    (in_tmp / "a-key.pem").write_text("theirs")
    pair = tls.CertKeyPair("CERT", "KEY")
    with pytest.raises(OfflineError, match=r"a-key\.pem already exists"):
        tls_cli._save_pair(pair, "a.pem", "a-key.pem")
    assert not (in_tmp / "a.pem").exists()
    assert (in_tmp / "a-key.pem").read_text() == "theirs"
    assert capsys.readouterr().out == ""


def test_missing_ca(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "tls", "cert", "create", "-server")
    assert code == 1
    assert out == ""
    assert err == "Error reading CA: open consul-agent-ca.pem: no such file or directory\n"
    assert list(in_tmp.iterdir()) == []

    assert run(capsys, "tls", "ca", "create")[0] == 0
    (in_tmp / "consul-agent-ca-key.pem").unlink()
    code, _, err = run(capsys, "tls", "cert", "create", "-client")
    assert code == 1
    assert err.startswith("Error reading CA key: open consul-agent-ca-key.pem:")


def test_mismatched_ca_key(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "tls", "ca", "create")[0] == 0
    assert run(capsys, "tls", "ca", "create", "-domain", "other")[0] == 0
    code, _, err = run(capsys, "tls", "cert", "create", "-client", "-key", "other-agent-ca-key.pem")
    assert code == 1 and "does not match" in err
    assert not list(in_tmp.glob("dc1-*"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "Please provide either -server, -client, or -cli"),
        (["-server", "-client"], "Please provide either -server, -client, or -cli"),
        (["-server", "-client", "-cli"], "Please provide either -server, -client, or -cli"),
        (["-client", "-node", "n1"], "-node requires -server"),
        (["-server", "-bogus"], "flag provided but not defined: -bogus"),
        (["-server", "stray"], "unexpected argument: stray"),
        (["-server", "-days", "0"], "-days must be at least 1"),
        (["-server", "-days", "x"], 'invalid value "x" for flag -days'),
        (["-server", "-additional-ipaddress", "1.2.3"], "Invalid IP address"),
        (["-server", "-ca="], "Please provide the ca"),
        (["-server", "-key="], "Please provide the key"),
    ],
)
def test_cert_create_usage_errors(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run(capsys, "tls", "ca", "create")[0] == 0
    code, out, err = run(capsys, "tls", "cert", "create", *argv)
    assert code == 1
    assert message in err
    assert out == ""
    assert not list(in_tmp.glob("dc1-*"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-bogus"], "flag provided but not defined: -bogus"),
        (["extra"], "unexpected argument: extra"),
        (["-days=-1"], "-days must be at least 1"),
    ],
)
def test_ca_create_usage_errors(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "tls", "ca", "create", *argv)
    assert code == 1 and message in err and out == ""
    assert list(in_tmp.iterdir()) == []


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tls", "cert", "create", "-h")
    assert code == 0 and "-additional-dnsname" in out
    code, out, _ = run(capsys, "tls", "ca", "create", "-help")
    assert code == 0 and "-name-constraint" in out


def test_name_constraint_blocks_foreign_names(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "tls", "ca", "create", "-name-constraint")[0] == 0
    code, _, err = run(
        capsys, "tls", "cert", "create", "-server", "-additional-dnsname", "evil.com"
    )
    assert code == 1 and "evil.com" in err
    assert not list(in_tmp.glob("dc1-*"))
    assert run(capsys, "tls", "cert", "create", "-server")[0] == 0


# --- real TLS handshakes ----------------------------------------------------


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str
) -> bytes:
    """One TLS connection on 127.0.0.1; returns what the server sent, or raises
    the client's SSL error. The server sends after its handshake, so a client
    certificate it rejects surfaces at the client too (TLS 1.3 reports that late)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(b"ok")
                    tls_conn.recv(1)
            except (ssl.SSLError, OSError):
                pass  # the client's side of the failure is what the tests check

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls_conn,
            ):
                return tls_conn.recv(2)
        finally:
            thread.join(10)


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


@pytest.fixture
def issued(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert run(capsys, "tls", "ca", "create", "-name-constraint")[0] == 0
    for role in ("-server", "-client", "-cli"):
        assert run(capsys, "tls", "cert", "create", role)[0] == 0
    return in_tmp


def test_tls_server_cert_verifies_as_server_name(issued: Path) -> None:
    server = server_context(
        issued / "dc1-server-consul-0.pem", issued / "dc1-server-consul-0-key.pem"
    )
    client = client_context(issued / "consul-agent-ca.pem")
    assert handshake(server, client, "server.dc1.consul") == b"ok"
    assert handshake(server, client, "localhost") == b"ok"


def test_tls_client_cert_cannot_pose_as_server(issued: Path) -> None:
    server = server_context(
        issued / "dc1-client-consul-0.pem", issued / "dc1-client-consul-0-key.pem"
    )
    client = client_context(issued / "consul-agent-ca.pem")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(server, client, "server.dc1.consul")


def test_tls_server_cert_rejected_by_another_ca(
    issued: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "tls", "ca", "create", "-domain", "other")[0] == 0
    server = server_context(
        issued / "dc1-server-consul-0.pem", issued / "dc1-server-consul-0-key.pem"
    )
    client = client_context(issued / "other-agent-ca.pem")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, client, "server.dc1.consul")


@pytest.mark.parametrize("role", ["client", "cli"])
def test_tls_mutual_auth_with_agent_and_cli_certs(issued: Path, role: str) -> None:
    ca = issued / "consul-agent-ca.pem"
    server = server_context(
        issued / "dc1-server-consul-0.pem", issued / "dc1-server-consul-0-key.pem", client_ca=ca
    )
    client = client_context(
        ca, issued / f"dc1-{role}-consul-0.pem", issued / f"dc1-{role}-consul-0-key.pem"
    )
    assert handshake(server, client, "server.dc1.consul") == b"ok"


def test_tls_mutual_auth_rejects_missing_client_cert(issued: Path) -> None:
    ca = issued / "consul-agent-ca.pem"
    server = server_context(
        issued / "dc1-server-consul-0.pem", issued / "dc1-server-consul-0-key.pem", client_ca=ca
    )
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(server, client_context(ca), "server.dc1.consul")


def test_ip_san_is_usable(issued: Path) -> None:
    assert "127.0.0.1" in ip_names(load(issued / "dc1-server-consul-0.pem"))
    server = server_context(
        issued / "dc1-server-consul-0.pem", issued / "dc1-server-consul-0-key.pem"
    )
    client = client_context(issued / "consul-agent-ca.pem")
    assert handshake(server, client, "127.0.0.1") == b"ok"
