"""`proconsul config write` input: HCL or JSON, CamelCase or snake_case keys,
decoded as Consul decodes them, and refused with Consul's wording; the flag
rules of `config delete` that need no agent."""

from __future__ import annotations

import pytest

from proconsul.cli.api_client import CliError
from proconsul.cli.config_entries import delete, entry_from_text, write
from proconsul.structs.config_entries import (
    ServiceDefaults,
    ServiceResolver,
    ServiceSplitter,
    encode_config_entry,
)

SPLITTER_HCL = """
Kind = "service-splitter"
Name = "api"
Splits = [
  {
    Weight        = 75
    ServiceSubset = "v1"
    ResponseHeaders { Set { "x-split" = "v1" } }
  },
  {
    weight         = 25
    service_subset = "v2"
    response_headers { set { "X-Split" = "v2" } }
  },
]
"""


def test_hcl_with_both_key_spellings_keeps_user_data_as_written() -> None:
    entry = entry_from_text(SPLITTER_HCL)
    assert isinstance(entry, ServiceSplitter)
    assert [(s.weight, s.service_subset) for s in entry.splits] == [(75, "v1"), (25, "v2")]
    # Header names are user data: never respelled.
    sets = [s.response_headers.set for s in entry.splits if s.response_headers]
    assert sets == [{"x-split": "v1"}, {"X-Split": "v2"}]


def test_json_snake_case_and_durations() -> None:
    entry = entry_from_text(
        '{"kind": "service-resolver", "name": "api", "connect_timeout": "15s",'
        ' "subsets": {"v1": {"filter": "Service.Meta.version == v1"}}}'
    )
    assert isinstance(entry, ServiceResolver)
    assert entry.connect_timeout == 15.0 and entry.subsets["v1"].filter.endswith("v1")
    assert encode_config_entry(entry)["ConnectTimeout"] == "15s"


def test_hcl_blocks_for_nested_objects() -> None:
    entry = entry_from_text(
        'kind = "service-defaults"\nname = "web"\nprotocol = "http"\n'
        'mesh_gateway { mode = "local" }\n'
    )
    assert isinstance(entry, ServiceDefaults)
    assert (entry.protocol, entry.mesh_gateway.mode) == ("http", "local")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'Kind = "service-nope"\nName = "x"\n',
            "Failed to decode config entry input: invalid config entry kind: service-nope",
        ),
        (
            'Name = "x"\n',
            "Failed to decode config entry input: "
            "Payload does not contain a kind/Kind key at the top level",
        ),
        (
            'Kind = "service-defaults"\nName = "x"\nColour = "red"\n',
            'Failed to decode config entry input: invalid config key "Colour"',
        ),
        (
            'Kind = "service-splitter"\nName = "x"\nSplits = [{ Weight = "lots" }]\n',
            "Failed to decode config entry input: Splits[0].Weight: ",
        ),
    ],
)
def test_bad_input_is_refused_before_any_request(text: str, message: str) -> None:
    with pytest.raises(CliError) as err:
        entry_from_text(text)
    assert err.value.message.startswith(message)


def test_hcl_syntax_errors_are_refused() -> None:
    with pytest.raises(CliError, match=r"^Failed to decode config entry input: "):
        entry_from_text('Kind = "service-defaults"\nName = \n')


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-name", "web"], "Must specify the -kind parameter"),
        (["-kind", "service-defaults"], "Must specify the -name parameter"),
        (
            ["-kind", "service-defaults", "-name", "web", "-modify-index", "3"],
            "Cannot specify -modify-index without -cas",
        ),
        (
            ["-kind", "service-defaults", "-name", "web", "-cas"],
            "Must specify a -modify-index greater than 0 with -cas",
        ),
    ],
)
def test_delete_flag_rules(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert delete(argv) == 1
    assert capsys.readouterr().err.strip() == message


def test_write_of_a_missing_file_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert write(["no-such-file.hcl"]) == 1
    assert capsys.readouterr().err.strip() == (
        "Failed to load data: Failed to read file: open no-such-file.hcl: no such file or directory"
    )
    assert write([]) == 1
    assert capsys.readouterr().err.strip() == (
        "Must provide exactly one positional argument to specify the config entry to write"
    )
