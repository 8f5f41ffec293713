"""Fuzzed request bodies on every HTTP route that decodes one.

Catalog register and deregister, agent service and check register, check
update, the keyring (install, use, remove), KV put with `?cas`/`?flags`,
session create, config entries (`PUT /v1/config`, with `?cas`), transactions (`PUT /v1/txn`),
the autopilot configuration (with `?cas`), snapshot restores of junk, and
the ACL token, policy and role writes (on an agent with ACLs on, as the
management token). The property is `Target.check`'s: a result or a 4xx with a
message, never a hang, a 500 "Internal error" or a traceback in the log.
Where the answer is certain (a body nested too deep, a `?flags` that is not an
unsigned 64-bit number) the test says which.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as fs
from tests.fuzz.http_target import Target, fuzz_settings
from tests.fuzz.oracles import is_uint64, nesting_depth

FUZZ = fuzz_settings()
# The agent refuses JSON nested deeper than this (http/common.py).
MAX_DEPTH = 64


def check_body(target: Target, method: str, path: str, body: bytes) -> None:
    status, answer = target.check(method, path, body)
    if nesting_depth(body) > MAX_DEPTH:
        assert status == 400, answer
        assert answer.startswith(b"Request decode failed:"), answer


@FUZZ
@given(body=fs.bodies(fs.catalog_register))
def test_catalog_register(target: Target, body: bytes) -> None:
    check_body(target, "PUT", "/v1/catalog/register", body)


@FUZZ
@given(body=fs.bodies(fs.catalog_deregister))
def test_catalog_deregister(target: Target, body: bytes) -> None:
    check_body(target, "PUT", "/v1/catalog/deregister", body)


@FUZZ
@given(body=fs.bodies(fs.objects(fs.service_fields)), replace=st.booleans())
def test_agent_service_register(target: Target, body: bytes, replace: bool) -> None:
    query = [("replace-existing-checks", "true")] if replace else []
    status, answer = target.check("PUT", "/v1/agent/service/register", body, query)
    if nesting_depth(body) > MAX_DEPTH:
        assert status == 400, answer
        assert answer.startswith(b"Request decode failed:"), answer


@FUZZ
@given(body=fs.bodies(fs.checks))
def test_agent_check_register(target: Target, body: bytes) -> None:
    check_body(target, "PUT", "/v1/agent/check/register", body)


@FUZZ
@given(
    check_id=st.sampled_from(["fuzz-ttl", "missing", "service:web"]),
    body=fs.bodies(fs.check_update),
)
def test_agent_check_update(target: Target, check_id: str, body: bytes) -> None:
    check_body(target, "PUT", f"/v1/agent/check/update/{check_id}", body)


@FUZZ
@given(method=st.sampled_from(["POST", "PUT", "DELETE"]), body=fs.bodies(fs.keyring))
def test_keyring(target: Target, method: str, body: bytes) -> None:
    check_body(target, method, "/v1/operator/keyring", body)


@FUZZ
@given(
    value=st.binary(max_size=2048),
    cas=st.none() | fs.uint_texts,
    flags=st.none() | fs.uint_texts,
)
def test_kv_put_cas_and_flags(
    target: Target, value: bytes, cas: str | None, flags: str | None
) -> None:
    query = [(name, text) for name, text in (("cas", cas), ("flags", flags)) if text is not None]
    status, answer = target.check("PUT", "/v1/kv/fuzz/numbers", value, query)
    if flags and not is_uint64(flags):
        assert (status, answer[:19]) == (400, b"Invalid flags value"), answer
    elif cas and not is_uint64(cas):
        assert (status, answer[:17]) == (400, b"Invalid cas value"), answer
    else:
        # Written, or not for a CAS that missed.
        assert (status, answer.strip()) in ((200, b"true"), (200, b"false")), answer


@FUZZ
@given(key=fs.kv_keys, value=st.binary(max_size=2048), query=fs.queries)
def test_kv_put_keys_and_parameters(
    target: Target, key: str, value: bytes, query: list[tuple[str, str]]
) -> None:
    target.check("PUT", f"/v1/kv/{key}", value, query)


@FUZZ
@given(body=fs.bodies(fs.session_create))
def test_session_create(target: Target, body: bytes) -> None:
    check_body(target, "PUT", "/v1/session/create", body)


@FUZZ
@given(body=fs.bodies(fs.acl_policy))
def test_acl_policy_create(acl_target: Target, body: bytes) -> None:
    check_body(acl_target, "PUT", "/v1/acl/policy", body)


@FUZZ
@given(body=fs.bodies(fs.acl_role))
def test_acl_role_create(acl_target: Target, body: bytes) -> None:
    check_body(acl_target, "PUT", "/v1/acl/role", body)


@FUZZ
@given(
    route=st.sampled_from(
        [
            ("PUT", "/v1/acl/token"),
            ("PUT", "/v1/acl/token/00000000-0000-0000-0000-000000000002"),
            ("PUT", "/v1/acl/token/not-a-token"),
            ("PUT", "/v1/acl/token/00000000-0000-0000-0000-000000000002/clone"),
        ]
    ),
    body=fs.bodies(fs.acl_token),
)
def test_acl_token_write(acl_target: Target, route: tuple[str, str], body: bytes) -> None:
    method, path = route
    check_body(acl_target, method, path, body)


@FUZZ
@given(body=fs.bodies(fs.config_entries), cas=st.one_of(st.none(), fs.uint_texts))
def test_config_entry_write(target: Target, body: bytes, cas: str | None) -> None:
    query = [] if cas is None else [("cas", cas)]
    status, answer = target.check("PUT", "/v1/config", body, query)
    if nesting_depth(body) > MAX_DEPTH:
        assert status == 400, answer


@given(body=fs.bodies(fs.ca_config))
def test_ca_configuration(target: Target, body: bytes) -> None:
    check_body(target, "PUT", "/v1/connect/ca/configuration", body)


@FUZZ
@given(body=fs.bodies(fs.prepared_queries))
def test_prepared_query_write(target: Target, body: bytes) -> None:
    check_body(target, "POST", "/v1/query", body)
    status, answer = target.check("GET", "/v1/query/fuzz-name/execute")
    assert status in (200, 404), answer


@FUZZ
@given(body=fs.txn_bodies)
def test_txn(target: Target, body: bytes) -> None:
    check_body(target, "PUT", "/v1/txn", body)


@FUZZ
@given(body=fs.bodies(fs.autopilot_config), cas=st.one_of(st.none(), fs.uint_texts))
def test_autopilot_configuration(target: Target, body: bytes, cas: str | None) -> None:
    query = [] if cas is None else [("cas", cas)]
    status, answer = target.check("PUT", "/v1/operator/autopilot/configuration", body, query)
    if nesting_depth(body) > MAX_DEPTH:
        assert status == 400, answer


@FUZZ
@given(body=st.one_of(st.binary(max_size=256), st.sampled_from([b"", b"\x1f\x8b\x08\x00"])))
def test_snapshot_restore(target: Target, body: bytes) -> None:
    status, answer = target.check("PUT", "/v1/snapshot", body)
    assert status == 400, answer
