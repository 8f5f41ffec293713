"""The intention verbs' pure parts: get's key/value table, list's columns,
RFC 850 times, files in JSON or HCL, and the usage errors with their exit
codes (no agent is needed to reach them)."""

from __future__ import annotations

import pytest

from proconsul.cli import intention as cli
from proconsul.structs.config_entries import Intention, IntentionHTTPPermission, IntentionPermission


def test_get_text_is_consuls_table() -> None:
    ixn = Intention(
        source_name="web",
        destination_name="api",
        action="allow",
        id="abc",
        description="front door",
        meta={"team": "b", "env": "a"},
    )
    assert cli.get_text(ixn) == (
        "Source:       web\n"
        "Destination:  api\n"
        "Action:       allow\n"
        "ID:           abc\n"
        "Description:  front door\n"
        "Meta[env]:    a\n"
        "Meta[team]:   b\n"
        "Created At:   Monday, 01-Jan-01 00:00:00 UTC"
    )
    l7 = Intention(
        source_name="web",
        destination_name="api",
        permissions=[
            IntentionPermission(action="deny", http=IntentionHTTPPermission(path_prefix="/admin"))
        ],
    )
    text = cli.get_text(l7)
    assert "Action:" not in text
    assert text.endswith(
        'Permissions:\n[\n  {\n    "Action": "deny",\n    "HTTP": {\n'
        '      "PathPrefix": "/admin"\n    }\n  }\n]'
    )


def test_list_text_columns() -> None:
    rows = [
        Intention(source_name="web", destination_name="api", action="allow", precedence=9, id="x1"),
        Intention(source_name="*", destination_name="api", action="deny", precedence=8),
    ]
    assert cli.list_text(rows) == (
        "ID  Source  Action  Destination  Precedence\n"
        "x1  web     allow   api          9\n"
        "    *       deny    api          8"
    )


def test_files_in_json_or_hcl() -> None:
    assert cli.intention_from_text('{"SourceName": "web", "DestinationName": "api"}') == {
        "SourceName": "web",
        "DestinationName": "api",
    }
    parsed = cli.intention_from_text('SourceName = "web"\nDestinationName = "api"\nAction = "deny"')
    assert parsed == {"SourceName": "web", "DestinationName": "api", "Action": "deny"}
    with pytest.raises(cli.CliError):
        cli.intention_from_text("[1, 2]")


@pytest.mark.parametrize(
    ("verb", "argv", "code", "text"),
    [
        (cli.create, ["-allow", "-deny", "web", "api"], 1,
         "Only one of -allow or -deny may be specified."),
        (cli.create, ["web"], 1, "Error: Must specify two arguments: source and destination"),
        (cli.check, ["web"], 2, "Error: command requires exactly two arguments: src and dst"),
        (cli.check, ["-bogus", "web", "api"], 2, "flag provided but not defined: -bogus"),
        (cli.check, ["-http-addr", "ftp://x", "web", "api"], 2,
         "Error connecting to Consul agent: unknown protocol scheme: ftp"),
        (cli.check, ["-http-addr", "127.0.0.1:1", "web", "api"], 2,
         'Error checking the connection: Get "http://127.0.0.1:1/v1/connect/intentions/check'),
        (cli.get, [], 1, "command requires exactly 1 or 2 arguments"),
        (cli.delete, ["a", "b", "c"], 1, "command requires exactly 1 or 2 arguments"),
        (cli.match, [], 1, "Error: command requires exactly one argument: src or dst"),
        (cli.match, ["-source", "-destination", "web"], 1,
         "Error: only one of -source or -destination may be specified"),
    ],
)  # fmt: skip
def test_usage_errors(
    verb: object, argv: list[str], code: int, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(verb)
    assert verb(argv) == code
    assert capsys.readouterr().err.startswith(text)
