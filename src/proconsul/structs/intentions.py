"""The intention reads' request part and the check's answer (Consul's shapes).

Job: `IntentionQuery`, the part of a `ReadRequest` the "Intention.*" reads
use (server/intention_endpoints.py), and `IntentionCheckResponse`, the body
of `/v1/connect/intentions/check`. The intention rows themselves are
`structs.config_entries.Intention`: they are views of service-intentions
config entries.
"""

from __future__ import annotations

import msgspec

from proconsul.structs.naming import pascal

MATCH_SOURCE = "source"
MATCH_DESTINATION = "destination"


class IntentionQuery(msgspec.Struct):
    """Which intentions a read is about. "Intention.Get": by `id` (a legacy
    ID) or by exact `source` and `destination`; "Intention.Check": `source`
    and `destination`; "Intention.Match": `names`, matched by `match_by`
    ("source" or "destination")."""

    source: str = ""
    destination: str = ""
    id: str = ""
    match_by: str = ""
    names: list[str] = []


class IntentionCheckResponse(msgspec.Struct, rename=pascal):
    allowed: bool
