"""Envoy's string and header matchers as plain Python predicates.

Job: `string_matcher` compiles a `StringMatcher` (exact, prefix, suffix,
contains, safe_regex, ignore_case) and `header_matcher` a `HeaderMatcher`
into callables, once per configuration version, so a request only calls
them. `RequestView` is what L7 decisions see of a request.

Rules:
- Pure. A matcher kind we do not carry out raises `Unsupported` (the
  configuration is NACKed), never a silent "no match".
- Pseudo-headers as Envoy sees them: `:method`, `:path` (with the query),
  `:authority` (the Host header). Header names are lower case.
- A regex must match the whole value (RE2 `safe_regex` semantics); an
  invalid one is `Unsupported`.
- A missing header never matches (unless `invert_match`, or the matcher asks
  for absence with `present_match: false`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

StrMatch = Callable[[str], bool]
HeaderMatch = Callable[["RequestView"], bool]


class Unsupported(ValueError):
    """A resource asks for something the built-in proxy does not carry out."""


@dataclass(slots=True)
class RequestView:
    """One HTTP request as matchers see it. `headers`: lower-case name -> value
    (repeated headers joined with ',')."""

    method: str
    path: str  # without the query string
    query: str
    headers: Mapping[str, str]

    def header(self, name: str) -> str | None:
        if name[0] == ":":
            if name == ":method":
                return self.method
            if name == ":path":
                return f"{self.path}?{self.query}" if self.query else self.path
            if name == ":authority":
                return self.headers.get("host")
            return None
        return self.headers.get(name)


def compile_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise Unsupported(f"invalid regex {pattern!r}: {err}") from None


def string_matcher(matcher: Any) -> StrMatch:
    kind = matcher.WhichOneof("match_pattern")
    fold = bool(matcher.ignore_case)
    if kind == "exact":
        want = matcher.exact.lower() if fold else matcher.exact
        return (lambda v: v.lower() == want) if fold else (lambda v: v == want)
    if kind == "prefix":
        want = matcher.prefix.lower() if fold else matcher.prefix
        return (lambda v: v.lower().startswith(want)) if fold else (lambda v: v.startswith(want))
    if kind == "suffix":
        want = matcher.suffix.lower() if fold else matcher.suffix
        return (lambda v: v.lower().endswith(want)) if fold else (lambda v: v.endswith(want))
    if kind == "contains":
        want = matcher.contains.lower() if fold else matcher.contains
        return (lambda v: want in v.lower()) if fold else (lambda v: want in v)
    if kind == "safe_regex":
        compiled = compile_regex(matcher.safe_regex.regex)
        return lambda v: compiled.fullmatch(v) is not None
    raise Unsupported(f"string matcher {kind or 'empty'!r} is not supported")


def header_matcher(matcher: Any) -> HeaderMatch:
    name = matcher.name.lower()
    kind = matcher.WhichOneof("header_match_specifier")
    test: Callable[[str | None], bool]
    if kind == "string_match":
        match = string_matcher(matcher.string_match)
        test = lambda v: v is not None and match(v)  # noqa: E731
    elif kind == "present_match":
        present = bool(matcher.present_match)
        test = lambda v: (v is not None) == present  # noqa: E731
    elif kind == "exact_match":
        want = matcher.exact_match
        test = lambda v: v == want  # noqa: E731
    elif kind == "prefix_match":
        want_prefix = matcher.prefix_match
        test = lambda v: v is not None and v.startswith(want_prefix)  # noqa: E731
    elif kind == "suffix_match":
        want_suffix = matcher.suffix_match
        test = lambda v: v is not None and v.endswith(want_suffix)  # noqa: E731
    elif kind == "safe_regex_match":
        compiled = compile_regex(matcher.safe_regex_match.regex)
        test = lambda v: v is not None and compiled.fullmatch(v) is not None  # noqa: E731
    else:
        raise Unsupported(f"header matcher {kind or 'empty'!r} on {name!r} is not supported")
    if matcher.invert_match:
        return lambda req: not test(req.header(name))
    return lambda req: test(req.header(name))
