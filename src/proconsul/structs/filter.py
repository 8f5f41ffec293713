"""Consul's filter expression language (`?filter=`, service-resolver subsets).

Job: compile the text of a filter expression once into a `Filter`, then answer
`Filter.matches(row)` for many rows. A row is a plain JSON value (what
`msgspec.to_builtins` makes of our structs: dicts with Consul's PascalCase keys,
lists, strings, numbers, booleans, None), so one evaluator serves every endpoint.

The syntax (grammar, tree, parser) is structs/filter_syntax.py's.

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
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import msgspec.inspect as mi

from proconsul.structs.filter_syntax import (
    PREFIX,
    And,
    Expr,
    FilterError,
    Match,
    Not,
    parse_filter,
    quote,
)

T = TypeVar("T")

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
        message = f"Failed to compile regular expression {quote(text)}: {exc}"
        raise FilterError(PREFIX + message) from None


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
            raise FilterError(f"{PREFIX}Selector {quote(name)} is not valid")
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
    name = quote(".".join(match.selector))
    if match.op.test not in _tests_for(reached):
        raise FilterError(
            f"{PREFIX}Invalid match operator {quote(match.op.name)} for selector {name}"
        )
    if match.value is None or match.op.test not in ("equal", "in"):
        return
    kind = reached.kind
    if match.op.test == "in":
        kind = (reached.item or _ANY).kind if kind == "list" else "str"
    parser = _PARSERS.get(kind)
    if parser is not None and parser[1](match.value) is None:
        text = quote(match.value)
        raise FilterError(
            f"{PREFIX}Failed to coerce value {text} for selector {name}: "
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
