"""Intentions: which service may talk to which, decided from service-intentions entries.

Job: the rules of `service-intentions` entries (normalize, validate), their
precedence, matching a (source, destination) pair to the intention that wins,
the default when none matches, L7 `Permissions` against an HTTP request, and
the texts the CLI and `/v1/agent/connect/authorize` print.

Rules (Consul 1.16, open-source edition: one namespace, `default`):
- Precedence: exact -> exact 9, `*` -> exact 8, exact -> `*` 6, `*` -> `*` 5.
  With namespaces the scale runs 9..1 (a wildcard namespace only with a
  wildcard name); `precedence` keeps that general form.
- The intention with the highest precedence that matches both names wins;
  at equal precedence deny sorts first, so deny wins a tie; the rest of the
  order is the names, so it is deterministic.
- No match: `acl.default_policy` decides (deny -> deny); with ACLs off
  everything is allowed. That is the caller's `default_allow`.
- L4 checks (`intention check`, `/v1/connect/intentions/check`,
  `/v1/agent/connect/authorize`) count an intention with Permissions as deny.
- L7: Permissions are tried top to bottom and the first that matches the
  request decides; a request none matches gets the default.
- Regexes (paths and headers) must match the whole value, as Envoy's do; one
  that does not compile matches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from proconsul.structs.config_entries import (
    GO_ZERO_TIME,
    ConfigEntryError,
    HTTPHeaderMatch,
    Intention,
    IntentionPermission,
    ServiceIntentions,
    SourceIntention,
)

WILDCARD = "*"
ALLOW = "allow"
DENY = "deny"
DEFAULT_NAMESPACE = "default"
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"}
)
DESCRIPTION_MAX = 512  # Consul's limit on any meta value, and on a description
DEFAULT_REASON = "Default behavior configured by ACLs"


# ----------------------------------------------------------------- precedence


def _exact_parts(namespace: str, name: str) -> int:
    """How many of (namespace, name) are exact: a `*` namespace implies a `*` name."""
    if namespace == WILDCARD:
        return 0
    return 1 if name == WILDCARD else 2


def precedence(
    source: str,
    destination: str,
    source_ns: str = DEFAULT_NAMESPACE,
    destination_ns: str = DEFAULT_NAMESPACE,
) -> int:
    """Consul's precedence of an intention: 9 for exact -> exact, down to 1."""
    ceiling = {2: 9, 1: 6, 0: 3}[_exact_parts(destination_ns, destination)]
    return ceiling - (2 - _exact_parts(source_ns, source))


# ------------------------------------------------------------ entry rules


def normalize_intentions(entry: ServiceIntentions) -> None:
    """In place, as Consul stores the entry: each source typed `consul`, given its
    precedence, methods uppercased; sources ordered by precedence, highest first."""
    for source in entry.sources:
        source.type = source.type or "consul"
        source.precedence = precedence(source.name, entry.name)
        for permission in source.permissions:
            if permission.http is not None:
                permission.http.methods = [m.upper() for m in permission.http.methods]
    # A stable sort, so equal precedences keep the order the user wrote.
    entry.sources.sort(key=lambda source: -source.precedence)


def _fail(message: str, field: str) -> NoReturn:
    raise ConfigEntryError(message, field)


def _check_name(name: str, field: str) -> None:
    if name != WILDCARD and WILDCARD in name:
        _fail(f"{field}: wildcard character '*' cannot be used with partial values", field)


