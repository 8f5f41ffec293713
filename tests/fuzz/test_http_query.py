"""Fuzzed query strings on the HTTP API's reads, and on KV deletes.

`?index` must be an unsigned 64-bit number and `?wait` a Go duration (Consul's
parseWait); anything else is a 400 with Consul's text, and both are checked
against oracles.py. Every other parameter a read or a KV delete looks at
(`stale`, `consistent`, `recurse`, `keys`, `raw`, `separator`, `cas`,
`flags`, `dc`, `tag`, `passing`, `node-meta`, `filter`, ...) is fuzzed with
any value for the property of `Target.check`. Waits are short or absent, so
a request that blocks correctly still returns at once.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as fs
from tests.fuzz.http_target import Target, fuzz_settings
from tests.fuzz.oracles import is_uint64

FUZZ = fuzz_settings()
READS = st.sampled_from(
    [
        "/v1/kv/fuzz",
        "/v1/kv/",
        "/v1/catalog/services",
        "/v1/catalog/nodes",
        "/v1/catalog/service/web",
        "/v1/catalog/node/fuzz-node",
        "/v1/catalog/node-services/fuzz-node",
        "/v1/health/service/web",
        "/v1/health/connect/web",
        "/v1/catalog/connect/web",
        "/v1/health/checks/web",
        "/v1/health/node/fuzz-node",
        "/v1/health/state/any",
        "/v1/health/state/critical",
        "/v1/event/list",
        "/v1/connect/ca/roots",
        "/v1/connect/intentions",
        "/v1/config/service-defaults",
        "/v1/config/service-defaults/web",
        "/v1/discovery-chain/web",
        "/v1/connect/ca/configuration",
        "/v1/agent/connect/ca/roots",
        "/v1/agent/connect/ca/leaf/web",
    ]
)


@FUZZ
@given(path=READS, index=fs.uint_texts)
def test_index_is_a_uint64(target: Target, path: str, index: str) -> None:
    status, answer = target.check("GET", path, query=[("index", index), ("wait", "10ms")])
    if index and not is_uint64(index):
        assert (status, answer) == (400, b"Invalid index")
    elif path == "/v1/kv/":
        assert (status, answer) == (400, b"Missing key name")  # no key, no ?recurse
    else:
        assert status in (200, 404), answer


@FUZZ
@given(path=READS, wait=fs.durations)
def test_wait_is_a_go_duration(target: Target, path: str, wait: str) -> None:
    status, answer = target.check("GET", path, query=[("wait", wait)])
    refusals = [(400, b"Invalid wait time")]
    if path == "/v1/kv/":
        refusals.append((400, b"Missing key name"))  # no key, no ?recurse
    assert status in (200, 404) or (status, answer) in refusals, answer


@FUZZ
@given(path=READS, query=fs.queries)
def test_read_parameters(target: Target, path: str, query: list[tuple[str, str]]) -> None:
    target.check("GET", path, query=query)


@FUZZ
@given(state=st.text(max_size=12), query=fs.queries)
def test_health_state_names(target: Target, state: str, query: list[tuple[str, str]]) -> None:
    target.check("GET", f"/v1/health/state/{state}", query=query)


@FUZZ
@given(key=fs.kv_keys, query=fs.queries)
def test_kv_delete(target: Target, key: str, query: list[tuple[str, str]]) -> None:
    target.check("DELETE", f"/v1/kv/{key}", query=query)
