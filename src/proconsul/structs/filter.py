"""Consul's filter expression language (`?filter=`, service-resolver subsets).

Job: compile the text of a filter expression once into a `Filter`, then answer
`Filter.matches(row)` for many rows. A row is a plain JSON value (what
`msgspec.to_builtins` makes of our structs: dicts with Consul's PascalCase keys,
lists, strings, numbers, booleans, None), so one evaluator serves every endpoint.

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

Meaning (Consul's, which evaluates with go-bexpr):

- A selector walks the row: a dict by key, a list by trying every element (a
  match through a list is true when it holds for any element: `Checks.Status
  != passing` means "some check is not passing").
- A value is text until compared: against a string it is the text, against a
  number it is parsed as one (Go's integer and float syntax), against a boolean
  as Go's ParseBool reads it (`true`, `T`, `1`, ...).
- `in`/`contains`: a substring of a string, a key of a map, an element of a list.
  `is empty`: a string, list or map of length 0. `matches`: a regular
  expression found anywhere in a string.
- Something that is not there (a missing map key, a null) is equal to nothing,
  contains nothing, matches nothing and is empty, so the negated operators
  (`!=`, `not in`, `not contains`, `not matches`, `is empty`) hold for it.

Given a shape (a msgspec type: the struct of the rows), `compile_filter` checks
the expression against it first, as Consul checks against its Go type: an
unknown selector, an operator the field does not support, or a value that does
not parse as the field's type is a `FilterError`, before any row is seen.

Rules:
- Pure: no I/O, no clocks; the only state is a cache of row shapes by type.
- `compile_filter` raises only `FilterError` (a `ValueError`) for any text;
  its message has the shape of Consul's ("Failed to create boolean expression
  evaluator: 1:4 (3): no match found, expected: ..."), for a 400 answer. An
  empty text is an error too: callers treat an empty `?filter=` as no filter,
  as Consul does.
- `Filter.matches` never raises, whatever the row holds.
- Bounded: at most MAX_EXPRESSION_LENGTH characters, MAX_DEPTH nested groups
  or `not`s and MAX_SELECTOR_PARTS names per selector, so parsing and matching
  never recurse deeply.
- Compile once, match many: regular expressions are compiled, values parsed
  and selectors split at compile time; a match allocates nothing per row.
- Departures: `is empty` also applies to strings, and `\\"` is an escaped
  quote inside a double-quoted string (both on purpose); `matches` uses
  Python's `re`, which reads the usual patterns as Go's RE2 does but also
  accepts Perl-only syntax (backreferences, lookaround) and backtracks, so a
  pathological pattern costs time that RE2 would not spend.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import msgspec.inspect as mi

MAX_EXPRESSION_LENGTH: Final = 8192
MAX_DEPTH: Final = 32
MAX_SELECTOR_PARTS: Final = 32

_PREFIX: Final = "Failed to create boolean expression evaluator: "

T = TypeVar("T")


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
        return f"({self.op.name} {name} {_quote(self.value)})"


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


def _quote(text: str) -> str:
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
        return FilterError(f'{_PREFIX}{self._where(pos)}: rule "{rule}": {message}')

    def _no_match(self) -> FilterError:
        # Sorted, with the end of input last, as Consul's parser lists them.
        items = sorted(self.expected - {"EOF"}) + ["EOF"] * ("EOF" in self.expected)
        listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
        return FilterError(
            f"{_PREFIX}{self._where(self.farthest)}: no match found, expected: {listed}"
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
                f"{_PREFIX}{self._where(pos)}: expression nested deeper than {MAX_DEPTH} levels"
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
            f"{_PREFIX}expression is {len(text)} characters long, more than {MAX_EXPRESSION_LENGTH}"
        )
    return _Parser(text).parse()


# ----- values --------------------------------------------------------------------

# What Go's strconv.ParseBool accepts.
_BOOLS: Final = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
_OCTAL: Final = re.compile(r"[+-]?0[0-7_]+")  # Go reads a leading 0 as octal
_INT64: Final = range(-(2**63), 2**63)


def _plain(text: str) -> bool:
    """Python's int() and float() also take spaces and non-ASCII digits; Go does not."""
    return text.isascii() and text == text.strip() and text != ""


def _parse_int(text: str) -> int | None:
    """Go's ParseInt(text, 0, 64): 0x, 0o, 0b and 0 prefixes, underscores."""
    if not _plain(text):
        return None
    try:
        value = int(text, 8) if _OCTAL.fullmatch(text) else int(text, 0)
    except ValueError:
        return None
    return value if value in _INT64 else None


def _parse_float(text: str) -> float | None:
    if not _plain(text) or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Value:
    """A value's text and what it reads as, parsed once for every row."""

    text: str
    number: int | float | None
    boolean: bool | None


def _value_of(text: str) -> _Value:
    number: int | float | None = _parse_int(text)
    if number is None:
        number = _parse_float(text)
    return _Value(text, number, _BOOLS.get(text))