def check_intentions(entry: ServiceIntentions, *, legacy_fields_allowed: bool = False) -> None:
    """Raise ConfigEntryError, with Consul's text, for the first rule `entry` breaks.
    The Legacy* fields of a source are refused unless the write comes from the
    intentions API (`legacy_fields_allowed`), the one place that sets them."""
    _check_name(entry.name, "Name")
    if not entry.sources:
        _fail("At least one source is required", "Sources")
    seen: set[tuple[str, str]] = set()
    for i, source in enumerate(entry.sources):
        at = f"Sources[{i}]"
        if not source.name:
            _fail(f"{at}.Name is required", f"{at}.Name")
        _check_name(source.name, f"{at}.Name")
        for key, value in (("Namespace", source.namespace), ("Partition", source.partition)):
            if value not in ("", DEFAULT_NAMESPACE):
                _fail(f'{at}.{key}: "{value}" needs Consul Enterprise', f"{at}.{key}")
        if source.sameness_group:
            _fail(f"{at}.SamenessGroup: needs Consul Enterprise", f"{at}.SamenessGroup")
        if WILDCARD in source.peer:
            _fail(f"{at}.Peer: cannot use wildcard '*' in peer", f"{at}.Peer")
        if len(source.description) > DESCRIPTION_MAX:
            _fail(f"{at}.Description exceeds maximum length {DESCRIPTION_MAX}", f"{at}.Description")
        legacy_fields: tuple[tuple[str, object], ...] = (
            ("LegacyMeta", source.legacy_meta),
            ("LegacyID", source.legacy_id),
            ("LegacyCreateTime", source.legacy_create_time),
            ("LegacyUpdateTime", source.legacy_update_time),
        )
        for legacy, given in legacy_fields:
            if given and not legacy_fields_allowed:
                _fail(f"{at}.{legacy} must be omitted", f"{at}.{legacy}")
        if not source.permissions and source.action not in (ALLOW, DENY):
            _fail(f"{at}.Action must be set to 'allow' or 'deny'", f"{at}.Action")
        if source.permissions and source.action:
            _fail(f"{at}.Action must be omitted if Permissions are specified", f"{at}.Action")
        if source.permissions and entry.name == WILDCARD:
            _fail(
                f"{at}.Permissions cannot be specified on intentions with wildcarded destinations",
                f"{at}.Permissions",
            )
        if source.type != "consul":
            _fail(f"{at}.Type must be set to 'consul'", f"{at}.Type")
        for j, permission in enumerate(source.permissions):
            _check_permission(permission, f"{at}.Permissions[{j}]")
        if (source.peer, source.name) in seen:
            _fail(f'{at} defines "{source.name}" more than once', f"{at}.Name")
        seen.add((source.peer, source.name))


def _check_permission(permission: IntentionPermission, at: str) -> None:
    if permission.action not in (ALLOW, DENY):
        _fail(f"{at}.Action must be set to 'allow' or 'deny'", f"{at}.Action")
    http = permission.http
    if http is None:
        _fail(f"{at}.HTTP is required", f"{at}.HTTP")
    where = f"{at}.HTTP."
    paths = check_paths(http.path_exact, http.path_prefix, http.path_regex, where, where)
    if paths > 1:
        _fail(
            f"{at}.HTTP should only contain at most one of PathExact, PathPrefix, or PathRegex",
            f"{at}.HTTP",
        )
    check_headers(http.header, f"{where}Header", f"{where}Header")
    check_methods(http.methods, f"{where}Methods", f"{where}Methods")
    if paths == 0 and not http.header and not http.methods:
        _fail(f"{at}.HTTP should not be empty", f"{at}.HTTP")


# The HTTP criteria checks are shared with service-router. `text` is how
# Consul's message names the place (a router says "Route[0] PathExact", an
# intention "Sources[0].Permissions[0].HTTP.PathExact"); `field` is the path
# of the field as ConfigEntryError.field names it.


def check_paths(exact: str, prefix: str, regex: str, text: str, field: str) -> int:
    """How many path criteria are set; exact and prefix paths must start with '/'."""
    for name, value in (("PathExact", exact), ("PathPrefix", prefix)):
        if value and not value.startswith("/"):
            _fail(f"{text}{name} doesn't start with '/': \"{value}\"", f"{field}{name}")
    return sum(1 for value in (exact, prefix, regex) if value)


def check_headers(headers: Iterable[HTTPHeaderMatch], text: str, field: str) -> None:
    """Each header criterion names a header and sets exactly one way to match it."""
    for k, header in enumerate(headers):
        if not header.name:
            _fail(f"{text}[{k}] missing required Name field", f"{field}[{k}].Name")
        criteria = (header.present, header.exact, header.prefix, header.suffix, header.regex)
        if sum(1 for criterion in criteria if criterion) != 1:
            _fail(
                f"{text}[{k}] should only contain one of Present, Exact, Prefix, Suffix, or Regex",
                f"{field}[{k}]",
            )


