"""SPIFFE IDs of Connect certificates: parsing the URI a client certificate carries.

Job: tell a service's ID (`spiffe://<trust domain>/ns/<ns>/dc/<dc>/svc/<name>`,
with `/ap/<partition>` in front for a non-default partition) from the other
Connect identities (agents, servers, the CA's signing ID) and from anything
that is not one, as `/v1/agent/connect/authorize` needs to (Consul's
ParseCertURIFromString).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

_SERVICE_PATH = re.compile(r"^(?:/ap/([^/]+))?/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)$")
_OTHER_PATHS = (
    re.compile(r"^/agent/client/dc/[^/]+/id/[^/]+$"),
    re.compile(r"^/agent/server/dc/[^/]+$"),
    re.compile(r"^/gateway/mesh/dc/[^/]+$"),
    re.compile(r"^/?$"),  # the CA's signing ID: the trust domain alone
)


class SpiffeError(ValueError):
    """Not a Connect identity at all."""


@dataclass(frozen=True)
class SpiffeService:
    trust_domain: str
    namespace: str
    datacenter: str
    service: str
    partition: str = "default"


def parse_cert_uri(text: str) -> SpiffeService | None:
    """The service a Connect URI names; None for another Connect identity
    (an agent, a server, a gateway, the CA); SpiffeError for anything else."""
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme != "spiffe" or not parsed.netloc:
        raise SpiffeError(f"not a SPIFFE ID: {text!r}")
    path = urllib.parse.unquote(parsed.path)
    found = _SERVICE_PATH.match(path)
    if found is not None:
        partition, namespace, datacenter, service = found.groups()
        return SpiffeService(parsed.netloc, namespace, datacenter, service, partition or "default")
    if any(pattern.match(path) for pattern in _OTHER_PATHS):
        return None
    raise SpiffeError("SPIFFE ID is not in the expected format")
