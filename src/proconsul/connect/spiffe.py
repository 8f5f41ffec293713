"""SPIFFE IDs of client certificates: which Connect identity a URI names.

Job: tell a service's ID (`spiffe://<trust domain>/ns/<ns>/dc/<dc>/svc/<name>`,
parsed by connect/ca.py's `parse_service_id`) from the other Connect
identities (client agents, servers, mesh gateways, the CA's signing ID) and
from anything that is not one, as `/v1/agent/connect/authorize` needs to
(Consul's ParseCertURIFromString; partitions, an Enterprise feature, are not
recognized).
"""

from __future__ import annotations

import re
import urllib.parse

from proconsul.connect.ca import ServiceID, parse_service_id

_OTHER_PATHS = (
    re.compile(r"^/agent/client/dc/[^/]+/id/[^/]+$"),
    re.compile(r"^/agent/server/dc/[^/]+$"),
    re.compile(r"^/gateway/mesh/dc/[^/]+$"),
    re.compile(r"^/?$"),  # the CA's signing ID: the trust domain alone
)


class SpiffeError(ValueError):
    """Not a Connect identity at all."""


def parse_cert_uri(text: str) -> ServiceID | None:
    """The service a Connect URI names; None for another Connect identity;
    SpiffeError for anything else."""
    service = parse_service_id(text)
    if service is not None:
        return service
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme != "spiffe" or not parsed.netloc:
        raise SpiffeError(f"not a SPIFFE ID: {text!r}")
    if any(pattern.match(parsed.path) for pattern in _OTHER_PATHS):
        return None
    raise SpiffeError("SPIFFE ID is not in the expected format")
