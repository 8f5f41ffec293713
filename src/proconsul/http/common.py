"""Shared pieces of the HTTP API: query options, JSON bodies, Consul's headers and errors.

Errors are plain text with Consul's status codes and wording; JSON is compact
unless `?pretty`.

Bad input is a 400 with a reason, found here once for every route:
- Query strings are read as Consul reads them: `?index`, `?cas` and `?flags`
  are unsigned 64-bit numbers (Go's ParseUint: ASCII digits, below 2**64) and
  `?wait` a Go duration (`5s`, `1m30s`), not negative; Consul's texts
  `Invalid index` and `Invalid wait time`.
- Every JSON body goes through `decode_body`, which refuses one nested deeper
  than `MAX_BODY_DEPTH` before anything walks it recursively.
"""

from __future__ import annotations

import functools
from collections.abc import MutableMapping
from typing import Any, Literal, NoReturn, TypeVar

import msgspec
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from proconsul.acl.errors import ACLDenied, ACLError
from proconsul.rpc.errors import ErrorCode, RPCError
from proconsul.structs.duration import dec_hook, enc_hook, parse_duration
from proconsul.structs.naming import UnknownField, conform_keys
from proconsul.structs.requests import QueryMeta, QueryOptions

T = TypeVar("T")

json_encoder = msgspec.json.Encoder(enc_hook=enc_hook)
JSON_CONTENT_TYPE = "application/json"

U64_MAX = 2**64 - 1
# Go's time.Duration is an int64 of nanoseconds; ParseDuration refuses longer.
MAX_GO_DURATION_S = (2**63 - 1) / 1e9

# The deepest nesting of arrays and objects a request body may have. Consul's
# bodies need a handful of levels (a service, its checks, their headers);
# opaque user data such as a proxy's Config gets the rest.
MAX_BODY_DEPTH = 64


class HTTPError(Exception):
    """Raised by handlers; the middleware turns it into a plain-text response."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_answer(exc: Exception) -> tuple[int, str] | None:
    """The status and text a request answers for `exc`, as http/server.py's
    middleware maps a handler's errors, for code that reports an error inside
    a stream it already started; None for an unexpected error."""
    if isinstance(exc, HTTPError):
        return exc.status, exc.message
    if isinstance(exc, ACLDenied):
        # Every ACL refusal, local or a server's (that one is an RPCError too).
        return 403, exc.message
    if isinstance(exc, ACLError):
        # The ACL API's other failures: 400 bad input, 500 a write that failed.
        return exc.status, exc.message
    if isinstance(exc, RPCError):
        # A bad ?filter is the caller's mistake: 400 (Consul says 500 there,
        # which its own maintainers call a wart).
        return (400 if exc.code == ErrorCode.BAD_QUERY else 500), exc.message
    if isinstance(exc, ConnectionError | TimeoutError):
        # No server reachable ("No known Consul servers"), a server's refusal
        # ("No cluster leader", ...) or a call that ran out of time: Consul says 500.
        return 500, str(exc) or type(exc).__name__
    return None


def bad_request(message: str) -> NoReturn:
    raise HTTPError(400, message)


def not_found(message: str) -> NoReturn:
    raise HTTPError(404, message)


def wants_pretty(request: web.Request) -> bool:
    return "pretty" in request.query


def encode_json(request: web.Request, value: Any) -> bytes:
    body = json_encoder.encode(value)
    if wants_pretty(request):
        body = msgspec.json.format(body, indent=4)
    return body


def json_response(
    request: web.Request, value: Any, meta: QueryMeta | None = None, status: int = 200
) -> web.Response:
    return json_bytes_response(request, encode_json(request, value), meta, status)


def json_bytes_response(
    request: web.Request, body: bytes, meta: QueryMeta | None = None, status: int = 200
) -> web.Response:
    if meta is None:
        return web.Response(body=body, status=status, content_type=JSON_CONTENT_TYPE)
    headers = _json_meta_headers(
        meta.index, meta.known_leader, meta.last_contact_ms, meta.results_filtered_by_acls
    )
    return web.Response(body=body, status=status, headers=headers)


@functools.lru_cache(maxsize=256)
def _json_meta_headers(
    index: int, known_leader: bool, last_contact_ms: int, filtered: bool
) -> CIMultiDictProxy[str]:
    """Content-Type and the meta headers of a JSON read, built once per index
    rather than per request (read-only: `web.Response` copies them)."""
    headers: CIMultiDict[str] = CIMultiDict({hdrs.CONTENT_TYPE: JSON_CONTENT_TYPE})
    _add_meta_headers(headers, index, known_leader, last_contact_ms, filtered)
    return CIMultiDictProxy(headers)


def set_meta_headers(response: web.StreamResponse, meta: QueryMeta) -> None:
    _add_meta_headers(
        response.headers,
        meta.index,
        meta.known_leader,
        meta.last_contact_ms,
        meta.results_filtered_by_acls,
    )


def _add_meta_headers(
    headers: MutableMapping[str, str],
    index: int,
    known_leader: bool,
    last_contact_ms: int,
    filtered: bool,
) -> None:
    headers["X-Consul-Index"] = str(index)
    headers["X-Consul-KnownLeader"] = "true" if known_leader else "false"
    headers["X-Consul-LastContact"] = str(last_contact_ms)
    if filtered:
        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"


def query_bool(request: web.Request, name: str) -> bool:
    """Consul treats a present flag as true unless it says false (`?passing=false`)."""
    if name not in request.query:
        return False
    return request.query[name].lower() not in ("false", "0")


def query_int(request: web.Request, name: str, default: int = 0) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        bad_request(f"Invalid {name} value: {text!r}")


def parse_uint64(text: str) -> int | None:
    """Go's `strconv.ParseUint(text, 10, 64)`: ASCII digits only (no sign, space,
    underscore or other script's digits), below 2**64; None for anything else."""
    if not (text.isascii() and text.isdigit()):
        return None
    # u64's largest value has 20 digits; leading zeros are allowed, as in Go,
    # and a longer number must not reach int() (it refuses over 4300 digits).
    if len(text.lstrip("0")) > 20:
        return None
    value = int(text)
    return value if value <= U64_MAX else None


