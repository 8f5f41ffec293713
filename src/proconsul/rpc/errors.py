"""Errors an RPC caller can see, and the codes error frames carry.

Rules:
- A remote failure (the server answered with an error) is `RPCError`.
- A transport failure (no connection, connection lost, TLS refused) is a
  `ConnectionError`; a call that ran out of time locally is a `TimeoutError`.
  So callers can retry transport failures on another server and must not
  blindly retry remote ones.
- Codes are part of the wire format: append-only, never change a value.
- An ACL refusal is an `ACLDenied` (acl/errors.py) on both ends: a handler
  raises it, `refusal` gives it the `acl_denied` code on the way out, and
  `remote_error` raises it again on the caller's side, as `RemoteACLDenied`
  (an `ACLDenied` that is also an `RPCError`: the server answered).
"""

from __future__ import annotations

from proconsul.acl.errors import ACLDenied

# Consul's words when no server leads (or none is known): API clients match on them.
NO_LEADER = "No cluster leader"


class ErrorCode:
    """Values of `Frame.code` on ERROR frames. Append-only."""

    HANDLER = "handler"  # the handler raised; the message is its error
    UNKNOWN_METHOD = "unknown_method"
    TIMEOUT = "timeout"  # the server's deadline for the request passed
    TOO_MANY_REQUESTS = "too_many_requests"  # the connection's in-flight bound was hit
    BAD_REQUEST = "bad_request"  # e.g. a request id already in flight
    PERMISSION_DENIED = "permission_denied"  # e.g. no verified client certificate
    ACL_DENIED = "acl_denied"  # the token is unknown or lacks a right; HTTP answers 403
    BAD_QUERY = "bad_query"  # the query itself is invalid (a bad ?filter); HTTP answers 400
    # Raised by a caller, never sent: the server's answer did not decode.
    BAD_RESPONSE = "bad_response"
    # A forwarded write reached a server that no longer leads: refused before
    # anything was applied, so the sender may route it again.
    NOT_LEADER = "not_leader"


class RPCError(Exception):
    """The server answered with an error. Handlers raise it for expected refusals
    (the message goes to the caller as it is and nothing is logged above debug)."""

    def __init__(self, message: str, code: str = ErrorCode.HANDLER) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class RemoteACLDenied(RPCError, ACLDenied):
    """A server's ACL refusal, as its caller sees it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.ACL_DENIED)


def refusal(exc: RPCError | ACLDenied) -> tuple[str, str]:
    """The (code, message) an expected refusal by a handler leaves in its error frame."""
    if isinstance(exc, RPCError):
        return exc.code, exc.message
    return ErrorCode.ACL_DENIED, exc.message


def remote_error(message: str, code: str) -> RPCError:
    """What a caller raises for an error frame."""
    if code == ErrorCode.ACL_DENIED:
        return RemoteACLDenied(message)
    return RPCError(message, code)


class TLSHandshakeError(ConnectionError):
    """A TLS handshake (or the first read after it) failed.

    `reason` is one of the names in `tls.FAILURE_REASONS`, e.g. "wrong_ca",
    "expired_cert", "hostname_mismatch", "missing_client_cert".
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
