"""go-sockaddr templates: parsing, evaluation over fake interface tables, and
the real interface reader on this machine's loopback."""

from __future__ import annotations

import contextlib
import socket

import pytest

from proconsul.config import interfaces as interfaces_module
from proconsul.config.interfaces import IfAddr, make_ifaddr, read_interfaces
from proconsul.config.sockaddr import TemplateError, evaluate, is_template, parse, resolve

TABLE: list[IfAddr] = [
    make_ifaddr("lo", "127.0.0.1/8", "up|loopback", index=1),
    make_ifaddr("lo", "::1/128", "up|loopback", index=1),
    make_ifaddr("eth0", "10.0.1.11/24", "up|broadcast|multicast", index=2, default_route=True),
    make_ifaddr("eth0", "fe80::1/64", "up|broadcast|multicast", index=2, default_route=True),
    make_ifaddr("ens5", "172.31.5.9/20", "up|broadcast|multicast", index=3),
    make_ifaddr("ens5", "2600:1f18::9/128", "up|broadcast|multicast", index=3),
    make_ifaddr("docker0", "172.17.0.1/16", "broadcast|multicast", index=4),
    make_ifaddr("wg0", "203.0.114.7/32", "up|pointtopoint", index=5),
]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('{{ GetInterfaceIP "eth0" }}', "10.0.1.11"),
        ("{{ GetInterfaceIP `ens5` }}", "172.31.5.9"),
        ('{{GetInterfaceIP "lo"}}', "127.0.0.1"),
        ('{{ GetInterfaceIPs "eth0" }}', "10.0.1.11 fe80::1"),
        ("{{ GetPrivateIP }}", "10.0.1.11"),
        ("{{ GetPrivateIPs }}", "172.17.0.1 172.31.5.9 10.0.1.11"),
        ("{{ GetPublicIP }}", "203.0.114.7"),
        ("{{ GetPublicIPs }}", "203.0.114.7 2600:1f18::9"),
        (
            '{{ GetAllInterfaces | include "name" "^eth0$" | include "type" "ipv4" '
            '| attr "address" }}',
            "10.0.1.11",
        ),
        (
            '{{ GetAllInterfaces | exclude "flags" "loopback" | include "type" "IPv4" '
            '| sort "address" | join "address" " " }}',
            "10.0.1.11 172.17.0.1 172.31.5.9 203.0.114.7",
        ),
        (
            '{{ GetAllInterfaces | include "network" "172.16.0.0/12" | sort "-address" '
            '| limit 1 | attr "address" }}',
            "172.31.5.9",
        ),
        (
            '{{ GetAllInterfaces | include "rfc" "1918" | include "flags" "up" '
            '| join "name" "," }}',
            "eth0,ens5",
        ),
        ('{{ GetDefaultInterfaces | include "type" "ipv6" | attr "address" }}', "fe80::1"),
        ('{{ GetAllInterfaces | include "type" "ipv4" | offset -1 | attr "name" }}', "wg0"),
        (
            '{{ GetAllInterfaces | include "type" "ipv4" | offset "1" | limit 1 | attr "name" }}',
            "eth0",
        ),
        ('{{ GetAllInterfaces | include "name" "eth0" | attr "network" }}', "10.0.1.0/24"),
        ('{{ GetAllInterfaces | include "name" "eth0" | attr "broadcast" }}', "10.0.1.255"),
        ('{{ GetAllInterfaces | include "name" "wg0" | attr "flags" }}', "up|pointtopoint"),
        ('{{ GetAllInterfaces | include "size" "20" | attr "netmask" }}', "255.255.240.0"),
        ('{{ GetPrivateInterfaces | attr "mask_bits" }}', "24"),
        (
            '{{ . | include "type" "ipv4" | sort "name,-size" | unique "name" | join "name" " " }}',
            "docker0 ens5 eth0 lo wg0",
        ),
        ('{{ GetAllInterfaces | include "address" "^10\\\\." | attr "string" }}', "10.0.1.11/24"),
        ('{{ "eth0" | GetInterfaceIP }}', "10.0.1.11"),
        ('{{ (GetAllInterfaces | include "name" "lo") | attr "hex" }}', "7f000001"),
        ('bind-{{ GetInterfaceIP "eth0" }}:8301', "bind-10.0.1.11:8301"),
        ('{{ GetInterfaceIP "eth0" }} {{ GetInterfaceIP "ens5" }}', "10.0.1.11 172.31.5.9"),
        ('  {{- GetInterfaceIP "eth0" -}}  ', "10.0.1.11"),
        ("no template here", "no template here"),
        ('{{ GetAllInterfaces | include "name" "nothing" | attr "address" }}', ""),
    ],
)
def test_templates_evaluate_against_a_fake_table(template: str, expected: str) -> None:
    assert evaluate(template, TABLE) == expected


def test_resolve_splits_into_fields() -> None:
    assert resolve('{{ GetInterfaceIPs "eth0" }}', TABLE) == ["10.0.1.11", "fe80::1"]
    assert resolve('{{ GetInterfaceIP "nope" }}', TABLE) == []


def test_interface_without_forwardable_address_falls_back_to_its_others() -> None:
    # go-sockaddr drops non-forwardable addresses; loopback would then give nothing.
    table = [make_ifaddr("lo", "127.0.0.11/8", "up|loopback")]
    assert evaluate('{{ GetInterfaceIP "lo" }}', table) == "127.0.0.11"


