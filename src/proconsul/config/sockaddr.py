"""go-sockaddr templates (`{{ GetInterfaceIP "eth0" }}`), as Consul accepts in
address fields.

A template is text with `{{ pipeline }}` actions in Go's text/template syntax:
commands separated by `|`, where each command is a function name and its
arguments (`"strings"`, `` `raw strings` ``, integers, or a parenthesised
pipeline) and the value from the left is passed as the last argument.
`{{-` and `-}}` trim the whitespace beside them. Only the go-sockaddr
functions are defined: the `Get*` sources and the `sort`, `include`,
`exclude`, `unique`, `limit`, `offset`, `attr`, `join` and `Attr` steps.
Control actions (`range`, `with`, variables) are not supported.

`parse()` checks syntax (including that every function exists) without
looking at the machine; `evaluate()` runs a parsed template over an
interface table passed in, so all of this is pure. The functions themselves
live in `sockaddr_functions`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from proconsul.config.interfaces import IfAddr
from proconsul.config.sockaddr_functions import LIBRARY, TemplateError, Value

__all__ = ["LIBRARY", "Template", "TemplateError", "evaluate", "is_template", "parse", "resolve"]


def is_template(text: str) -> bool:
    return "{{" in text


# ------------------------------------------------------------------- syntax


@dataclass(frozen=True)
class Literal:
    value: str | int


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Pipeline:
    commands: tuple[Node, ...]


Node = Union[Literal, Call, Pipeline]  # noqa: UP007 - recursive alias needs the string-free form


@dataclass(frozen=True)
class Template:
    parts: tuple[str | Pipeline, ...]  # text pieces and actions, in order


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<close>-?}})
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[|()])
  | (?P<dot>\.)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


def parse(text: str) -> Template:
    """Parse a whole template; raises TemplateError on any syntax problem."""
    parts: list[str | Pipeline] = []
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            if "}}" in text[pos:]:
                raise TemplateError("unexpected }} outside an action")
            parts.append(text[pos:])
            break
        literal = text[pos:start]
        body_start = start + 2
        if text.startswith("- ", body_start) or text.startswith("-\t", body_start):
            literal = literal.rstrip()
            body_start += 1
        if "}}" in literal:
            raise TemplateError("unexpected }} outside an action")
        parts.append(literal)
        tokens, pos, trim_after = _lex_action(text, body_start)
        parser = _ActionParser(tokens)
        parts.append(parser.pipeline_to_end())
        if trim_after:
            while pos < len(text) and text[pos].isspace():
                pos += 1
    return Template(tuple(part for part in parts if part != ""))


def _lex_action(text: str, pos: int) -> tuple[list[tuple[str, str]], int, bool]:
    """Tokens of one action, the position after its `}}`, and whether it was `-}}`."""
    tokens: list[tuple[str, str]] = []
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise TemplateError(f"unexpected {text[pos]!r} in action")
        kind = match.lastgroup
        assert kind is not None
        pos = match.end()
        if kind == "close":
            value = match.group()
            return tokens, pos, value.startswith("-")
        if kind != "space":
            tokens.append((kind, match.group()))
    raise TemplateError("unclosed action: missing }}")


class _ActionParser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def pipeline_to_end(self) -> Pipeline:
        if not self.tokens:
            raise TemplateError("missing value for command")
        pipeline = self._pipeline()
        if self.pos < len(self.tokens):
            raise TemplateError(f"unexpected {self.tokens[self.pos][1]!r} in action")
        return pipeline

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _pipeline(self) -> Pipeline:
        commands = [self._command()]
        while self._peek() == ("punct", "|"):
            self.pos += 1
            commands.append(self._command())
        return Pipeline(tuple(commands))

    def _command(self) -> Node:
        operands: list[Node] = []
        while (token := self._peek()) is not None and token[1] not in ("|", ")"):
            operands.append(self._operand())
        if not operands:
            raise TemplateError("missing command")
        head = operands[0]
        if isinstance(head, Call) and not head.args:
            return Call(head.name, tuple(operands[1:]))
        if len(operands) > 1:
            raise TemplateError("can't give argument to non-function")
        return head

    def _operand(self) -> Node:
        kind, value = self.tokens[self.pos]
        self.pos += 1
        if kind == "ident":
            if value in ("range", "with", "if", "end", "else", "define", "template", "block"):
                raise TemplateError(f"{value!r} actions are not supported")
            if value not in LIBRARY:
                # Go's template parser rejects unknown names before anything runs.
                raise TemplateError(f'function "{value}" not defined')
            return Call(value, ())
        if kind == "string":
            return Literal(_unquote(value))
        if kind == "raw":
            return Literal(value[1:-1])
        if kind == "number":
            return Literal(int(value))
        if kind == "dot":
            return Call("GetAllInterfaces", ())
        if value == "(":
            inner = self._pipeline()
            if self._peek() != ("punct", ")"):
                raise TemplateError("unclosed left paren")
            self.pos += 1
            return inner
        raise TemplateError(f"unexpected {value!r} in operand")


def _unquote(quoted: str) -> str:
    out: list[str] = []
    body = quoted[1:-1]
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            escaped = body[i + 1]
            if escaped not in _ESCAPES:
                raise TemplateError(f"unknown escape sequence \\{escaped}")
            out.append(_ESCAPES[escaped])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


# --------------------------------------------------------------- evaluation


def evaluate(template: Template | str, interfaces: Sequence[IfAddr]) -> str:
    """Render a template against an interface table."""
    parsed = parse(template) if isinstance(template, str) else template
    out: list[str] = []
    for part in parsed.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value = _Evaluator(list(interfaces)).run(part)
        if isinstance(value, list | IfAddr):
            raise TemplateError(
                "the result is a list of interfaces; end the pipeline with attr or join"
            )
        out.append(str(value))
    return "".join(out)


def resolve(text: str, interfaces: Sequence[IfAddr]) -> list[str]:
    """Evaluate a template and split the result into whitespace-separated fields."""
    return evaluate(text, interfaces).split()


class _Evaluator:
    def __init__(self, interfaces: list[IfAddr]) -> None:
        self.interfaces = interfaces

    def run(self, node: Node, piped: Value | None = None) -> Value:
        if isinstance(node, Literal):
            if piped is not None:
                raise TemplateError("can't give argument to non-function")
            return node.value
        if isinstance(node, Pipeline):
            value: Value | None = piped
            for command in node.commands:
                value = self.run(command, value)
            assert value is not None
            return value
        args = [self.run(arg) for arg in node.args]
        if piped is not None:
            args.append(piped)
        count, function = LIBRARY[node.name]
        if len(args) != count:
            raise TemplateError(
                f"wrong number of args for {node.name}: want {count} got {len(args)}"
            )
        return function(self.interfaces, *args)
