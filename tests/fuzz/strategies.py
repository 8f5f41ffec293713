"""Hypothesis strategies for the HTTP API's inputs: JSON bodies, Go durations,
unsigned numbers and query strings, each mixing plausible values with junk.

Bodies come in several kinds, so the fuzzer reaches past the JSON parser into
each route's validation: objects with the route's own fields (in any key
spelling, with right or wrong value types), any JSON at all, JSON nested far
too deep, JSON cut short, and bytes that are not JSON. Names and IDs come
mostly from small fixed sets, so a long run re-registers the same few
services and checks instead of piling up thousands of them, and health
checks only ever probe a closed local port.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import strategies as st

# Go durations: numbers with units, signs, fractions; Consul's JSON also takes nanoseconds.
_UNITS = ["ns", "us", "µs", "ms", "s", "m", "h"]
_duration_parts = st.tuples(
    st.integers(0, 10**6).map(str) | st.floats(0, 1000, allow_nan=False).map(lambda f: f"{f:g}"),
    st.sampled_from(_UNITS),
).map("".join)
go_durations = st.one_of(
    st.lists(_duration_parts, min_size=1, max_size=3).map("".join),
    st.tuples(st.sampled_from(["", "-", "+"]), _duration_parts).map("".join),
    st.sampled_from(["0", "10s", "1m", "1h30m", "500ms", "-1s", "9" * 25 + "h", "3000000h"]),
)
junk_text = st.text(max_size=24)
durations = st.one_of(go_durations, junk_text)

# Unsigned 64-bit numbers as Consul parses them, their edges, and near misses.
_EDGES = [0, 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**80]
uint_texts = st.one_of(
    st.integers(0, 2**64 - 1).map(str),
    st.sampled_from(_EDGES).map(str),
    st.integers(-(2**70), -1).map(str),
    st.sampled_from(["", "+1", " 1", "1 ", "1_0", "0x1f", "1e3", "1.0", "\u0663", "\uff11"]),
    junk_text,
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=16),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)


def _spellings(name: str) -> st.SearchStrategy[str]:
    """Consul matches field names in any case; snake_case is accepted too."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
    return st.sampled_from([name, name.lower(), name.upper(), snake])


def objects(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects carrying some of `fields` (each value plausible or any JSON), plus stray keys."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in draw(
            st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields))
        ):
            key = draw(_spellings(name))
            out[key] = draw(st.one_of(fields[name], fields[name], json_values))
        out.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
        return out

    return build()


def _deep(depth: int, shape: str) -> str:
    if shape == "array":
        return "[" * depth + "]" * depth
    if shape == "object":
        return '{"Name":' * depth + "1" + "}" * depth
    return "[" * depth  # never closed


deep_json = st.builds(
    _deep,
    st.one_of(st.integers(1, 200), st.integers(200, 5000)),
    st.sampled_from(["array", "object", "open"]),
)


def bodies(shape: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """Request bodies for a route whose objects look like `shape`."""
    encoded = shape.map(lambda value: json.dumps(value).encode("utf-8", "surrogatepass"))
    return st.one_of(
        encoded,
        encoded,
        json_values.map(lambda value: json.dumps(value).encode("utf-8", "surrogatepass")),
        deep_json.map(str.encode),
        st.tuples(encoded, st.integers(0, 200)).map(lambda pair: pair[0][: pair[1]]),
        st.binary(max_size=64),
        st.sampled_from([b"", b" ", b"null", b"[]", b"{}", b'"x"', b"1e999", b"\xef\xbb\xbf{}"]),
    )


names = st.sampled_from(["web", "api", "db", "fuzz", "", "web-sidecar-proxy", "a/b", "ü"])
check_ids = st.sampled_from(["fuzz-ttl", "fuzz-check", "service:web", "missing", ""])
node_names = st.sampled_from(["fuzz-node", "other-node", "", "x" * 300])
addresses = st.sampled_from(["127.0.0.1", "10.0.0.1", "::1", "", "not an address", "999.1.1.1"])
ports = st.one_of(st.integers(-5, 70000), st.sampled_from([0, 80, 2**31, 2**63, 2**64]))
statuses = st.sampled_from(["passing", "warning", "critical", "maintenance", "", "PASSING"])
string_maps = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
tag_lists = st.lists(st.text(max_size=8), max_size=3)

check_fields: dict[str, st.SearchStrategy[Any]] = {
    "Name": names,
    "CheckID": check_ids,
    "ID": check_ids,
    "ServiceID": names,
    "Notes": st.text(max_size=16),
    "Status": statuses,
    "TTL": durations,
    # Only a closed port on this machine: a fuzzed check must never probe anything real.
    "HTTP": st.sampled_from(["http://127.0.0.1:1/health", "not a url", "", "ftp://x"]),
    "TCP": st.sampled_from(["127.0.0.1:1", "nohost", "", ":::"]),
    "Method": st.sampled_from(["GET", "POST", "", "BREW"]),
    "Header": st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=8), max_size=2)),
    "Interval": durations,
    "Timeout": durations,
    "DeregisterCriticalServiceAfter": durations,
    "SuccessBeforePassing": st.integers(-3, 2**64),
    "FailuresBeforeCritical": st.integers(-3, 2**64),
    "AliasService": names,
    "AliasNode": node_names,
}
checks = objects(check_fields)

