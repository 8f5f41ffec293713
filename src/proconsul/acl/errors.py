"""Errors of the ACL system, with Consul's texts.

- `ACLDenied` is every ACL refusal: an unknown token, a missing right, a
  write no token may make. `message` is Consul's text ("ACL not found",
  "Permission denied: token with AccessorID '...' lacks permission '...'
  on ..."). Raise it (or a subclass) wherever a check fails; the edges
  translate it once each: the RPC server to the `acl_denied` error code
  (and the RPC caller back to an `ACLDenied`), the HTTP API to a 403.
- `ACLNotFound`: the secret names no token, or a token past its
  ExpirationTime (also what a read of a missing ACL row answers, as in
  Consul).
- `ACLError`: an ACL API call (tokens, policies, roles) failed for another
  reason; `status` is the HTTP status Consul answers with (400 bad input,
  500 the write failed) and `message` its text.
"""

from __future__ import annotations

ACL_NOT_FOUND = "ACL not found"


class ACLDenied(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ACLNotFound(ACLDenied):
    def __init__(self) -> None:
        super().__init__(ACL_NOT_FOUND)


class ACLError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
