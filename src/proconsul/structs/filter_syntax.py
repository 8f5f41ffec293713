"""The syntax of Consul's filter expression language: its tokens, tree and parser.

Job: `parse_filter(text)` turns the text of a filter expression into a tree of
`Match`, `Not`, `And` and `Or`, or raises `FilterError` with a message in the
shape of Consul's ("Failed to create boolean expression evaluator: 1:4 (3): no
match found, expected: ..."). What the tree means, and how it is checked and
evaluated, is structs/filter.py's.

Grammar (Consul's, as its filtering page documents it; WS is one or more of
space, tab, CR, LF):

    expression := or
    or         := and (WS "or" WS and)*
    and        := not (WS "and" WS not)*
    not        := "not" WS not  |  "(" WS? or WS? ")"  |  match
    match      := selector ("==" | "!=") value                  (WS optional around)
                | selector WS ("contains" | "not" WS "contains"
                              | "matches" | "not" WS "matches") WS value
                | selector WS "is" WS ("empty" | "not" WS "empty")
                | value WS ("in" | "not" WS "in") WS selector
    selector   := name ("." name | "[" WS? string WS? "]")*      name := [a-zA-Z][a-zA-Z0-9_]*
    value      := selector (its text) | number | string
    number     := "-"? ("0" | [1-9][0-9]*) ("." [0-9]+)?   then WS, ")" or the end
    string     := '"' text with Go escapes '"'  |  '`' raw text '`'

So `not` binds tighter than `and`, and `and` tighter than `or`; keywords are
not reserved (`Name == not` compares with the text "not"); `contains` is `in`
with its operands swapped.

Rules: pure; bounded (at most MAX_EXPRESSION_LENGTH characters, MAX_DEPTH
nested groups or `not`s, MAX_SELECTOR_PARTS names per selector), so parsing
never recurses deeply; only `FilterError` leaves it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

MAX_EXPRESSION_LENGTH: Final = 8192
MAX_DEPTH: Final = 32
MAX_SELECTOR_PARTS: Final = 32

PREFIX: Final = "Failed to create boolean expression evaluator: "


class FilterError(ValueError):
    """A filter expression that cannot be compiled; the message is for the caller."""


# ----- syntax tree ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operator:
    """A match operator: Consul's name for it, and what it tests."""

    name: str  # as Consul's messages spell it: "Equal", "Not In", ...
    test: str  # "equal", "in", "matches" or "not_empty"
    negated: bool
    takes_value: bool = True


EQUAL = Operator("Equal", "equal", False)
NOT_EQUAL = Operator("Not Equal", "equal", True)
IN = Operator("In", "in", False)
NOT_IN = Operator("Not In", "in", True)
MATCHES = Operator("Matches", "matches", False)
NOT_MATCHES = Operator("Not Matches", "matches", True)
IS_EMPTY = Operator("Is Empty", "not_empty", True, takes_value=False)
IS_NOT_EMPTY = Operator("Is Not Empty", "not_empty", False, takes_value=False)


@dataclass(frozen=True, slots=True)
class Match:
    selector: tuple[str, ...]
    op: Operator
    value: str | None  # the value's text; None for `is empty` and `is not empty`

    def __str__(self) -> str:
        name = ".".join(self.selector)
        if self.value is None:
            return f"({self.op.name} {name})"
        return f"({self.op.name} {name} {quote(self.value)})"


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr

    def __str__(self) -> str:
        return f"(not {self.operand})"


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]

    def __str__(self) -> str:
        return "(and " + " ".join(map(str, self.operands)) + ")"


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]

    def __str__(self) -> str:
        return "(or " + " ".join(map(str, self.operands)) + ")"


Expr = Match | Not | And | Or


def quote(text: str) -> str:
    """Text quoted the way Go's %q does it, near enough for messages."""
    return json.dumps(text.encode("utf-8", "replace").decode("utf-8"), ensure_ascii=False)


# ----- parser --------------------------------------------------------------------

_WS: Final = frozenset(" \t\r\n")
_DIGITS: Final = frozenset("0123456789")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_NAME_START: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NAME_CHARS: Final = _NAME_START | _DIGITS | {"_"}

# Operators written after a selector, in the grammar's order: (operator, words).
# A word of letters needs WS before it; "==" and "!=" take optional WS.
_SELECTOR_OPERATORS: Final = (
    (EQUAL, ("==",)),
    (NOT_EQUAL, ("!=",)),
    (IN, ("contains",)),
    (NOT_IN, ("not", "contains")),
    (MATCHES, ("matches",)),
    (NOT_MATCHES, ("not", "matches")),
    (IS_EMPTY, ("is", "empty")),
    (IS_NOT_EMPTY, ("is", "not", "empty")),
)
_VALUE_OPERATORS: Final = ((IN, ("in",)), (NOT_IN, ("not", "in")))

_ESCAPES: Final = {
    "a": b"\a",
    "b": b"\b",
    "f": b"\f",
    "n": b"\n",
    "r": b"\r",
    "t": b"\t",
    "v": b"\v",
    "\\": b"\\",
    '"': b'"',
}