service_fields: dict[str, st.SearchStrategy[Any]] = {
    "Name": names,
    "ID": names,
    "Tags": tag_lists,
    "Address": addresses,
    "Port": ports,
    "Meta": string_maps,
    "EnableTagOverride": st.booleans(),
    "Kind": st.sampled_from(["", "connect-proxy", "mesh-gateway", "bogus"]),
    "Weights": objects({"Passing": st.integers(-1, 100), "Warning": st.integers(-1, 100)}),
    "TaggedAddresses": st.dictionaries(
        st.sampled_from(["lan", "wan", "x"]), objects({"Address": addresses, "Port": ports})
    ),
    "Check": checks,
    "Checks": st.lists(checks, max_size=2),
    "Proxy": objects(
        {
            "DestinationServiceName": names,
            "LocalServicePort": ports,
            "Config": json_values,
            "Upstreams": st.lists(objects({"DestinationName": names, "LocalBindPort": ports})),
        }
    ),
    "Connect": objects({"SidecarService": objects({"Port": ports}), "Native": st.booleans()}),
}

catalog_service_fields: dict[str, st.SearchStrategy[Any]] = {
    "ID": names,
    "Service": names,
    "Tags": tag_lists,
    "Address": addresses,
    "Port": ports,
    "Meta": string_maps,
}
catalog_check_fields: dict[str, st.SearchStrategy[Any]] = {
    "Node": node_names,
    "CheckID": check_ids,
    "Name": names,
    "Status": statuses,
    "ServiceID": names,
    "Output": st.text(max_size=16),
}
catalog_register = objects(
    {
        "Node": node_names,
        "Address": addresses,
        "ID": st.sampled_from(["", "not-a-uuid", "6c2e0b8c-3f1e-4e4e-9a0a-0d1c2b3a4f5e"]),
        "Datacenter": st.sampled_from(["", "dc1", "dc2"]),
        "TaggedAddresses": string_maps,
        "NodeMeta": string_maps,
        "Service": objects(catalog_service_fields),
        "Check": objects(catalog_check_fields),
        "Checks": st.lists(objects(catalog_check_fields), max_size=2),
        "SkipNodeUpdate": st.booleans(),
    }
)
catalog_deregister = objects(
    {
        "Node": node_names,
        "Datacenter": st.sampled_from(["", "dc1", "dc2"]),
        "ServiceID": names,
        "CheckID": check_ids,
    }
)
check_update = objects({"Status": statuses, "Output": st.text(max_size=64)})
keyring = objects(
    {
        "Key": st.one_of(
            st.binary(max_size=40).map(lambda raw: base64.b64encode(raw).decode()),
            junk_text,
        )
    }
)