def query_uint64(request: web.Request, name: str, default: int = 0) -> int:
    """An unsigned 64-bit query parameter (`?cas`, `?flags`); absent or empty is `default`."""
    text = request.query.get(name)
    if text is None or text == "":
        return default
    value = parse_uint64(text)
    if value is None:
        bad_request(f"Invalid {name} value: {text!r}")
    return value


def parse_wait(text: str) -> float:
    """`?wait` as Go's `time.ParseDuration` reads it, in seconds; ValueError for
    anything else and for a negative wait. A wait above Consul's 10 minutes is
    kept: the server caps it (server/read_options.py), as Consul's RPC layer does."""
    # parse_duration is lenient for config files (spaces, any script's digits);
    # Go takes ASCII only, but for the two spellings of its micro sign.
    if not text.replace("µ", "").replace("μ", "").isascii() or text != text.strip():
        raise ValueError(f"time: invalid duration {text!r}")
    seconds = float(parse_duration(text))
    if seconds < 0:
        raise ValueError(f"negative wait {text!r}")
    if seconds > MAX_GO_DURATION_S:  # Go's int64 of nanoseconds overflows
        raise ValueError(f"time: invalid duration {text!r}")
    return seconds


def query_options(request: web.Request, token: str = "") -> QueryOptions:
    """Consul's query options: `?wait`, `?index`, `?stale`/`?consistent`, `?dc`,
    `?filter` (compiled and applied by the server that answers).

    `?index` and `?wait` are parsed as Consul parses them (parseWait in its
    agent/http.go): an unsigned 64-bit number and a Go duration; anything
    else is a 400 with Consul's text, before any read starts.
    """
    query = request.query
    wait_s = 0.0
    wait = query.get("wait")
    if wait:
        try:
            wait_s = parse_wait(wait)
        except ValueError:
            bad_request("Invalid wait time")
    index = 0
    index_text = query.get("index")
    if index_text:
        parsed = parse_uint64(index_text)
        if parsed is None:
            bad_request("Invalid index")
        index = parsed
    stale = "stale" in query
    consistent = "consistent" in query
    if stale and consistent:
        bad_request("Cannot specify ?stale with ?consistent, conflicting semantics.")
    return QueryOptions(
        datacenter=query.get("dc", ""),
        token=token,
        min_index=index,
        max_query_time_s=wait_s,
        allow_stale=stale,
        require_consistent=consistent,
        filter=query.get("filter", ""),
    )


def node_meta_filter(request: web.Request) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in request.query.getall("node-meta", []):
        key, sep, value = item.partition(":")
        if not sep:
            bad_request(f"Invalid node-meta filter {item!r}: expected key:value")
        result[key] = value
    return result


def request_token(request: web.Request) -> str:
    """The token of a request: X-Consul-Token, then Authorization: Bearer, then ?token."""
    token = request.headers.get("X-Consul-Token")
    if token:
        return token
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query.get("token", "")


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` (decoded JSON) nests arrays and objects deeper than `limit`.

    Iterative, so the check itself cannot exhaust the stack it protects.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


async def decode_body(
    request: web.Request,
    kind: type[T],
    *,
    keys: Literal["pascal", "snake", "as-is"] = "pascal",
) -> T:
    """Decode a JSON body into `kind`; a malformed body is a 400 with the decoder's message.

    Keys are matched to `kind`'s fields by one rule (`naming.conform_keys`:
    any case, snake_case, Consul's aliases; unknown keys refused where the
    struct is complete, with Go's message), whatever `keys` says for PascalCase
    API structs or snake_case definitions; "as-is" leaves them to a decoder
    that knows which keys are user data (config entries:
    structs/config_entries.py). Every
    route's body comes through here, so the nesting bound is kept here, once:
    the renaming and the struct conversion below recurse once per level, and
    a body a few hundred levels deep would exhaust Python's stack.
    """
    raw = await request.read()
    if not raw.strip():
        bad_request("Request decode failed: EOF")
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, ValueError) as exc:
        bad_request(f"Request decode failed: {exc}")
    except RecursionError:
        # msgspec's own parser is bounded by the same recursion limit: deeper
        # than that is deeper than MAX_BODY_DEPTH too.
        _too_deep()
    if json_depth_exceeds(value, MAX_BODY_DEPTH):
        _too_deep()
    if keys != "as-is":
        try:
            value = conform_keys(value, kind)
        except UnknownField as exc:
            bad_request(f"Request decode failed: {exc}")
    try:
        return msgspec.convert(value, kind, dec_hook=dec_hook)
    except (msgspec.ValidationError, ValueError) as exc:
        bad_request(f"Request decode failed: {exc}")


def _too_deep() -> NoReturn:
    bad_request(
        f"Request decode failed: JSON nested deeper than {MAX_BODY_DEPTH} levels of arrays "
        "and objects"
    )
