"""One decoding rule for request bodies (`naming.conform_keys`), field by field.

Each field is fed in several casings (PascalCase, snake_case, all lower,
all upper, camelCase) and Consul's aliases; every spelling must land on the
same struct field. Unknown keys are refused in complete structs with Go's
message, and user-data keys (Meta, Header) are kept as written.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from proconsul.structs.commands import RegisterRequest
from proconsul.structs.definitions import CheckDefinition, ServiceDefinition
from proconsul.structs.duration import dec_hook
from proconsul.structs.naming import UnknownField, conform_keys


def spellings(pascal: str, snake: str) -> list[str]:
    camel = pascal[:1].lower() + pascal[1:]
    return sorted({pascal, snake, pascal.lower(), pascal.upper(), camel})


def decode(kind: Any, body: dict[str, Any]) -> Any:
    return msgspec.convert(conform_keys(body, kind), kind, dec_hook=dec_hook)


SERVICE_FIELDS = [
    ("ID", "id", "web-1", "id", "web-1"),
    ("Name", "name", "web", "name", "web"),
    ("Port", "port", 80, "port", 80),
    ("EnableTagOverride", "enable_tag_override", True, "enable_tag_override", True),
    ("Tags", "tags", ["a"], "tags", ["a"]),
]

CHECK_FIELDS = [
    ("ServiceID", "service_id", "web", "service_id", "web"),
    ("CheckID", "check_id", "c1", "check_id", "c1"),
    ("TLSSkipVerify", "tls_skip_verify", True, "tls_skip_verify", True),
    ("TLSServerName", "tls_server_name", "x.example", "tls_server_name", "x.example"),
    ("ScriptArgs", "script_args", ["true"], "script_args", ["true"]),
    ("DeregisterCriticalServiceAfter", "deregister_critical_service_after", "1m", None, 60.0),
    ("TTL", "ttl", "10s", None, 10.0),
    ("GRPCUseTLS", "grpc_use_tls", True, "grpc_use_tls", True),
]


@pytest.mark.parametrize(("pascal", "snake", "value", "attr", "expected"), SERVICE_FIELDS)
def test_service_fields_in_every_casing(
    pascal: str, snake: str, value: Any, attr: str, expected: Any
) -> None:
    for key in spellings(pascal, snake):
        found = decode(ServiceDefinition, {key: value})
        assert getattr(found, attr) == expected, key


@pytest.mark.parametrize(("pascal", "snake", "value", "attr", "expected"), CHECK_FIELDS)
def test_check_fields_in_every_casing(
    pascal: str, snake: str, value: Any, attr: str | None, expected: Any
) -> None:
    for key in spellings(pascal, snake):
        found = decode(CheckDefinition, {key: value})
        got = getattr(found, attr or snake)
        assert got == expected, key


def test_args_is_script_args() -> None:
    for key in ("args", "Args", "ARGS"):
        assert decode(CheckDefinition, {key: ["/bin/true"]}).script_args == ["/bin/true"]


def test_nested_check_and_lowercase_tagged_addresses() -> None:
    found = decode(
        ServiceDefinition,
        {
            "name": "web",
            "check": {"serviceid": "web", "Args": ["x"], "interval": "5s"},
            "TaggedAddresses": {"lan": {"address": "10.0.0.1", "port": 8080}},
            "connect": {"sidecar_service": {"Port": 21000}},
        },
    )
    assert found.check is not None
    assert found.check.service_id == "web"
    assert found.check.script_args == ["x"]
    assert found.tagged_addresses["lan"].address == "10.0.0.1"
    assert found.tagged_addresses["lan"].port == 8080
    assert found.connect is not None and found.connect.sidecar_service is not None
    assert found.connect.sidecar_service.port == 21000


def test_user_data_keys_are_kept() -> None:
    found = decode(
        ServiceDefinition,
        {"Name": "web", "Meta": {"Service_ID": "x"}, "Check": {"Header": {"x-Ab": ["1"]}}},
    )
    assert found.meta == {"Service_ID": "x"}
    assert found.check is not None and found.check.header == {"x-Ab": ["1"]}


def test_unknown_field_refused_with_gos_words() -> None:
    with pytest.raises(UnknownField, match=r'^json: unknown field "Bogus"$'):
        conform_keys({"Name": "web", "Bogus": 1}, ServiceDefinition)
    with pytest.raises(UnknownField, match='"WriteRequest"'):
        conform_keys({"Check": {"WriteRequest": {}}}, ServiceDefinition)


def test_api_structs_match_any_case() -> None:
    found = decode(
        RegisterRequest,
        {"node": "n1", "ADDRESS": "10.0.0.2", "service": {"service": "db", "ID": "db1"}},
    )
    assert (found.node, found.address) == ("n1", "10.0.0.2")
    assert found.service is not None and (found.service.service, found.service.id) == ("db", "db1")


def test_keep_unknown_leaves_them_for_the_config_decoder() -> None:
    assert conform_keys({"Name": "x", "Bogus": 1}, ServiceDefinition, keep_unknown=True) == {
        "name": "x",
        "Bogus": 1,
    }
