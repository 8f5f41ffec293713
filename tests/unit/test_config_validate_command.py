"""`proconsul validate`: exit code and output for good and bad configurations."""

from __future__ import annotations

from pathlib import Path

import pytest

from proconsul.cli.main import main

GOOD = 'data_dir = "data"\nbind_addr = "127.0.0.1"\nservice { name = "web", port = 80 }\n'


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["validate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_directory(capsys: pytest.CaptureFixture[str]) -> None:
    Path("conf.d").mkdir()
    Path("conf.d/agent.hcl").write_text(GOOD)
    Path("conf.d/extra.json").write_text('{"log_level": "WARN"}')
    assert run(capsys, "conf.d") == (0, "Configuration is valid!\n", "")


def test_quiet_prints_nothing_on_success(capsys: pytest.CaptureFixture[str]) -> None:
    Path("a.hcl").write_text(GOOD)
    assert run(capsys, "-quiet", "a.hcl") == (0, "", "")


def test_invalid_file_prints_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    Path("a.hcl").write_text(GOOD)
    Path("b.hcl").write_text("ports { http = 0 }\n")
    assert run(capsys, "a.hcl", "b.hcl") == (
        1,
        "",
        "Config validation failed: b.hcl: ports.http: "
        "must be between 1 and 65535, or -1 to disable\n",
    )


def test_missing_data_dir_fails_as_in_consul(capsys: pytest.CaptureFixture[str]) -> None:
    Path("web.hcl").write_text('service { name = "web" }\n')
    code, out, err = run(capsys, "web.hcl")
    assert (code, out) == (1, "")
    assert err == (
        "Config validation failed: config: data_dir: cannot be empty (set data_dir or -data-dir)\n"
    )


def test_config_format_forces_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    Path("agent.conf").write_text('{"data_dir": "data", "bind_addr": "127.0.0.1"}')
    assert run(capsys, "-config-format", "json", "agent.conf")[0] == 0
    assert run(capsys, "agent.conf") == (
        1,
        "",
        "Config validation failed: agent.conf: unknown file extension; "
        "name it .hcl or .json, or set -config-format\n",
    )
    assert run(capsys, "-config-format=yaml", "agent.conf") == (
        1,
        "",
        "-config-format must be either 'hcl' or 'json'\n",
    )


def test_warnings_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    Path("a.hcl").write_text(GOOD + "ui = true\n")
    assert run(capsys, "a.hcl") == (
        0,
        "Configuration is valid!\n",
        "The 'ui' field is deprecated. Use the 'ui_config.enabled' field instead.\n",
    )


def test_no_paths_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys) == (1, "", "Must specify at least one config file or directory\n")
    assert run(capsys, "-bogus")[0] == 1
