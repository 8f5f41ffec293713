"""`proconsul validate`: exit code and output for good and bad configurations."""

from __future__ import annotations

from pathlib import Path

import pytest

from proconsul.cli.main import main
from proconsul.config.agent_args import parse_agent_args
from proconsul.config.errors import ConfigError
from proconsul.config.loader import load_config

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


# ----- what the agent could not start with, validate refuses too


def failed(capsys: pytest.CaptureFixture[str], text: str, *files: str) -> str:
    """Validate `a.hcl` (GOOD plus `text`); expect a failure and return its message."""
    Path("a.hcl").write_text(GOOD + text)
    code, out, err = run(capsys, "a.hcl", *files)
    assert (code, out) == (1, ""), err
    prefix = "Config validation failed: "
    assert err.startswith(prefix) and err.endswith("\n")
    return err[len(prefix) : -1]


def test_a_port_taken_by_a_default_port_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # 8301 is serf_lan's default: the HTTP listener could never bind it.
    assert failed(capsys, "ports { http = 8301 }\n") == (
        "a.hcl: ports.http: port 8301 is already used by ports.serf_lan: "
        "HTTP on 127.0.0.1:8301 collides with Serf LAN on 127.0.0.1:8301"
    )


def test_two_written_ports_that_collide_are_refused_at_the_later_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Path("b.hcl").write_text("ports { dns = 8600, http = 8600 }\n")
    assert failed(capsys, "", "b.hcl") == (
        "b.hcl: ports.http: port 8600 is already used by ports.dns: "
        "HTTP on 127.0.0.1:8600 collides with DNS on 127.0.0.1:8600"
    )


def test_server_ports_collide_only_on_servers(capsys: pytest.CaptureFixture[str]) -> None:
    Path("a.hcl").write_text(GOOD + "ports { http = 8300 }\n")
    assert run(capsys, "a.hcl")[0] == 0  # a client binds no RPC port
    assert failed(capsys, "server = true\nports { http = 8300 }\n") == (
        "a.hcl: ports.http: port 8300 is already used by ports.server: "
        "HTTP on 127.0.0.1:8300 collides with server RPC on 127.0.0.1:8300"
    )
    assert failed(capsys, "server = true\nports { dns = 8302 }\n") == (
        "a.hcl: ports.dns: port 8302 is already used by ports.serf_wan: "
        "DNS on 127.0.0.1:8302 collides with Serf WAN on 127.0.0.1:8302"
    )


def test_equal_ports_on_separate_addresses_are_fine_but_not_under_a_wildcard(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Path("a.hcl").write_text(GOOD + 'addresses { http = "127.0.0.2" }\nports { http = 8301 }\n')
    assert run(capsys, "a.hcl")[0] == 0
    wildcard = 'data_dir = "data"\nbind_addr = "0.0.0.0"\nadvertise_addr = "127.0.0.1"\n'
    Path("a.hcl").write_text(wildcard + 'addresses { http = "127.0.0.2" }\nports { http = 8301 }\n')
    code, _, err = run(capsys, "a.hcl")
    assert code == 1
    assert err == (
        "Config validation failed: a.hcl: ports.http: port 8301 is already used by "
        "ports.serf_lan: HTTP on 127.0.0.2:8301 collides with Serf LAN on 0.0.0.0:8301\n"
    )


def test_a_disabled_listener_collides_with_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    Path("a.hcl").write_text(GOOD + "ports { dns = -1, https = -1, grpc = -1 }\n")
    assert run(capsys, "a.hcl")[0] == 0


def test_a_data_dir_that_is_a_file_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    Path("data").write_text("not a directory\n")
    assert failed(capsys, "") == "a.hcl: data_dir: 'data' is not a directory"


def test_an_http_unix_socket_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    socket_hcl = 'addresses { http = "unix:///run/proconsul/http.sock" }\n'
    unix_sockets = 'unix_sockets { user = "0", group = "0", mode = "0600" }\n'
    Path("a.hcl").write_text(GOOD + socket_hcl + unix_sockets)
    assert run(capsys, "a.hcl") == (0, "Configuration is valid!\n", "")


def test_unix_socket_mistakes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    Path("http.sock").write_text("someone's file\n")
    assert failed(capsys, 'addresses { http = "unix://http.sock" }\n') == (
        "a.hcl: addresses.http: 'http.sock' exists and is not a unix socket"
    )
    assert failed(capsys, 'addresses { http = "unix://" }\n') == (
        "a.hcl: addresses.http: 'unix://' names no socket path (write unix:///path/to/socket)"
    )
    assert failed(capsys, 'client_addr = "unix:///run/http.sock"\n') == (
        "a.hcl: client_addr: 'unix:///run/http.sock': a unix socket is allowed only in "
        "addresses.http (or another addresses.* key), not here; use IP addresses"
    )
    assert failed(capsys, 'unix_sockets { mode = "0999" }\n') == (
        "a.hcl: unix_sockets.mode: invalid mode '0999': give octal digits such as 0660"
    )
    assert failed(capsys, 'unix_sockets { group = "wheel" }\n') == (
        "a.hcl: unix_sockets.group: invalid group 'wheel': give a numeric group ID"
    )
    shared = 'addresses { http = "unix:///run/a.sock", https = "unix:///run/a.sock" }\n'
    assert failed(capsys, shared + "ports { https = 8501 }\n") == (
        "a.hcl: addresses.https: HTTPS on unix socket /run/a.sock collides with "
        "HTTP on unix socket /run/a.sock (addresses.http)"
    )
    socket_hcl = 'addresses { http = "unix:///run/a.sock" }\n'
    assert failed(capsys, socket_hcl + 'unix_sockets { user = "no-such-user-here" }\n') == (
        "a.hcl: unix_sockets.user: no such user 'no-such-user-here'"
    )


def test_the_agent_refuses_what_validate_refuses_in_the_same_words() -> None:
    # One check, in the loader, serves both: here through the agent's own flags.
    args = parse_agent_args(["-data-dir", "data", "-bind", "127.0.0.1", "-http-port", "8301"])
    with pytest.raises(ConfigError) as info:
        load_config(args)
    assert str(info.value) == (
        "flag -http-port: ports.http: port 8301 is already used by ports.serf_lan: "
        "HTTP on 127.0.0.1:8301 collides with Serf LAN on 127.0.0.1:8301"
    )


def test_what_the_dns_server_or_file_system_cannot_take_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The DNS server parses recursors with the same function when the agent starts.
    assert failed(capsys, 'recursors = ["8.8.8.8", "1.2.3.4:99999"]\n') == (
        "a.hcl: recursors[1]: Invalid recursor address: '1.2.3.4:99999'"
    )
    Path("b.json").write_text('{"data_dir": "da\\u0000ta"}')
    assert failed(capsys, "", "b.json") == "b.json: data_dir: cannot contain a NUL byte"
