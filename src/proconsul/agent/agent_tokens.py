"""The agent's own ACL tokens: `default`, `agent`, `agent_recovery` and friends.

Job: hold the tokens the agent uses for itself (and for requests that carry
none), starting from the config's `acl.tokens` block; `/v1/agent/token/<kind>`
and `proconsul acl set-agent-token` replace them at run time.

Rules (Consul's, as documented):
- With `acl.enable_token_persistence`, a token set at run time is written to
  `<data_dir>/acl-tokens.json` (0600, atomically) and, at the next start, wins
  over the same token in the config. Without it nothing is written, and a
  restart goes back to the config.
- An empty `agent` token falls back to `default`, as Consul's agent does.
- A malformed persisted file is an error that names the file, never ignored.
- Secrets are never logged.
"""

from __future__ import annotations

import json
import os

from proconsul.config.schema import ACLTokens
from proconsul.fileio import write_private_file

TOKENS_FILE = "acl-tokens.json"
# The kinds `/v1/agent/token/<kind>` accepts, with Consul's older spellings.
TOKEN_KINDS = (
    "default",
    "agent",
    "agent_recovery",
    "replication",
    "config_file_service_registration",
)
KIND_ALIASES = {
    "acl_token": "default",
    "acl_agent_token": "agent",
    "agent_master": "agent_recovery",
    "acl_agent_master_token": "agent_recovery",
    "acl_replication_token": "replication",
}


class AgentTokensError(ValueError):
    pass


class UnknownTokenKind(LookupError):
    """No agent token of that kind (the HTTP API answers 404)."""


def canonical_kind(kind: str) -> str | None:
    """`kind` as stored, or None if the agent has no such token."""
    kind = KIND_ALIASES.get(kind, kind)
    return kind if kind in TOKEN_KINDS else None


class AgentTokens:
    def __init__(self, config_tokens: ACLTokens, data_dir: str = "", persist: bool = False) -> None:
        self._tokens = {kind: str(getattr(config_tokens, kind, "")) for kind in TOKEN_KINDS}
        self._persisted: dict[str, str] = {}
        self.path = os.path.join(data_dir, TOKENS_FILE) if data_dir and persist else ""
        if self.path:
            self._persisted = self._read()
            self._tokens.update(self._persisted)

    def _read(self) -> dict[str, str]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise AgentTokensError(f"{self.path}: not valid JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise AgentTokensError(f"{self.path}: expected a JSON object")
        out: dict[str, str] = {}
        for key, value in data.items():
            kind = canonical_kind(str(key))
            if kind is None or not isinstance(value, str):
                raise AgentTokensError(f"{self.path}: unexpected entry {key!r}")
            out[kind] = value
        return out

    def get(self, kind: str) -> str:
        return self._tokens[kind]

    @property
    def default(self) -> str:
        return self._tokens["default"]

    @property
    def agent(self) -> str:
        """The token the agent acts with: `agent`, else `default`."""
        return self._tokens["agent"] or self._tokens["default"]

    @property
    def agent_recovery(self) -> str:
        return self._tokens["agent_recovery"]

    def set(self, kind: str, secret: str) -> bool:
        """Set a token at run time (`kind` may be an old alias); returns whether it
        was persisted. Raises UnknownTokenKind for a kind the agent does not have."""
        known = canonical_kind(kind)
        if known is None:
            raise UnknownTokenKind(kind)
        kind = known
        self._tokens[kind] = secret
        if not self.path:
            return False
        self._persisted[kind] = secret
        body = json.dumps(self._persisted, indent=2, sort_keys=True).encode()
        write_private_file(self.path, body)
        return True
