"""Go-style flag parsing, as every verb and the agent use it."""

from __future__ import annotations

import pytest

from proconsul.config.flags import FlagError, FlagSet


def make() -> FlagSet:
    flags = FlagSet("test")
    flags.string("name")
    flags.integer("port", 0)
    flags.boolean("dev")
    flags.repeated("config-file")
    flags.mapping("meta")
    return flags


@pytest.mark.parametrize(
    "argv",
    [
        ["-name", "web", "-port", "80"],
        ["-name=web", "-port=80"],
        ["--name", "web", "--port=80"],
    ],
)
def test_value_spellings(argv: list[str]) -> None:
    values, rest = make().parse(argv)
    assert values["name"] == "web"
    assert values["port"] == 80
    assert values["set"] == {"name", "port"}
    assert rest == []


def test_booleans_take_no_separate_value() -> None:
    values, rest = make().parse(["-dev", "false"])
    assert values["dev"] is True
    assert rest == ["false"]
    assert make().parse(["-dev=false"])[0]["dev"] is False


def test_repeated_and_mapping_accumulate() -> None:
    values, _ = make().parse(["-config-file", "a", "-config-file=b", "-meta", "k=v", "-meta=x=y"])
    assert values["config-file"] == ["a", "b"]
    assert values["meta"] == {"k": "v", "x": "y"}


def test_parsing_stops_at_first_positional_and_double_dash() -> None:
    assert make().parse(["-dev", "key", "-name", "x"])[1] == ["key", "-name", "x"]
    assert make().parse(["--", "-dev"])[1] == ["-dev"]
    assert make().parse(["-"])[1] == ["-"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-nope"], "flag provided but not defined: -nope"),
        (["-name"], "flag needs an argument: -name"),
        (["-port", "eighty"], 'invalid value "eighty" for flag -port: parse error'),
        (["-dev=maybe"], 'invalid boolean value "maybe" for -dev: parse error'),
        (["-meta", "novalue"], 'invalid value "novalue" for flag -meta: expected key=value'),
        (["---x"], "bad flag syntax: ---x"),
    ],
)
def test_errors(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError) as info:
        make().parse(argv)
    assert str(info.value) == message
