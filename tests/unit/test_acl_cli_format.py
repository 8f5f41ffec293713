"""Consul's text for `acl role` and `-meta` (cli/acl_format.py), without an agent.

Role labels use a 14-column label, list entries follow each other with no
blank line, and `-meta` prints the hash as hex after the description.
"""

from __future__ import annotations

import base64

from proconsul.cli.acl_format import format_policy, format_role, format_role_list, hash_hex

ROLE = {
    "ID": "57147d87-6bf7-f794-1a6e-7d038c4e4ae9",
    "Name": "web-crawler",
    "Description": "crawler role",
    "Policies": [{"ID": "2f8f99c7-edd9-2f09-7e4b-a1f519eb4fc2", "Name": "crawler-kv"}],
    "ServiceIdentities": [{"ServiceName": "crawler"}],
    "Hash": base64.b64encode(bytes([0x3B, 0xD7, 0x01])).decode(),
    "CreateIndex": 18,
    "ModifyIndex": 39,
}


def test_role_uses_a_14_column_label() -> None:
    assert format_role(ROLE) == (
        "ID:           57147d87-6bf7-f794-1a6e-7d038c4e4ae9\n"
        "Name:         web-crawler\n"
        "Description:  crawler role\n"
        "Policies:\n"
        "   2f8f99c7-edd9-2f09-7e4b-a1f519eb4fc2 - crawler-kv\n"
        "Service Identities:\n"
        "   crawler (Datacenters: all)\n"
    )


def test_role_list_has_no_blank_line_between_roles_and_meta_after_description() -> None:
    other = {"ID": "a365fdc9-ac71-e754-0645-7ab6bd747301", "Name": "archiver"}
    out = format_role_list([ROLE, other], meta=True)
    assert out == (
        "web-crawler:\n"
        "   ID:           57147d87-6bf7-f794-1a6e-7d038c4e4ae9\n"
        "   Description:  crawler role\n"
        "   Hash:         3bd701\n"
        "   Create Index: 18\n"
        "   Modify Index: 39\n"
        "   Policies:\n"
        "      2f8f99c7-edd9-2f09-7e4b-a1f519eb4fc2 - crawler-kv\n"
        "   Service Identities:\n"
        "      crawler (Datacenters: all)\n"
        "archiver:\n"
        "   ID:           a365fdc9-ac71-e754-0645-7ab6bd747301\n"
        "   Description:  \n"
        "   Hash:         \n"
        "   Create Index: 0\n"
        "   Modify Index: 0\n"
    )


def test_policy_meta_goes_before_rules() -> None:
    policy = {"ID": "x", "Name": "p", "Rules": 'acl = "read"', "Hash": ROLE["Hash"]}
    assert format_policy(policy, meta=True).endswith(
        "Datacenters:  \nHash:         3bd701\nCreate Index: 0\n"
        'Modify Index: 0\nRules:\nacl = "read"'
    )


def test_hash_hex_tolerates_non_base64() -> None:
    assert hash_hex("") == "" and hash_hex(None) == ""
    assert hash_hex("not base64!") == "not base64!"