policy_names = st.sampled_from(
    ["fuzz-policy", "other-policy", "global-management", "", "bad name!"]
)
_RULES = [
    'key_prefix "" { policy = "read" }',
    'service "web" { policy = "write" }',
    'node_prefix "" { policy = "deny" }',
    'widget "x" { policy = "read" }',
    'service "x" { policy = "sudo" }',
    "{",
    "",
]
links = st.lists(objects({"ID": st.text(max_size=8), "Name": policy_names}), max_size=2)
acl_policy = objects(
    {
        "Name": policy_names,
        "Description": st.text(max_size=16),
        "Rules": st.one_of(st.sampled_from(_RULES), st.text(max_size=40)),
        "Datacenters": tag_lists,
    }
)
acl_role = objects(
    {
        "Name": st.sampled_from(["fuzz-role", "other-role", "", "bad name!"]),
        "Description": st.text(max_size=16),
        "Policies": links,
        "ServiceIdentities": st.lists(
            objects({"ServiceName": names, "Datacenters": tag_lists}), max_size=2
        ),
        "NodeIdentities": st.lists(
            objects({"NodeName": node_names, "Datacenter": st.sampled_from(["dc1", ""])}),
            max_size=2,
        ),
    }
)
acl_token = objects(
    {
        "AccessorID": st.sampled_from(["", "not-a-uuid", "00000000-0000-0000-0000-000000000002"]),
        "SecretID": st.sampled_from(["", "not-a-uuid", "6c2e0b8c-3f1e-4e4e-9a0a-0d1c2b3a4f5e"]),
        "Description": st.text(max_size=16),
        "Policies": links,
        "Roles": links,
        "ServiceIdentities": st.lists(objects({"ServiceName": names}), max_size=2),
        "NodeIdentities": st.lists(
            objects({"NodeName": node_names, "Datacenter": st.sampled_from(["dc1", ""])}),
            max_size=2,
        ),
        "Local": st.booleans(),
        "ExpirationTTL": durations,
        "ExpirationTime": st.sampled_from(["", "2000-01-01T00:00:00Z", "tomorrow"]),
    }
)

# Query strings: the parameters the read and KV routes look at, with any values.
query_names = st.sampled_from(
    [
        "stale",
        "consistent",
        "recurse",
        "keys",
        "raw",
        "separator",
        "cas",
        "flags",
        "dc",
        "tag",
        "passing",
        "node-meta",
        "filter",
        "pretty",
        "near",
        "token",
        "acquire",
        "release",
    ]
)
query_values = st.one_of(
    st.sampled_from(["", "true", "false", "0", "1", "/", "dc1", "dc2", "a:b"]),
    uint_texts,
    junk_text,
)
queries = st.lists(st.tuples(query_names, query_values), max_size=5)
kv_keys = st.one_of(
    st.sampled_from(["fuzz", "fuzz/a", "fuzz/", "", "/", "a//b", "%", "..", "x" * 600]),
    st.text(max_size=24),
)

ca_config = objects(
    {
        "Provider": st.sampled_from(["consul", "", "vault", "CONSUL"]),
        "Config": objects(
            {
                "LeafCertTTL": st.one_of(durations, st.integers(-(2**70), 2**70)),
                "IntermediateCertTTL": durations,
                "RootCertTTL": durations,
                "PrivateKeyType": st.sampled_from(["ec", "rsa", "dsa", ""]),
                "PrivateKeyBits": st.one_of(st.integers(-5, 5000), st.text(max_size=5)),
                "PrivateKey": st.sampled_from(["", "-----BEGIN EC PRIVATE KEY-----\nx\n", "k"]),
                "RootCert": st.sampled_from(["", "-----BEGIN CERTIFICATE-----\nx\n", "c"]),
                "SkipValidate": st.booleans(),
            }
        ),
        "ForceWithoutCrossSigning": st.booleans(),
    }
)


# ----- config entries (PUT /v1/config) ----------------------------------------------

config_kinds = st.sampled_from(
    [
        "proxy-defaults",
        "service-defaults",
        "service-intentions",
        "service-router",
        "service-splitter",
        "service-resolver",
        "mesh",
        "",
    ]
)
filters = st.sampled_from(
    ["Service.Meta.version == v1", "Service.Nope == 1", "((", "", 'Service.Tags contains "x"']
)
config_entries = objects(
    {
        "Kind": config_kinds,
        "Name": names,
        "Protocol": st.sampled_from(["http", "tcp", "grpc", "HTTP", "udp", ""]),
        "Config": st.dictionaries(st.sampled_from(["protocol", "x"]), json_values, max_size=2),
        "MeshGateway": objects({"Mode": st.sampled_from(["local", "remote", "bogus"])}),
        "ConnectTimeout": durations,
        "DefaultSubset": st.sampled_from(["v1", "v2", "", "Bad Name"]),
        "Subsets": st.dictionaries(
            st.sampled_from(["v1", "v2", "Bad Name", ""]), objects({"Filter": filters}), max_size=2
        ),
        "Splits": st.lists(
            objects(
                {
                    "Weight": st.one_of(st.floats(allow_nan=True), st.integers(-10, 200)),
                    "ServiceSubset": st.sampled_from(["v1", "v9", ""]),
                    "Service": names,
                }
            ),
            max_size=3,
        ),
        "Routes": st.lists(
            objects({"Match": json_values, "Destination": objects({"Service": names})}),
            max_size=2,
        ),
        "Sources": st.lists(
            objects({"Name": names, "Action": st.sampled_from(["allow", "deny", "maybe"])}),
            max_size=2,
        ),
        "Meta": string_maps,
    }
)