def check_methods(methods: list[str], text: str, field: str) -> None:
    """Methods are HTTP methods (already uppercased), each named once."""
    seen: set[str] = set()
    for method in methods:
        if method not in HTTP_METHODS:
            _fail(f'{text} contains an invalid method "{method}"', field)
        if method in seen:
            _fail(f'{text} contains "{method}" more than once', field)
        seen.add(method)


# ------------------------------------------------------------------ matching


def intention_of(entry: ServiceIntentions, source: SourceIntention) -> Intention:
    """One source of an entry as the legacy API shows it: an intention made by
    the legacy create keeps its ID, Meta and times; any other shows the
    entry's Meta, as Consul does."""
    legacy = bool(source.legacy_id)
    return Intention(
        source_name=source.name,
        destination_name=entry.name,
        action=source.action,
        permissions=source.permissions,
        precedence=precedence(source.name, entry.name),
        source_peer=source.peer,
        source_ns=DEFAULT_NAMESPACE,
        destination_ns=DEFAULT_NAMESPACE,
        source_type=source.type or "consul",
        description=source.description,
        meta=dict(source.legacy_meta if legacy else entry.meta),
        id=source.legacy_id,
        created_at=source.legacy_create_time or GO_ZERO_TIME,
        updated_at=source.legacy_update_time or GO_ZERO_TIME,
        create_index=entry.create_index,
        modify_index=entry.modify_index,
    )


def intentions_of(entries: Iterable[ServiceIntentions]) -> list[Intention]:
    """Every source of every entry as an Intention row, in match order."""
    rows = [intention_of(entry, source) for entry in entries for source in entry.sources]
    return sorted(rows, key=match_order)


def match_by(intentions: Iterable[Intention], by: str, name: str) -> list[Intention]:
    """`/v1/connect/intentions/match`: the intentions whose `by` side ("source"
    or "destination") is `name` or `*`, in the order they are evaluated.
    Matching by source leaves out intentions from peers' services."""
    if by == "source":
        rows = [
            ixn
            for ixn in intentions
            if not ixn.source_peer and _name_matches(ixn.source_name, name)
        ]
    else:
        rows = [ixn for ixn in intentions if _name_matches(ixn.destination_name, name)]
    return sorted(rows, key=match_order)


def match_order(ixn: Intention) -> tuple[int, bool, str, str, str, str]:
    """Highest precedence first; at a tie deny first, then by names."""
    return (
        -ixn.precedence,
        ixn.action != DENY,
        ixn.source_ns,
        ixn.source_name,
        ixn.destination_ns,
        ixn.destination_name,
    )


def _name_matches(pattern: str, name: str) -> bool:
    return pattern in (WILDCARD, name)


def match(intentions: Iterable[Intention], source: str, destination: str) -> Intention | None:
    """The intention that decides traffic from `source` to `destination`, if any."""
    candidates = [
        ixn
        for ixn in intentions
        if not ixn.source_peer
        and _name_matches(ixn.source_name, source)
        and _name_matches(ixn.destination_name, destination)
    ]
    return min(candidates, key=match_order, default=None)


def default_allow(acl_enabled: bool, default_policy: str) -> bool:
    """What happens with no matching intention: ACLs off allow; else the default policy."""
    return not acl_enabled or default_policy != DENY


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    intention: Intention | None = None


def authorize(
    intentions: Iterable[Intention], source: str, destination: str, *, default_allow: bool
) -> Decision:
    """The L4 answer of `/v1/agent/connect/authorize`: an intention with
    Permissions counts as deny, since a connection carries no request."""
    ixn = match(intentions, source, destination)
    if ixn is None:
        return Decision(default_allow, DEFAULT_REASON)
    return Decision(not ixn.permissions and ixn.action == ALLOW, matched_reason(ixn), ixn)


