"""Fuzzing config loading: any text, any tree -> a config or a `ConfigError`, nothing else.

Config files come from users, not attackers, but a traceback instead of
`<file>: <key>: <problem>` is still a defect, and a config `validate` accepts
must be one the agent can start with. Inputs:
- arbitrary text as HCL and as JSON (`sources.parse_text`), and JSON nested
  far past Python's recursion limit;
- trees shaped by the schema (right keys, mostly right types, sometimes junk,
  interesting strings such as templates, `unix://` paths and Go durations),
  checked per source (`loader.check_source`) and loaded whole from files the
  way the agent and `proconsul validate` load them.
Properties: a `ConfigError` names the source it came from (and a key, once the
text parsed); a loaded config holds only durations Go could represent.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import example, given
from hypothesis import strategies as st

from proconsul.config.errors import MERGED_SOURCE, ConfigError
from proconsul.config.interfaces import make_ifaddr
from proconsul.config.loader import check_source, load_paths
from proconsul.config.schema import ConfigFile
from proconsul.config.sources import Source, parse_text
from proconsul.structs.duration import Duration

TABLE = [
    make_ifaddr("lo", "127.0.0.1/8", "up|loopback"),
    make_ifaddr("eth0", "10.0.1.11/24", "up|broadcast", default_route=True),
]
# Go's time.Duration is an int64 of nanoseconds.
MAX_DURATION_S = (2**63 - 1) / 1e9

INTERESTING_STRINGS = [
    "",
    "127.0.0.1",
    "0.0.0.0",
    "::",
    "[::1]",
    "127.0.0.1 10.0.1.11",
    "unix:///run/proconsul/http.sock",
    "unix://",
    "unix://a\x00b",
    '{{ GetInterfaceIP "eth0" }}',
    "{{ GetPrivateIP }}",
    "{{ bogus",
    "10s",
    "1m30s",
    "-5s",
    "9" * 400 + "h",
    "consul",
    "dc1",
    "0660",
    "allow",
    "deny",
    "TLSv1_2",
    "\x00",
]
JUNK = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12)),
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=10,
)
strings = st.one_of(st.sampled_from(INTERESTING_STRINGS), st.text(max_size=16))
numbers = st.one_of(
    st.integers(-2, 70_000),
    st.sampled_from([-1, 0, 1, 53, 8300, 8301, 8500, 8600, 65535, 65536, 2**63, 10**30]),
)


def from_schema(kind: mi.Type, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for `kind`: mostly well typed, sometimes junk (what a user might write)."""
    return st.one_of(_typed(kind, depth), JUNK) if depth else _typed(kind, depth)


def _typed(kind: mi.Type, depth: int) -> st.SearchStrategy[Any]:
    if isinstance(kind, mi.StructType):
        if depth > 3:  # service definitions nest (sidecar_service)
            return st.just({})
        fields = {f.encode_name: f.type for f in kind.fields}
        return st.lists(st.sampled_from(sorted(fields)), max_size=6, unique=True).flatmap(
            lambda keys: st.fixed_dictionaries(
                {key: from_schema(fields[key], depth + 1) for key in keys}
            )
        )
    if isinstance(kind, mi.UnionType):
        return st.one_of([_typed(t, depth) for t in kind.types])
    if isinstance(kind, mi.NoneType):
        return st.none()
    if isinstance(kind, mi.BoolType):
        return st.booleans()
    if isinstance(kind, mi.IntType):
        return numbers
    if isinstance(kind, mi.FloatType):
        if getattr(kind, "cls", None) is Duration:
            return strings
        return st.floats()
    if isinstance(kind, mi.StrType):
        return strings
    if isinstance(kind, mi.LiteralType):
        return st.sampled_from(list(kind.values))
    if isinstance(kind, mi.ListType):
        return st.lists(from_schema(kind.item_type, depth + 1), max_size=3)
    if isinstance(kind, mi.DictType):
        return st.dictionaries(strings, from_schema(kind.value_type, depth + 1), max_size=3)
    if isinstance(kind, mi.CustomType) and kind.cls is Duration:
        return strings
    return JUNK


CONFIG_TREES = from_schema(mi.type_info(ConfigFile))


def assert_names(exc: ConfigError, sources: set[str]) -> None:
    assert exc.source in sources, exc
    assert str(exc).startswith(exc.source)


def durations_ok(value: Any) -> None:
    """Every Duration in a loaded config is one Go could hold (the agent uses them)."""
    if isinstance(value, Duration):
        assert math.isfinite(value) and abs(value) <= MAX_DURATION_S, value
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            durations_ok(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            durations_ok(item)
    elif isinstance(value, dict):
        for item in value.values():
            durations_ok(item)


# ----- text -----------------------------------------------------------------------


# Found by this fuzzer: JSON nested past the recursion limit raised RecursionError.
@example("[" * 100_000, "json")
@example('{"a":' * 100_000, "json")
@example("a = " + "[" * 100_000, "hcl")
@given(st.text(max_size=200), st.sampled_from(["hcl", "json"]))
def test_any_text_parses_or_is_a_config_error(text: str, fmt: str) -> None:
    try:
        source = parse_text("a.conf", text, fmt)
    except ConfigError as exc:
        assert_names(exc, {"a.conf"})
        assert exc.path == ""
        return
    assert isinstance(source.data, dict)


@given(CONFIG_TREES, st.sampled_from(["hcl-ish", "json"]))
def test_serialized_trees_parse(tree: dict[str, Any], fmt: str) -> None:
    text = json.dumps(tree)
    # HCL1 reads JSON too (pyhcl takes it), so the same text exercises both parsers.
    try:
        parse_text("a.conf", text, "json" if fmt == "json" else "hcl")
    except ConfigError as exc:
        assert_names(exc, {"a.conf"})


# ----- trees ----------------------------------------------------------------------


# Found by this fuzzer: an unknown key "" (and, with the long profile, one
# holding a backtick) gave an error that named no key.
@example({"": []})
@example({"`": []})
@example({"ports": {"a`\nb": 1}})
@given(st.one_of(CONFIG_TREES, st.dictionaries(st.text(max_size=8), JUNK, max_size=4)))
def test_one_source_is_checked_or_refused_at_a_key(tree: dict[str, Any]) -> None:
    try:
        check_source(Source("a.json", tree))
    except ConfigError as exc:
        assert_names(exc, {"a.json"})
        assert exc.path, exc


@example({"data_dir": "d", "addresses": {"http": "unix://a\x00b"}}, "json")
@example({"data_dir": "d", "dns_config": {"node_ttl": "9" * 400 + "h"}}, "json")
@given(CONFIG_TREES, st.sampled_from(["hcl", "json"]))
def test_files_load_or_fail_naming_the_file(tree: dict[str, Any], fmt: str) -> None:
    tree.setdefault("data_dir", "data")
    with tempfile.TemporaryDirectory(prefix="pc-") as folder:
        path = os.path.join(folder, f"agent.{fmt}")
        with open(path, "w", encoding="utf-8") as handle:
            # HCL1 is a superset of JSON for objects: pyhcl parses this too.
            handle.write(json.dumps(tree))
        try:
            loaded = load_paths([path], interfaces=lambda: TABLE, hostname=lambda: "host-1")
        except ConfigError as exc:
            assert_names(exc, {path, MERGED_SOURCE})
            if exc.source == MERGED_SOURCE:
                assert exc.path, exc
            return
    durations_ok(loaded.config)
