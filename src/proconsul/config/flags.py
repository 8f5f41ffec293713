"""Go-style command-line flags, as Consul's CLI parses them.

Rules (Go's `flag` package): `-name value`, `-name=value`, `--name` also works;
boolean flags take no separate value (`-dev`, `-dev=false`); parsing stops at the
first positional argument or at `--`. Every verb and the agent use this one parser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


class FlagError(Exception):
    """A usage error; the message is shown to the user as is."""


_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def parse_bool(text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid boolean value {text!r}")


@dataclass
class Flag:
    name: str
    help: str
    kind: str  # "str" | "int" | "bool" | "list" | "map"
    default: Any
    convert: Callable[[str], Any] | None = None


@dataclass
class FlagSet:
    """A set of flags for one command; `parse` returns the values and positional args."""

    command: str
    flags: dict[str, Flag] = field(default_factory=dict)

    def string(self, name: str, default: str | None = None, help: str = "") -> None:
        self.flags[name] = Flag(name, help, "str", default)

    def integer(self, name: str, default: int | None = None, help: str = "") -> None:
        self.flags[name] = Flag(name, help, "int", default)

    def boolean(self, name: str, default: bool = False, help: str = "") -> None:
        self.flags[name] = Flag(name, help, "bool", default)

    def repeated(self, name: str, help: str = "") -> None:
        """A flag that may be given many times; values accumulate in order."""
        self.flags[name] = Flag(name, help, "list", None)

    def mapping(self, name: str, help: str = "") -> None:
        """A repeatable `key=value` flag (like `-meta k=v`)."""
        self.flags[name] = Flag(name, help, "map", None)

    def custom(
        self, name: str, convert: Callable[[str], Any], default: Any = None, help: str = ""
    ) -> None:
        """A flag whose text is turned into a value by `convert` (raise ValueError on bad text)."""
        self.flags[name] = Flag(name, help, "custom", default, convert)

    def usage(self) -> str:
        lines = [f"Usage: proconsul {self.command} [options]", ""]
        for flag in sorted(self.flags.values(), key=lambda f: f.name):
            arg = "" if flag.kind == "bool" else "=<value>"
            lines.append(f"  -{flag.name}{arg}")
            if flag.help:
                lines.append(f"     {flag.help}")
        return "\n".join(lines)

    def parse(self, argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
        """Parse `argv`; values holds every flag (defaults for unset ones), plus `set` names."""
        values: dict[str, Any] = {}
        for known in self.flags.values():
            if known.kind == "list":
                values[known.name] = []
            elif known.kind == "map":
                values[known.name] = {}
            else:
                values[known.name] = known.default
        given: set[str] = set()
        args = list(argv)
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                i += 1
                break
            if not arg.startswith("-") or arg == "-":
                break
            body = arg[2:] if arg.startswith("--") else arg[1:]
            if not body or body.startswith("-") or body.startswith("="):
                raise FlagError(f"bad flag syntax: {arg}")
            name, has_value, text = body.partition("=")
            flag = self.flags.get(name)
            if flag is None:
                if name in ("h", "help"):
                    raise FlagError(self.usage())
                raise FlagError(f"flag provided but not defined: -{name}")
            if flag.kind == "bool":
                if has_value:
                    try:
                        values[name] = parse_bool(text)
                    except ValueError:
                        raise FlagError(
                            f'invalid boolean value "{text}" for -{name}: parse error'
                        ) from None
                else:
                    values[name] = True
                given.add(name)
                i += 1
                continue
            if not has_value:
                if i + 1 >= len(args):
                    raise FlagError(f"flag needs an argument: -{name}")
                text = args[i + 1]
                i += 2
            else:
                i += 1
            values[name] = self._convert(flag, text, values[name])
            given.add(name)
        values["set"] = given
        return values, args[i:]

    @staticmethod
    def _convert(flag: Flag, text: str, current: Any) -> Any:
        if flag.kind == "str":
            return text
        if flag.kind == "int":
            try:
                return int(text, 10)
            except ValueError:
                raise FlagError(
                    f'invalid value "{text}" for flag -{flag.name}: parse error'
                ) from None
        if flag.kind == "list":
            return [*current, text]
        if flag.kind == "map":
            key, eq, val = text.partition("=")
            if not eq or not key:
                raise FlagError(f'invalid value "{text}" for flag -{flag.name}: expected key=value')
            return {**current, key: val}
        assert flag.convert is not None
        try:
            return flag.convert(text)
        except ValueError as exc:
            raise FlagError(f'invalid value "{text}" for flag -{flag.name}: {exc}') from None
