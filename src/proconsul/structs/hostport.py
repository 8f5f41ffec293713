"""Host and port out of "host:port" text: the one parser every address goes through.

Job: `split_host_port` splits `host:port`, `[v6]:port`, and (where the caller
has a default port) a bare `host` or bare IPv6 address. Callers add their own
rules (a port of 0, an empty host) and word errors for their own flag or key.

Rules (Go's net.SplitHostPort, which Consul's addresses follow):
- Brackets only around the whole host; whatever follows `]` must be `:port`.
- More than one colon outside brackets is a bare IPv6 address when a default
  port applies, else "too many colons in address".
- A port is 0..65535 in decimal digits.
"""

from __future__ import annotations

MAX_PORT = 65535


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """(host, port) from `text`; `default_port` when it names no port (None: a
    port is required). Raises ValueError with Go's wording."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("missing ']' in address")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("missing port in address")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        if default_port is None:
            raise ValueError("too many colons in address")
        host, port_text = text, ""  # a bare IPv6 address
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError("missing port in address")
        return host, default_port
    if not port_text.isdigit() or int(port_text) > MAX_PORT:
        raise ValueError("invalid port")
    return host, int(port_text)
