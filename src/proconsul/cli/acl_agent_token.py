"""`proconsul acl set-agent-token [options] TYPE TOKEN`.

Job: hand one of the agent's own tokens to `PUT /v1/agent/token/<kind>` and
print Consul's line, `ACL token "<type>" set successfully`.

Rules (Consul 1.16's command):
- TYPE is one of default, agent, recovery (sent as `agent_recovery`),
  replication, config_file_service_registration; anything else is
  "Unknown token type".
- TOKEN may be literal text, `@file` or `-` (stdin), as Consul reads it.
- Argument errors print `Error! ...`; a refused request prints
  `Failed to set ACL token "<type>": <the API error>`; both exit 1.
- The secret is never printed.
"""

from __future__ import annotations

from proconsul.cli.acl_policy import read_text_arg
from proconsul.cli.api_client import (
    ApiError,
    CliError,
    add_api_flags,
    client_from,
    command,
    parse_args,
)
from proconsul.config.flags import FlagSet

# CLI type -> the path element of /v1/agent/token/<kind>.
TOKEN_TYPES = {
    "default": "default",
    "agent": "agent",
    "recovery": "agent_recovery",
    "replication": "replication",
    "config_file_service_registration": "config_file_service_registration",
}
# With only one argument, these are taken as a TYPE missing its TOKEN.
_KNOWN_ALONE = ("default", "agent", "recovery", "replication")


def _type_and_token(args: list[str]) -> tuple[str, str]:
    if not args:
        raise CliError("Error! Missing TYPE and TOKEN arguments")
    if len(args) == 1:
        if args[0] in _KNOWN_ALONE:
            raise CliError("Error! Missing TOKEN argument")
        # Consul's own spelling, kept for scripts that match on it.
        raise CliError("Error! MISSING TYPE argument")
    if len(args) > 2:
        raise CliError(f"Error! Too many arguments: expected 2 got {len(args)}")
    try:
        return args[0], read_text_arg(args[1])
    except CliError as exc:
        raise CliError(f"Error! {exc.message}") from None


@command
def set_agent_token(argv: list[str]) -> int:
    flags = FlagSet("acl set-agent-token")
    add_api_flags(flags)
    values, args = parse_args(flags, argv, max_args=1000)
    token_type, secret = _type_and_token(args)
    kind = TOKEN_TYPES.get(token_type)
    if kind is None:
        raise CliError("Unknown token type")
    client = client_from(values)
    try:
        client.put(f"/v1/agent/token/{kind}", body={"Token": secret})
    except ApiError as exc:
        raise CliError(f'Failed to set ACL token "{token_type}": {exc}') from None
    print(f'ACL token "{token_type}" set successfully')
    return 0
