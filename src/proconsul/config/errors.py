"""The one error type of the config loader, and the wording rules for it.

Every problem with agent configuration surfaces as `ConfigError`, whose text is
`<source>: <key path>: <what is wrong>` with ` (line N)` appended when the
parser reported a line. The source is a file path as given, `flag -name` for
command-line flags, or `config` for rules about the merged result that no
single source broke (such as a missing `data_dir`). Key paths are dotted, with
list indexes in brackets: `service.checks[0].interval`.
"""

from __future__ import annotations

import re

import msgspec

MERGED_SOURCE = "config"

_AT = re.compile(r"^(?P<message>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
# Greedy up to the last backtick: a key may itself contain backticks.
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<field>.*)`$", re.DOTALL)
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<field>.*)`$", re.DOTALL)


class ConfigError(Exception):
    """A configuration problem; `str()` is the message shown to the user."""

    def __init__(self, source: str, path: str, problem: str, line: int | None = None) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        self.line = line
        super().__init__(self.render())

    def render(self) -> str:
        parts = [self.source]
        if self.path:
            parts.append(self.path)
        parts.append(self.problem)
        text = ": ".join(parts)
        if self.line is not None:
            text += f" (line {self.line})"
        return text


def join_path(prefix: str, path: str) -> str:
    """Join two dotted key paths; an index path (`[0].x`) attaches without a dot."""
    if not prefix:
        return path
    if not path:
        return prefix
    if path.startswith("["):
        return prefix + path
    return f"{prefix}.{path}"


def dotted(msgspec_path: str) -> str:
    """`$.ports.http` -> `ports.http`; `$[0].name` -> `[0].name`; `$` -> ``.

    msgspec writes `[...]` for a dict value it cannot name; the dict's own
    path is the best we can say, since the message itself shows the value.
    """
    path = msgspec_path.removeprefix("$").replace("[...]", "")
    return path.removeprefix(".")


def from_validation(source: str, prefix: str, exc: msgspec.ValidationError) -> ConfigError:
    """Turn a msgspec error into our wording, pointing at the offending key."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    message = match.group("message")
    path = join_path(prefix, dotted(match.group("path") or "$"))
    unknown = _UNKNOWN_FIELD.match(message)
    if unknown:
        # An empty key would vanish from the message: show it as "".
        field = unknown.group("field") or '""'
        return ConfigError(source, join_path(path, field), "unknown key")
    missing = _MISSING_FIELD.match(message)
    if missing:
        return ConfigError(source, join_path(path, missing.group("field")), "missing required key")
    return ConfigError(source, path, _plain(message))


def _plain(message: str) -> str:
    """msgspec's `Expected `int`, got `str`` -> `expected int, got str`."""
    message = message.replace("`", "")
    if message.startswith("Expected "):
        message = "e" + message[1:]
    return message
