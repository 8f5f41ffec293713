"""The ACL rule language: policy text (HCL1 or JSON) -> a typed `ParsedPolicy`.

Job: `parse_rules(text)` is a pure function. It either returns a `ParsedPolicy`
or raises `RuleError`, never anything else, whatever the input.

Rules (Consul 1.16, as documented):
- Labelled resources, each in an exact and a `_prefix` form: agent, event, key,
  node, query, service, session. `service "web" { policy = "write" }`.
- Unlabelled resources take a bare level: acl, keyring, operator, mesh,
  peering. `operator = "read"`.
- Levels are read, write and deny; `list` is accepted only on `key_prefix`.
- Service rules also take `intentions = read|write|deny`; when absent it is
  derived later, after merging (see authorizer.py), as Consul does.
- The same rule written twice in one policy is merged (deny > write > list >
  read), exactly as rules from several policies are; pyhcl would silently keep
  the last one, so we read duplicates ourselves (see `_PairsParser`).
- Text over `MAX_RULES_BYTES` is refused before parsing.
- Errors name the line: pyhcl reports it for syntax errors; for semantic errors
  we find the offending text in the source (best effort, first match).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from hcl.parser import HclParser

# Consul sets no explicit limit; we refuse absurd bodies before the parser sees them.
MAX_RULES_BYTES = 64 * 1024

LABELLED_RESOURCES = ("agent", "event", "key", "node", "query", "service", "session")
UNLABELLED_RESOURCES = ("acl", "keyring", "operator", "mesh", "peering")
_ENTERPRISE_RESOURCES = frozenset(
    {"namespace", "namespace_prefix", "partition", "partition_prefix", "identity",
     "identity_prefix"}
)  # fmt: skip


class Access(IntEnum):
    """A rule's level. Numbered so that "grants `requested`" is `level >= requested`.

    DENY is 0 so a plain comparison refuses it; merge order is separate (`stronger`).
    """

    DENY = 0
    READ = 1
    LIST = 2
    WRITE = 3


_BY_NAME = {"deny": Access.DENY, "read": Access.READ, "list": Access.LIST, "write": Access.WRITE}
# Merge precedence when the same rule appears twice: deny > write > list > read.
_RANK = {Access.READ: 1, Access.LIST: 2, Access.WRITE: 3, Access.DENY: 4}


def stronger(a: Access | None, b: Access | None) -> Access | None:
    """The level that wins when two rules for the same label (or unset) are merged.

    Test the result with `is None`, never for truth: DENY is 0.
    """
    if a is None:
        return b
    if b is None:
        return a
    return a if _RANK[a] >= _RANK[b] else b


def merge_level(old: Access | None, new: Access) -> Access:
    """`stronger` for a rule that is certainly set."""
    return new if old is None or _RANK[new] >= _RANK[old] else old


class RuleError(ValueError):
    """A policy's rules are malformed; `line` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line
        self.detail = message


@dataclass(frozen=True, slots=True)
class LabelledRule:
    """One labelled rule as written: `service_prefix "we" { policy = "read" }`."""

    resource: str  # "service", never "service_prefix"
    label: str
    prefix: bool
    access: Access
    intentions: Access | None = None  # services only; None = not written

    @property
    def keyword(self) -> str:
        return f"{self.resource}_prefix" if self.prefix else self.resource


@dataclass(frozen=True, slots=True)
class ParsedPolicy:
    """A policy's rules, typed. Duplicates inside one policy are already merged."""

    rules: tuple[LabelledRule, ...] = ()
    acl: Access | None = None
    keyring: Access | None = None
    operator: Access | None = None
    mesh: Access | None = None
    peering: Access | None = None

    def unlabelled(self, resource: str) -> Access | None:
        value: Access | None = getattr(self, resource)
        return value

    def rule(self, resource: str, label: str, *, prefix: bool = False) -> LabelledRule | None:
        """The rule for exactly this resource/label/form, if the policy has one."""
        for rule in self.rules:
            if (rule.resource, rule.label, rule.prefix) == (resource, label, prefix):
                return rule
        return None