def test_is_template() -> None:
    assert is_template("{{ GetPrivateIP }}")
    assert not is_template("10.0.0.1")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ GetIP }}", 'function "GetIP" not defined'),
        ("{{ GetInterfaceIP }}", "wrong number of args for GetInterfaceIP: want 1 got 0"),
        ('{{ GetPrivateIP "x" }}', "wrong number of args for GetPrivateIP: want 0 got 1"),
        (
            "{{ GetAllInterfaces }}",
            "the result is a list of interfaces; end the pipeline with attr or join",
        ),
        ('{{ GetAllInterfaces | sort "bogus" | attr "name" }}', "unknown sort type: 'bogus'"),
        (
            '{{ GetAllInterfaces | include "colour" "x" | attr "name" }}',
            "invalid include selector 'colour'",
        ),
        ('{{ GetAllInterfaces | exclude "type" "ipv5" | attr "name" }}', "invalid type 'ipv5'"),
        (
            '{{ GetAllInterfaces | include "flags" "shiny" | attr "name" }}',
            "Unknown interface flag: 'shiny'",
        ),
        ('{{ GetAllInterfaces | include "rfc" "1234" | attr "name" }}', "unsupported RFC '1234'"),
        (
            '{{ GetAllInterfaces | include "network" "10.0.0/8x" | attr "name" }}',
            "unable to create an IP address from '10.0.0/8x'",
        ),
        ('{{ GetAllInterfaces | attr "colour" }}', "unsupported attribute name 'colour'"),
        ('{{ GetAllInterfaces | limit 1 | Attr "address" }}', "Attr: expected one interface"),
        (
            '{{ GetAllInterfaces | unique "colour" | attr "name" }}',
            "unsupported unique constraint 'colour'",
        ),
        ('{{ GetAllInterfaces | limit "x" | attr "name" }}', "limit: expected an integer, got 'x'"),
        (
            '{{ GetAllInterfaces | offset 99 | attr "name" }}',
            "unable to seek past the end of the interface array: "
            "offset (99) exceeds the number of interfaces (8)",
        ),
        (
            '{{ GetAllInterfaces | include "name" "(" | attr "name" }}',
            "bad regular expression '(': missing ), unterminated subpattern at position 0",
        ),
        ('{{ GetInterfaceIP "eth0"', "unclosed action: missing }}"),
        ('{{ GetInterfaceIP "eth0" }} }}', "unexpected }} outside an action"),
        ("}} {{ GetPrivateIP }}", "unexpected }} outside an action"),
        ('{{ GetInterfaceIP "eth0" ) }}', "unexpected ')' in action"),
        ('{{ GetInterfaceIP "eth0" # }}', "unexpected '#' in action"),
        ("{{ (GetPrivateIP }}", "unclosed left paren"),
        ("{{ range GetAllInterfaces }}", "'range' actions are not supported"),
        ("{{ }}", "missing value for command"),
        ('{{ GetInterfaceIP "eth0" | }}', "missing command"),
        ('{{ "eth0" "x" }}', "can't give argument to non-function"),
        ('{{ "a\\q" }}', "unknown escape sequence \\q"),
        ('{{ GetInterfaceIP "eth0" }}x{{', "unclosed action: missing }}"),
    ],
)
def test_bad_templates_name_the_problem(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        evaluate(template, TABLE)
    assert str(info.value) == message


VALID = [
    '{{ GetAllInterfaces | include "name" "^eth0$" | sort "-size" | limit 1 | attr "address" }}',
    "{{- GetInterfaceIP `ens5` -}}",
    '{{ (GetPrivateInterfaces | include "type" "ipv4") | join "address" " " }}',
]


@pytest.mark.parametrize("template", VALID)
def test_parser_fed_every_prefix_parses_or_raises_template_error(template: str) -> None:
    for end in range(len(template) + 1):
        with contextlib.suppress(TemplateError):
            parse(template[:end])


@pytest.mark.parametrize("template", VALID)
@pytest.mark.parametrize("garbage", [" }} }}", " )}}", ' "x" }}', " |}}", "{{", " ${x}"])
def test_parser_fed_trailing_garbage_raises(template: str, garbage: str) -> None:
    broken = template[: template.rindex("}}")] + garbage
    with pytest.raises(TemplateError):
        evaluate(broken, TABLE)


def test_real_loopback_resolves_to_127_0_0_1() -> None:
    if "lo" not in dict(socket.if_nameindex()).values():
        pytest.skip("this machine has no interface named lo")
    assert evaluate('{{ GetInterfaceIP "lo" }}', read_interfaces()) == "127.0.0.1"


def test_real_table_marks_loopback_flags() -> None:
    table = read_interfaces()
    loopback = [entry for entry in table if str(entry.ip) == "127.0.0.1"]
    assert loopback and "loopback" in loopback[0].flags and "up" in loopback[0].flags


def test_reader_falls_back_to_ioctl_without_netlink(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_netlink() -> list[object]:
        raise OSError("netlink not available")

    monkeypatch.setattr(interfaces_module, "_netlink_addresses", no_netlink)
    assert "127.0.0.1" in {str(entry.ip) for entry in read_interfaces()}