def check(
    intentions: Iterable[Intention], source: str, destination: str, *, default_allow: bool
) -> bool:
    """`intention check SRC DST` and `/v1/connect/intentions/check`: L4 semantics."""
    return authorize(intentions, source, destination, default_allow=default_allow).allowed


# ------------------------------------------------------------ L7 permissions


@dataclass(frozen=True)
class HTTPRequest:
    """The parts of an HTTP request permissions look at. Header names are
    matched without regard to case; the query string is not part of the path."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


def _full_match(pattern: str, value: str) -> bool:
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error:
        return False


def header_matches(criterion: HTTPHeaderMatch, request: HTTPRequest) -> bool:
    """One header criterion against the request, `Invert` applied."""
    value = request.header(criterion.name)
    if value is None:
        matched = False
    elif criterion.exact:
        matched = value == criterion.exact
    elif criterion.prefix:
        matched = value.startswith(criterion.prefix)
    elif criterion.suffix:
        matched = value.endswith(criterion.suffix)
    elif criterion.regex:
        matched = _full_match(criterion.regex, value)
    else:
        matched = criterion.present
    return matched != criterion.invert


def permission_matches(permission: IntentionPermission, request: HTTPRequest) -> bool:
    """Every criterion the permission sets holds for the request."""
    http = permission.http
    if http is None:
        return False
    path = request.path.split("?", 1)[0]
    if http.path_exact and path != http.path_exact:
        return False
    if http.path_prefix and not path.startswith(http.path_prefix):
        return False
    if http.path_regex and not _full_match(http.path_regex, path):
        return False
    if http.methods and request.method.upper() not in http.methods:
        return False
    return all(header_matches(criterion, request) for criterion in http.header)


def authorize_http(
    intentions: Iterable[Intention],
    source: str,
    destination: str,
    request: HTTPRequest,
    *,
    default_allow: bool,
) -> Decision:
    """The decision for one HTTP request: an L4 intention's action, or the first
    matching permission of an L7 one, else the default."""
    ixn = match(intentions, source, destination)
    if ixn is None:
        return Decision(default_allow, DEFAULT_REASON)
    if not ixn.permissions:
        return Decision(ixn.action == ALLOW, matched_reason(ixn), ixn)
    for permission in ixn.permissions:
        if permission_matches(permission, request):
            return Decision(permission.action == ALLOW, matched_reason(ixn), ixn)
    return Decision(default_allow, DEFAULT_REASON, ixn)


# --------------------------------------------------------------------- texts


def describe(ixn: Intention) -> str:
    """`web => api (allow)`, the form the intention CLI prints; an L7
    intention shows its permissions instead: `web => api (2 permissions)`."""
    count = len(ixn.permissions)
    plural = "1 permission" if count == 1 else f"{count} permissions"
    detail = plural if count else ixn.action
    return f"{ixn.source_name} => {ixn.destination_name} ({detail})"


def created_text(ixn: Intention) -> str:
    """What `intention create` prints: `Created: web => api (allow)`."""
    return f"Created: {describe(ixn)}"


def check_text(allowed: bool) -> str:
    """What `intention check` prints (exit 0 for Allowed, 1 for Denied)."""
    return "Allowed" if allowed else "Denied"


def matched_reason(ixn: Intention) -> str:
    """The `Reason` of `/v1/agent/connect/authorize` for a matching intention,
    as Consul 1.16 words it:
    `Matched L4 intention: default/web => default/api (Precedence: 9, Action: ALLOW)`."""
    source = f"{ixn.source_ns or DEFAULT_NAMESPACE}/{ixn.source_name}"
    destination = f"{ixn.destination_ns or DEFAULT_NAMESPACE}/{ixn.destination_name}"
    if ixn.permissions:
        detail = f"Permissions: {len(ixn.permissions)}"
        layer = "L7"
    else:
        detail = f"Action: {ixn.action.upper()}"
        layer = "L4"
    where = f"{source} => {destination}"
    legacy_id = f"ID: {ixn.id}, " if ixn.id else ""
    return f"Matched {layer} intention: {where} ({legacy_id}Precedence: {ixn.precedence}, {detail})"
