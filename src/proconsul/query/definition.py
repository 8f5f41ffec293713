"""Prepared query definitions: Consul's checks before a write, lookup and templates.

Job:
- `check_query` refuses a definition Consul refuses, with Consul's text
  (`Must provide a Service name to query`, `Bad NearestN ...`, `Bad DNS TTL
  ...`, a template of another type, a regexp or `${...}` that does not parse).
- `resolve_query` finds what an ID or a name asks for: the query with that ID,
  else the one with that exact name, else the `name_prefix_match` template
  whose name is the longest prefix of it (a template named "" is the
  catch-all), rendered for what was asked (the ID itself when found by ID, as
  Consul renders it).
- `render_template` fills `${name.full}`, `${name.prefix}`, `${name.suffix}`
  and `${match(N)}` (the template's regexp run over the full name; a group
  that did not match is "") into every string of the service block, and with
  `RemoveEmptyTags` drops tags that render empty.

Rules: pure (no I/O, clock or randomness); never mutates its inputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from proconsul.structs.duration import parse_duration
from proconsul.structs.prepared_query import (
    TEMPLATE_NAME_PREFIX_MATCH,
    PreparedQuery,
    ServiceQuery,
)

_VARIABLE = re.compile(r"\$\{\s*([^}]*?)\s*\}")
_MATCH = re.compile(r"match\(\s*(\d+)\s*\)")
_NAMES = frozenset({"name.full", "name.prefix", "name.suffix"})


class QueryError(ValueError):
    """A definition Consul would refuse; the text is Consul's."""


def _strings(service: ServiceQuery) -> Iterable[str]:
    yield service.service
    yield service.near
    yield from service.tags
    yield from service.node_meta.values()
    yield from service.service_meta.values()
    yield from service.failover.datacenters
    yield from service.ignore_check_ids


def check_query(query: PreparedQuery) -> None:
    """Raise `QueryError` unless Consul would store `query`."""
    template = query.template
    if template.type:
        if template.type != TEMPLATE_NAME_PREFIX_MATCH:
            raise QueryError(f"Bad Template.Type '{template.type}'")
        if template.regexp:
            try:
                re.compile(template.regexp)
            except re.error as exc:
                raise QueryError(f"Bad Regexp: {exc}") from None
        for text in _strings(query.service):
            for found in _VARIABLE.finditer(text):
                variable = found.group(1)
                if variable not in _NAMES and not _MATCH.fullmatch(variable):
                    raise QueryError(f"Failed to parse template: unknown variable ${{{variable}}}")
    elif template.regexp or template.remove_empty_tags:
        raise QueryError("Template.Regexp and Template.RemoveEmptyTags need a Template.Type")
    if not query.service.service:
        raise QueryError("Must provide a Service name to query")
    if query.service.failover.nearest_n < 0:
        raise QueryError(f"Bad NearestN '{query.service.failover.nearest_n}', must be >= 0")
    if query.dns.ttl:
        try:
            ttl = parse_duration(query.dns.ttl)
        except ValueError as exc:
            raise QueryError(f"Bad DNS TTL '{query.dns.ttl}': {exc}") from None
        if ttl < 0:
            raise QueryError(f"DNS TTL '{query.dns.ttl}', must be >=0")


def render_template(query: PreparedQuery, name: str) -> PreparedQuery:
    """`query` (a template) rendered for the looked-up `name`; others as they are."""
    if query.template.type != TEMPLATE_NAME_PREFIX_MATCH:
        return query
    prefix = query.name
    suffix = name.removeprefix(prefix)  # Go's TrimPrefix: unchanged when not a prefix
    groups: tuple[str, ...] = ()
    if query.template.regexp:
        found = re.search(query.template.regexp, name)
        if found is not None:
            groups = (found.group(0), *(g or "" for g in found.groups()))
    values = {"name.full": name, "name.prefix": prefix, "name.suffix": suffix}

    def fill(text: str) -> str:
        def one(found: re.Match[str]) -> str:
            variable = found.group(1)
            if variable in values:
                return values[variable]
            match = _MATCH.fullmatch(variable)
            if match is not None:
                n = int(match.group(1))
                return groups[n] if n < len(groups) else ""
            return found.group(0)

        return _VARIABLE.sub(one, text) if "${" in text else text

    service = query.service
    tags = [fill(tag) for tag in service.tags]
    if query.template.remove_empty_tags:
        tags = [tag for tag in tags if tag]
    rendered = msgspec.structs.replace(
        service,
        service=fill(service.service),
        near=fill(service.near),
        tags=tags,
        node_meta={k: fill(v) for k, v in service.node_meta.items()},
        service_meta={k: fill(v) for k, v in service.service_meta.items()},
        ignore_check_ids=[fill(c) for c in service.ignore_check_ids],
        failover=msgspec.structs.replace(
            service.failover, datacenters=[fill(d) for d in service.failover.datacenters]
        ),
    )
    return msgspec.structs.replace(query, service=rendered)


def resolve_query(queries: Iterable[PreparedQuery], id_or_name: str) -> PreparedQuery | None:
    """The query `id_or_name` asks for, a template rendered for it; None if none."""
    rows = list(queries)
    for query in rows:
        if query.id == id_or_name:
            return render_template(query, id_or_name)  # as Consul: a template by ID sees its ID
    for query in rows:
        if query.name and query.name == id_or_name:
            return render_template(query, id_or_name)
    best: PreparedQuery | None = None
    for query in rows:
        if query.template.type != TEMPLATE_NAME_PREFIX_MATCH:
            continue
        if id_or_name.startswith(query.name) and (best is None or len(query.name) > len(best.name)):
            best = query
    return None if best is None else render_template(best, id_or_name)
