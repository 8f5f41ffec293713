"""Field naming between Python (snake_case) and Consul's JSON (PascalCase with acronyms).

Structs declare snake_case fields and `rename=pascal`; Consul spells acronyms in
capitals (`ServiceID`, `TLSSkipVerify`, `HTTP`), so a plain title-case is wrong.
`snake_keys` goes the other way for request bodies, which Consul accepts in
either spelling; values under user-data keys (meta, headers) are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_ACRONYMS = {
    "id": "ID",
    "ttl": "TTL",
    "http": "HTTP",
    "https": "HTTPS",
    "tcp": "TCP",
    "udp": "UDP",
    "tls": "TLS",
    "grpc": "GRPC",
    "uri": "URI",
    "dns": "DNS",
    "acl": "ACL",
    "ip": "IP",
    "kv": "KV",
    "cas": "CAS",
    "pem": "PEM",
    "ca": "CA",
    "rpc": "RPC",
    "lan": "LAN",
    "wan": "WAN",
}


def pascal(name: str) -> str:
    """`service_id` -> `ServiceID`, `tls_skip_verify` -> `TLSSkipVerify`."""
    return "".join(_ACRONYMS.get(part) or part[:1].upper() + part[1:] for part in name.split("_"))


_SPLIT_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_SPLIT_WORD = re.compile(r"([a-z0-9])([A-Z])")

# Keys whose values are user data: their own keys are never renamed.
OPAQUE_KEYS = frozenset(
    {"meta", "node_meta", "service_meta", "header", "config", "tagged_addresses", "env"}
)


def snake(name: str) -> str:
    """`ServiceID` -> `service_id`, `TLSSkipVerify` -> `tls_skip_verify`."""
    if name.islower():
        return name
    name = _SPLIT_ACRONYM.sub(r"\1_\2", name)
    name = _SPLIT_WORD.sub(r"\1_\2", name)
    return name.lower()


def snake_keys(obj: Any) -> Any:
    """Recursively rename dict keys to snake_case, leaving user data alone."""
    return _rename_keys(obj, lambda key: key)


def pascal_keys(obj: Any) -> Any:
    """Recursively rename dict keys to Consul's PascalCase, whatever case they came in.

    Consul (Go's JSON decoder) matches field names case-insensitively, so clients
    send `node`, `Node` or `service_id`; our structs want one spelling.
    """
    return _rename_keys(obj, pascal)


def _rename_keys(obj: Any, spell: Callable[[str], str]) -> Any:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                out[key] = value
                continue
            snake_key = snake(key)
            out[spell(snake_key)] = (
                value if snake_key in OPAQUE_KEYS else _rename_keys(value, spell)
            )
        return out
    if isinstance(obj, list):
        return [_rename_keys(item, spell) for item in obj]
    return obj
