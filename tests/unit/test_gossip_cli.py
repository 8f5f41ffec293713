"""Pure pieces of the gossip verbs and agent wiring: keyring output, key checks,
join address parsing, the members JSON shape."""

from __future__ import annotations

import base64

import pytest

from proconsul.agent.gossip_setup import (
    GossipError,
    member_json,
    resolve_join_address,
    split_join_address,
)
from proconsul.cli import keyring
from proconsul.gossip import Member, State

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 16).decode()


def test_keyring_list_output_is_consuls() -> None:
    response = {
        "WAN": False,
        "Datacenter": "dc1",
        "Segment": "",
        "Messages": {"n3": "no reply: timed out"},
        "Keys": {K2: 2, K1: 3},
        "PrimaryKeys": {K1: 3},
        "NumNodes": 3,
    }
    assert keyring.format_list([response], primary=False) == (
        f"\ndc1 (LAN):\n  ===> n3: no reply: timed out\n  {K1} [3/3]\n  {K2} [2/3]"
    )
    assert keyring.format_list([response], primary=True).endswith(f"  {K1} [3/3]")
    wan = dict(response, WAN=True, Messages={})
    assert keyring.format_list([wan], primary=True).splitlines()[1] == "WAN:"
    assert keyring.pool_name(dict(response, Segment="alpha")) == "dc1 (LAN) [alpha]:"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (K1, None),
        (K2, None),
        ("%%%", "Invalid key: not valid base64"),
        (base64.b64encode(b"x" * 20).decode(), "key size must be 16, 24 or 32 bytes, got 20"),
    ],
)
def test_keys_are_checked_before_sending(text: str, problem: str | None) -> None:
    found = keyring.key_problem(text)
    assert found == problem if problem is None else problem in (found or "")


def test_keyring_verb_refuses_bad_input_without_an_agent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert keyring.run(["-install", "nope", "-http-addr", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert "Invalid key" in err and "nope" not in err.replace("Invalid key", "")
    assert keyring.run(["-list", "-use", K1]) == 1
    assert "Only a single action is allowed" in capsys.readouterr().err
    assert keyring.run(["-install", K1, "-local-only"]) == 1
    assert "local-only can only be set for list requests" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", ("10.0.0.1", 8301)),
        ("10.0.0.1:9000", ("10.0.0.1", 9000)),
        ("[::1]:9000", ("::1", 9000)),
        ("::1", ("::1", 8301)),
        ("consul.example.com", ("consul.example.com", 8301)),
        ("consul.example.com:7000", ("consul.example.com", 7000)),
    ],
)
def test_join_addresses(text: str, expected: tuple[str, int]) -> None:
    assert split_join_address(text, 8301) == expected


@pytest.mark.parametrize("text", ["10.0.0.1:0", "10.0.0.1:x", ":8301", "provider=aws tag_key=x"])
def test_bad_join_addresses(text: str) -> None:
    with pytest.raises(GossipError):
        split_join_address(text, 8301)


def test_member_json_is_consuls_shape() -> None:
    member = Member("n1", ("10.0.0.2", 8301), {"role": "node", "dc": "dc1"}, 3, State.DEAD)
    assert member_json(member, 4) == {
        "Name": "n1",
        "Addr": "10.0.0.2",
        "Port": 8301,
        "Tags": {"role": "node", "dc": "dc1"},
        "Status": 4,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    }


async def test_join_names_resolve_through_dns() -> None:
    found = await resolve_join_address("localhost:7301", 8301)
    assert ("127.0.0.1", 7301) in found
    assert await resolve_join_address("127.0.0.5", 8301) == [("127.0.0.5", 8301)]
    with pytest.raises(GossipError, match="lookup"):
        await resolve_join_address("no-such-host.invalid", 8301)
