"""Errors of the ACL system, with Consul's texts.

- `ACLNotFound`: the secret names no token, or a token past its
  ExpirationTime: Consul's 403 "ACL not found".
- `ACLError`: an ACL API call (tokens, policies, roles, bootstrap) failed;
  `status` is the HTTP status Consul answers with (400 bad input, 403
  refused, 500 the write failed) and `message` its text.
"""

from __future__ import annotations

ACL_NOT_FOUND = "ACL not found"


class ACLNotFound(Exception):
    def __init__(self) -> None:
        super().__init__(ACL_NOT_FOUND)


class ACLError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
