"""A throwaway PKI on disk and TLS settings for it: for tests and benchmarks.

Job: write a CA and agent certificates (made the way `tls cert create`
makes them) into a directory, and build `TLSSettings` that point at them,
so RPC tests can run real TLS with every kind of bad certificate.
Not used by the agent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from proconsul.config.schema import TLSSettings
from proconsul.tls import (
    CertificateAuthority,
    Role,
    agent_cert_spec,
    generate_ca,
    issue_leaf,
    load_ca,
)

VALID_FOR = timedelta(days=1)


@dataclass(frozen=True)
class CertFiles:
    cert_file: str
    key_file: str


@dataclass
class TestPKI:
    directory: Path
    ca_file: str
    ca: CertificateAuthority
    datacenter: str = "dc1"
    domain: str = "consul"

    __test__ = False  # not a pytest test class, despite the name

    def issue(
        self,
        role: Role,
        name: str,
        *,
        ca: CertificateAuthority | None = None,
        now: datetime | None = None,
        valid_for: timedelta = VALID_FOR,
    ) -> CertFiles:
        """Write `<name>.pem` and `<name>-key.pem` for an agent of `role`."""
        spec = agent_cert_spec(
            role, datacenter=self.datacenter, domain=self.domain, valid_for=valid_for
        )
        pair = issue_leaf(ca or self.ca, spec, now=now or datetime.now(UTC))
        cert_file = self.directory / f"{name}.pem"
        key_file = self.directory / f"{name}-key.pem"
        cert_file.write_text(pair.cert_pem)
        key_file.write_text(pair.key_pem)
        key_file.chmod(0o600)
        return CertFiles(str(cert_file), str(key_file))

    def issue_expired(self, role: Role, name: str) -> CertFiles:
        """A certificate whose validity ended a day ago."""
        return self.issue(role, name, now=datetime.now(UTC) - timedelta(days=2))

    def other_ca(self, name: str = "other-ca") -> tuple[CertificateAuthority, str]:
        """A second, unrelated CA and its certificate file."""
        return _write_ca(self.directory, name)


def make_pki(directory: Path, *, datacenter: str = "dc1", domain: str = "consul") -> TestPKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_file = _write_ca(directory, "ca")
    return TestPKI(directory, ca_file, ca, datacenter, domain)


def tls_settings(
    *,
    ca_file: str = "",
    ca_path: str = "",
    cert: CertFiles | None = None,
    verify_incoming: bool = False,
    verify_outgoing: bool = False,
    verify_server_hostname: bool = False,
    tls_min_version: str = "TLSv1_2",
    tls_cipher_suites: str = "",
) -> TLSSettings:
    return TLSSettings(
        ca_file=ca_file,
        ca_path=ca_path,
        cert_file=cert.cert_file if cert else "",
        key_file=cert.key_file if cert else "",
        verify_incoming=verify_incoming,
        verify_outgoing=verify_outgoing,
        verify_server_hostname=verify_server_hostname,
        tls_min_version=tls_min_version,
        tls_cipher_suites=tls_cipher_suites,
        use_auto_cert=False,
    )


def with_cert(settings: TLSSettings, cert: CertFiles | None) -> TLSSettings:
    return replace(
        settings,
        cert_file=cert.cert_file if cert else "",
        key_file=cert.key_file if cert else "",
    )


def _write_ca(directory: Path, name: str) -> tuple[CertificateAuthority, str]:
    pair = generate_ca(now=datetime.now(UTC))
    ca_file = directory / f"{name}.pem"
    ca_file.write_text(pair.cert_pem)
    key_file = directory / f"{name}-key.pem"
    key_file.write_text(pair.key_pem)
    key_file.chmod(0o600)
    return load_ca(pair.cert_pem, pair.key_pem), str(ca_file)