def _unescape(body: str) -> str | None:
    """The text of a double-quoted string with Go's escapes, or None if invalid."""
    if "\n" in body:
        return None
    if "\\" not in body:
        return body
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        char = body[i]
        if char != "\\":
            out += char.encode("utf-8", "surrogatepass")
            i += 1
            continue
        if i + 1 >= n:
            return None
        kind = body[i + 1]
        if kind in _ESCAPES:
            out += _ESCAPES[kind]
            i += 2
        elif kind in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[kind]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not _HEX.issuperset(digits):
                return None
            code = int(digits, 16)
            if kind == "x":
                out.append(code)  # a raw byte, as in Go
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                return None
            else:
                out += chr(code).encode()
            i += 2 + width
        elif kind in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not set(digits) <= set("01234567") or int(digits, 8) > 255:
                return None
            out.append(int(digits, 8))
            i += 4
        else:
            return None
    return out.decode("utf-8", "replace")


class _Parser:
    """A recursive-descent parser with PEG's ordered choice and backtracking.

    Like the PEG parser Consul uses, it remembers the farthest position where a
    terminal failed and what it expected there: that is the "no match found"
    message. A few rules fail with their own message at once ("Invalid number
    literal", "Unmatched parentheses", ...): no other reading could succeed there.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.farthest = -1
        self.expected: set[str] = set()

    # -- errors

    def _where(self, pos: int) -> str:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        offset = len(self.text[:pos].encode("utf-8", "surrogatepass"))  # Go counts bytes
        return f"{line}:{column} ({offset})"

    def _error(self, pos: int, rule: str, message: str) -> FilterError:
        return FilterError(f'{PREFIX}{self._where(pos)}: rule "{rule}": {message}')

    def _no_match(self) -> FilterError:
        # Sorted, with the end of input last, as Consul's parser lists them.
        items = sorted(self.expected - {"EOF"}) + ["EOF"] * ("EOF" in self.expected)
        listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
        return FilterError(
            f"{PREFIX}{self._where(self.farthest)}: no match found, expected: {listed}"
        )

    def _expect(self, pos: int, what: str) -> None:
        if pos > self.farthest:
            self.farthest = pos
            self.expected = {what}
        elif pos == self.farthest:
            self.expected.add(what)

    # -- terminals: each returns the position after it, or None

    def _literal(self, pos: int, word: str) -> int | None:
        if self.text.startswith(word, pos):
            return pos + len(word)
        self._expect(pos, json.dumps(word))
        return None

    def _spaces(self, pos: int) -> int:
        while pos < self.n and self.text[pos] in _WS:
            pos += 1
        self._expect(pos, "[ \\t\\r\\n]")
        return pos

    def _space(self, pos: int) -> int | None:
        end = self._spaces(pos)
        return end if end > pos else None

    def _run(self, pos: int, chars: frozenset[str], what: str) -> int:
        while pos < self.n and self.text[pos] in chars:
            pos += 1
        self._expect(pos, what)
        return pos

    def _name(self, pos: int) -> int | None:
        if pos < self.n and self.text[pos] in _NAME_START:
            return self._run(pos + 1, _NAME_CHARS, "[a-zA-Z0-9_]")
        self._expect(pos, "[a-zA-Z]")
        return None

    def _words(self, pos: int, words: Sequence[str], trailing_space: bool) -> int | None:
        """An operator: symbols with optional WS around, keywords with WS between."""
        if not words[0][0].isalpha():
            end = self._literal(self._spaces(pos), words[0])
            return None if end is None else self._spaces(end)
        end = pos
        for word in words:
            spaced = self._space(end)
            after = self._literal(spaced, word) if spaced is not None else None
            if after is None:
                return None
            end = after
        return self._space(end) if trailing_space else end

    # -- rules

    def parse(self) -> Expr:
        result = self._or(self._spaces(0), 0)
        if result is not None:
            end = self._spaces(result[1])
            if end == self.n:
                return result[0]
            self._expect(end, "EOF")
        raise self._no_match()

    def _or(self, pos: int, depth: int) -> tuple[Expr, int] | None:
        return self._chain(pos, depth, "or", self._and, Or)

    def _and(self, pos: int, depth: int) -> tuple[Expr, int] | None:
        return self._chain(pos, depth, "and", self._not, And)

    def _chain(
        self,
        pos: int,
        depth: int,
        word: str,
        operand: Callable[[int, int], tuple[Expr, int] | None],
        node: Callable[[tuple[Expr, ...]], Expr],
    ) -> tuple[Expr, int] | None:
        # A loop, not recursion: a long chain of `or`s costs no stack.
        first = operand(pos, depth)
        if first is None:
            return None
        operands, pos = [first[0]], first[1]
        while True:
            start = self._words(pos, (word,), trailing_space=True)
            following = operand(start, depth) if start is not None else None
            if following is None:
                break
            operands.append(following[0])
            pos = following[1]
        return (operands[0] if len(operands) == 1 else node(tuple(operands))), pos

    def _deeper(self, pos: int, depth: int) -> int:
        if depth >= MAX_DEPTH:
            raise FilterError(
                f"{PREFIX}{self._where(pos)}: expression nested deeper than {MAX_DEPTH} levels"
            )
        return depth + 1

    def _not(self, pos: int, depth: int) -> tuple[Expr, int] | None:
        after = self._literal(pos, "not")
        after = self._space(after) if after is not None else None
        if after is not None:
            inner = self._not(after, self._deeper(pos, depth))
            if inner is not None:
                operand = inner[0]
                # `not not x` is x.
                return (operand.operand if isinstance(operand, Not) else Not(operand)), inner[1]
        return self._group(pos, depth)

    def _group(self, pos: int, depth: int) -> tuple[Expr, int] | None:
        after = self._literal(pos, "(")
        if after is None:
            return self._match(pos)
        inner = self._or(self._spaces(after), self._deeper(pos, depth))
        if inner is None:
            return None  # no match can start with "(" either
        end = self._spaces(inner[1])
        closed = self._literal(end, ")")
        if closed is None:
            raise self._error(end, "grouping", "Unmatched parentheses")
        return inner[0], closed

    def _match(self, pos: int) -> tuple[Expr, int] | None:
        selector = self._selector(pos)
        if selector is not None:
            path, after = selector
            for op, words in _SELECTOR_OPERATORS:
                end = self._words(after, words, trailing_space=op.takes_value)
                if end is None:
                    continue
                if not op.takes_value:
                    return Match(path, op, None), end
                value = self._value(end)
                if value is not None:
                    return Match(path, op, value[0]), value[1]
        value = self._value(pos)
        if value is None:
            return None
        for op, words in _VALUE_OPERATORS:
            end = self._words(value[1], words, trailing_space=True)
            if end is None:
                continue
            selector = self._selector(end)
            if selector is None:
                raise self._error(end, "match", "Invalid selector")
            return Match(selector[0], op, value[0]), selector[1]
        return None

    def _selector(self, pos: int) -> tuple[tuple[str, ...], int] | None:
        end = self._name(pos)
        if end is None:
            return None
        parts = [self.text[pos:end]]
        while True:
            if self.text.startswith(".", end):
                after = self._name(end + 1)
                if after is None:
                    break  # the "." belongs to no selector
                parts.append(self.text[end + 1 : after])
                end = after
            elif self.text.startswith("[", end):
                start = self._spaces(end + 1)
                key = self._string(start)
                if key is None:
                    raise self._error(start, "index", "Invalid index")
                close = self._spaces(key[1])
                if not self.text.startswith("]", close):
                    raise self._error(close, "index", "Unclosed index expression")
                parts.append(key[0])
                end = close + 1
            else:
                self._expect(end, '"."')
                self._expect(end, '"["')
                break
            if len(parts) > MAX_SELECTOR_PARTS:
                raise self._error(end, "selector", f"more than {MAX_SELECTOR_PARTS} parts")
        return tuple(parts), end

    def _value(self, pos: int) -> tuple[str, int] | None:
        selector = self._selector(pos)
        if selector is not None:
            return ".".join(selector[0]), selector[1]
        number = self._number(pos)
        if number is not None:
            return number
        return self._string(pos)

    def _number(self, pos: int) -> tuple[str, int] | None:
        end = pos
        if self.text.startswith("-", end):
            end += 1
        else:
            self._expect(end, '"-"')
        if self.text.startswith("0", end):
            end += 1
        elif end < self.n and self.text[end] in "123456789":
            end = self._run(end + 1, _DIGITS, "[0-9]")
        else:
            self._expect(end, '"0"')
            self._expect(end, "[1-9]")
            return None
        if self.text.startswith(".", end) and end + 1 < self.n and self.text[end + 1] in _DIGITS:
            end = self._run(end + 2, _DIGITS, "[0-9]")
        else:
            self._expect(end, '"."')
        if end < self.n and self.text[end] not in _WS and self.text[end] != ")":
            raise self._error(end, "number", "Invalid number literal")
        return self.text[pos:end], end

    def _string(self, pos: int) -> tuple[str, int] | None:
        text = self.text
        if text.startswith("`", pos):
            close = text.find("`", pos + 1)
            if close < 0:
                raise self._error(self.n, "string", "Unterminated string literal")
            # Go drops carriage returns from raw strings.
            return text[pos + 1 : close].replace("\r", ""), close + 1
        if text.startswith('"', pos):
            end = pos + 1
            while end < self.n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            if end >= self.n:
                raise self._error(self.n, "string", "Unterminated string literal")
            value = _unescape(text[pos + 1 : end])
            if value is None:
                raise self._error(pos, "string", "invalid syntax")
            return value, end + 1
        self._expect(pos, '"\\""')
        self._expect(pos, '"`"')
        return None


def parse_filter(text: str) -> Expr:
    """The syntax tree of `text`; FilterError if it is not an expression."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise FilterError(
            f"{PREFIX}expression is {len(text)} characters long, more than {MAX_EXPRESSION_LENGTH}"
        )
    return _Parser(text).parse()
