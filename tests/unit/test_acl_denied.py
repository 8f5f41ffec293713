"""One exception for every ACL refusal (`ACLDenied`), translated once at each edge:
the RPC server's error code, the RPC caller's exception, the HTTP status."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proconsul.acl.authorizer import Authorizer, PermissionDenied
from proconsul.acl.errors import ACLDenied, ACLError, ACLNotFound
from proconsul.acl.resolved import ResolvedToken
from proconsul.acl.rules import parse_rules
from proconsul.http.server import STATS_KEY, HTTPStats, consul_errors
from proconsul.rpc.errors import ErrorCode, RemoteACLDenied, RPCError, refusal, remote_error

READER = ResolvedToken(
    "61c922fa-ec85-32c1-0c3d-fa891ab8ec67",
    Authorizer([parse_rules('key_prefix "a/" { policy = "read" }')]),
)
DENIED_TEXT = (
    "Permission denied: token with AccessorID '61c922fa-ec85-32c1-0c3d-fa891ab8ec67' "
    "lacks permission 'key:write' on \"a/b\""
)


def test_a_resolved_token_refuses_with_consuls_text() -> None:
    READER.require("key", "read", "a/b")
    with pytest.raises(PermissionDenied) as caught:
        READER.require("key", "write", "a/b")
    assert caught.value.message == DENIED_TEXT
    denial = READER.deny("key", "write", "a/b")
    assert isinstance(denial, ACLDenied) and denial.message == DENIED_TEXT
    assert denial.decision.reason == 'key_prefix "a/" is read'
    assert isinstance(ACLNotFound(), ACLDenied) and ACLNotFound().message == "ACL not found"


def test_the_rpc_code_is_chosen_in_one_place_and_read_back_in_one() -> None:
    assert refusal(ACLNotFound()) == (ErrorCode.ACL_DENIED, "ACL not found")
    assert refusal(READER.deny("key", "write", "a/b")) == (ErrorCode.ACL_DENIED, DENIED_TEXT)
    assert refusal(RPCError("rpc: bad request", ErrorCode.BAD_REQUEST)) == (
        ErrorCode.BAD_REQUEST,
        "rpc: bad request",
    )
    back = remote_error(DENIED_TEXT, ErrorCode.ACL_DENIED)
    assert isinstance(back, RemoteACLDenied) and isinstance(back, ACLDenied)
    assert (back.message, back.code) == (DENIED_TEXT, ErrorCode.ACL_DENIED)
    assert refusal(back) == (ErrorCode.ACL_DENIED, DENIED_TEXT)  # passed on as it came
    other = remote_error("No cluster leader", ErrorCode.HANDLER)
    assert type(other) is RPCError and other.code == ErrorCode.HANDLER


async def answer(exc: Exception) -> tuple[int, str]:
    app = web.Application()
    app[STATS_KEY] = HTTPStats()
    request = make_mocked_request("GET", "/v1/kv/a/b", app=app)

    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    response = await consul_errors(request, handler)
    assert isinstance(response, web.Response)
    return response.status, response.text or ""


async def test_http_answers_every_refusal_403_and_other_server_errors_500() -> None:
    assert await answer(ACLNotFound()) == (403, "ACL not found")
    assert await answer(READER.deny("key", "write", "a/b")) == (403, DENIED_TEXT)
    assert await answer(RemoteACLDenied(DENIED_TEXT)) == (403, DENIED_TEXT)
    assert await answer(RPCError("rpc: bad request", ErrorCode.BAD_REQUEST)) == (
        500,
        "rpc: bad request",
    )
    # The ACL API's other errors keep their own status.
    assert await answer(ACLError(400, "Invalid Policy: invalid Name")) == (
        400,
        "Invalid Policy: invalid Name",
    )
