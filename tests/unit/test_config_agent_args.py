"""`proconsul agent` flags: Go-style syntax, order of config paths, usage errors."""

from __future__ import annotations

import pytest

from proconsul.config.agent_args import AgentArgs, parse_agent_args
from proconsul.config.flags import FlagError


def test_both_flag_spellings_and_repeatable_flags() -> None:
    args = parse_agent_args(
        [
            "-config-file", "a.hcl",
            "-config-dir=conf.d",
            "--config-file", "b.json",
            "-hcl", "ports { http = 1 }",
            "-hcl=log_level = \"WARN\"",
            "-retry-join", "10.0.0.1",
            "-retry-join=10.0.0.2",
            "-http-port=8501",
            "-server",
            "-ui=false",
            "-node-meta", "rack:r1",
            "-node-meta", "zone:z:1",
        ]
    )  # fmt: skip
    assert args.config_paths == ("a.hcl", "conf.d", "b.json")
    assert args.hcl == ("ports { http = 1 }", 'log_level = "WARN"')
    assert args.settings == {
        "node-meta": {"rack": "r1", "zone": "z:1"},
        "server": True,
        "retry-join": ["10.0.0.1", "10.0.0.2"],
        "ui": False,
        "http-port": 8501,
    }
    assert not args.dev and args.config_format is None


def test_unset_flags_are_not_recorded() -> None:
    args = parse_agent_args(["-dev"])
    assert args == AgentArgs(dev=True, argv=("-dev",))


def test_stray_positional_arguments_are_named() -> None:
    with pytest.raises(FlagError) as info:
        parse_agent_args(["-dev", "extra", "-server"])
    assert str(info.value) == "Unexpected extra arguments: extra -server"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-bogus"], "flag provided but not defined: -bogus"),
        (["-http-port", "web"], 'invalid value "web" for flag -http-port: parse error'),
        (["-node"], "flag needs an argument: -node"),
        (["-server=maybe"], 'invalid boolean value "maybe" for -server: parse error'),
        (
            ["-config-format", "yaml"],
            'invalid value "yaml" for flag -config-format: use hcl or json',
        ),
        (["-node-meta", "rack"], 'invalid value "rack" for flag -node-meta: expected key:value'),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError) as info:
        parse_agent_args(argv)
    assert str(info.value) == message


def test_help_lists_the_flags() -> None:
    with pytest.raises(FlagError) as info:
        parse_agent_args(["-h"])
    usage = str(info.value)
    for flag in ("-config-file", "-config-dir", "-dev", "-hcl", "-retry-join", "-bootstrap-expect"):
        assert flag in usage