def parse_rules(text: str) -> ParsedPolicy:
    """Parse policy rules (HCL1 or JSON). Raises RuleError, and only RuleError."""
    if not isinstance(text, str):
        raise RuleError(f"rules must be text, not {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_RULES_BYTES:
        raise RuleError(f"rules are {size} bytes, over the limit of {MAX_RULES_BYTES}")
    tree = _load(text)
    return _Builder(text).build(tree)


# --- syntax: text -> tree of _Pairs -------------------------------------------------


class _Pairs(dict[Any, Any]):
    """A decoded object that remembers every (key, value) pair, duplicates included."""

    def __init__(self, pairs: list[tuple[Any, Any]]) -> None:
        super().__init__()
        self.pairs = pairs


class _PairsParser(HclParser):  # type: ignore[misc]
    """pyhcl's parser, but objects keep duplicate keys instead of last-one-wins."""

    def objectlist_flat(self, lt: list[tuple[Any, Any]], replace: bool) -> _Pairs:
        return _Pairs(list(lt))


# Building a pyhcl parser costs ~20 ms, parsing ~0.3 ms: keep built ones. A list used
# as a pool (pop/append are atomic) lets concurrent callers each hold their own.
_PARSER_POOL: list[_PairsParser] = []
_PARSER_POOL_MAX = 8
# Parser errors say "Line L, column OFFSET"; lexer errors "Line L, column C, index OFFSET".
_PARSE_ERROR = re.compile(r"Line (\d+), column (\d+)(?:, index (\d+))?")


def _load(text: str) -> Any:
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_Pairs)
        except json.JSONDecodeError as exc:
            raise RuleError(f"syntax error: {exc.msg} (column {exc.colno})", exc.lineno) from None
        except (ValueError, RecursionError) as exc:
            raise RuleError(f"syntax error: {exc}") from None
    parser = _PARSER_POOL.pop() if _PARSER_POOL else _PairsParser()
    try:
        return parser.parse(text)
    except Exception as exc:  # pyhcl/ply raise assorted types; all are syntax errors
        raise _syntax_error(text, str(exc)) from None
    finally:
        if len(_PARSER_POOL) < _PARSER_POOL_MAX:
            _PARSER_POOL.append(parser)


def _syntax_error(text: str, message: str) -> RuleError:
    match = _PARSE_ERROR.search(message)
    if match is None:
        # "Unexpected end of file; expected ..." has no position: it is the last line.
        detail = message.split(";")[0].strip() or "invalid syntax"
        return RuleError(f"syntax error: {detail}", text.count("\n") + 1)
    line = int(match.group(1))
    # Turn the offset into the whole text into a 1-based column on that line.
    offset = int(match.group(3) or match.group(2))
    column = offset - text.rfind("\n", 0, offset)
    rest = message[match.end() :].lstrip(",: ").split(";")[0]
    return RuleError(f"syntax error: {rest} (column {column})", line)


def _items(obj: Any) -> list[tuple[Any, Any]]:
    if isinstance(obj, _Pairs):
        return obj.pairs
    if isinstance(obj, dict):
        return list(obj.items())
    if isinstance(obj, list) and all(isinstance(item, dict) for item in obj):
        return [pair for item in obj for pair in _items(item)]
    raise TypeError


# --- semantics: tree -> ParsedPolicy ------------------------------------------------


_LEVEL_WORDS = "read, write or deny"


