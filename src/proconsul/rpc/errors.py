"""Errors an RPC caller can see, and the codes error frames carry.

Rules:
- A remote failure (the server answered with an error) is `RPCError`.
- A transport failure (no connection, connection lost, TLS refused) is a
  `ConnectionError`; a call that ran out of time locally is a `TimeoutError`.
  So callers can retry transport failures on another server and must not
  blindly retry remote ones.
- Codes are part of the wire format: append-only, never change a value.
"""

from __future__ import annotations

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


class RPCError(Exception):
    """The server answered with an error. Handlers raise it for expected refusals
    (the message goes to the caller as it is and nothing is logged above debug)."""

    def __init__(self, message: str, code: str = ErrorCode.HANDLER) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class TLSHandshakeError(ConnectionError):
    """A TLS handshake (or the first read after it) failed.

    `reason` is one of the names in `tls.FAILURE_REASONS`, e.g. "wrong_ca",
    "expired_cert", "hostname_mismatch", "missing_client_cert".
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