# ----- prepared queries (POST /v1/query, PUT /v1/query/:id) ------------------------

prepared_queries = objects(
    {
        "Name": names,
        "Token": st.sampled_from(["", "not-a-token"]),
        "Template": objects(
            {
                "Type": st.sampled_from(["name_prefix_match", "", "bogus"]),
                "Regexp": st.sampled_from(["^(.*)$", "(unclosed", "", "[z-a]"]),
                "RemoveEmptyTags": st.booleans(),
            }
        ),
        "Service": objects(
            {
                "Service": st.sampled_from(["web", "", "${name.full}", "${match(1)}", "${nope}"]),
                "Tags": st.lists(st.sampled_from(["v1", "!v1", "", "${name.suffix}"]), max_size=3),
                "OnlyPassing": st.booleans(),
                "Near": st.sampled_from(["", "_agent", "node1"]),
                "NodeMeta": st.dictionaries(names, names, max_size=2),
                "Failover": objects(
                    {
                        "NearestN": st.integers(-5, 5),
                        "Datacenters": st.lists(names, max_size=2),
                    }
                ),
            }
        ),
        "DNS": objects({"TTL": durations}),
    }
)

# PUT /v1/txn: a list of operations, each an object with one (or some) of the kinds.
kv_verbs = st.sampled_from(
    ["set", "cas", "get", "get-tree", "check-index", "check-not-exists", "delete", "delete-tree",
     "delete-cas", "get-or-empty", "lock", "explode", ""]
)  # fmt: skip
catalog_verbs = st.sampled_from(["set", "cas", "get", "delete", "delete-cas", "nope"])
txn_kv = objects(
    {
        "Verb": kv_verbs,
        "Key": st.one_of(kv_keys, st.just("")),
        "Value": st.sampled_from(["dg==", "not base64!", "", None]),
        "Flags": st.one_of(st.integers(-1, 2**64), st.just(0)),
        "Index": st.one_of(st.integers(-1, 2**64), st.just(0)),
        "Session": st.text(max_size=8),
    }
)
txn_node = objects(
    {"Verb": catalog_verbs, "Node": objects({"Node": node_names, "Address": addresses})}
)
txn_service = objects(
    {
        "Verb": catalog_verbs,
        "Node": node_names,
        "Service": objects({"ID": names, "Service": names, "Port": ports}),
    }
)
txn_check = objects(
    {
        "Verb": catalog_verbs,
        "Check": objects(
            {"Node": node_names, "CheckID": check_ids, "ServiceID": names, "Status": statuses}
        ),
    }
)
txn_op = objects({"KV": txn_kv, "Node": txn_node, "Service": txn_service, "Check": txn_check})
txn_bodies = st.one_of(
    st.lists(txn_op, max_size=6).map(lambda ops: json.dumps(ops).encode("utf-8", "surrogatepass")),
    bodies(txn_op),
)
autopilot_config = objects(
    {
        "CleanupDeadServers": st.booleans(),
        "LastContactThreshold": st.one_of(durations, st.integers(-5, 2**64)),
        "MaxTrailingLogs": st.integers(-5, 2**64),
        "MinQuorum": st.integers(-5, 2**64),
        "ServerStabilizationTime": st.one_of(durations, st.integers(-5, 2**64)),
        "RedundancyZoneTag": st.text(max_size=8),
    }
)

# PUT /v1/session/create (LockDelay as a duration, a number of seconds or
# nanoseconds, or junk).
session_create = objects(
    {
        "Name": st.text(max_size=8),
        "Node": node_names,
        "LockDelay": st.one_of(durations, st.integers(-5, 2**70), st.floats(), json_scalars),
        "Behavior": st.sampled_from(["release", "delete", "", "keep"]),
        "TTL": durations,
        "Checks": st.lists(check_ids, max_size=2),
        "NodeChecks": st.one_of(st.none(), st.lists(check_ids, max_size=2)),
        "ServiceChecks": st.lists(
            objects({"ID": check_ids, "Namespace": st.text(max_size=4)}), max_size=2
        ),
    }
)
