"""split_host_port (structs/hostport.py): the one "host:port" parser, from a table."""

from __future__ import annotations

import pytest

from proconsul.structs.hostport import split_host_port

GOOD = [
    ("127.0.0.1:8300", None, ("127.0.0.1", 8300)),
    ("[::1]:53", None, ("::1", 53)),
    ("name:0", None, ("name", 0)),
    (":8500", None, ("", 8500)),
    ("10.0.0.1", 8301, ("10.0.0.1", 8301)),
    ("node.example", 8301, ("node.example", 8301)),
    ("::1", 53, ("::1", 53)),
    ("[fe80::1]", 53, ("fe80::1", 53)),
    ("  host:1  ", None, ("host", 1)),
]
BAD = [
    ("localhost", None, "missing port in address"),
    ("::1:80", None, "too many colons in address"),
    ("[::1]", None, "missing port in address"),
    ("[::1:80", None, "missing ']' in address"),
    ("[::1]x80", 80, "missing port in address"),
    ("host:http", None, "invalid port"),
    ("host:70000", 1, "invalid port"),
    ("host:-1", None, "invalid port"),
]


@pytest.mark.parametrize(("text", "default", "expected"), GOOD)
def test_splits(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split_host_port(text, default) == expected


@pytest.mark.parametrize(("text", "default", "message"), BAD)
def test_refuses_with_gos_words(text: str, default: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_host_port(text, default)
