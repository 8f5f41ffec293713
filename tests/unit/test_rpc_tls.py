"""RPC TLS settings -> SSL contexts, file errors, failure names, peer identities.
(Handshakes over real sockets are in tests/integration/test_rpc_tls_handshakes.py.)"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from proconsul.rpc import tls as rpc_tls
from proconsul.rpc.testing import CertFiles, TestPKI, make_pki, tls_settings
from proconsul.rpc.tls import (
    PeerInfo,
    TLSConfigError,
    classify_tls_failure,
    client_context,
    parse_cipher_suites,
    parse_min_version,
    peer_info,
    present_certificate_pem,
    server_context,
)
from proconsul.rpc.tls import rpc_tls as make_rpc_tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    pki.issue("server", "server")
    pki.issue("client", "client")
    return pki


def files(pki: TestPKI, name: str) -> CertFiles:
    return CertFiles(str(pki.directory / f"{name}.pem"), str(pki.directory / f"{name}-key.pem"))


# --- versions and ciphers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "version"),
    [
        ("TLSv1_0", ssl.TLSVersion.TLSv1),
        ("TLSv1_1", ssl.TLSVersion.TLSv1_1),
        ("TLSv1_2", ssl.TLSVersion.TLSv1_2),
        ("TLSv1_3", ssl.TLSVersion.TLSv1_3),
        ("tls12", ssl.TLSVersion.TLSv1_2),
        ("tls13", ssl.TLSVersion.TLSv1_3),
        ("", ssl.TLSVersion.TLSv1_2),
    ],
)
def test_min_versions(value: str, version: ssl.TLSVersion) -> None:
    assert parse_min_version(value) == version


def test_bad_min_version_names_the_setting() -> None:
    with pytest.raises(TLSConfigError, match=r"tls_min_version.*'TLSv9'"):
        parse_min_version("TLSv9")


def test_cipher_suites_use_consul_names() -> None:
    assert parse_cipher_suites(
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"
    ) == ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"]
    with pytest.raises(TLSConfigError, match="TLS_RSA_WITH_RC4"):
        parse_cipher_suites("TLS_RSA_WITH_RC4_128_SHA")


def test_cipher_suites_cannot_be_set_with_tls13(pki: TestPKI) -> None:
    settings = tls_settings(
        cert=files(pki, "server"),
        tls_min_version="TLSv1_3",
        tls_cipher_suites="TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    )
    with pytest.raises(TLSConfigError, match="TLSv1_3"):
        server_context(settings)


# --- server contexts ------------------------------------------------------------


def test_no_certificate_means_a_plaintext_server() -> None:
    assert server_context(tls_settings()) is None


def test_verify_incoming_requires_a_certificate_and_a_ca(pki: TestPKI) -> None:
    with pytest.raises(TLSConfigError, match="verify_incoming"):
        server_context(tls_settings(verify_incoming=True))
    with pytest.raises(TLSConfigError, match="ca_file"):
        server_context(tls_settings(cert=files(pki, "server"), verify_incoming=True))


def test_server_context_modes(pki: TestPKI) -> None:
    cert = files(pki, "server")
    demanding = server_context(
        tls_settings(
            ca_file=pki.ca_file, cert=cert, verify_incoming=True, tls_min_version="TLSv1_3"
        )
    )
    assert demanding is not None
    assert demanding.verify_mode == ssl.CERT_REQUIRED
    assert demanding.minimum_version == ssl.TLSVersion.TLSv1_3
    anonymous = server_context(
        tls_settings(ca_file=pki.ca_file, cert=cert, verify_incoming=True),
        allow_anonymous_tls=True,
    )
    assert anonymous is not None
    assert anonymous.verify_mode == ssl.CERT_OPTIONAL
    relaxed = server_context(tls_settings(ca_file=pki.ca_file, cert=cert))
    assert relaxed is not None
    assert relaxed.verify_mode == ssl.CERT_NONE
    assert relaxed.minimum_version == ssl.TLSVersion.TLSv1_2


def test_missing_files_are_named(pki: TestPKI, tmp_path: Path) -> None:
    server = files(pki, "server")
    missing = str(tmp_path / "nope.pem")
    cases = [
        (CertFiles(missing, server.key_file), "cert_file"),
        (CertFiles(server.cert_file, missing), "key_file"),
    ]
    for cert, setting in cases:
        with pytest.raises(TLSConfigError, match=rf"{setting} '.*nope.pem' does not exist"):
            server_context(tls_settings(cert=cert))
    with pytest.raises(TLSConfigError, match=r"ca_file '.*nope.pem' does not exist"):
        server_context(tls_settings(ca_file=missing, cert=server, verify_incoming=True))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_key_is_named(pki: TestPKI, tmp_path: Path) -> None:
    key = tmp_path / "locked-key.pem"
    key.write_bytes(Path(files(pki, "server").key_file).read_bytes())
    key.chmod(0)
    cert = CertFiles(files(pki, "server").cert_file, str(key))
    with pytest.raises(TLSConfigError, match=r"key_file .* permission denied"):
        server_context(tls_settings(cert=cert))


def test_garbage_and_mismatched_material_is_named(pki: TestPKI, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem\n")
    server, client = files(pki, "server"), files(pki, "client")
    with pytest.raises(
        TLSConfigError, match=r"cert_file '.*junk.pem' holds no valid PEM certificate"
    ):
        server_context(tls_settings(cert=CertFiles(str(junk), server.key_file)))
    with pytest.raises(
        TLSConfigError, match=r"key_file '.*junk.pem' holds no valid PEM private key"
    ):
        server_context(tls_settings(cert=CertFiles(server.cert_file, str(junk))))
    with pytest.raises(TLSConfigError, match="does not match cert_file"):
        server_context(tls_settings(cert=CertFiles(server.cert_file, client.key_file)))
    with pytest.raises(TLSConfigError, match=r"ca_file '.*junk.pem'"):
        client_context(tls_settings(ca_file=str(junk), verify_outgoing=True))


def test_key_material_never_appears_in_errors(pki: TestPKI, tmp_path: Path) -> None:
    key_text = Path(files(pki, "client").key_file).read_text()
    broken = tmp_path / "broken-key.pem"
    broken.write_text(key_text.replace("A", "!"))
    with pytest.raises(TLSConfigError) as info:
        server_context(tls_settings(cert=CertFiles(files(pki, "server").cert_file, str(broken))))
    body = key_text.splitlines()[1]
    assert body[:16] not in str(info.value)


def test_cert_and_key_go_together(pki: TestPKI) -> None:
    with pytest.raises(TLSConfigError, match="key_file is not"):
        server_context(tls_settings(cert=CertFiles(files(pki, "server").cert_file, "")))


# --- client contexts ------------------------------------------------------------


def test_client_dials_plaintext_without_verify_outgoing(pki: TestPKI) -> None:
    assert client_context(tls_settings(ca_file=pki.ca_file)) is None
    assert client_context(tls_settings(ca_file=pki.ca_file), force_tls=True) is not None


def test_client_checks_the_chain_always_and_the_name_on_request(pki: TestPKI) -> None:
    chain_only = client_context(tls_settings(ca_file=pki.ca_file, verify_outgoing=True))
    assert chain_only is not None
    assert chain_only.verify_mode == ssl.CERT_REQUIRED
    assert chain_only.check_hostname is False
    named = client_context(
        tls_settings(ca_file=pki.ca_file, verify_outgoing=True, verify_server_hostname=True)
    )
    assert named is not None
    assert named.check_hostname is True


def test_verify_outgoing_needs_a_ca() -> None:
    with pytest.raises(TLSConfigError, match="verify_outgoing"):
        client_context(tls_settings(verify_outgoing=True))


def test_ca_path_reads_every_file(pki: TestPKI, tmp_path: Path) -> None:
    ca_dir = tmp_path / "cas"
    (ca_dir / "nested").mkdir(parents=True)
    (ca_dir / "nested" / "agent-ca.crt").write_bytes(Path(pki.ca_file).read_bytes())
    _, other_ca_file = pki.other_ca("ca-path-other")
    (ca_dir / "other.pem").write_bytes(Path(other_ca_file).read_bytes())
    bundle = rpc_tls.load_ca_pem(ca_path=str(ca_dir))
    assert bundle.count("BEGIN CERTIFICATE") == 2
    assert client_context(tls_settings(ca_path=str(ca_dir), verify_outgoing=True)) is not None
    (ca_dir / "README").write_text("hello\n")
    with pytest.raises(TLSConfigError, match=r"ca_path '.*README' holds no valid PEM certificate"):
        rpc_tls.load_ca_pem(ca_path=str(ca_dir))
    with pytest.raises(TLSConfigError, match="is not a directory"):
        rpc_tls.load_ca_pem(ca_path=str(ca_dir / "other.pem"))


def test_present_certificate_from_pem_text(pki: TestPKI) -> None:
    client = files(pki, "client")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    present_certificate_pem(
        ctx, Path(client.cert_file).read_text(), Path(client.key_file).read_text()
    )
    with pytest.raises(TLSConfigError, match=r"key_file \(PEM\) holds no valid PEM private key"):
        present_certificate_pem(ctx, Path(client.cert_file).read_text(), "junk")


def test_rpc_tls_follows_consul(pki: TestPKI) -> None:
    server = files(pki, "server")
    settings = tls_settings(ca_file=pki.ca_file, cert=server, verify_outgoing=True)
    relaxed = make_rpc_tls(settings, datacenter="dc1", domain="consul", is_server=True)
    assert relaxed.server_context is not None
    assert relaxed.accept_plaintext  # no verify_incoming: plaintext still welcome
    assert relaxed.client_context is not None
    assert relaxed.server_hostname == "server.dc1.consul"
    strict = make_rpc_tls(
        tls_settings(ca_file=pki.ca_file, cert=server, verify_incoming=True),
        datacenter="dc1",
        domain="consul",
        is_server=True,
    )
    assert not strict.accept_plaintext
    assert strict.client_context is None  # no verify_outgoing: dials plaintext
    client_agent = make_rpc_tls(
        tls_settings(ca_file=pki.ca_file),
        datacenter="dc1",
        domain="consul",
        is_server=False,
        auto_encrypt_tls=True,
    )
    assert client_agent.server_context is None
    assert client_agent.client_context is not None


# --- failures and peers ---------------------------------------------------------------


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, message)
    exc.verify_code = code
    exc.verify_message = message
    return exc


def _ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, reason)
    exc.reason = reason
    return exc


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (_verify_error(10, "certificate has expired"), "expired_cert"),
        (_verify_error(9, "certificate is not yet valid"), "cert_not_yet_valid"),
        (_verify_error(20, "unable to get local issuer certificate"), "wrong_ca"),
        (_verify_error(19, "self-signed certificate in certificate chain"), "wrong_ca"),
        (_verify_error(62, "Hostname mismatch"), "hostname_mismatch"),
        (_verify_error(26, "unsupported certificate purpose"), "bad_cert_purpose"),
        (_verify_error(999, "something new"), "cert_verify_failed"),
        (_ssl_error("PEER_DID_NOT_RETURN_A_CERTIFICATE"), "missing_client_cert"),
        (_ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED"), "missing_client_cert"),
        (_ssl_error("TLSV1_ALERT_UNKNOWN_CA"), "wrong_ca"),
        (_ssl_error("SSLV3_ALERT_CERTIFICATE_EXPIRED"), "expired_cert"),
        (_ssl_error("SSLV3_ALERT_BAD_CERTIFICATE"), "peer_refused_cert"),
        (_ssl_error("WRONG_VERSION_NUMBER"), "not_tls"),
        (_ssl_error("UNSUPPORTED_PROTOCOL"), "protocol_version"),
        (_ssl_error("NO_SHARED_CIPHER"), "no_shared_cipher"),
        (_ssl_error("SOMETHING_ELSE"), "tls_error"),
        (TimeoutError(), "handshake_timeout"),
    ],
)
def test_failures_are_named(exc: BaseException, reason: str) -> None:
    assert classify_tls_failure(exc)[0] == reason
    assert reason in rpc_tls.FAILURE_REASONS


def test_peer_info_from_a_verified_certificate() -> None:
    cert = {
        "subject": ((("commonName", "server.dc1.consul"),),),
        "subjectAltName": (
            ("DNS", "server.dc1.consul"),
            ("DNS", "localhost"),
            ("IP Address", "127.0.0.1"),
            ("URI", "spiffe://x/agent/server/dc/dc1"),
        ),
        "serialNumber": "0A",
        "notAfter": "Jan  1 00:00:00 2030 GMT",
    }
    peer = peer_info(("127.0.0.1", 5000), cert, tls=True)
    assert peer.verified and peer.tls
    assert peer.common_name == "server.dc1.consul"
    assert peer.dns_names == ("server.dc1.consul", "localhost")
    assert peer.ip_addresses == ("127.0.0.1",)
    assert peer.uris == ("spiffe://x/agent/server/dc/dc1",)
    assert peer.is_server("dc1", "consul")
    assert not peer.is_server("dc2", "consul")
    assert "CN=server.dc1.consul" in peer.describe()


def test_unverified_peers_claim_nothing() -> None:
    peer = peer_info(("::1", 5000), None, tls=True)
    assert not peer.verified
    assert not peer.is_server("dc1", "consul")
    assert peer.describe().startswith("[::1]:5000")
    # Names alone (without verification) never count.
    assert not PeerInfo(address=None, dns_names=("server.dc1.consul",)).is_server("dc1", "consul")


def test_wildcards_match_one_label() -> None:
    peer = PeerInfo(address=None, verified=True, dns_names=("*.dc1.consul",))
    assert peer.has_dns_name("server.dc1.consul")
    assert not peer.has_dns_name("a.server.dc1.consul")
    assert not peer.has_dns_name("dc1.consul")