def _equals(found: object, value: _Value) -> bool:
    kind = type(found)
    if kind is str:
        return found == value.text
    if kind is bool:
        return found is value.boolean
    if kind is int or kind is float:
        return value.number is not None and found == value.number
    return False  # a list or a map equals no value


def _contains(found: object, value: _Value) -> bool:
    kind = type(found)
    if kind is str or kind is dict:
        return value.text in found  # type: ignore[operator]  # a substring or a map key
    if kind is list:
        for item in found:  # type: ignore[attr-defined]
            if _equals(item, value):
                return True
    return False


def _not_empty(found: object) -> bool:
    if type(found) in (str, list, dict):
        return len(found) > 0  # type: ignore[arg-type]
    return True  # a number or a boolean is there


def _regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except (re.error, OverflowError, RecursionError) as exc:
        message = f"Failed to compile regular expression {_quote(text)}: {exc}"
        raise FilterError(_PREFIX + message) from None


# ----- shapes --------------------------------------------------------------------


@dataclass(eq=False)
class _Shape:
    """What a selector may reach in a row: "struct" (named fields), "map" (any
    key, values of `item`), "list" (elements of `item`), a scalar ("str",
    "int", "float", "bool"), or "any" (unchecked)."""

    kind: str
    fields: dict[str, _Shape] = field(default_factory=dict)
    item: _Shape | None = None


_ANY: Final = _Shape("any")
_SCALARS: Final = frozenset({"str", "int", "float", "bool", "any"})
_AS_TEXT: Final = (
    mi.StrType,
    mi.BytesType,
    mi.ByteArrayType,
    mi.MemoryViewType,
    mi.DateTimeType,
    mi.DateType,
    mi.TimeType,
    mi.TimeDeltaType,
    mi.UUIDType,
    mi.DecimalType,
)


def _convert(info: mi.Type, seen: dict[type, _Shape]) -> _Shape:
    """The shape of msgspec's type info; `seen` ends the walk of recursive structs."""
    if isinstance(info, mi.StructType | mi.DataclassType | mi.TypedDictType):
        if isinstance(info, mi.StructType) and info.array_like:
            return _Shape("list", item=_ANY)
        known = seen.get(info.cls)
        if known is not None:
            return known
        shape = seen[info.cls] = _Shape("struct")
        for entry in info.fields:
            shape.fields[entry.encode_name] = _convert(entry.type, seen)
        if isinstance(info, mi.StructType) and info.tag_field is not None:
            shape.fields[info.tag_field] = _Shape("str")
        return shape
    if isinstance(info, mi.DictType):
        return _Shape("map", item=_convert(info.value_type, seen))
    if isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return _Shape("list", item=_convert(info.item_type, seen))
    if isinstance(info, mi.TupleType | mi.NamedTupleType):
        return _Shape("list", item=_ANY)
    if isinstance(info, mi.BoolType):
        return _Shape("bool")
    if isinstance(info, mi.IntType):
        return _Shape("int")
    if isinstance(info, mi.FloatType):
        return _Shape("float")
    if isinstance(info, _AS_TEXT):
        return _Shape("str")
    if isinstance(info, mi.LiteralType | mi.EnumType):
        values = info.values if isinstance(info, mi.LiteralType) else [m.value for m in info.cls]
        kinds = {type(v) for v in values}
        return _Shape("str") if kinds == {str} else _Shape("int") if kinds == {int} else _ANY
    if isinstance(info, mi.UnionType):
        options = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return _convert(options[0], seen) if len(options) == 1 else _ANY
    return _ANY


@functools.lru_cache(maxsize=64)
def _shape_of(annotation: object) -> _Shape:
    return _convert(mi.type_info(annotation), {})


def _reached(selector: tuple[str, ...], shape: _Shape) -> _Shape:
    """The shape `selector` reaches, or FilterError when it names nothing there."""
    for index, part in enumerate(selector):
        while shape.kind == "list" and shape.item is not None:
            shape = shape.item  # a selector passes through a list to its elements
        if shape.kind == "any":
            return shape
        following = shape.fields.get(part) if shape.kind == "struct" else None
        if shape.kind == "map":
            following = shape.item
        if following is None:
            name = ".".join(selector[: index + 1])
            raise FilterError(f"{_PREFIX}Selector {_quote(name)} is not valid")
        shape = following
    return shape


def _tests_for(shape: _Shape) -> frozenset[str]:
    """The tests a field of this shape supports (Consul's per-selector tables)."""
    kind = shape.kind
    if kind in ("any", "str"):
        return frozenset({"equal", "in", "matches", "not_empty"})
    if kind in ("int", "float", "bool"):
        return frozenset({"equal"})
    if kind == "map":
        return frozenset({"in", "not_empty"})
    if kind == "list":
        item = shape.item or _ANY
        return frozenset({"in", "not_empty"} if item.kind in _SCALARS else {"not_empty"})
    return frozenset()


_PARSERS: Final[dict[str, tuple[str, Callable[[str], object]]]] = {
    "int": ("strconv.ParseInt", _parse_int),
    "float": ("strconv.ParseFloat", _parse_float),
    "bool": ("strconv.ParseBool", _BOOLS.get),
}


