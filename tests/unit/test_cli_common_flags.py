"""Every API-backed verb takes Consul's common API flags.

A walkthrough script that passes `-datacenter us-west-1` to `acl policy
create` must not stop at `flag provided but not defined`. Each verb runs in
process against a closed port: flag parsing happens before any request, so the
only failure allowed is the connection error (or a verb's own argument check).
"""

from __future__ import annotations

import socket

import pytest

from proconsul.cli import main as cli_main

OFFLINE = {"agent", "version", "validate", "keygen", "tls", "demo", "lab", "doctor"}
OFFLINE_VERBS = {("snapshot", "inspect")}  # reads a file, as in Consul
API_VERBS = sorted(
    words for words in cli_main.VERBS if words[0] not in OFFLINE and words not in OFFLINE_VERBS
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def common_flags(tmp_token: str) -> list[str]:
    return [
        "-http-addr",
        f"127.0.0.1:{closed_port()}",
        "-token",
        "x",
        "-token-file",
        tmp_token,
        "-datacenter",
        "us-west-1",
        "-stale",
        "-ca-file",
        "ca.pem",
        "-client-cert",
        "c.pem",
        "-client-key",
        "k.pem",
        "-tls-server-name",
        "server.us-west-1.consul",
    ]


def test_the_list_covers_the_acl_verbs_of_the_walkthrough() -> None:
    assert ("acl", "policy", "create") in API_VERBS
    assert ("acl", "token", "update") in API_VERBS
    assert ("members",) in API_VERBS


@pytest.mark.parametrize("words", API_VERBS, ids=" ".join)
def test_verb_accepts_every_common_flag(
    words: tuple[str, ...], tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = f"{tmp_path}/token"
    with open(token_file, "w", encoding="utf-8") as handle:
        handle.write("secret-from-file\n")
    code = cli_main.main([*words, *common_flags(token_file)])
    err = capsys.readouterr().err
    assert "flag provided but not defined" not in err, err
    assert code != 0  # nothing listens there: the verb got past its flags and failed later