class _Builder:
    def __init__(self, text: str) -> None:
        self.text = text
        self.labelled: dict[tuple[str, str, bool], LabelledRule] = {}
        self.unlabelled: dict[str, Access | None] = dict.fromkeys(UNLABELLED_RESOURCES)

    def build(self, tree: Any) -> ParsedPolicy:
        try:
            top = _items(tree)
        except TypeError:
            raise RuleError("rules must be an object of resources", 1) from None
        for key, value in top:
            if isinstance(key, str) and key.startswith("comment-L"):
                continue  # pyhcl's exported comments (never requested, but harmless)
            self._resource(str(key), value)
        return ParsedPolicy(rules=tuple(self.labelled.values()), **self._unlabelled_fields())

    def _unlabelled_fields(self) -> dict[str, Access | None]:
        return dict(self.unlabelled)

    def _resource(self, keyword: str, value: Any) -> None:
        base = keyword.removesuffix("_prefix")
        if keyword in UNLABELLED_RESOURCES:
            self._unlabelled(keyword, value)
        elif base in LABELLED_RESOURCES:
            self._labelled(base, keyword != base, value)
        elif keyword in _ENTERPRISE_RESOURCES:
            raise self._error(f'ACL resource "{keyword}" needs Consul Enterprise', keyword)
        else:
            raise self._error(f'unknown ACL resource "{keyword}"', keyword)

    def _unlabelled(self, keyword: str, value: Any) -> None:
        if not isinstance(value, str):
            raise self._error(
                f'{keyword} takes a level, as in {keyword} = "read", not a block', keyword
            )
        level = _BY_NAME.get(value)
        if level is None or level is Access.LIST:
            raise self._error(
                f'invalid policy "{value}" for {keyword} (use {_LEVEL_WORDS})', keyword, value
            )
        self.unlabelled[keyword] = stronger(self.unlabelled[keyword], level)

    def _labelled(self, resource: str, prefix: bool, value: Any) -> None:
        keyword = f"{resource}_prefix" if prefix else resource
        try:
            entries = _items(value)
        except TypeError:
            raise self._error(
                f'{keyword} needs a label, as in {keyword} "name" {{ policy = "read" }}', keyword
            ) from None
        for label, body in entries:
            if not isinstance(label, str):
                raise self._error(f"{keyword} label must be a string", keyword)
            self._rule(resource, prefix, label, body)

    def _rule(self, resource: str, prefix: bool, label: str, body: Any) -> None:
        keyword = f"{resource}_prefix" if prefix else resource
        where = f'{keyword} "{label}"'
        try:
            fields = _items(body)
        except TypeError:
            raise self._error(
                f'{where} needs a block, as in {where} {{ policy = "read" }}', keyword, label
            ) from None
        allowed = ("policy", "intentions") if resource == "service" else ("policy",)
        seen: dict[str, Any] = {}
        for name, raw in fields:
            if name not in allowed:
                raise self._error(f'unknown field "{name}" in {where}', keyword, label, name)
            if name in seen:
                raise self._error(f'"{name}" is set twice in {where}', keyword, label, name, name)
            seen[name] = raw
        if "policy" not in seen:
            raise self._error(f"missing policy in {where}", keyword, label)
        access = self._level(seen["policy"], "policy", where, keyword, label)
        if access is Access.LIST and not (resource == "key" and prefix):
            raise self._error(
                f'invalid policy "list" for {where} (list is only for key_prefix)',
                keyword,
                label,
                "list",
            )
        intentions = None
        if "intentions" in seen:
            intentions = self._level(seen["intentions"], "intentions", where, keyword, label)
            if intentions is Access.LIST:
                raise self._error(f'invalid intentions "list" for {where}', keyword, label, "list")
        key = (resource, label, prefix)
        old = self.labelled.get(key)
        if old is not None:
            access = merge_level(old.access, access)
            intentions = stronger(old.intentions, intentions)
        self.labelled[key] = LabelledRule(resource, label, prefix, access, intentions)

    def _level(self, raw: Any, name: str, where: str, keyword: str, label: str) -> Access:
        level = _BY_NAME.get(raw) if isinstance(raw, str) else None
        if level is None:
            shown = json.dumps(raw) if isinstance(raw, str) else repr(raw)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            needle = raw if isinstance(raw, str) else name
            raise self._error(f"invalid {name} {shown} for {where}", keyword, label, needle)
        return level

    def _error(self, message: str, *needles: str) -> RuleError:
        return RuleError(message, _locate(self.text, needles))


def _locate(text: str, needles: tuple[str, ...]) -> int | None:
    """Line of the last of `needles` found in order (resource, label, value), or None."""
    if not needles:
        return None
    pos = -1
    found = -1
    first = re.compile(rf"(?<![\w-]){re.escape(needles[0])}(?![\w-])")
    match = first.search(text)
    if match is None:
        return None
    pos = found = match.start()
    for needle in needles[1:]:
        # Strictly after the previous hit, so a repeated needle finds the repeat.
        hit = _find_quoted(text, needle, pos + 1)
        if hit < 0:
            break
        pos = found = hit
    return text.count("\n", 0, found) + 1


def _find_quoted(text: str, needle: str, start: int) -> int:
    for candidate in _quoted_forms(needle):
        hit = text.find(candidate, start)
        if hit >= 0:
            return hit
    return -1


def _quoted_forms(needle: str) -> Iterator[str]:
    yield json.dumps(needle)
    yield f'"{needle}"'
    if needle:
        yield needle
