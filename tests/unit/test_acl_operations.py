"""The ACL operations table (acl/service.py): every `ACLService` method is one
declared operation, served by `ACLEndpoints`, and its arguments survive the
trip through an `ACLCall` the way the method binds them."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from proconsul.acl.errors import ACLError
from proconsul.acl.service import ACL_OPERATIONS, ACLService
from proconsul.rpc.acl_codec import RemoteACLEndpoints, decode_call, encode_call
from proconsul.server.acl_endpoints import ACLEndpoints
from proconsul.structs.acl import ACLPolicy, ACLToken
from proconsul.structs.duration import Duration
from proconsul.structs.rpc import ACLCall

OPS = {op.name: op for op in ACL_OPERATIONS.values()}


def test_every_service_method_is_one_operation_and_the_endpoints_serve_it() -> None:
    methods = {
        name
        for name, member in vars(ACLService).items()
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    }
    assert set(OPS) == methods
    assert len(ACL_OPERATIONS) == len(OPS)  # one RPC name per method
    assert all(rpc.startswith("ACL.") for rpc in ACL_OPERATIONS)
    for name in methods:
        served = inspect.signature(getattr(ACLEndpoints, name))
        assert served.parameters.keys() == OPS[name].signature.parameters.keys(), name


@pytest.mark.parametrize(
    ("name", "args", "kwargs", "call", "decoded"),
    [
        ("bootstrap", (), {}, ACLCall(), ([], {})),
        ("token_self", ("s",), {}, ACLCall(caller="s"), (["s"], {})),
        (
            "token_list",
            (),
            {"role": "r", "caller": "c"},
            ACLCall(caller="c", role="r"),
            (["", "r", ""], {"caller": "c"}),
        ),
        (
            "token_clone",
            ("a1", "copy"),
            {"caller": "c"},
            ACLCall(caller="c", id="a1", text="copy"),
            (["a1", "copy"], {"caller": "c"}),
        ),
        (
            "policy_set",
            (ACLPolicy(name="p"),),
            {},
            ACLCall(policy_row=ACLPolicy(name="p")),
            ([ACLPolicy(name="p"), ""], {"caller": ""}),
        ),
        ("role_list", ("p1",), {}, ACLCall(policy="p1"), (["p1"], {"caller": ""})),
        ("token_resolve", ("s",), {}, ACLCall(caller="s"), (["s"], {})),
    ],
)
def test_arguments_travel_in_their_fields(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call: ACLCall,
    decoded: tuple[list[Any], dict[str, Any]],
) -> None:
    op = OPS[name]
    encoded = op.encode(args, kwargs)
    assert encoded == call
    assert op.decode(decode_call(encode_call(encoded), op.rpc)) == decoded


def test_a_missing_row_is_a_bad_request() -> None:
    with pytest.raises(ACLError) as caught:
        OPS["token_update"].decode(ACLCall(caller="c", id="a1"))
    assert (caught.value.status, caught.value.message) == (
        400,
        "Request decode failed: missing token",
    )


async def test_the_remote_caller_refuses_what_the_service_would_not_take() -> None:
    sent: list[str] = []

    async def call_raw(method: str, payload: bytes, timeout_s: float) -> bytes:
        sent.append(method)
        return b"\xc0"

    remote = RemoteACLEndpoints(call_raw)
    with pytest.raises(AttributeError):
        remote.token_frobnicate  # noqa: B018
    with pytest.raises(TypeError):
        await remote.token_read()
    with pytest.raises(TypeError):
        await remote.token_create(ACLToken(), secret="x")
    assert await remote.token_delete("a1", caller="c") is None
    assert sent == ["ACL.TokenDelete"]


def test_a_token_with_an_expiration_ttl_crosses_the_wire() -> None:
    # A client agent sends token rows over RPC; ExpirationTTL is a Duration.
    token = ACLToken(description="short", expiration_ttl=Duration(90.0))
    payload = encode_call(OPS["token_create"].encode((token,), {"caller": "s"}))
    sent = decode_call(payload, "ACL.TokenCreate")
    assert sent.token_row is not None and sent.token_row.expiration_ttl == 90.0
    assert sent.caller == "s"


def test_writes_are_marked_and_reads_are_not() -> None:
    writes = {op.name for op in ACL_OPERATIONS.values() if op.write}
    assert writes == {
        "bootstrap",
        "token_create",
        "token_update",
        "token_clone",
        "token_delete",
        "policy_set",
        "policy_delete",
        "role_set",
        "role_delete",
    }
