"""SPIFFE IDs of client certificates: a service's ID parsed, other Connect
identities told apart, anything else refused."""

from __future__ import annotations

import pytest

from proconsul.connect.ca import ServiceID
from proconsul.connect.spiffe import SpiffeError, parse_cert_uri

TD = "11111111-2222-4333-8444-555555555555.consul"


def test_service_ids() -> None:
    assert parse_cert_uri(f"spiffe://{TD}/ns/default/dc/dc1/svc/web") == ServiceID(
        TD, "default", "dc1", "web"
    )


@pytest.mark.parametrize(
    "uri",
    [
        f"spiffe://{TD}/agent/client/dc/dc1/id/0e6a7e4c-0000-4000-8000-000000000000",
        f"spiffe://{TD}/agent/server/dc/dc1",
        f"spiffe://{TD}/gateway/mesh/dc/dc1",
        f"spiffe://{TD}",
    ],
)
def test_other_connect_identities(uri: str) -> None:
    assert parse_cert_uri(uri) is None


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "web",
        "https://example.com/ns/default/dc/dc1/svc/web",
        "spiffe:///ns/x",
        f"spiffe://{TD}/svc/web",
    ],
)
def test_not_connect_identities(uri: str) -> None:
    with pytest.raises(SpiffeError):
        parse_cert_uri(uri)
