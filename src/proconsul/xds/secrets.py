"""The proxy's TLS material as SDS secrets, and the TLS contexts that use them.

Job: the leaf and the roots become two `Secret` resources; the public
listener's DownstreamTlsContext and each upstream cluster's
UpstreamTlsContext name them (SDS over the ADS stream), so a renewed leaf or
a new root is one small update, not a rewrite of every listener and cluster.

Rules:
- Names: `leaf:<service>` for the certificate and key, `roots` for the
  trusted roots (every root the CA lists, active or not, with their
  intermediates, so a rotation never breaks trust).
- Inbound: a client certificate is required and must chain to the roots.
- Outbound: SNI is the target's SNI, and the server certificate must carry
  the target service's SPIFFE ID as a URI SAN (one per target reachable
  through the cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from proconsul.structs.connect import CARoot
from proconsul.xds.common import ads_source, pack
from proconsul.xds.snapshot import LeafCert

ROOTS_SECRET = "roots"
TLS_SOCKET = "tls"


def leaf_secret_name(service: str) -> str:
    return f"leaf:{service}"


def leaf_secret(service: str, leaf: LeafCert) -> Any:
    return secret_pb2.Secret(
        name=leaf_secret_name(service),
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=leaf.cert_pem),
            private_key=base_pb2.DataSource(inline_string=leaf.key_pem),
        ),
    )


def roots_bundle(roots: Sequence[CARoot]) -> str:
    """Every root and intermediate, PEM, one after another."""
    parts: list[str] = []
    for root in roots:
        parts.append(root.root_cert)
        parts.extend(root.intermediate_certs or [])
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts)


def roots_secret(roots: Sequence[CARoot]) -> Any:
    return secret_pb2.Secret(
        name=ROOTS_SECRET,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_string=roots_bundle(roots))
        ),
    )


def _sds(name: str) -> Any:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_source())


def _common(service: str) -> Any:
    return tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(),
        tls_certificate_sds_secret_configs=[_sds(leaf_secret_name(service))],
    )


def downstream_socket(service: str) -> Any:
    """The public listener's TLS: our leaf, and a client certificate from the mesh CA."""
    common = _common(service)
    common.validation_context_sds_secret_config.CopyFrom(_sds(ROOTS_SECRET))
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    context.require_client_certificate.value = True
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def upstream_socket(service: str, sni: str, spiffe_ids: Sequence[str]) -> Any:
    """An upstream cluster's TLS: our leaf as client certificate, the roots,
    and the server's SPIFFE ID checked against `spiffe_ids`."""
    common = _common(service)
    combined = common.combined_validation_context
    combined.validation_context_sds_secret_config.CopyFrom(_sds(ROOTS_SECRET))
    for spiffe_id in spiffe_ids:
        combined.default_validation_context.match_typed_subject_alt_names.append(
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(exact=spiffe_id),
            )
        )
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni)
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))