def _validate(match: Match, shape: _Shape) -> None:
    """Consul's checks of a match against the row type, before any row is seen."""
    reached = _reached(match.selector, shape)
    name = _quote(".".join(match.selector))
    if match.op.test not in _tests_for(reached):
        raise FilterError(
            f"{_PREFIX}Invalid match operator {_quote(match.op.name)} for selector {name}"
        )
    if match.value is None or match.op.test not in ("equal", "in"):
        return
    kind = reached.kind
    if match.op.test == "in":
        kind = (reached.item or _ANY).kind if kind == "list" else "str"
    parser = _PARSERS.get(kind)
    if parser is not None and parser[1](match.value) is None:
        text = _quote(match.value)
        raise FilterError(
            f"{_PREFIX}Failed to coerce value {text} for selector {name}: "
            f"{parser[0]}: parsing {text}: invalid syntax"
        )


# ----- evaluation ----------------------------------------------------------------

_Test = Callable[[Any], bool]
_MISSING: Final = object()


def _selects(found: Any, keys: tuple[str, ...], index: int, check: _Test, absent: bool) -> bool:
    """Walk `keys` from `index` and apply `check` to what is there; a list on the
    way means "any element". What is missing gives `absent`."""
    last = len(keys)
    while index < last:
        kind = type(found)
        if kind is dict:
            found = found.get(keys[index], _MISSING)
            if found is _MISSING or found is None:
                return absent
            index += 1
        elif kind is list:
            # Every element goes on with the same key; a list inside the list
            # is not entered, so the recursion is as deep as the keys at most.
            for item in found:
                if type(item) is not list and _selects(item, keys, index, check, absent):
                    return True
            return False
        else:
            return absent
    return absent if found is None else check(found)


def _check(match: Match) -> _Test:
    """The operator's positive test of one found value, with the value parsed once."""
    test = match.op.test
    if test == "not_empty" or match.value is None:
        return _not_empty
    if test == "matches":
        search = _regex(match.value).search
        return lambda found: type(found) is str and search(found) is not None
    value = _value_of(match.value)
    if test == "equal":
        return lambda found: _equals(found, value)
    return lambda found: _contains(found, value)


def _build(expr: Expr, shape: _Shape | None) -> _Test:
    if isinstance(expr, Match):
        if shape is not None:
            _validate(expr, shape)
        keys, absent, positive = expr.selector, expr.op.negated, _check(expr)
        check = (lambda found: not positive(found)) if expr.op.negated else positive
        return lambda row: _selects(row, keys, 0, check, absent)
    if isinstance(expr, Not):
        operand = _build(expr.operand, shape)
        return lambda row: not operand(row)
    tests = tuple(_build(operand, shape) for operand in expr.operands)
    if isinstance(expr, And):

        def all_hold(row: Any) -> bool:
            # A loop rather than all(...): no generator to allocate per row.
            for test in tests:  # noqa: SIM110
                if not test(row):
                    return False
            return True

        return all_hold

    def any_holds(row: Any) -> bool:
        for test in tests:  # noqa: SIM110
            if test(row):
                return True
        return False

    return any_holds


class Filter:
    """A compiled filter expression: immutable, so one may serve many requests."""

    __slots__ = ("_test", "expression")

    def __init__(self, expression: str, test: _Test) -> None:
        self.expression = expression
        self._test = test

    def __repr__(self) -> str:
        return f"Filter({self.expression!r})"

    def matches(self, row: Any) -> bool:
        """Whether `row` (a plain JSON value) passes; never raises."""
        return self._test(row)

    def select(self, rows: Iterable[T], views: Iterable[Any] | None = None) -> list[T]:
        """The rows that pass, in order. When the rows are structs, `views` gives
        their JSON forms, one per row (`msgspec.to_builtins(rows)`)."""
        test = self._test
        if views is None:
            return [row for row in rows if test(row)]
        return [row for row, view in zip(rows, views, strict=True) if test(view)]


def compile_filter(text: str, shape: object = None) -> Filter:
    """Compile `text`; FilterError, with Consul's message, if it is not a filter.

    `shape` is the type of the rows (a msgspec Struct, or an annotation such as
    `dict[str, str]`): every selector, operator and value is checked against it
    now, as Consul does. Without it, selectors are looked up in each row as it
    comes, and a missing one is simply not there.
    """
    expr = parse_filter(text)
    return Filter(text, _build(expr, None if shape is None else _shape_of(shape)))


_COMPILED_MAX = 1024
_compiled: dict[tuple[str, object], Filter] = {}


def cached_filter(text: str, shape: object = None) -> Filter:
    """`compile_filter`, remembered per (text, shape): clients repeat the same
    filter on every (blocking) query. Bounded; FilterError as compile_filter."""
    key = (text, shape)
    found = _compiled.get(key)
    if found is None:
        found = compile_filter(text, shape)
        if len(_compiled) >= _COMPILED_MAX:
            _compiled.clear()
        _compiled[key] = found
    return found
